"""Worked-number tests for domain.sizing and domain.stops (pure, no I/O)."""

from __future__ import annotations

import math

import pytest

from trading_pipelines.domain.models import PositionSide
from trading_pipelines.domain.sizing import liquidation_price, risk_position_size, round_down_to_step, round_to_tick
from trading_pipelines.domain.stops import take_profit, technical_stop

LONG, SHORT = PositionSide.LONG, PositionSide.SHORT


# --------------------------------------------------------------------------- round_down_to_step


@pytest.mark.parametrize(
    ("qty", "step", "expected"),
    [
        (0.123456, 0.001, 0.123),  # 123.456 steps → 123 steps × 0.001
        (0.0123456789, 0.00001, 0.01234),  # BTC lot: 1234.56789 steps → 1234
        (33.333, 1, 33.0),  # whole shares
        (0.999999, 0.001, 0.999),  # never rounds up to 1.0
    ],
)
def test_round_down_to_step_truncates(qty, step, expected):
    assert round_down_to_step(qty, step) == expected


@pytest.mark.parametrize(
    ("qty", "step"),
    [(0.123, 0.001), (20.0, 1), (0.00003, 0.00001), (2.5, 0.5), (62000.0, 0.01)],
)
def test_round_down_to_step_keeps_exact_multiples(qty, step):
    assert round_down_to_step(qty, step) == qty


@pytest.mark.parametrize(
    ("qty", "step", "expected"),
    [
        # float: 0.3 / 0.1 == 2.9999999999999996, so a naive floor(q / s) × s gives 0.2.
        (0.3, 0.1, 0.3),
        (0.7, 0.1, 0.7),  # 0.7 / 0.1 == 6.999999999999999 in float
        (1.0, 0.1, 1.0),
        (0.00009, 0.00003, 0.00009),
    ],
)
def test_round_down_to_step_float_traps(qty, step, expected):
    assert round_down_to_step(qty, step) == expected


def test_the_float_trap_is_real():
    # what the Decimal arithmetic avoids: binary floor(0.3 / 0.1) = floor(2.9999999999999996) = 2
    assert math.floor(0.3 / 0.1) * 0.1 == 0.2


def test_round_down_to_step_respects_the_float_it_is_given():
    # 0.3 / 0.1 evaluates to 2.9999999999999996, which *is* below 3 → 2 whole lots.
    assert round_down_to_step(0.3 / 0.1, 1) == 2.0


@pytest.mark.parametrize("qty", [0.0, -1.0, -0.0001])
def test_round_down_to_step_non_positive_quantity_is_zero(qty):
    assert round_down_to_step(qty, 0.001) == 0.0


@pytest.mark.parametrize("step", [0.0, -0.01])
def test_round_down_to_step_rejects_bad_step(step):
    with pytest.raises(ValueError):
        round_down_to_step(1.0, step)


# --------------------------------------------------------------------------- round_to_tick


@pytest.mark.parametrize(
    ("price", "tick", "expected"),
    [
        (100.004, 0.01, 100.0),  # 10000.4 ticks → 10000
        (100.005, 0.01, 100.01),  # half-up on the decimal repr "100.005" (binary is 100.00499…)
        (0.3, 0.1, 0.3),
        (27123.456, 0.1, 27123.5),  # 271234.56 ticks → 271235
        (97.53, 0.05, 97.55),  # 1950.6 ticks → 1951 × 0.05
        (95.0, 0.01, 95.0),
    ],
)
def test_round_to_tick(price, tick, expected):
    assert round_to_tick(price, tick) == expected


def test_round_to_tick_rejects_bad_tick():
    with pytest.raises(ValueError):
        round_to_tick(100.0, 0.0)


# --------------------------------------------------------------------------- risk_position_size


def test_one_percent_rule_worked_example():
    # equity 10 000 × 1 % = 100 at risk; |100 − 95| = 5 → 100 / 5 = 20 units.
    assert risk_position_size(10_000, 1.0, 100.0, 95.0, 1) == 20.0


def test_one_percent_rule_short_uses_absolute_distance():
    # short at 95, stop 100: |95 − 100| = 5 → 20 units.
    assert risk_position_size(10_000, 1.0, 95.0, 100.0, 1) == 20.0


def test_half_percent_risk():
    # 10 000 × 0.5 % = 50; 50 / 5 = 10 units.
    assert risk_position_size(10_000, 0.5, 100.0, 95.0, 1) == 10.0


def test_lot_rounding_down_whole_shares():
    # 100 / |100 − 97| = 33.33… → 33 shares (risk 99 ≤ 100).
    assert risk_position_size(10_000, 1.0, 100.0, 97.0, 1) == 33.0


def test_lot_rounding_down_btc_step():
    # 10 000 × 1 % = 100 USDT; |30 000 − 29 400| = 600 → 0.166666… BTC → 0.16666 at step 0.00001.
    q = risk_position_size(10_000, 1.0, 30_000.0, 29_400.0, 0.00001)
    assert q == 0.16666
    assert q * 600 <= 100.0  # 99.996 USDT at risk: never more than 1 %
    assert (q + 0.00001) * 600 > 100.0  # and one more lot would exceed it


def test_below_one_lot_is_zero():
    # equity 10 USDT × 1 % = 0.10; |60 000 − 40 000| = 20 000 → 0.000005 BTC < one lot of 0.00001 → 0.0.
    assert risk_position_size(10.0, 1.0, 60_000.0, 40_000.0, 0.00001) == 0.0
    # 1 000 × 1 % = 10 USD; |500 − 480| = 20 → 0.5 share < 1 share → 0.0.
    assert risk_position_size(1_000.0, 1.0, 500.0, 480.0, 1) == 0.0


def test_entry_equals_stop_raises():
    with pytest.raises(ValueError, match="zero"):
        risk_position_size(10_000, 1.0, 100.0, 100.0, 1)


@pytest.mark.parametrize("equity", [0.0, -500.0])
def test_non_positive_equity_raises(equity):
    with pytest.raises(ValueError, match="equity"):
        risk_position_size(equity, 1.0, 100.0, 95.0, 1)


@pytest.mark.parametrize(
    ("risk_pct", "entry", "stop"),
    [(0.0, 100.0, 95.0), (-1.0, 100.0, 95.0), (1.0, 0.0, 95.0), (1.0, 100.0, -5.0)],
)
def test_non_positive_risk_or_price_raises(risk_pct, entry, stop):
    with pytest.raises(ValueError):
        risk_position_size(10_000, risk_pct, entry, stop, 1)


def test_exact_lot_multiple_is_not_lost_to_float_error():
    # regression: with float arithmetic 100.3 − 100.1 = 0.20000000000000284, 100 / that = 499.99… → 499.
    # 10 000 × 1 % = 100 USD at risk; |100.3 − 100.1| = 0.2 → exactly 500 shares.
    assert risk_position_size(10_000, 1.0, 100.3, 100.1, 1) == 500.0


# --------------------------------------------------------------------------- liquidation_price


def test_liquidation_long_worked():
    # 100 × (1 − 1/5 + 0.004) = 100 × 0.804 = 80.4
    assert liquidation_price(100.0, 5, LONG, 0.004) == pytest.approx(80.4)


def test_liquidation_short_worked():
    # 100 × (1 + 1/5 − 0.004) = 100 × 1.196 = 119.6
    assert liquidation_price(100.0, 5, SHORT, 0.004) == pytest.approx(119.6)


def test_liquidation_other_cases():
    # 10×, mmr 0.5 %: 100 × (1 − 0.1 + 0.005) = 90.5
    assert liquidation_price(100.0, 10, LONG, 0.005) == pytest.approx(90.5)
    # 1×, mmr 0: a long is only liquidated at 0.
    assert liquidation_price(100.0, 1, LONG, 0.0) == pytest.approx(0.0)
    # 3× short ETH at 3 000, mmr 0.5 %: 3 000 × (1 + 1/3 − 0.005) = 3 985
    assert liquidation_price(3_000.0, 3, SHORT, 0.005) == pytest.approx(3_985.0)


def test_liquidation_rejects_leverage_below_one():
    with pytest.raises(ValueError):
        liquidation_price(100.0, 0.5, LONG, 0.004)


# --------------------------------------------------------------------------- technical_stop: ATR


def test_atr_stop_worked_example():
    # long 100 − 2 × 2.5 = 95.0 (already on a 0.01 tick)
    assert technical_stop(LONG, 100.0, 2.5, method="atr", tick_size=0.01) == 95.0
    # short 100 + 2 × 2.5 = 105.0
    assert technical_stop(SHORT, 100.0, 2.5, method="atr", tick_size=0.01) == 105.0


def test_atr_stop_long_rounds_down_away_from_entry():
    # 100 − 2 × 1.234 = 97.532; tick 0.05 → 1950.64 ticks → floor 1950 → 97.50 (nearest would be 97.55).
    assert technical_stop(LONG, 100.0, 1.234, method="atr", tick_size=0.05) == 97.5
    # tick 0.01: 97.532 → 97.53 (down)
    assert technical_stop(LONG, 100.0, 1.234, method="atr", tick_size=0.01) == 97.53


def test_atr_stop_short_rounds_up_away_from_entry():
    # 100 + 2 × 1.234 = 102.468; tick 0.05 → 2049.36 ticks → ceil 2050 → 102.50 (nearest would be 102.45).
    assert technical_stop(SHORT, 100.0, 1.234, method="atr", tick_size=0.05) == 102.5
    # tick 0.01: 102.468 → 102.47 (up)
    assert technical_stop(SHORT, 100.0, 1.234, method="atr", tick_size=0.01) == 102.47


def test_atr_multiple_is_used():
    # k = 3: 100 − 3 × 2 = 94
    assert technical_stop(LONG, 100.0, 2.0, method="atr", tick_size=0.01, atr_multiple=3.0) == 94.0


@pytest.mark.parametrize("atr", [0.0, -1.0, float("nan"), float("inf")])
def test_atr_must_be_positive_finite(atr):
    with pytest.raises(ValueError, match="ATR"):
        technical_stop(LONG, 100.0, atr, method="atr", tick_size=0.01)


def test_atr_stop_below_zero_raises():
    # long 1 − 2 × 1 = −1: not a price
    with pytest.raises(ValueError, match="loss side"):
        technical_stop(LONG, 1.0, 1.0, method="atr", tick_size=0.01)


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="unknown"):
        technical_stop(LONG, 100.0, 1.0, method="chandelier", tick_size=0.01)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- technical_stop: swing


def test_swing_stop_long_with_buffer():
    # swing low 96.3 − 0.25 × ATR 2 = 95.8; tick 0.25 → 383.2 ticks → floor 383 → 95.75
    assert technical_stop(LONG, 100.0, 2.0, method="swing", tick_size=0.25, swing_low=96.3) == 95.75


def test_swing_stop_short_with_buffer():
    # swing high 103.7 + 0.25 × 2 = 104.2; tick 0.25 → 416.8 ticks → ceil 417 → 104.25
    assert technical_stop(SHORT, 100.0, 2.0, method="swing", tick_size=0.25, swing_high=103.7) == 104.25


def test_swing_stop_custom_buffer():
    # 96.3 − 1.0 × 2 = 94.3 on a 0.01 tick
    assert technical_stop(LONG, 100.0, 2.0, method="swing", tick_size=0.01, swing_low=96.3, buffer_atr=1.0) == 94.3


def test_swing_low_above_entry_raises_for_long():
    # 101 − 0.25 × 2 = 100.5 ≥ entry 100: not a stop-loss
    with pytest.raises(ValueError, match="loss side"):
        technical_stop(LONG, 100.0, 2.0, method="swing", tick_size=0.01, swing_low=101.0)


def test_swing_high_below_entry_raises_for_short():
    # 98 + 0.25 × 2 = 98.5 ≤ entry 100
    with pytest.raises(ValueError, match="loss side"):
        technical_stop(SHORT, 100.0, 2.0, method="swing", tick_size=0.01, swing_high=98.0)


def test_swing_level_equal_to_entry_with_zero_buffer_raises():
    # stop 100 == entry 100: zero risk distance
    with pytest.raises(ValueError):
        technical_stop(LONG, 100.0, 2.0, method="swing", tick_size=0.01, swing_low=100.0, buffer_atr=0.0)


@pytest.mark.parametrize(("side", "kw"), [(LONG, {"swing_high": 110.0}), (SHORT, {"swing_low": 90.0}), (LONG, {"swing_low": float("nan")})])
def test_swing_stop_needs_the_right_level(side, kw):
    # a long needs the swing low (a swing high is no use), a short the swing high; NaN is missing
    with pytest.raises(ValueError, match="swing"):
        technical_stop(side, 100.0, 2.0, method="swing", tick_size=0.01, **kw)


# --------------------------------------------------------------------------- take_profit


def test_take_profit_2r_long():
    # 100 + 2 × |100 − 95| = 110
    assert take_profit(LONG, 100.0, 95.0, 2.0, 0.01) == 110.0


def test_take_profit_2r_short():
    # 100 − 2 × |100 − 105| = 90
    assert take_profit(SHORT, 100.0, 105.0, 2.0, 0.01) == 90.0


def test_take_profit_rounds_to_nearest_tick():
    # 100 + 2 × 2.47 = 104.94; tick 0.05 → 2098.8 ticks → 2099 → 104.95
    assert take_profit(LONG, 100.0, 97.53, 2.0, 0.05) == 104.95
    assert take_profit(LONG, 100.0, 97.53, 2.0, 0.01) == 104.94


def test_take_profit_non_positive_raises():
    # short 10, stop 15, 3R: 10 − 15 = −5
    with pytest.raises(ValueError, match="positive"):
        take_profit(SHORT, 10.0, 15.0, 3.0, 0.01)
