"""Worked-number tests for the paper venue's fill rules (domain.paper, pure)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from trading_pipelines.domain.models import Bar, OrderRole, PositionSide, Side
from trading_pipelines.domain.paper import (
    bracket_exit,
    limit_fill_price,
    market_fill_price,
    realized_pnl,
    stop_fill_price,
)

LONG, SHORT = PositionSide.LONG, PositionSide.SHORT
SL, TP = OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT
T0 = datetime(2024, 3, 1, 4, tzinfo=timezone.utc)


def bar(o: float, h: float, l: float, c: float | None = None) -> Bar:
    return Bar(open_time=T0, open=o, high=h, low=l, close=o if c is None else c, volume=1.0)


# --------------------------------------------------------------------------- market


def test_market_buy_pays_slippage():
    # 100 × (1 + 5 / 10 000) = 100.05
    assert market_fill_price(Side.BUY, bar(100, 101, 99), 5) == pytest.approx(100.05)


def test_market_sell_gives_up_slippage():
    # 100 × (1 − 0.0005) = 99.95
    assert market_fill_price(Side.SELL, bar(100, 101, 99), 5) == pytest.approx(99.95)


def test_market_fill_zero_slippage_is_the_open():
    assert market_fill_price(Side.BUY, bar(62_000, 62_500, 61_800, 62_100), 0) == 62_000


# --------------------------------------------------------------------------- limit


def test_limit_buy_fills_at_limit_when_range_reaches_it():
    # limit 98, bar opens 100, low 97.5 → min(100, 98) = 98
    assert limit_fill_price(Side.BUY, 98.0, bar(100, 101, 97.5)) == 98.0


def test_limit_buy_touch_fills():
    # low exactly 98
    assert limit_fill_price(Side.BUY, 98.0, bar(100, 101, 98.0)) == 98.0


def test_limit_buy_not_reached():
    # low 98.5 > limit 98
    assert limit_fill_price(Side.BUY, 98.0, bar(100, 101, 98.5)) is None


def test_limit_buy_gap_below_gets_the_open():
    # bar opens at 97 below the 98 limit → min(97, 98) = 97 (price improvement)
    assert limit_fill_price(Side.BUY, 98.0, bar(97, 99, 96)) == 97.0


def test_limit_sell():
    # limit 110: high 111 → max(100, 110) = 110; opens at 112 → 112; high 109 → no fill
    assert limit_fill_price(Side.SELL, 110.0, bar(100, 111, 99)) == 110.0
    assert limit_fill_price(Side.SELL, 110.0, bar(112, 113, 111)) == 112.0
    assert limit_fill_price(Side.SELL, 110.0, bar(100, 109, 99)) is None


# --------------------------------------------------------------------------- stop


def test_stop_sell_triggers_in_range():
    # trigger 95, low 94 → 95 × (1 − 0.0005) = 94.9525
    assert stop_fill_price(Side.SELL, 95.0, bar(100, 101, 94), 5) == pytest.approx(94.9525)


def test_stop_sell_gap_through_fills_at_open_less_slippage():
    # opens at 93 below the 95 trigger → min(93, 95) = 93 × 0.9995 = 92.9535
    assert stop_fill_price(Side.SELL, 95.0, bar(93, 94, 92), 5) == pytest.approx(92.9535)


def test_stop_sell_not_triggered():
    assert stop_fill_price(Side.SELL, 95.0, bar(100, 101, 95.5), 5) is None


def test_stop_buy():
    # trigger 105, high 106 → 105 × 1.0005 = 105.0525; gap open 107 → 107 × 1.0005 = 107.0535; high 104 → None
    assert stop_fill_price(Side.BUY, 105.0, bar(100, 106, 99), 5) == pytest.approx(105.0525)
    assert stop_fill_price(Side.BUY, 105.0, bar(107, 108, 106), 5) == pytest.approx(107.0535)
    assert stop_fill_price(Side.BUY, 105.0, bar(100, 104, 99), 5) is None


# --------------------------------------------------------------------------- bracket_exit: long, stop 95, target 110


def test_bracket_long_both_hit_stop_wins():
    # one bar spans 94 … 111: assume the worse outcome, stop at 95 × 0.9995 = 94.9525
    role, px = bracket_exit(LONG, 95.0, 110.0, bar(100, 111, 94), 5)
    assert role is SL and px == pytest.approx(94.9525)


def test_bracket_long_take_profit_only():
    # high 111 ≥ 110, low 99 > 95 → limit sell at 110, no slippage on a limit
    assert bracket_exit(LONG, 95.0, 110.0, bar(100, 111, 99), 5) == (TP, 110.0)


def test_bracket_long_stop_only():
    role, px = bracket_exit(LONG, 95.0, 110.0, bar(100, 105, 94), 5)
    assert role is SL and px == pytest.approx(94.9525)


def test_bracket_long_neither():
    assert bracket_exit(LONG, 95.0, 110.0, bar(100, 105, 96), 5) is None


def test_bracket_with_a_single_leg():
    assert bracket_exit(LONG, None, 110.0, bar(100, 111, 90), 5) == (TP, 110.0)
    assert bracket_exit(LONG, 95.0, None, bar(100, 120, 99), 5) is None
    assert bracket_exit(LONG, None, None, bar(100, 200, 1), 5) is None


def test_bracket_long_gap_open_above_target_takes_profit():
    # opens at 112 (above target 110): the resting sell limit fills at 112 before the later low of 94
    assert bracket_exit(LONG, 95.0, 110.0, bar(112, 113, 94), 5) == (TP, 112.0)


def test_bracket_short_gap_open_below_target_takes_profit():
    # short, target 90: a bar opening at 88 fills the resting buy limit at 88 even though its high reaches the stop
    assert bracket_exit(SHORT, 105.0, 90.0, bar(88, 106, 87), 5) == (TP, 88.0)


# --------------------------------------------------------------------------- bracket_exit: short, stop 105, target 90


def test_bracket_short_stop():
    # buy stop 105 hit by high 106 → 105 × 1.0005 = 105.0525
    role, px = bracket_exit(SHORT, 105.0, 90.0, bar(100, 106, 99), 5)
    assert role is SL and px == pytest.approx(105.0525)


def test_bracket_short_take_profit():
    # buy limit 90 reached by low 89 → min(100, 90) = 90
    assert bracket_exit(SHORT, 105.0, 90.0, bar(100, 101, 89), 5) == (TP, 90.0)


def test_bracket_short_both_hit_stop_wins():
    role, px = bracket_exit(SHORT, 105.0, 90.0, bar(100, 106, 89), 5)
    assert role is SL and px == pytest.approx(105.0525)


def test_bracket_short_gap_down_through_target():
    # opens at 88 below target 90 → min(88, 90) = 88
    assert bracket_exit(SHORT, 105.0, 90.0, bar(88, 89, 87), 5) == (TP, 88.0)


def test_bracket_short_gap_up_through_stop():
    # opens at 108 above stop 105 → 108 × 1.0005 = 108.054
    role, px = bracket_exit(SHORT, 105.0, 90.0, bar(108, 109, 107), 5)
    assert role is SL and px == pytest.approx(108.054)


def test_bracket_short_neither():
    assert bracket_exit(SHORT, 105.0, 90.0, bar(100, 104, 91), 5) is None


# --------------------------------------------------------------------------- realized_pnl


def test_realized_pnl_long():
    # (110 − 100) × 2 = +20
    assert realized_pnl(LONG, 100.0, 110.0, 2.0) == pytest.approx(20.0)
    # stopped: (94.9525 − 100) × 20 = −100.95
    assert realized_pnl(LONG, 100.0, 94.9525, 20.0) == pytest.approx(-100.95)


def test_realized_pnl_short():
    # −(90 − 100) × 3 = +30
    assert realized_pnl(SHORT, 100.0, 90.0, 3.0) == pytest.approx(30.0)
    # stopped: −(105.0525 − 100) × 2 = −10.105
    assert realized_pnl(SHORT, 100.0, 105.0525, 2.0) == pytest.approx(-10.105)


def test_realized_pnl_flat_exit_is_zero():
    assert realized_pnl(LONG, 100.0, 100.0, 5.0) == 0.0
