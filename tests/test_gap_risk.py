"""Gap protection on real gaps, through the real pipeline (PLAN → VALIDATE → EXECUTE → the paper
venue advancing over the real daily bars, reconciled into the SQLite ledger), with a forced buy.

Before: entries were market orders sized on the last close, filled at whatever the next open was,
with the bracket left where it was planned:

* AAPL, window ending 2017-08-02 00:00 (close 150.050003, swing stop 146.73, target 158.35):
  301 shares risking 999.32 (1 % of 100 000); they filled at the 159.28 open × 1.0002 = 159.31,
  a risk to the stop of 301 × 12.58 = 3 786.58 (3.79 % of equity, 3.79× the limit), and the target,
  now below the fill, "took profit" in the same bar at 159.28 (−9.03 gross, −57 with fees).
* SPY, window ending 2020-03-13 (close 248.11, stop 244.80, target 256.39): 302 shares risking
  999.62, filled at the 263.09 open → 263.14, a risk of 302 × 18.34 = 5 538.68 (5.54× the limit),
  and the target again "filled" at the open below the entry.

Now (domain.costs): the entry is a limit 0.5 % beyond the close, immediate-or-cancel at the next
open; the size is 1 % of equity over |limit − stop|. Both gaps open far beyond the limit, so both
entries expire and nothing is bought; on a bar that opens within the band the fill is at most the
limit, so the risk at the fill is at most the planned risk."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from sqlalchemy import select

from trading_pipelines.venues import factory
from trading_pipelines.analysis import frames
from trading_pipelines.account import requests
from trading_pipelines import runtime
from trading_pipelines.account import window
from trading_pipelines.config import DEFAULT_DATA_DIR, load_strategies
from trading_pipelines.domain.ids import client_order_id
from trading_pipelines.domain.models import (
    IntentStatus,
    Mode,
    OrderRequest,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
    Signal,
    TradeIntent,
)
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.ledger.repo import Lineage
from trading_pipelines.stores.charts import LocalChartStore
from trading_pipelines.stores.market_data import CsvReplaySource
from trading_pipelines.venues.paper import PaperExchange

UTC = timezone.utc
DAY, H4 = timedelta(days=1), timedelta(hours=4)
EQUITIES = "equities_1d_spy_aapl"
EQUITY = 100_000.0
CAP = EQUITY * 1.0 / 100  # risk_per_trade_pct 1 % of the starting equity
ENTERED = {"FILLED", "MONITORING"}  # an intent whose entry filled (the lifecycle names it MONITORING once it tracks the position)


def _runtime(tmp_path, name=EQUITIES) -> runtime.Runtime:
    spec = load_strategies()[name]
    market = CsvReplaySource()
    venue = factory.make_paper_venue(spec, market, get_engine(f"sqlite:///{tmp_path / 'venue.sqlite'}"))
    return runtime.Runtime(spec=spec, engine=get_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}"), market=market,
                            charts=LocalChartStore(tmp_path / "charts"), provider=None, venue=venue)


def _lin(rt, inst, end) -> Lineage:
    return Lineage(rt.spec.name, inst, f"{inst}|{end:%Y-%m-%d-%H:%M}", "gap-test")


def _buy(rt, inst, end):
    """A forced buy through PLAN, VALIDATE and EXECUTE; returns (planned intent, guards, sent intent, orders)."""
    sig = Signal(strategy=rt.spec.name, instrument=inst, window_end=end, mode=rt.spec.mode, action="buy",
                 confidence=0.9, thesis="forced buy for the gap test", provider="test", model="none", prompt_hash="0" * 64)
    planned = window.plan(rt, _lin(rt, inst, end), sig, frames.indicator_frame(rt, inst, end))
    checked, guards = window.validate(rt, _lin(rt, inst, end), planned)
    sent, orders = window.execute(rt, _lin(rt, inst, end), checked)
    return planned, guards, sent, orders


def _intent_row(rt, intent_id):
    with session_scope(rt.engine) as s:
        row = s.get(m.IntentRow, intent_id)
        return row.status, row.reason


def _open(inst: str, day: str) -> float:
    f = {"AAPL": "NASDAQ_AAPL_1d.csv", "SPY": "NYSEARCA_SPY_1d.csv"}[inst]
    bars = pd.read_csv(DEFAULT_DATA_DIR / f, parse_dates=["timestamp"], index_col="timestamp")
    return float(bars.loc[f"{day}T00:00:00Z", "open"])


@pytest.mark.parametrize(
    ("inst", "end", "close", "stop", "target", "limit", "qty", "risk", "open_", "reason"),
    [
        # 1 000 / (150.80 − 146.73 = 4.07) = 245.7 → 245; risk 245 × 4.07 = 997.15
        ("AAPL", datetime(2017, 8, 2, tzinfo=UTC), 150.050003, 146.73, 158.35, 150.80, 245.0, 997.15, 159.279999,
         "gap: open 159.28 above protective limit 150.80"),
        # 1 000 / (249.35 − 244.80 = 4.55) = 219.8 → 219; risk 219 × 4.55 = 996.45
        ("SPY", datetime(2020, 3, 13, tzinfo=UTC), 248.11, 244.8, 256.39, 249.35, 219.0, 996.45, 263.09,
         "gap: open 263.09 above protective limit 249.35"),
    ],
)
def test_a_real_gap_expires_the_protected_entry(tmp_path, inst, end, close, stop, target, limit, qty, risk, open_, reason):
    rt = _runtime(tmp_path)
    planned, guards, sent, orders = _buy(rt, inst, end)
    # the plan: sized at the protective limit close × 1.005 (rounded down to the 0.01 tick)
    assert (planned.entry, planned.stop, planned.take_profit, planned.quantity) == (close, stop, target, qty)
    assert planned.risk_amount == pytest.approx(risk) and planned.risk_amount <= CAP
    assert all(g.passed for g in guards) and sent.status is IntentStatus.SUBMITTED
    entry = next(o for o in orders if o["role"] == "entry")
    assert (entry["type"], entry["price"], entry["quantity"]) == ("limit", limit, qty)
    # the next bar gaps far beyond the limit: the IOC entry expires, its legs are cancelled, nothing is bought
    assert _open(inst, f"{end:%Y-%m-%d}") == open_
    events = window.monitor(rt, _lin(rt, inst, end + DAY), end + DAY)
    assert [(e.kind, e.role, e.price, e.reason) for e in events] == [("expired", "entry", open_, reason)]
    venue = rt.venue
    assert venue.fetch_order(client_order_id(planned.intent_id, OrderRole.ENTRY)).status is OrderStatus.EXPIRED
    for role in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT):
        assert venue.fetch_order(client_order_id(planned.intent_id, role)).status is OrderStatus.CANCELED
    bal = venue.fetch_balance()
    assert venue.fetch_my_trades() == [] and venue.fetch_positions() == []
    assert (bal.cash, bal.reserved, bal.fees_paid) == (EQUITY, 0, 0.0)
    status, why = _intent_row(rt, planned.intent_id)
    assert status == IntentStatus.CANCELLED.value and why == f"venue expired the entry (expired: {reason})"


@pytest.mark.parametrize(
    ("inst", "end", "limit", "fill", "stop", "qty"),
    [
        # AAPL window ending 2017-08-01 (close 148.729996, limit 149.47): opens 149.100006 × 1.0002 → 149.13
        ("AAPL", datetime(2017, 8, 1, tzinfo=UTC), 149.47, 149.13, 146.72, 363.0),
        # SPY window ending 2020-03-03 (close 309.09, limit 310.63): opens 309.50 × 1.0002 → 309.56
        ("SPY", datetime(2020, 3, 3, tzinfo=UTC), 310.63, 309.56, 283.92, 37.0),
    ],
)
def test_an_entry_within_the_band_fills_with_at_most_the_planned_risk(tmp_path, inst, end, limit, fill, stop, qty):
    """AAPL: 363 × (149.13 − 146.72) = 874.83 ≤ planned 363 × (149.47 − 146.72) = 998.25 ≤ 1 000.
    SPY: 37 × (309.56 − 283.92) = 948.68 ≤ planned 37 × (310.63 − 283.92) = 988.27 ≤ 1 000."""
    rt = _runtime(tmp_path)
    planned, _, sent, orders = _buy(rt, inst, end)
    assert sent.status is IntentStatus.SUBMITTED and planned.quantity == qty and planned.stop == stop
    assert next(o for o in orders if o["role"] == "entry")["price"] == limit
    window.monitor(rt, _lin(rt, inst, end + DAY), end + DAY)
    [f] = [f for f in rt.venue.fetch_my_trades() if f.client_order_id == client_order_id(planned.intent_id, OrderRole.ENTRY)]
    assert f.price == pytest.approx(fill) and f.price <= limit
    realized = f.quantity * (f.price - planned.stop)
    assert realized <= planned.risk_amount + 1e-9 <= CAP + 1e-9
    assert realized <= 1.1 * CAP
    assert _intent_row(rt, planned.intent_id)[0] in ENTERED


def test_the_old_market_entry_on_the_aapl_gap_no_longer_books_a_take_profit(tmp_path):
    """The unprotected bracket of before (301 shares, market entry) replayed over the real
    2017-08-02 bar: the entry fills at 159.28 × 1.0002 = 159.31, a risk to the 146.73 stop of
    301 × 12.58 = 3 786.58 (3.79× the 1 000 limit: what the protective limit now prevents). The
    take-profit 158.35 is below the fill: the venue re-anchors the bracket and cancels it instead of
    "taking profit" at a loss in that bar; the stop stays armed."""
    rt = _runtime(tmp_path)
    venue: PaperExchange = rt.venue
    end = datetime(2017, 8, 2, tzinfo=UTC)
    intent = TradeIntent(intent_id="it-" + "a" * 24, strategy=EQUITIES, instrument="AAPL", window_end=end, mode=Mode.SPOT,
                         kind="entry", side=Side.BUY, position_side="long", quantity=301.0, entry=150.050003, stop=146.73,
                         take_profit=158.35, risk_amount=999.32, notional=45165.05, margin=45165.05, equity=EQUITY)
    en, sl, tp = requests.order_requests(intent, tick_size=0.01)
    market_entry = OrderRequest(client_order_id=en.client_order_id, instrument="AAPL", side=Side.BUY,
                                type=OrderType.MARKET, quantity=301.0, role=OrderRole.ENTRY)
    with venue.unit_of_work():
        for r in (market_entry, sl, tp):
            venue.create_order(r, placed_at=end, position_side="long")
        events = venue.advance(["AAPL"], end + DAY)
    assert [(e.kind, e.role, e.price) for e in events] == [("fill", "entry", 159.31), ("cancelled", "take_profit", 158.35)]
    assert events[1].reason == "re-anchored: take-profit 158.35 is not above the fill 159.31; cancelled, the stop stays"
    assert 301 * (159.31 - 146.73) == pytest.approx(3_786.58)
    [pos] = venue.fetch_positions()
    assert (pos.quantity, pos.entry_price) == (301.0, 159.31)
    assert venue.fetch_order(tp.client_order_id).status is OrderStatus.CANCELED
    assert venue.fetch_order(sl.client_order_id).status is OrderStatus.ACCEPTED  # the stop still protects the position
    assert not [f for f in venue.fetch_my_trades() if f.client_order_id == tp.client_order_id]


def test_a_take_profit_inside_the_band_is_cancelled_not_filled_below_the_entry(tmp_path):
    """A protected entry whose target sits inside the slippage band (hand-made bars): limit 100.5,
    target 100.3; the bar opens 100.4 → fill 100.4 × 1.0005 = 100.4502 → 100.45 on the tick, above
    the target. The target is cancelled; the high 100.9 would otherwise have "filled" it at the
    100.3 limit, 0.15 below the entry."""
    t0 = datetime(2026, 1, 1, 4, tzinfo=UTC)
    bars = pd.DataFrame([(100.4, 100.9, 100.2, 100.6, 1.0), (100.6, 100.7, 100.1, 100.2, 1.0)],
                        columns=["open", "high", "low", "close", "volume"],
                        index=pd.DatetimeIndex([t0, t0 + H4], name="open_time"))
    v = PaperExchange(account="band", mode=Mode.SPOT, starting_cash=10_000.0, fee_rate=0.001, slippage_bps=5.0,
                      bars_fn=lambda i, a, b: bars[(bars.index >= a) & (bars.index + H4 <= b)], bar_duration=H4,
                      engine=get_engine(f"sqlite:///{tmp_path / 'v.sqlite'}"), tick_sizes={"X/USDT": 0.01})
    intent = TradeIntent(intent_id="it-" + "b" * 24, strategy="s", instrument="X/USDT", window_end=t0, mode=Mode.SPOT,
                         kind="entry", side=Side.BUY, position_side="long", quantity=10.0, entry=100.0, stop=99.0,
                         take_profit=100.3, risk_amount=15.0, notional=1000.0, margin=1000.0, equity=10_000.0)
    with v.unit_of_work():
        for r in requests.order_requests(intent, 0.5, 0.01):
            v.create_order(r, placed_at=t0, position_side="long",
                           reserve=10 * 100.5 * 1.001 if r.role is OrderRole.ENTRY else 0.0)
    events = v.advance(["X/USDT"], t0 + 2 * H4)
    assert [(e.kind, e.role, e.price) for e in events] == [("fill", "entry", 100.45), ("cancelled", "take_profit", 100.3)]
    assert v.fetch_positions()[0].entry_price == 100.45
    assert not [f for f in v.fetch_my_trades() if f.client_order_id.endswith("-tp")]


def test_entries_whose_balance_guards_passed_are_never_refused_for_funds(tmp_path):
    """spot_4h_majors, forced buys of BTC, ETH and SOL at the window ending 2025-10-01 00:00, 10 000
    USDT. Each balance guard asks for the entry's cost at its protective limit, and the venue
    reserves exactly that (domain.costs): BTC 0.04198 × 114 619.17 × 1.001 = 4 816.52 of 10 000;
    ETH 0.6795 × 4 165.87 × 1.001 = 2 833.54 of 5 183.48; SOL 10.537 × 209.72 × 1.001 = 2 212.03
    of the 2 349.94 left. Reserved 9 862.09. At the 00:00 open every fill is at or below its limit,
    so each costs at most its reserve: all three fill (BTC 114 105.96, ETH 4 147.22, SOL 208.78),
    none is rejected, and 182.07 USDT is left."""
    rt = _runtime(tmp_path, "spot_4h_majors")
    end = datetime(2025, 10, 1, tzinfo=UTC)
    expected = {"BTC/USDT": ("needs 4816.52 (notional + fee at 114619.17) of 10000.00 free", 4_816.52),
                "ETH/USDT": ("needs 2833.54 (notional + fee at 4165.87) of 5183.48 free", 7_650.06),
                "SOL/USDT": ("needs 2212.03 (notional + fee at 209.72) of 2349.94 free", 9_862.09)}
    intents = {}
    for inst, (message, reserved) in expected.items():
        planned, guards, sent, _ = _buy(rt, inst, end)
        balance = next(g for g in guards if g.guard == "balance")
        assert balance.passed and balance.message == message
        assert sent.status is IntentStatus.SUBMITTED
        assert rt.venue.fetch_balance().reserved == pytest.approx(reserved, abs=0.005)  # the guard's number, reserved
        intents[inst] = planned
    events = window.monitor(rt, _lin(rt, "BTC/USDT", end + H4), end + H4)
    assert [e.kind for e in events] == ["fill"] * 3
    fills = {f.instrument: f.price for f in rt.venue.fetch_my_trades()}
    assert fills == {"BTC/USDT": 114_105.96, "ETH/USDT": 4_147.22, "SOL/USDT": 208.78}
    bal = rt.venue.fetch_balance()
    assert bal.cash == pytest.approx(182.07, abs=0.005) and bal.reserved == 0
    for inst, planned in intents.items():
        assert _intent_row(rt, planned.intent_id)[0] in ENTERED
    with session_scope(rt.engine) as s:
        rows = s.execute(select(m.OrderRow).where(m.OrderRow.role == "entry")).scalars().all()
        assert sorted(r.status for r in rows) == ["FILLED"] * 3


def _hand_venue(tmp_path, rows, mode=Mode.SPOT):
    t0 = datetime(2026, 1, 1, 4, tzinfo=UTC)
    bars = pd.DataFrame(rows, columns=["open", "high", "low", "close", "volume"],
                        index=pd.DatetimeIndex([t0 + i * H4 for i in range(len(rows))], name="open_time"))
    v = PaperExchange(account=f"hand-{mode.value}", mode=mode, starting_cash=10_000.0, fee_rate=0.0, slippage_bps=5.0,
                      bars_fn=lambda i, a, b: bars[(bars.index >= a) & (bars.index + H4 <= b)], bar_duration=H4,
                      engine=get_engine(f"sqlite:///{tmp_path / 'hand.sqlite'}"), tick_sizes={"X/USDT": 0.01})
    return v, t0


def test_a_gap_down_through_the_stop_fills_then_stops_out_in_the_same_bar(tmp_path):
    """Buy limit 100.5, stop 99: the bar opens 98, below the stop. The entry fills at the better open
    98 × 1.0005 = 98.049 → 98.05; its stop stays armed and fills in that bar at 98 × (1 − 5 bps) =
    97.951 → 97.95: a loss of 10 × 0.10 = 1.00 (the slippage), never the 15 planned."""
    v, t0 = _hand_venue(tmp_path, [(98.0, 98.5, 97.5, 98.2, 1.0)])
    intent = TradeIntent(intent_id="it-" + "c" * 24, strategy="s", instrument="X/USDT", window_end=t0, mode=Mode.SPOT,
                         kind="entry", side=Side.BUY, position_side="long", quantity=10.0, entry=100.0, stop=99.0,
                         take_profit=103.0, risk_amount=15.0, notional=1000.0, margin=1000.0, equity=10_000.0)
    with v.unit_of_work():
        for r in requests.order_requests(intent, 0.5, 0.01):
            v.create_order(r, placed_at=t0, position_side="long", reserve=1005.0 if r.role is OrderRole.ENTRY else 0.0)
    events = v.advance(["X/USDT"], t0 + H4)
    assert [(e.kind, e.role, e.price) for e in events] == [("fill", "entry", 98.05), ("fill", "stop_loss", 97.95)]
    assert events[1].realized_pnl == pytest.approx(-1.0)
    assert v.fetch_positions() == [] and v.fetch_balance().cash == pytest.approx(10_000 - 1.0)


def test_a_short_entry_expires_when_the_bar_gaps_below_its_limit(tmp_path):
    """Futures short, reference 100: sell limit 99.5. The bar opens 99.2: expired, nothing opened."""
    v, t0 = _hand_venue(tmp_path, [(99.2, 99.9, 98.0, 98.5, 1.0)], mode=Mode.FUTURES)
    intent = TradeIntent(intent_id="it-" + "d" * 24, strategy="s", instrument="X/USDT", window_end=t0, mode=Mode.FUTURES,
                         kind="entry", side=Side.SELL, position_side="short", quantity=10.0, entry=100.0, stop=101.0,
                         take_profit=97.0, leverage=2.0, risk_amount=15.0, notional=1000.0, margin=500.0, equity=10_000.0)
    with v.unit_of_work():
        for r in requests.order_requests(intent, 0.5, 0.01):
            v.create_order(r, placed_at=t0, position_side="short", leverage=2.0,
                           reserve=502.5 if r.role is OrderRole.ENTRY else 0.0)
    [event] = v.advance(["X/USDT"], t0 + H4)
    assert (event.kind, event.price, event.reason) == ("expired", 99.2, "gap: open 99.20 below protective limit 99.50")
    assert v.fetch_positions() == [] and v.fetch_open_orders() == [] and v.fetch_balance().cash == 10_000.0
