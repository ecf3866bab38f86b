"""Worked-number tests for the one cost model (domain.costs, pure) and the callers that must agree
with it: the balance guard, the paper venue's reservation (domain.paper.entry_reserve) and the
planner's sizing at the protective limit."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from trading_pipelines.domain import costs
from trading_pipelines.domain.costs import (
    cash_price,
    entry_cost,
    entry_fill_price,
    entry_reserve,
    fee,
    protective_limit,
    slipped,
    worst_case_risk,
    worst_fill_price,
)
from trading_pipelines.domain.guards import AccountView, RiskLimits, guard_balance
from trading_pipelines.domain.models import Bar, InstrumentSpec, Mode, PositionSide, Side, Signal
from trading_pipelines.domain.paper import bracket_leg_wrong_side
from trading_pipelines.domain.paper import entry_fill_price as bar_entry_fill_price
from trading_pipelines.domain.paper import entry_reserve as paper_entry_reserve
from trading_pipelines.domain.planning import MarketContext, PlanParams, plan_intent

T0 = datetime(2017, 8, 2, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- fees and slippage


def test_fee_is_a_fraction_of_notional():
    # 10 @ 100 = 1 000 notional × 0.1 % = 1.00
    assert fee(1_000.0, 0.001) == pytest.approx(1.0)


def test_slippage_moves_against_the_trader():
    # 100 × (1 ± 5 / 10 000)
    assert slipped(100.0, Side.BUY, 5) == pytest.approx(100.05)
    assert slipped(100.0, Side.SELL, 5) == pytest.approx(99.95)
    assert slipped(100.0, Side.BUY, 0) == 100.0


# --------------------------------------------------------------------------- protective limit


def test_protective_limit_is_exact_decimal():
    # 100 × 1.005 = 100.5 exactly (binary floats say 100.49999999999999)
    assert protective_limit(Side.BUY, 100.0, 0.5) == 100.5
    assert protective_limit(Side.SELL, 100.0, 0.5) == 99.5
    assert protective_limit(Side.BUY, 100.0, 0.0) == 100.0


def test_buy_limit_rounds_down_and_sell_limit_rounds_up_to_the_tick():
    # AAPL 2017-08-01 close 150.050003 × 1.005 = 150.80025 → 150.80 (never above the 0.5 % allowance)
    assert protective_limit(Side.BUY, 150.050003, 0.5, 0.01) == 150.8
    # SPY 2020-03-12 close 248.11 × 1.005 = 249.35055 → 249.35
    assert protective_limit(Side.BUY, 248.11, 0.5, 0.01) == 249.35
    # a short: 3 000.03 × 0.995 = 2 985.02985 → up to 2 985.03
    assert protective_limit(Side.SELL, 3_000.03, 0.5, 0.01) == 2_985.03
    assert worst_fill_price is protective_limit


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_protective_limit_refuses_a_non_price(bad):
    with pytest.raises(ValueError):
        protective_limit(Side.BUY, bad, 0.5)


def test_protective_limit_refuses_a_negative_band():
    with pytest.raises(ValueError):
        protective_limit(Side.BUY, 100.0, -0.1)


# --------------------------------------------------------------------------- fills of a protected entry


def test_buy_fills_at_open_plus_slippage_within_the_limit():
    # limit 100.5, open 100, 5 bps → 100.05
    assert entry_fill_price(Side.BUY, 100.0, 100.5, 5) == pytest.approx(100.05)


def test_buy_fill_is_capped_at_the_limit():
    # open 100.48 × 1.0005 = 100.53024 > limit 100.5 → 100.5
    assert entry_fill_price(Side.BUY, 100.48, 100.5, 5) == 100.5
    # open exactly at the limit still fills (at the limit)
    assert entry_fill_price(Side.BUY, 100.5, 100.5, 5) == 100.5


def test_buy_expires_when_the_bar_opens_beyond_the_limit():
    assert entry_fill_price(Side.BUY, 100.51, 100.5, 5) is None
    # AAPL 2017-08-02 opened 159.279999 against a 150.80 limit
    assert entry_fill_price(Side.BUY, 159.279999, 150.8, 2) is None


def test_buy_gapping_down_fills_at_the_better_open():
    # open 95 below the limit: fills at 95 × 1.0005 = 95.0475
    assert entry_fill_price(Side.BUY, 95.0, 100.5, 5) == pytest.approx(95.0475)


def test_sell_mirrors_the_buy():
    # limit 99.5: open 100 → 99.95; open 99.52 × 0.9995 = 99.47024 → floored at 99.5; open 99.4 → expires
    assert entry_fill_price(Side.SELL, 100.0, 99.5, 5) == pytest.approx(99.95)
    assert entry_fill_price(Side.SELL, 99.52, 99.5, 5) == 99.5
    assert entry_fill_price(Side.SELL, 99.4, 99.5, 5) is None


def test_bar_version_reads_the_open():
    bar = Bar(open_time=T0, open=100.0, high=101.0, low=99.0, close=100.0, volume=1.0)
    assert bar_entry_fill_price(Side.BUY, 100.5, bar, 5) == pytest.approx(100.05)


# --------------------------------------------------------------------------- cash an entry needs


def test_entry_cost_spot_is_notional_plus_fee():
    # 10 @ 100, 0.1 % → 1 000 + 1.00 = 1 001
    assert entry_cost(10, 100.0, 1.0, False, 0.001) == pytest.approx(1_001.0)


def test_entry_cost_futures_is_initial_margin_plus_fee_on_notional():
    # 20 @ 100.5, 5×, 0.04 % → 2 010 / 5 = 402 + 0.804 = 402.804
    assert entry_cost(20, 100.5, 5.0, True, 0.0004) == pytest.approx(402.804)


def test_entry_reserve_is_the_cost_at_the_protective_limit():
    # 10 @ 100, 0.1 % fee, 5 bps slippage, 0.5 % band → 10 × 100.5 = 1 005 + 1.005 = 1 006.005
    # (slippage adds nothing: the limit caps the fill; the old reserve was 1 012.011)
    assert entry_reserve(10, 100.0, 1.0, False, 0.001) == pytest.approx(1_006.005)
    assert paper_entry_reserve(10, 100.0, 1.0, False, 0.001, 5.0) == pytest.approx(1_006.005)
    # a 1 % band: 10 × 101 × 1.001 = 1 011.01
    assert entry_reserve(10, 100.0, 1.0, False, 0.001, max_entry_slippage_pct=1.0) == pytest.approx(1_011.01)


def test_no_fill_within_the_limit_costs_more_than_the_reserve():
    # the venue's fill-time need is entry_cost at the fill ≤ the reserve, for every open that fills
    reserve = entry_reserve(10, 100.0, 1.0, False, 0.001, tick_size=0.01)
    for open_ in (90.0, 99.0, 100.0, 100.3, 100.45, 100.5):
        price = entry_fill_price(Side.BUY, open_, protective_limit(Side.BUY, 100.0, 0.5, 0.01), 5)
        assert entry_cost(10, price, 1.0, False, 0.001) <= reserve + 1e-9


def test_a_short_is_reserved_at_the_top_of_the_band():
    # margin grows with a short's fill price: reserved at 100 × 1.005 = 100.5 → 20 × 100.5 / 5 + 0.804 = 402.804
    assert cash_price(Side.SELL, 100.0, 0.5) == 100.5
    assert entry_reserve(20, 100.0, 5.0, True, 0.0004, side=Side.SELL) == pytest.approx(402.804)


def test_guard_and_reserve_are_the_same_number():
    """The balance guard asks for exactly what the venue reserves: AAPL 245 @ 150.050003, 0.05 %
    fee → 245 × 150.80 = 36 946 + 18.473 = 36 964.473."""
    intent = plan_intent(
        Signal(strategy="equities_1d_spy_aapl", instrument="AAPL", window_end=T0, mode=Mode.SPOT, action="buy",
               confidence=0.9, thesis="t", provider="test", model="none", prompt_hash="0"),
        InstrumentSpec(symbol="AAPL", asset_class="equity", market=Mode.SPOT, lot_step=1, min_qty=1, tick_size=0.01,
                       min_notional=0.0, calendar="XNYS"),
        100_000.0, MarketContext(last_close=150.050003, atr=1.0, swing_low=146.98, swing_high=153.99),
        PlanParams(stop_method="swing", buffer_atr=0.25, take_profit_r=2.5))
    assert (intent.quantity, intent.stop) == (245.0, 146.73)
    reserve = entry_reserve(intent.quantity, intent.entry, 1.0, False, 0.0005, tick_size=0.01)
    assert reserve == pytest.approx(36_964.473)
    limits = RiskLimits(1.0, 2, 3.0, fee_rate=0.0005)
    ok = guard_balance(intent, AccountView(free_cash=36_964.48, equity=1e5, day_start_equity=1e5), limits, 0.01)
    short = guard_balance(intent, AccountView(free_cash=36_964.46, equity=1e5, day_start_equity=1e5), limits, 0.01)
    assert ok.passed and not short.passed and "36964.47" in short.message


# --------------------------------------------------------------------------- risk at the worst fill


def test_worst_case_risk_is_measured_from_the_limit():
    # AAPL: 245 × (150.80 − 146.73 = 4.07) = 997.15 ≤ 1 000 (1 % of 100 000)
    assert worst_case_risk(245, Side.BUY, 150.050003, 146.73, 0.5, 0.01) == pytest.approx(997.15)
    # short: 1.052 × (3 080 − 2 985) = 99.94
    assert worst_case_risk(1.052, Side.SELL, 3_000.0, 3_080.0, 0.5, 0.01) == pytest.approx(99.94)


def test_planner_sizes_on_the_limit_and_records_that_risk():
    """AAPL 2017-08-01: equity 100 000, 1 %, close 150.050003, stop 146.73, limit 150.80:
    1 000 / 4.07 = 245.7 → 245 shares (301 sized on the close); risk_amount 997.15."""
    spec = InstrumentSpec(symbol="AAPL", asset_class="equity", market=Mode.SPOT, lot_step=1, min_qty=1, tick_size=0.01,
                          min_notional=0.0, calendar="XNYS")
    sig = Signal(strategy="equities_1d_spy_aapl", instrument="AAPL", window_end=T0, mode=Mode.SPOT, action="buy",
                 confidence=0.9, thesis="t", provider="test", model="none", prompt_hash="0")
    market = MarketContext(last_close=150.050003, atr=1.0, swing_low=146.98, swing_high=153.99)
    p = PlanParams(stop_method="swing", buffer_atr=0.25, take_profit_r=2.5)
    it = plan_intent(sig, spec, 100_000.0, market, p)
    assert it.quantity == 245.0 and it.risk_amount == pytest.approx(997.15) and it.entry == 150.050003
    old = plan_intent(sig, spec, 100_000.0, market, PlanParams(stop_method="swing", buffer_atr=0.25, take_profit_r=2.5,
                                                                max_entry_slippage_pct=0.0))
    assert old.quantity == 301.0  # 1 000 / 3.32 (3.320003) = 301.2


# --------------------------------------------------------------------------- re-anchoring


def test_bracket_leg_wrong_side_of_the_fill():
    # long filled at 159.31 (the unprotected 2017-08-02 AAPL fill): target 158.35 below it, stop 146.73 fine
    assert bracket_leg_wrong_side(PositionSide.LONG, 159.31, 146.73, 158.35) == (False, True)
    assert bracket_leg_wrong_side(PositionSide.LONG, 150.2, 146.73, 158.35) == (False, False)
    # a long filled below its stop (a gap down through it)
    assert bracket_leg_wrong_side(PositionSide.LONG, 146.0, 146.73, 158.35) == (True, False)
    # short filled at 2 830: target 2 840 above it
    assert bracket_leg_wrong_side(PositionSide.SHORT, 2_830.0, 3_080.0, 2_840.0) == (False, True)


def test_default_band_is_half_a_percent():
    assert costs.DEFAULT_MAX_ENTRY_SLIPPAGE_PCT == 0.5
    assert PlanParams().max_entry_slippage_pct == 0.5 == RiskLimits(1.0, 1, 1.0).max_entry_slippage_pct
