"""Regressions for the money paths a review found (real candles, real SQLite, the paper venue):
the ledger's decision is what gets sent; resting entries reserve funds; a stale exit is cancelled,
not wedged; a late run neither sizes on nor snapshots the future; isolated futures lose at most
their margin; a rejected entry leaves no orphaned bracket legs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from trading_pipelines.venues import factory
from trading_pipelines.analysis import frames
from trading_pipelines.account import requests
from trading_pipelines import runtime
from trading_pipelines.account import window
from trading_pipelines.config import load_strategies
from trading_pipelines.domain.ids import client_order_id
from trading_pipelines.domain.models import IntentStatus, OrderRole, OrderStatus, Signal
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.ledger.repo import Lineage
from trading_pipelines.llm.rules_provider import RulesSignalProvider
from trading_pipelines.stores.charts import LocalChartStore
from trading_pipelines.stores.market_data import CsvReplaySource

H4 = timedelta(hours=4)
T0 = datetime(2025, 9, 1, tzinfo=timezone.utc)


@pytest.fixture()
def rt(tmp_path):
    spec = load_strategies()["spot_4h_majors"]
    market = CsvReplaySource()
    venue = factory.make_paper_venue(spec, market, get_engine(f"sqlite:///{tmp_path / 'venue.sqlite'}"))  # its own store
    return runtime.Runtime(spec=spec, engine=get_engine(f"sqlite:///{tmp_path / 'l.sqlite'}"), market=market,
                            charts=LocalChartStore(tmp_path / "charts"), provider=RulesSignalProvider(spec.prompt_template),
                            venue=venue)


def _lin(rt, inst, end, run="r1"):
    return Lineage(rt.spec.name, inst, f"{inst}|{end:%Y-%m-%d-%H:%M}", run)


def _plan(rt, inst, end, action, run="r1"):
    sig = Signal(strategy=rt.spec.name, instrument=inst, window_end=end, mode=rt.spec.mode, action=action, confidence=0.9,
                 thesis="forced for the test", provider="test", model="none", prompt_hash="0" * 64)
    frame = frames.indicator_frame(rt, inst, end)
    return window.plan(rt, _lin(rt, inst, end, run), sig, frame)


def _review(rt, inst, end, action):
    intent = _plan(rt, inst, end, action)
    checked, guards = window.validate(rt, _lin(rt, inst, end), intent)
    return window.execute(rt, _lin(rt, inst, end), checked), guards


def test_a_rerun_sends_the_validated_decision_not_a_new_one(rt):
    first = _plan(rt, "BTC/USDT", T0, "buy")
    validated, _ = window.validate(rt, _lin(rt, "BTC/USDT", T0), first)
    assert validated.status is IntentStatus.VALIDATED
    # the orders step did not run; a re-run of the partition gets a different signal (an LLM changed its mind)
    again = _plan(rt, "BTC/USDT", T0, "sell", run="r2")
    assert again == validated                                  # the stored decision, unchanged
    (sent, orders) = window.execute(rt, _lin(rt, "BTC/USDT", T0, "r2"), again.model_copy(update={"quantity": 99.0}))
    entry = next(o for o in orders if o["role"] == "entry")
    assert entry["side"] == "buy" and entry["quantity"] == validated.quantity  # the ledger row, not the caller's copy
    with session_scope(rt.engine) as s:
        ignored = s.execute(select(m.AuditRow).where(m.AuditRow.event == "replan_ignored")).scalars().one()
    assert ignored.detail["new_action"] == "sell"


def test_resting_entries_reserve_cash_so_the_account_is_never_overcommitted(rt):
    """At 2026-01-05 00:00 BTC (4 969.52 USDT, its cost at its protective limit) and ETH (3 973.77)
    entries rest; SOL's 2 978.46 no longer fits in the 10 000 − 4 969.52 − 3 973.77 = 1 056.70 USDT
    left free, so its balance guard fails. Cash never goes negative. (Sizes and costs at the
    protective limit, domain.costs: at 2025-09-01, the date this test used, all three now fit.)"""
    t0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
    results = {inst: _review(rt, inst, t0, "buy") for inst in rt.spec.instruments}
    assert [results[i][0][0].status for i in ("BTC/USDT", "ETH/USDT")] == [IntentStatus.SUBMITTED] * 2
    sol_guards = {g.guard: g for g in results["SOL/USDT"][1]}
    assert not sol_guards["balance"].passed
    assert sol_guards["balance"].message == "needs 2978.46 (notional + fee at 134.79) but only 1056.70 is free"
    snap, _ = window.snapshot(rt, _lin(rt, "BTC/USDT", t0 + H4), t0 + H4)
    assert len(snap.positions) == 2 and snap.cash > 0


def test_a_stale_exit_is_cancelled_not_wedged(rt):
    _review(rt, "BTC/USDT", T0, "buy")
    t1 = T0 + H4
    window.snapshot(rt, _lin(rt, "BTC/USDT", t1), t1)           # the entry fills
    exit_ = _plan(rt, "BTC/USDT", t1, "sell")
    checked, _ = window.validate(rt, _lin(rt, "BTC/USDT", t1), exit_)
    assert checked.status is IntentStatus.VALIDATED
    t = t1                                                         # the orders step waits; the target fills meanwhile
    while rt.venue.fetch_positions():
        t += H4
        rt.venue.advance(["BTC/USDT"], t)
    for _ in range(2):                                             # retried: cancelled once, then a no-op
        result, orders = window.execute(rt, _lin(rt, "BTC/USDT", t1), checked)
        assert result.status is IntentStatus.CANCELLED and not [o for o in orders if o["role"] == "exit"]
    with session_scope(rt.engine) as s:
        assert "pre-submit fresh_window" in s.get(m.IntentRow, checked.intent_id).reason


def test_a_late_run_neither_sizes_on_nor_snapshots_the_future(rt):
    _review(rt, "BTC/USDT", T0, "buy")
    t1 = T0 + H4
    first, pit = window.snapshot(rt, _lin(rt, "BTC/USDT", t1), t1)
    assert pit and len(first.positions) == 1
    window.snapshot(rt, _lin(rt, "BTC/USDT", T0 + 20 * H4), T0 + 20 * H4)   # later windows run
    again, pit = window.snapshot(rt, _lin(rt, "BTC/USDT", t1), t1)          # then window t1 is re-materialized
    assert pit and again.equity == pytest.approx(first.equity) and again.as_of == first.as_of
    late = _plan(rt, "ETH/USDT", t1, "buy")                                      # ETH's t1 review arrives late
    assert late.status is IntentStatus.NO_TRADE and "late review" in late.reason


def _futures_venue(account, bars_ohlc, starting_cash, engine):
    """A futures paper venue (no fees, no slippage, 0.4 % maintenance margin) on instrument "X"
    whose 4h bars from T0 are ``bars_ohlc`` = [(open, high, low, close), …]; ``engine`` is the
    venue's own store."""
    import pandas as pd

    from trading_pipelines.domain.models import Mode
    from trading_pipelines.venues.paper import PaperExchange

    idx = pd.DatetimeIndex([T0 + i * H4 for i in range(len(bars_ohlc))], name="open_time")
    bars = pd.DataFrame(bars_ohlc, columns=["open", "high", "low", "close"], index=idx, dtype=float).assign(volume=1.0)
    return PaperExchange(account=account, mode=Mode.FUTURES, starting_cash=starting_cash, fee_rate=0.0, slippage_bps=0.0,
                         bars_fn=lambda i, a, b: bars[(bars.index >= a) & (bars.index + H4 <= b)], bar_duration=H4,
                         engine=engine, maintenance_margin_rates={"X": 0.004})


def _submit(v, intent, placed_at):
    """An entry intent's bracket through the venue protocol, as the execution engine places it."""
    from trading_pipelines.domain.models import OrderRole
    from trading_pipelines.domain.paper import entry_reserve

    reserve = entry_reserve(intent.quantity, intent.entry, intent.leverage, True, v.fee_rate, v.slippage_bps)
    with v.unit_of_work():
        return [v.create_order(r, placed_at=placed_at, position_side=intent.position_side.value, leverage=intent.leverage,
                               reserve=reserve if r.role is OrderRole.ENTRY else 0.0)
                for r in requests.order_requests(intent)]


def _fills(v, cid):
    return [f for f in v.fetch_my_trades() if f.client_order_id == cid]


def test_isolated_futures_loss_is_capped_at_the_margin(tmp_path):
    """Long 30 @ 100 at 3× (margin 1 000, liquidation ≈ 67.07 with 0.4 % maintenance); the next bar
    opens at 60, beyond the liquidation price: the position is liquidated at the bankruptcy price
    100 − 1 000 / 30 = 66.67, losing its 1 000 margin and no more (a stop filled at 60 would have
    lost 1 200), recorded as a reduce-only LIQUIDATION order with its fill."""
    from trading_pipelines.domain.models import IntentKind, Mode, PositionSide, Side, TradeIntent

    v = _futures_venue("liq", [(100.0, 101.0, 99.0, 100.0), (60.0, 61.0, 55.0, 58.0)], starting_cash=10_000,
                       engine=get_engine(f"sqlite:///{tmp_path / 'venue.sqlite'}"))
    intent = TradeIntent(intent_id="it-" + "e" * 24, strategy="liq", instrument="X", window_end=T0, mode=Mode.FUTURES,
                         kind=IntentKind.ENTRY, side=Side.BUY, position_side=PositionSide.LONG, quantity=30, entry=100.0,
                         stop=70.0, take_profit=160.0, leverage=3.0, notional=3000, margin=1000, equity=10_000)
    _submit(v, intent, placed_at=T0)
    v.advance(["X"], T0 + H4)
    events = v.advance(["X"], T0 + 2 * H4)
    assert [(e.role, round(e.price, 2), e.realized_pnl) for e in events] == [("liquidation", 66.67, -1000.0)]
    [liq] = _fills(v, "tp-" + "e" * 24 + "-lq")
    assert liq.quantity == 30 and liq.fee == pytest.approx(0.0)
    bal = v.fetch_balance()
    assert bal.cash == pytest.approx(9000.0) and bal.realized_pnl == pytest.approx(-1000.0)
    assert bal.equity == pytest.approx(9000.0) and v.fetch_positions() == []
    legs = {o.request.role.value: o.status.value for o in (v.fetch_order("tp-" + "e" * 24 + r) for r in ("-sl", "-tp", "-lq"))}
    assert legs == {"stop_loss": "CANCELED", "take_profit": "CANCELED", "liquidation": "FILLED"}


def test_liquidation_inside_the_bar_costs_exactly_the_margin(tmp_path):
    """Short 10 @ 100 at 5× without a stop before liquidation (stop 125 beyond liq 119.6): a bar
    reaching 121 liquidates at 119.6; gross loss 196, the 4 left of the 200 margin is the fee;
    the next bar's exit order finds no position and the account lost exactly 200."""
    from trading_pipelines.domain.models import IntentKind, Mode, PositionSide, Side, TradeIntent

    v = _futures_venue("liq2", [(100.0, 101.0, 99.0, 100.0), (110.0, 121.0, 105.0, 118.0)], starting_cash=1_000,
                       engine=get_engine(f"sqlite:///{tmp_path / 'venue.sqlite'}"))
    intent = TradeIntent(intent_id="it-" + "f" * 24, strategy="liq2", instrument="X", window_end=T0, mode=Mode.FUTURES,
                         kind=IntentKind.ENTRY, side=Side.SELL, position_side=PositionSide.SHORT, quantity=10, entry=100.0,
                         stop=125.0, take_profit=80.0, leverage=5.0, notional=1000, margin=200, equity=1000)
    _submit(v, intent, placed_at=T0)
    v.advance(["X"], T0 + H4)
    [ev] = v.advance(["X"], T0 + 2 * H4)
    assert (ev.role, ev.price, ev.realized_pnl) == ("liquidation", pytest.approx(119.6), pytest.approx(-196.0))
    [fill] = _fills(v, "tp-" + "f" * 24 + "-lq")
    assert fill.fee == pytest.approx(4.0)
    bal = v.fetch_balance()
    assert bal.cash == pytest.approx(800.0) and v.fetch_positions() == []
    assert bal.realized_pnl == pytest.approx(-196.0) and bal.fees_paid == pytest.approx(4.0)


def test_a_crashed_plan_is_replaced_by_the_rerun_plan(rt):
    """Run 1 plans a buy and dies before validation (PENDING); run 2's signal says hold: the
    stored plan becomes NO_TRADE and nothing is validated or sent."""
    first = _plan(rt, "BTC/USDT", T0, "buy")
    assert first.status is IntentStatus.PENDING and first.quantity > 0
    second = _plan(rt, "BTC/USDT", T0, "hold", run="r2")
    assert second.status is IntentStatus.NO_TRADE and second.quantity == 0
    checked, guards = window.validate(rt, _lin(rt, "BTC/USDT", T0, "r2"), first)  # even with the stale copy
    assert checked.status is IntentStatus.NO_TRADE and guards == ()
    _, orders = window.execute(rt, _lin(rt, "BTC/USDT", T0, "r2"), first)
    assert orders == []


def test_cancel_reads_the_venue_not_a_stale_ledger(rt):
    """ETH's entry rests; BTC's next-window plan advances the whole account, filling ETH's entry at
    the venue before the ledger hears of it. Cancelling ETH must refuse: it already traded."""
    (eth, _), _ = _review(rt, "ETH/USDT", T0, "buy")
    assert eth.status is IntentStatus.SUBMITTED
    _plan(rt, "BTC/USDT", T0 + H4, "hold")
    with pytest.raises(ValueError, match="MONITORING: already executed|already traded"):
        window.cancel(rt, eth.intent_id)
    [pos] = rt.venue.fetch_positions()                            # the refused cancel left the venue's fill alone
    assert pos.instrument == "ETH/USDT"
    assert rt.venue.fetch_order(client_order_id(eth.intent_id, OrderRole.ENTRY)).status is OrderStatus.FILLED


def test_a_refused_cancel_still_brings_the_ledger_up_to_date(rt):
    """The second half of the test above: cancel reads the venue first and the ledger keeps what
    it learnt (ETH's entry filled: MONITORING) even though the cancel itself is refused."""
    (eth, _), _ = _review(rt, "ETH/USDT", T0, "buy")
    assert eth.status is IntentStatus.SUBMITTED
    _plan(rt, "BTC/USDT", T0 + H4, "hold")
    with pytest.raises(ValueError, match="MONITORING: already executed|already traded"):
        window.cancel(rt, eth.intent_id)
    with session_scope(rt.engine) as s:
        assert s.get(m.IntentRow, eth.intent_id).status == "MONITORING"


def test_a_liquidation_is_in_the_ledger(tmp_path):
    """The venue's liquidation order and fill are mirrored under the entry's intent and close the
    ledger position with reason `liquidation` and the margin as the loss."""
    from trading_pipelines.domain.models import IntentKind, Mode, PositionSide, Side, TradeIntent
    from trading_pipelines.account import sync as book_sync
    from trading_pipelines.ledger import legs, repo

    v = _futures_venue("liq3", [(100.0, 101.0, 99.0, 100.0), (60.0, 61.0, 55.0, 58.0)], starting_cash=10_000,
                       engine=get_engine(f"sqlite:///{tmp_path / 'venue.sqlite'}"))  # not the ledger's file
    intent = TradeIntent(intent_id="it-" + "9" * 24, strategy="liq3", instrument="X", window_end=T0, mode=Mode.FUTURES,
                         kind=IntentKind.ENTRY, side=Side.BUY, position_side=PositionSide.LONG, quantity=30, entry=100.0,
                         stop=70.0, take_profit=160.0, leverage=3.0, notional=3000, margin=1000, equity=10_000)
    lin = Lineage("liq3", "X", "X|w", "run")
    with session_scope(get_engine(f"sqlite:///{tmp_path / 'f.sqlite'}")) as s:
        repo.record_intent(s, lin, intent)
        repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.VALIDATED)
        legs.record_reported(s, lin, intent.intent_id, "futures", "paper", _submit(v, intent, placed_at=T0))
        v.advance(["X"], T0 + 2 * H4)
        book_sync.record_venue_fills(s, v, "liq3", lin.book, "futures", {p.instrument: p for p in v.fetch_positions()})
        pos = s.execute(select(m.PositionRow)).scalar_one()
        liq = s.get(m.OrderRow, "tp-" + "9" * 24 + "-lq")
    assert (pos.status, pos.exit_reason) == ("closed", "liquidation")
    assert pos.realized_pnl == pytest.approx(-1000.0)
    assert liq.intent_id == intent.intent_id and liq.status == "FILLED" and liq.reduce_only
