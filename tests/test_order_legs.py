"""The per-leg order state machine and what an intent's legs say (domain.orders), with worked numbers."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from trading_pipelines.domain.models import (
    IntentKind,
    IntentStatus,
    Order,
    OrderRequest,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
)
from trading_pipelines.domain.orders import (
    ALLOWED,
    Leg,
    apply_report,
    derive_intent_status,
    open_quantity,
    protection,
    realized_pnl,
)

S = OrderStatus
T = datetime(2026, 3, 3, 4, tzinfo=timezone.utc)


def report(cid: str, role: OrderRole, status: OrderStatus, qty: float, filled: float = 0.0, avg: float | None = None,
           reason: str = "") -> Order:
    side = Side.BUY if role is OrderRole.ENTRY else Side.SELL
    otype = OrderType.STOP if role is OrderRole.STOP_LOSS else OrderType.LIMIT
    req = OrderRequest(client_order_id=cid, instrument="BTC/USDT", side=side, type=otype, quantity=qty, role=role,
                       price=None if otype is OrderType.STOP else 1.0, trigger_price=1.0 if otype is OrderType.STOP else None)
    return Order(client_order_id=cid, venue_order_id="1", request=req, status=status, placed_at=T, filled_quantity=filled,
                 average_price=avg, reason=reason)


def test_terminal_states_have_no_way_out_and_unknown_only_resolves():
    for s in (S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED, S.DRY_RUN, S.SENT):
        assert ALLOWED[s] == frozenset() and s.terminal
    # an unanswered leg is never "placed again" from UNKNOWN: it is found, or the venue says it is absent
    assert S.SUBMITTED not in ALLOWED[S.UNKNOWN] and S.INITIALIZED in ALLOWED[S.UNKNOWN]
    assert set(ALLOWED[S.ACCEPTED]) == {S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED}


def test_a_stale_report_never_undoes_a_fill():
    leg = Leg("e", OrderRole.ENTRY, 1.0, S.SUBMITTED)
    leg = apply_report(leg, report("e", OrderRole.ENTRY, S.ACCEPTED, 1.0, filled=0.3, avg=68000.0))
    assert (leg.status, leg.filled_quantity) == (S.PARTIALLY_FILLED, 0.3)  # ACCEPTED with a fill is a partial fill
    stale = apply_report(leg, report("e", OrderRole.ENTRY, S.ACCEPTED, 1.0, filled=0.0))
    assert (stale.status, stale.filled_quantity, stale.average_price) == (S.PARTIALLY_FILLED, 0.3, 68000.0)
    done = apply_report(leg, report("e", OrderRole.ENTRY, S.EXPIRED, 1.0, filled=0.3, avg=68000.0, reason="IOC"))
    assert (done.status, done.filled_quantity, done.reason) == (S.EXPIRED, 0.3, "IOC")
    assert apply_report(done, report("e", OrderRole.ENTRY, S.FILLED, 1.0, filled=1.0)) == done  # terminal stays


def test_no_answer_makes_a_sent_leg_unknown_and_absence_resolves_it():
    sent = Leg("e", OrderRole.ENTRY, 1.0, S.SUBMITTED)
    unknown = apply_report(sent, None, answered=False)
    assert unknown.status is S.UNKNOWN
    assert apply_report(unknown, None, answered=False).status is S.UNKNOWN
    assert apply_report(unknown, None).status is S.INITIALIZED  # definitely absent: it may be placed
    # an accepted leg the venue no longer knows (Binance purges cancelled orders) is not SUBMITTED forever
    resting = Leg("s", OrderRole.STOP_LOSS, 1.0, S.ACCEPTED)
    assert apply_report(resting, None).status is S.CANCELED


def test_a_partly_filled_entry_is_monitored_with_its_filled_quantity():
    legs = [Leg("e", OrderRole.ENTRY, 1.0, S.EXPIRED, 0.3, 68000.0), Leg("s", OrderRole.STOP_LOSS, 1.0, S.ACCEPTED),
            Leg("t", OrderRole.TAKE_PROFIT, 1.0, S.ACCEPTED)]
    status, why = derive_intent_status(IntentKind.ENTRY, legs)
    assert status is IntentStatus.MONITORING and why == "entry filled at 68000.0 (partial: 0.3 of 1): position open"
    assert open_quantity(legs) == pytest.approx(0.3)
    # legs of 1.0 for a 0.3 position: both cancelled and placed again for 0.3
    p = protection(legs, has_take_profit=True, venue_open=0.3, lot_step=0.001)
    assert (p.place, p.take_profit, p.quantity, p.cancel) == (True, True, pytest.approx(0.3), ("s", "t"))
    resized = legs[:1] + [Leg("s1", OrderRole.STOP_LOSS, 0.3, S.ACCEPTED), Leg("t1", OrderRole.TAKE_PROFIT, 0.3, S.ACCEPTED)]
    assert protection(resized, has_take_profit=True, venue_open=0.3, lot_step=0.001) == protection(
        resized, has_take_profit=True, venue_open=0.3) and not protection(resized, has_take_profit=True, venue_open=0.3).place


def test_a_rejected_entry_fails_the_intent_and_an_expired_one_cancels_it():
    rejected = [Leg("e", OrderRole.ENTRY, 1.0, S.REJECTED, reason="-2010 insufficient balance")]
    assert derive_intent_status(IntentKind.ENTRY, rejected) == (
        IntentStatus.FAILED, "venue rejected the entry (-2010 insufficient balance)")
    expired = [Leg("e", OrderRole.ENTRY, 1.0, S.EXPIRED, reason="gap")]
    assert derive_intent_status(IntentKind.ENTRY, expired) == (IntentStatus.CANCELLED, "venue expired the entry (gap)")


def test_protection_cancels_orphans_but_not_legs_waiting_on_their_entry():
    # the stop filled (USDⓈ-M: not one-cancels-other): the take-profit has no position behind it
    after_stop = [Leg("e", OrderRole.ENTRY, 0.3, S.FILLED, 0.3, 68000.0), Leg("s", OrderRole.STOP_LOSS, 0.3, S.FILLED, 0.3, 65900.0),
                  Leg("t", OrderRole.TAKE_PROFIT, 0.3, S.ACCEPTED)]
    assert protection(after_stop, has_take_profit=True, venue_open=0.0).cancel == ("t",)
    assert derive_intent_status(IntentKind.ENTRY, after_stop)[0] is IntentStatus.CLOSED
    # a resting entry's bracket legs wait for it: nothing to cancel, nothing to place
    waiting = [Leg("e", OrderRole.ENTRY, 0.3, S.ACCEPTED), Leg("s", OrderRole.STOP_LOSS, 0.3, S.ACCEPTED)]
    assert protection(waiting, has_take_profit=True, venue_open=0.0) == protection(waiting, has_take_profit=False)
    assert protection(waiting, has_take_profit=True, venue_open=0.0).cancel == ()
    # a filled entry whose stop was never placed (a half-placed bracket): place it
    half = [Leg("e", OrderRole.ENTRY, 0.3, S.FILLED, 0.3, 68000.0)]
    p = protection(half, has_take_profit=True, venue_open=0.3)
    assert p.place and p.quantity == pytest.approx(0.3) and p.cancel == ()
    # a stop whose fate is unknown: wait for its look-up, never place a second one
    doubt = half + [Leg("s", OrderRole.STOP_LOSS, 0.3, S.UNKNOWN)]
    assert protection(doubt, has_take_profit=True, venue_open=0.3).wait
    assert not protection(doubt, has_take_profit=True, venue_open=0.3).place
    # spot: a buy's base-asset fee leaves 0.2997 of a 0.3 fill; a stop for the lot-rounded 0.2997 covers it
    spot = [Leg("e", OrderRole.ENTRY, 0.3, S.FILLED, 0.3, 68000.0), Leg("s", OrderRole.STOP_LOSS, 0.2997, S.ACCEPTED)]
    assert not protection(spot, has_take_profit=False, venue_open=0.29970001, lot_step=0.00001).place


def test_realized_pnl_from_every_fill_with_fees():
    # 0.3 BTC bought in two fills (0.1 at 68 000, 0.2 at 68 300: average 68 200), stopped 0.3 at 65 900
    legs = [Leg("e", OrderRole.ENTRY, 1.0, S.EXPIRED, 0.3, (0.1 * 68000 + 0.2 * 68300) / 0.3),
            Leg("s", OrderRole.STOP_LOSS, 0.3, S.FILLED, 0.3, 65900.0)]
    # 0.3 × (65 900 − 68 200) = −690; fees 0.04 % of 20 460 + 19 770 = 16.092 → −706.092
    assert realized_pnl(legs, long=True, fees=0.0004 * (0.3 * 68200 + 0.3 * 65900)) == pytest.approx(-706.092)
