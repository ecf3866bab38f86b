"""The paper venue's books with worked numbers: spot and futures accounting, brackets (OCO), exits,
cancels, idempotent client order ids and the forward-only clock. Real SQLite (the exchange's own
store); the bars are small hand-made OHLCV frames so every number can be checked by hand.

Orders reach the venue only through the venue protocol (``create_order`` & co.), exactly as
the execution engine places them: the bracket of an entry intent from
:func:`requests.order_requests`, the entry holding :func:`domain.paper.entry_reserve`; an exit is
a reduce-only market order for the venue's position."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from trading_pipelines.domain.ids import client_order_id
from trading_pipelines.domain.models import (
    IntentKind,
    Mode,
    OrderRequest,
    OrderRole,
    OrderStatus,
    OrderType,
    PositionSide,
    Side,
    TradeIntent,
)
from trading_pipelines.domain.paper import entry_reserve
from trading_pipelines.ledger.db import get_engine
from trading_pipelines.account.requests import order_requests
from trading_pipelines.venues.paper import PaperExchange
from trading_pipelines.venues.protocol import VenueError

H4 = timedelta(hours=4)
T0 = datetime(2026, 1, 1, 4, tzinfo=timezone.utc)


def _bars(rows):
    idx = pd.DatetimeIndex([T0 + i * H4 for i in range(len(rows))], name="open_time")
    return pd.DataFrame(rows, columns=["open", "high", "low", "close", "volume"], index=idx, dtype=float)


@pytest.fixture()
def engine(tmp_path):
    """The venue's own store (never the ledger's SQLite file)."""
    return get_engine(f"sqlite:///{tmp_path / 'venue.sqlite'}")


@pytest.fixture()
def venue(engine):
    def make(rows, mode=Mode.SPOT, fee=0.001, slip=5.0):
        bars = _bars(rows)

        def bars_fn(inst, start, end):
            return bars[(bars.index >= start) & (bars.index + H4 <= end)]

        return PaperExchange(account=f"acct-{mode.value}", mode=mode, starting_cash=10_000.0, fee_rate=fee,
                             slippage_bps=slip, bars_fn=bars_fn, bar_duration=H4, engine=engine,
                             tick_sizes={"X/USDT": 0.01})
    return make


def _intent(kind=IntentKind.ENTRY, side=Side.BUY, pos=PositionSide.LONG, qty=10.0, stop=95.0, tp=110.0, lev=1.0,
            mode=Mode.SPOT, n="a"):
    return TradeIntent(intent_id="it-" + n * 24, strategy="s", instrument="X/USDT", window_end=T0, mode=mode, kind=kind,
                       side=side if kind is IntentKind.ENTRY else None, position_side=pos if kind is IntentKind.ENTRY else None,
                       quantity=qty, entry=100.0, stop=stop, take_profit=tp, leverage=lev, risk_amount=qty * 5,
                       notional=qty * 100, margin=qty * 100 / lev, equity=10_000.0)


def _submit(v: PaperExchange, intent: TradeIntent, placed_at: datetime):
    """An entry intent's bracket through the protocol, the entry reserving what the execution engine reserves."""
    reserve = entry_reserve(intent.quantity, intent.entry, intent.leverage, intent.mode is Mode.FUTURES, v.fee_rate,
                            v.slippage_bps)
    with v.unit_of_work():
        return [v.create_order(r, placed_at=placed_at, position_side=intent.position_side.value, leverage=intent.leverage,
                               reserve=reserve if r.role is OrderRole.ENTRY else 0.0)
                for r in order_requests(intent)]


def _exit_request(intent: TradeIntent, side: Side, quantity: float) -> OrderRequest:
    return OrderRequest(client_order_id=client_order_id(intent.intent_id, OrderRole.EXIT), instrument=intent.instrument,
                        side=side, type=OrderType.MARKET, quantity=quantity, role=OrderRole.EXIT, reduce_only=True)


def test_spot_bracket_take_profit_with_fees(venue):
    v = venue([(100, 101, 99, 100.5, 1), (100.5, 111, 100, 110.5, 1), (110.5, 112, 108, 111, 1)])
    orders = _submit(v, _intent(), placed_at=T0)
    assert [o.request.role.value for o in orders] == ["entry", "stop_loss", "take_profit"]
    v.advance(["X/USDT"], T0 + H4)
    # entry at the 04:00 open 100 × 1.0005 = 100.05; fee 10 × 100.05 × 0.1 % = 1.0005
    bal = v.fetch_balance()
    assert bal.cash == pytest.approx(10_000 - 1000.5 - 1.0005)            # 8998.4995
    assert bal.equity == pytest.approx(8998.4995 + 10 * 100.5)           # marked at the close
    assert bal.fees_paid == pytest.approx(1.0005) and bal.reserved == 0  # the filled entry holds nothing back
    events = v.advance(["X/USDT"], T0 + 2 * H4)
    # the 08:00 bar's high 111 reaches the 110 target: sell 10 at 110, fee 1.10
    assert [(e.role, e.price) for e in events] == [("take_profit", 110.0)]
    bal = v.fetch_balance()
    assert bal.cash == pytest.approx(8998.4995 + 1100 - 1.1)              # 10097.3995
    assert bal.realized_pnl == pytest.approx((110 - 100.05) * 10)          # 99.5 gross
    assert v.fetch_positions() == [] and bal.equity == pytest.approx(bal.cash)
    stop = v.fetch_order(orders[1].client_order_id)
    assert stop.status is OrderStatus.CANCELED                             # one-cancels-other


def test_futures_short_stopped_out_margin_and_pnl(venue):
    v = venue([(100, 102, 99, 101, 1), (101, 106, 100, 104, 1)], mode=Mode.FUTURES, fee=0.0005, slip=0.0)
    intent = _intent(side=Side.SELL, pos=PositionSide.SHORT, qty=2.0, stop=105.0, tp=90.0, lev=4.0, mode=Mode.FUTURES)
    _submit(v, intent, placed_at=T0)
    v.advance(["X/USDT"], T0 + H4)
    # short 2 at 100: margin 200 / 4 = 50, fee 200 × 0.05 % = 0.10; marked at 101 → unrealized −2
    bal = v.fetch_balance()
    assert bal.cash == pytest.approx(10_000 - 50 - 0.1)
    assert bal.unrealized_pnl == pytest.approx(-2.0)
    assert bal.equity == pytest.approx(9949.9 + 50 - 2)
    [pos] = v.fetch_positions()
    assert (pos.side, pos.quantity, pos.entry_price, pos.margin, pos.mark_price) == (PositionSide.SHORT, 2.0, 100.0, 50.0, 101.0)
    events = v.advance(["X/USDT"], T0 + 2 * H4)
    # the 08:00 high 106 reaches the 105 buy stop: loss (105 − 100) × 2 = 10, fee 2 × 105 × 0.05 % = 0.105
    assert [(e.role, e.price, e.realized_pnl) for e in events] == [("stop_loss", 105.0, -10.0)]
    bal = v.fetch_balance()
    assert bal.cash == pytest.approx(9949.9 + 50 - 10 - 0.105)           # 9989.795
    assert bal.equity == pytest.approx(9989.795) and bal.realized_pnl == pytest.approx(-10.0)
    assert v.fetch_positions() == []


def test_exit_intent_sells_the_whole_position_at_the_next_open(venue):
    v = venue([(100, 101, 99, 100, 1), (100, 101, 99, 100, 1), (102, 103, 101, 102, 1)], slip=0.0, fee=0.0)
    _submit(v, _intent(), placed_at=T0)
    v.advance(["X/USDT"], T0 + 2 * H4)
    exit_ = _intent(kind=IntentKind.EXIT, n="b").model_copy(update={"window_end": T0 + 2 * H4})
    [pos] = v.fetch_positions()                           # the exit's size is the venue's position (the execution engine)
    order = v.create_order(_exit_request(exit_, pos.side.exit_side, pos.quantity), placed_at=T0 + 2 * H4,
                           position_side=pos.side.value, leverage=pos.leverage)
    assert order.request.reduce_only and order.request.quantity == 10.0 and order.request.side is Side.SELL
    assert order.status is OrderStatus.ACCEPTED
    events = v.advance(["X/USDT"], T0 + 3 * H4)
    assert [(e.role, e.price, e.realized_pnl) for e in events] == [("exit", 102.0, 20.0)]
    assert v.fetch_positions() == [] and v.fetch_open_orders() == []  # the bracket legs were cancelled
    assert v.fetch_balance().cash == pytest.approx(10_000 + 20.0)


def test_client_order_ids_are_idempotent_and_one_position_per_instrument(venue):
    v = venue([(100, 101, 99, 100, 1), (100, 101, 99, 100, 1)])
    first = _submit(v, _intent(), placed_at=T0)
    again = _submit(v, _intent(), placed_at=T0)
    assert [o.client_order_id for o in first] == [o.client_order_id for o in again]
    assert len(v.fetch_open_orders()) == 3
    assert v.fetch_balance().reserved == pytest.approx(entry_reserve(10.0, 100.0, 1.0, False, 0.001, 5.0))  # reserved once
    _submit(v, _intent(n="c"), placed_at=T0)  # a second entry on the same instrument…
    v.advance(["X/USDT"], T0 + H4)
    assert len(v.fetch_positions()) == 1       # …is refused by the venue when it would fill
    second = v.fetch_order("tp-" + "c" * 24 + "-en")
    assert second.status is OrderStatus.REJECTED
    for leg in ("-sl", "-tp"):  # no orphaned bracket legs
        assert v.fetch_order("tp-" + "c" * 24 + leg).status is OrderStatus.CANCELED
    # and a client order id the venue has settled is still not accepted twice
    [again_en] = [o for o in _submit(v, _intent(n="c"), placed_at=T0 + H4) if o.request.role is OrderRole.ENTRY]
    assert again_en.status is OrderStatus.REJECTED and len(v.fetch_open_orders()) == 2  # only "a"'s armed legs


def test_an_entry_the_account_cannot_fund_is_rejected_at_the_fill(venue):
    """10 000 USDT; an entry of 120 units at ≈100 reserves ≈12 000 and fails the venue's funds
    check when it would fill: rejected, its legs cancelled, cash untouched."""
    v = venue([(100, 101, 99, 100, 1), (100, 101, 99, 100, 1)])
    orders = _submit(v, _intent(qty=120.0), placed_at=T0)
    # reserved at the protective limit 100 × 1.005 = 100.5 (domain.costs): 120 × 100.5 × 1.001 = 12 072.06
    assert v.fetch_balance().reserved == pytest.approx(120 * 100.5 * 1.001)
    events = v.advance(["X/USDT"], T0 + H4)
    assert [e.kind for e in events] == ["rejected"]
    assert [v.fetch_order(o.client_order_id).status for o in orders] == [
        OrderStatus.REJECTED, OrderStatus.CANCELED, OrderStatus.CANCELED]
    bal = v.fetch_balance()
    assert bal.cash == 10_000.0 and bal.reserved == 0 and v.fetch_my_trades() == []


def test_cancel_before_fill_and_forward_only_clock(venue):
    v = venue([(100, 101, 99, 100, 1), (100, 101, 99, 100, 1), (100, 101, 99, 100, 1)])
    orders = _submit(v, _intent(), placed_at=T0)
    v.cancel_order(orders[0].client_order_id)
    assert {o.client_order_id: o.status for o in (v.fetch_order(o.client_order_id) for o in orders)} == {
        o.client_order_id: OrderStatus.CANCELED for o in orders}
    assert v.fetch_balance().reserved == 0
    assert v.advance(["X/USDT"], T0 + 2 * H4) == [] and v.fetch_positions() == []
    assert v.instrument_clock("X/USDT") == T0 + 2 * H4 and v.clock() == T0 + 2 * H4
    v.advance(["X/USDT"], T0 + H4)             # going back in time is a no-op
    assert v.instrument_clock("X/USDT") == T0 + 2 * H4 and v.clock() == T0 + 2 * H4
    with pytest.raises(VenueError, match="unknown order"):
        v.cancel_order("tp-" + "d" * 24 + "-en")
    # an exit with no position to reduce is refused: nothing fills, nothing opens, cash untouched
    exit_ = _intent(kind=IntentKind.EXIT, n="d")
    assert v.fetch_positions() == []
    v.create_order(_exit_request(exit_, Side.SELL, 10.0), placed_at=T0 + 2 * H4, position_side="long")
    [event] = v.advance(["X/USDT"], T0 + 3 * H4)          # the refusal is reported (and so audited), nothing filled
    assert (event.kind, event.role, event.quantity) == ("rejected", "exit", 10.0)
    assert v.fetch_order(client_order_id(exit_.intent_id, OrderRole.EXIT)).status is OrderStatus.REJECTED
    assert v.fetch_positions() == [] and v.fetch_my_trades() == [] and v.fetch_balance().cash == 10_000.0
