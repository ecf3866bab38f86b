"""The paper venue's books with worked numbers: spot and futures accounting, brackets (OCO), exits,
cancels, idempotent client order ids and the forward-only clock. Real SQLite; the bars are small
hand-made OHLCV frames so every number can be checked by hand."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from trading_pipelines.domain.models import IntentKind, Mode, OrderStatus, PositionSide, Side, TradeIntent
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.resources.venues import PaperVenue, VenueError

H4 = timedelta(hours=4)
T0 = datetime(2026, 1, 1, 4, tzinfo=timezone.utc)


def _bars(rows):
    idx = pd.DatetimeIndex([T0 + i * H4 for i in range(len(rows))], name="open_time")
    return pd.DataFrame(rows, columns=["open", "high", "low", "close", "volume"], index=idx, dtype=float)


def _venue(rows, mode=Mode.SPOT, fee=0.001, slip=5.0):
    bars = _bars(rows)

    def bars_fn(inst, start, end):
        return bars[(bars.index >= start) & (bars.index + H4 <= end)]

    return PaperVenue(account=f"acct-{mode.value}", mode=mode, starting_cash=10_000.0, fee_rate=fee, slippage_bps=slip,
                      bars_fn=bars_fn, bar_duration=H4, tick_sizes={"X/USDT": 0.01})


def _intent(kind=IntentKind.ENTRY, side=Side.BUY, pos=PositionSide.LONG, qty=10.0, stop=95.0, tp=110.0, lev=1.0,
            mode=Mode.SPOT, n="a"):
    return TradeIntent(intent_id="it-" + n * 24, strategy="s", instrument="X/USDT", window_end=T0, mode=mode, kind=kind,
                       side=side if kind is IntentKind.ENTRY else None, position_side=pos if kind is IntentKind.ENTRY else None,
                       quantity=qty, entry=100.0, stop=stop, take_profit=tp, leverage=lev, risk_amount=qty * 5,
                       notional=qty * 100, margin=qty * 100 / lev, equity=10_000.0)


@pytest.fixture()
def engine(tmp_path):
    return get_engine(f"sqlite:///{tmp_path / 'venue.sqlite'}")


def test_spot_bracket_take_profit_with_fees(engine):
    v = _venue([(100, 101, 99, 100.5, 1), (100.5, 111, 100, 110.5, 1), (110.5, 112, 108, 111, 1)])
    with session_scope(engine) as s:
        orders = v.submit(s, _intent(), placed_at=T0)
        assert [o.request.role.value for o in orders] == ["entry", "stop_loss", "take_profit"]
        v.advance(s, "X/USDT", T0 + H4)
        # entry at the 04:00 open 100 × 1.0005 = 100.05; fee 10 × 100.05 × 0.1 % = 1.0005
        snap = v.snapshot(s, T0 + H4)
        assert snap.cash == pytest.approx(10_000 - 1000.5 - 1.0005)            # 8998.4995
        assert snap.equity == pytest.approx(8998.4995 + 10 * 100.5)           # marked at the close
        events = v.advance(s, "X/USDT", T0 + 2 * H4)
        # the 08:00 bar's high 111 reaches the 110 target: sell 10 at 110, fee 1.10
        assert [(e.role, e.price) for e in events] == [("take_profit", 110.0)]
        snap = v.snapshot(s, T0 + 2 * H4)
        assert snap.cash == pytest.approx(8998.4995 + 1100 - 1.1)              # 10097.3995
        assert snap.realized_pnl == pytest.approx((110 - 100.05) * 10)          # 99.5 gross
        assert snap.positions == () and snap.equity == pytest.approx(snap.cash)
        stop = v.get_order(s, orders[1].client_order_id)
        assert stop.status is OrderStatus.CANCELLED                             # one-cancels-other


def test_futures_short_stopped_out_margin_and_pnl(engine):
    v = _venue([(100, 102, 99, 101, 1), (101, 106, 100, 104, 1)], mode=Mode.FUTURES, fee=0.0005, slip=0.0)
    intent = _intent(side=Side.SELL, pos=PositionSide.SHORT, qty=2.0, stop=105.0, tp=90.0, lev=4.0, mode=Mode.FUTURES)
    with session_scope(engine) as s:
        v.submit(s, intent, placed_at=T0)
        v.advance(s, "X/USDT", T0 + H4)
        # short 2 at 100: margin 200 / 4 = 50, fee 200 × 0.05 % = 0.10; marked at 101 → unrealized −2
        snap = v.snapshot(s, T0 + H4)
        assert snap.cash == pytest.approx(10_000 - 50 - 0.1)
        assert snap.unrealized_pnl == pytest.approx(-2.0)
        assert snap.equity == pytest.approx(9949.9 + 50 - 2)
        events = v.advance(s, "X/USDT", T0 + 2 * H4)
        # the 08:00 high 106 reaches the 105 buy stop: loss (105 − 100) × 2 = 10, fee 2 × 105 × 0.05 % = 0.105
        assert [(e.role, e.price, e.realized_pnl) for e in events] == [("stop_loss", 105.0, -10.0)]
        snap = v.snapshot(s, T0 + 2 * H4)
        assert snap.cash == pytest.approx(9949.9 + 50 - 10 - 0.105)           # 9989.795
        assert snap.equity == pytest.approx(9989.795) and snap.realized_pnl == pytest.approx(-10.0)


def test_exit_intent_sells_the_whole_position_at_the_next_open(engine):
    v = _venue([(100, 101, 99, 100, 1), (100, 101, 99, 100, 1), (102, 103, 101, 102, 1)], slip=0.0, fee=0.0)
    with session_scope(engine) as s:
        v.submit(s, _intent(), placed_at=T0)
        v.advance(s, "X/USDT", T0 + 2 * H4)
        exit_ = _intent(kind=IntentKind.EXIT, n="b").model_copy(update={"window_end": T0 + 2 * H4})
        [order] = v.submit(s, exit_, placed_at=T0 + 2 * H4)
        assert order.request.reduce_only and order.request.quantity == 10.0 and order.request.side is Side.SELL
        events = v.advance(s, "X/USDT", T0 + 3 * H4)
        assert [(e.role, e.price, e.realized_pnl) for e in events] == [("exit", 102.0, 20.0)]
        assert v.positions(s) == [] and v.open_orders(s) == []  # the bracket legs were cancelled


def test_client_order_ids_are_idempotent_and_one_position_per_instrument(engine):
    v = _venue([(100, 101, 99, 100, 1), (100, 101, 99, 100, 1)])
    with session_scope(engine) as s:
        first = v.submit(s, _intent(), placed_at=T0)
        again = v.submit(s, _intent(), placed_at=T0)
        assert [o.client_order_id for o in first] == [o.client_order_id for o in again]
        assert len(v.open_orders(s)) == 3
        v.submit(s, _intent(n="c"), placed_at=T0)  # a second entry on the same instrument…
        v.advance(s, "X/USDT", T0 + H4)
        assert len(v.positions(s)) == 1            # …is refused by the venue when it would fill
        second = v.get_order(s, "tp-" + "c" * 24 + "-en")
        assert second.status is OrderStatus.REJECTED
        for leg in ("-sl", "-tp"):  # no orphaned bracket legs
            assert v.get_order(s, "tp-" + "c" * 24 + leg).status is OrderStatus.CANCELLED


def test_an_entry_the_account_cannot_fund_is_rejected_at_the_fill(engine):
    """10 000 USDT; an entry of 120 units at ≈100 reserves ≈12 000 and fails the venue's funds
    check when it would fill: rejected, its legs cancelled, cash untouched."""
    v = _venue([(100, 101, 99, 100, 1), (100, 101, 99, 100, 1)])
    with session_scope(engine) as s:
        orders = v.submit(s, _intent(qty=120.0), placed_at=T0)
        assert v.reserved(s) == pytest.approx(120 * 100 * (1 + 2 * 5 / 10_000 + 0.01) * 1.001)
        events = v.advance(s, "X/USDT", T0 + H4)
        assert [e.kind for e in events] == ["rejected"]
        assert [v.get_order(s, o.client_order_id).status for o in orders] == [
            OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.CANCELLED]
        assert v.snapshot(s, T0 + H4).cash == 10_000.0 and v.reserved(s) == 0


def test_cancel_before_fill_and_forward_only_clock(engine):
    v = _venue([(100, 101, 99, 100, 1), (100, 101, 99, 100, 1)])
    with session_scope(engine) as s:
        orders = v.submit(s, _intent(), placed_at=T0)
        v.cancel(s, orders[0].client_order_id)
        assert {o.client_order_id: o.status for o in (v.get_order(s, o.client_order_id) for o in orders)} == {
            o.client_order_id: OrderStatus.CANCELLED for o in orders}
        assert v.advance(s, "X/USDT", T0 + 2 * H4) == [] and v.positions(s) == []
        assert v.clock(s, "X/USDT") == T0 + 2 * H4
        v.advance(s, "X/USDT", T0 + H4)             # going back in time is a no-op
        assert v.clock(s, "X/USDT") == T0 + 2 * H4
        with pytest.raises(VenueError, match="no X/USDT position to exit"):
            v.submit(s, _intent(kind=IntentKind.EXIT, n="d"), placed_at=T0 + 2 * H4)
