"""Worked-number tests for the PLAN step (domain.planning.plan_intent, pure)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from trading_pipelines.domain.guards import AccountView, RiskLimits, guard_risk_limit
from trading_pipelines.domain.ids import intent_id
from trading_pipelines.domain.models import (
    InstrumentSpec,
    IntentKind,
    IntentStatus,
    Mode,
    PositionSide,
    Side,
    Signal,
)
from trading_pipelines.domain.planning import MarketContext, PlanParams, plan_intent

UTC = timezone.utc
WINDOW_END = datetime(2024, 3, 1, 4, tzinfo=UTC)

BTC = InstrumentSpec(
    symbol="BTC/USDT", asset_class="crypto", market=Mode.SPOT,
    lot_step=0.00001, min_qty=0.00001, tick_size=0.01, min_notional=5.0,
)
ETH_PERP = InstrumentSpec(
    symbol="ETH/USDT", asset_class="crypto", market=Mode.FUTURES,
    lot_step=0.001, min_qty=0.001, tick_size=0.01, min_notional=5.0, maintenance_margin_rate=0.005,
)
SPY = InstrumentSpec(
    symbol="SPY", asset_class="equity", market=Mode.SPOT,
    lot_step=1, min_qty=1, tick_size=0.01, min_notional=0.0, calendar="XNYS",
)

BTC_MARKET = MarketContext(last_close=62_000.0, atr=850.37, swing_low=60_500.0, swing_high=63_000.0)
ETH_MARKET = MarketContext(last_close=3_000.0, atr=40.0, swing_low=2_900.0, swing_high=3_100.0)


def signal(action: str = "buy", *, mode: Mode = Mode.SPOT, instrument: str = "BTC/USDT", confidence: float = 0.7,
           strategy: str = "spot_4h_majors", window_end: datetime = WINDOW_END, **kw) -> Signal:
    return Signal(strategy=strategy, instrument=instrument, window_end=window_end, mode=mode, action=action,
                  confidence=confidence, thesis="trend up", provider="rules", model="rules-v1", prompt_hash="abc", **kw)


# --------------------------------------------------------------------------- spot entry


def test_spot_buy_worked_plan():
    it = plan_intent(signal("buy"), BTC, 10_000.0, BTC_MARKET, PlanParams())
    assert it.kind is IntentKind.ENTRY and it.status is IntentStatus.PENDING
    assert it.side is Side.BUY and it.position_side is PositionSide.LONG
    # entry = last close 62 000
    assert it.entry == 62_000.0
    # stop = 62 000 − 2 × 850.37 = 60 299.26 (on the 0.01 tick)
    assert it.stop == 60_299.26
    # sized at the worst fill, the protective limit 62 000 × 1.005 = 62 310 (domain.costs, 0.5 %):
    # size = 10 000 × 1 % / (62 310 − 60 299.26 = 2 010.74) = 0.049733… BTC → 0.04973 at lot 0.00001
    assert it.quantity == 0.04973
    # target = 62 000 + 2 × 1 700.74 = 65 401.48 (R measured from the close)
    assert it.take_profit == 65_401.48
    # notional = 0.04973 × 62 000 = 3 083.26; spot margin = notional; risk at the limit = 0.04973 × 2 010.74 = 99.9941…
    assert it.notional == pytest.approx(3_083.26)
    assert it.margin == it.notional
    assert it.risk_amount == pytest.approx(99.9941002)
    assert it.risk_amount <= 100.0
    assert it.leverage == 1.0 and it.liquidation_price is None and it.margin_mode is None
    assert it.equity == 10_000.0
    assert it.reason == "buy (0.70): trend up"


def test_spot_ignores_leverage_param():
    # leverage 3 in params has no effect on a spot plan
    it = plan_intent(signal("buy"), BTC, 10_000.0, BTC_MARKET, PlanParams(leverage=3.0, margin_mode="isolated"))
    assert it.leverage == 1.0 and it.margin == it.notional and it.liquidation_price is None and it.margin_mode is None


def test_spot_buy_swing_stop():
    # stop = swing low 60 500 − 0.25 × 850.37 = 60 287.4075 → floor to tick → 60 287.40; distance 1 712.60
    # size at the 62 310 limit = 100 / 2 022.60 = 0.049441… → 0.04944; target = 62 000 + 2 × 1 712.60 = 65 425.20
    it = plan_intent(signal("buy"), BTC, 10_000.0, BTC_MARKET, PlanParams(stop_method="swing"))
    assert it.kind is IntentKind.ENTRY
    assert it.stop == 60_287.4
    assert it.quantity == 0.04944
    assert it.take_profit == 65_425.2
    assert it.risk_amount == pytest.approx(0.04944 * 2_022.6)


def test_spot_buy_without_slippage_band_sizes_on_the_close():
    # max_entry_slippage_pct 0: the limit is the close, size = 100 / 1 700.74 = 0.05879 (the old numbers)
    it = plan_intent(signal("buy"), BTC, 10_000.0, BTC_MARKET, PlanParams(max_entry_slippage_pct=0.0))
    assert it.quantity == 0.05879 and it.risk_amount == pytest.approx(99.9865046)


# --------------------------------------------------------------------------- futures entry


def test_futures_short_worked_plan():
    p = PlanParams(leverage=3.0, margin_mode="isolated")
    it = plan_intent(signal("short", mode=Mode.FUTURES, instrument="ETH/USDT", confidence=0.8), ETH_PERP, 10_000.0, ETH_MARKET, p)
    assert it.kind is IntentKind.ENTRY
    assert it.side is Side.SELL and it.position_side is PositionSide.SHORT
    # stop = 3 000 + 2 × 40 = 3 080; distance 80
    assert it.stop == 3_080.0
    # a short's protective limit is 3 000 × 0.995 = 2 985: size = 100 / (3 080 − 2 985 = 95) = 1.0526… → 1.052 ETH
    assert it.quantity == 1.052
    # target = 3 000 − 2 × 80 = 2 840
    assert it.take_profit == 2_840.0
    # notional = 1.052 × 3 000 = 3 156; margin = 3 156 / 3 = 1 052
    assert it.notional == pytest.approx(3_156.0)
    assert it.margin == pytest.approx(1_052.0)
    assert it.leverage == 3.0 and it.margin_mode == "isolated"
    # liquidation = 3 000 × (1 + 1/3 − 0.005) = 3 985
    assert it.liquidation_price == pytest.approx(3_985.0)
    assert it.risk_amount == pytest.approx(1.052 * 95)   # 99.94


def test_futures_short_plan_passes_the_risk_guard():
    p = PlanParams(leverage=3.0, margin_mode="isolated")
    it = plan_intent(signal("short", mode=Mode.FUTURES, instrument="ETH/USDT"), ETH_PERP, 10_000.0, ETH_MARKET, p)
    # risk 99.94 ≤ 1 % of 10 000; 3× ≤ 5×; stop 3 080 < liquidation 3 985
    acct = AccountView(free_cash=10_000.0, equity=10_000.0, day_start_equity=10_000.0)
    assert guard_risk_limit(it, acct, RiskLimits(1.0, 3, 3.0, max_leverage=5.0)).passed


def test_futures_long():
    # stop 3 000 − 80 = 2 920; limit 3 015 → size 100 / 95 → 1.052; liquidation 3 000 × (1 − 1/3 + 0.005) = 2 015
    p = PlanParams(leverage=3.0, margin_mode="cross")
    it = plan_intent(signal("long", mode=Mode.FUTURES, instrument="ETH/USDT"), ETH_PERP, 10_000.0, ETH_MARKET, p)
    assert it.side is Side.BUY and it.position_side is PositionSide.LONG
    assert it.stop == 2_920.0 and it.take_profit == 3_160.0 and it.quantity == 1.052
    assert it.liquidation_price == pytest.approx(2_015.0)
    assert it.margin_mode == "cross"


# --------------------------------------------------------------------------- no-trades


def _assert_no_trade(it, reason_part: str):
    assert it.kind is IntentKind.NONE
    assert it.status is IntentStatus.NO_TRADE
    assert it.quantity == 0.0 and it.side is None and it.stop is None
    assert reason_part in it.reason, it.reason


def test_hold_is_no_trade():
    _assert_no_trade(plan_intent(signal("hold"), BTC, 10_000.0, BTC_MARKET, PlanParams()), "hold: trend up")


def test_low_confidence_is_no_trade():
    it = plan_intent(signal("buy", confidence=0.5), BTC, 10_000.0, BTC_MARKET, PlanParams())
    _assert_no_trade(it, "confidence 0.50 below minimum 0.55")


def test_confidence_at_minimum_plans():
    it = plan_intent(signal("buy", confidence=0.55), BTC, 10_000.0, BTC_MARKET, PlanParams(min_confidence=0.55))
    assert it.kind is IntentKind.ENTRY


@pytest.mark.parametrize("action", ["buy", "sell", "hold"])
def test_failed_signal_is_never_a_trade(action):
    # a provider failure with a confident "buy" (or "sell") still becomes NO_TRADE, never ENTRY/EXIT
    s = signal(action, confidence=0.95, no_trade_reason="LLM refused")
    _assert_no_trade(plan_intent(s, BTC, 10_000.0, BTC_MARKET, PlanParams()), "signal failed: LLM refused")


def test_failed_futures_signal_is_never_a_trade():
    s = signal("long", mode=Mode.FUTURES, instrument="ETH/USDT", confidence=0.95, no_trade_reason="timeout")
    _assert_no_trade(plan_intent(s, ETH_PERP, 10_000.0, ETH_MARKET, PlanParams(leverage=3.0)), "signal failed: timeout")


def test_nan_atr_cannot_plan():
    m = MarketContext(last_close=62_000.0, atr=math.nan, swing_low=60_500.0, swing_high=63_000.0)
    it = plan_intent(signal("buy"), BTC, 10_000.0, m, PlanParams())
    _assert_no_trade(it, "cannot plan")
    assert it.reason.startswith("cannot plan: ATR")


@pytest.mark.parametrize(("close", "equity"), [(math.nan, 10_000.0), (62_000.0, math.nan), (62_000.0, math.inf)])
def test_non_finite_inputs_never_trade(close, equity):
    m = MarketContext(last_close=close, atr=850.37, swing_low=60_500.0, swing_high=63_000.0)
    it = plan_intent(signal("buy"), BTC, equity, m, PlanParams())
    assert it.kind is IntentKind.NONE and it.status is IntentStatus.NO_TRADE and it.quantity == 0.0


def test_swing_low_above_entry_cannot_plan():
    # swing low 62 500 above the 62 000 close: no long stop below entry
    m = MarketContext(last_close=62_000.0, atr=850.37, swing_low=62_500.0, swing_high=63_000.0)
    _assert_no_trade(plan_intent(signal("buy"), BTC, 10_000.0, m, PlanParams(stop_method="swing")), "cannot plan")


def test_zero_equity_cannot_plan():
    _assert_no_trade(plan_intent(signal("buy"), BTC, 0.0, BTC_MARKET, PlanParams()), "cannot plan: equity")


def test_size_below_one_lot_is_no_trade():
    # SPY: equity 1 000 × 1 % = 10 USD; stop 500 − 2 × 10 = 480 → 10 / 20 = 0.5 share < 1 share
    m = MarketContext(last_close=500.0, atr=10.0, swing_low=490.0, swing_high=510.0)
    it = plan_intent(signal("buy", instrument="SPY", strategy="equities_1d_spy_aapl"), SPY, 1_000.0, m, PlanParams())
    _assert_no_trade(it, "size rounds below one lot (1.0) at 1.0% risk")


def test_btc_size_below_one_lot_is_no_trade():
    # equity 1 USDT × 1 % = 0.01 / 1 700.74 = 0.0000059 BTC < 0.00001
    it = plan_intent(signal("buy"), BTC, 1.0, BTC_MARKET, PlanParams())
    _assert_no_trade(it, "size rounds below one lot (1e-05)")


# --------------------------------------------------------------------------- exits


def test_spot_sell_is_exit_with_quantity_zero():
    it = plan_intent(signal("sell"), BTC, 10_000.0, BTC_MARKET, PlanParams())
    assert it.kind is IntentKind.EXIT and it.status is IntentStatus.PENDING
    # quantity 0 = "the whole position the venue reports at execution time"
    assert it.quantity == 0.0 and it.side is None and it.stop is None and it.take_profit is None
    assert it.entry == 62_000.0
    assert it.reason == "sell: trend up"


def test_futures_close_is_exit():
    it = plan_intent(signal("close", mode=Mode.FUTURES, instrument="ETH/USDT"), ETH_PERP, 10_000.0, ETH_MARKET,
                     PlanParams(leverage=3.0))
    assert it.kind is IntentKind.EXIT and it.quantity == 0.0


def test_exit_is_not_gated_by_confidence():
    # documents current behaviour: the confidence minimum applies to entries only (an exit reduces risk)
    it = plan_intent(signal("sell", confidence=0.1), BTC, 10_000.0, BTC_MARKET, PlanParams())
    assert it.kind is IntentKind.EXIT


# --------------------------------------------------------------------------- intent id


def test_intent_id_is_deterministic():
    a = plan_intent(signal("buy"), BTC, 10_000.0, BTC_MARKET, PlanParams())
    b = plan_intent(signal("buy"), BTC, 10_000.0, BTC_MARKET, PlanParams())
    assert a.intent_id == b.intent_id == intent_id("spot_4h_majors", "BTC/USDT", WINDOW_END)
    assert a == b  # the whole plan is a pure function of its inputs


def test_intent_id_depends_only_on_strategy_instrument_window():
    # a re-run of the same window with a different answer (hold) keeps the same id …
    entry = plan_intent(signal("buy"), BTC, 10_000.0, BTC_MARKET, PlanParams())
    hold = plan_intent(signal("hold"), BTC, 9_000.0, BTC_MARKET, PlanParams())
    assert entry.intent_id == hold.intent_id
    # … the next window gets a new one
    nxt = plan_intent(signal("buy", window_end=WINDOW_END + timedelta(hours=4)), BTC, 10_000.0, BTC_MARKET, PlanParams())
    assert nxt.intent_id != entry.intent_id
