"""The deterministic trend-following rule (domain.rules), on hand-built indicator summaries.

Base spot/long setup: close 84210.5 > EMA50 83100.2, EMA20 83900 > EMA50, MACD hist +120.4,
RSI 58.1, ADX 27.3 → entry confidence 0.5 + (27.3 - 20) / 60 = 0.621667.
"""

from __future__ import annotations

import math

import pytest
from samples import indicator_summary

from trading_pipelines.domain.models import Mode
from trading_pipelines.domain.rules import RuleDecision, entry_confidence, rules_signal

NAN = float("nan")


def base(**overrides: float) -> dict[str, float]:
    return indicator_summary(**overrides)


def bear(**overrides: float) -> dict[str, float]:
    """Mirror setup: close 82000 < EMA50 83100, EMA20 82500 < EMA50, MACD hist -80, RSI 42, ADX 30."""
    s = base(close=82000.0, ema_20=82500.0, ema_50=83100.0, macd_hist=-80.0, rsi=42.0, adx=30.0)
    s.update(overrides)
    return s


def spot(s: dict[str, float]) -> RuleDecision:
    return rules_signal(s, Mode.SPOT, "ema_20", "ema_50")


def fut(s: dict[str, float]) -> RuleDecision:
    return rules_signal(s, Mode.FUTURES, "ema_20", "ema_50")


# ---- spot -------------------------------------------------------------------------------------


def test_spot_buy_names_the_numbers_and_scales_confidence_with_adx():
    d = spot(base())
    assert d.action == "buy"
    assert d.confidence == pytest.approx(0.5 + 7.3 / 60)  # 0.621667
    assert "close 84210.5 > EMA50 83100.2" in d.thesis
    assert "EMA20 83900 > EMA50 83100.2" in d.thesis
    assert "MACD hist +120.4" in d.thesis
    assert "RSI 58.1" in d.thesis and "ADX 27.3" in d.thesis


@pytest.mark.parametrize(
    ("rsi", "action"),
    [(70.0, "buy"), (70.01, "hold"), (40.0, "buy"), (39.99, "hold")],
)
def test_spot_buy_rsi_band_is_inclusive(rsi, action):
    assert spot(base(rsi=rsi)).action == action


@pytest.mark.parametrize(
    "overrides",
    [
        {"close": 83100.2},  # close == EMA50: not strictly above
        {"ema_20": 83100.2},  # EMA20 == EMA50
        {"macd_hist": 0.0},  # histogram must be > 0
    ],
)
def test_spot_buy_needs_strict_inequalities(overrides):
    d = spot(base(**overrides))
    assert d.action == "hold"
    assert d.confidence == 0.5


def test_spot_sell_on_close_below_fast_ema_with_negative_histogram():
    d = spot(base(close=83500.0, macd_hist=-45.5))  # 83500 < EMA20 83900
    assert (d.action, d.confidence) == ("sell", 0.6)
    assert "close 83500 < EMA20 83900 and MACD hist -45.5" in d.thesis


def test_spot_sell_on_overbought_rsi_even_in_an_uptrend():
    assert spot(base(rsi=78.01)).action == "sell"
    d = spot(base(rsi=78.0))  # not > 78, and above the buy band → hold
    assert (d.action, d.confidence) == ("hold", 0.5)


def test_spot_hold_when_below_fast_ema_but_histogram_positive():
    d = spot(base(close=83000.0))  # below both EMAs (no buy), hist +120.4 (no momentum exit)
    assert d.action == "hold"
    assert "no rule fired" in d.thesis and "close 83000" in d.thesis


def test_spot_never_shorts():
    d = spot(bear())
    assert d.action == "sell"  # bear setup exits, it cannot open a short in spot


# ---- confidence -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adx", "expected"),
    [(35.0, 0.75), (20.0, 0.5), (47.0, 0.95), (60.0, 0.95), (5.0, 0.3), (8.0, 0.3), (11.0, 0.35)],
)
def test_entry_confidence_formula_and_clamps(adx, expected):
    # 0.5 + (min(adx, 50) - 20) / 60, clamped to [0.3, 0.95]; adx 60 → 1.0 → 0.95; adx 5 → 0.25 → 0.3
    assert entry_confidence(adx) == pytest.approx(expected)


def test_buy_confidence_at_adx_35_is_0_75():
    assert spot(base(adx=35.0)).confidence == pytest.approx(0.75)


# ---- futures ----------------------------------------------------------------------------------


def test_futures_long_on_the_spot_buy_conditions():
    d = fut(base(adx=35.0))
    assert d.action == "long"
    assert d.confidence == pytest.approx(0.75)


def test_futures_short_mirror():
    d = fut(bear())
    assert d.action == "short"
    assert d.confidence == pytest.approx(0.5 + 10 / 60)  # ADX 30 → 0.666667
    assert "close 82000 < EMA50 83100" in d.thesis
    assert "EMA20 82500 < EMA50 83100" in d.thesis
    assert "MACD hist -80" in d.thesis


@pytest.mark.parametrize(("rsi", "action"), [(60.0, "short"), (60.01, "hold"), (30.0, "short"), (29.99, "hold")])
def test_futures_short_rsi_band_is_inclusive(rsi, action):
    assert fut(bear(rsi=rsi)).action == action


def test_futures_close_when_trend_gone_takes_priority():
    d = fut(base(adx=17.9))  # long setup, but ADX < 18
    assert (d.action, d.confidence) == ("close", 0.6)
    assert "ADX 17.9 < 18" in d.thesis
    assert fut(base(adx=18.0)).action == "long"  # 18 is not < 18
    assert fut(bear(adx=12.0)).action == "close"


def test_futures_hold_and_never_spot_actions():
    d = fut(base(macd_hist=-10.0))  # uptrend EMAs, negative histogram: neither long nor short
    assert (d.action, d.confidence) == ("hold", 0.5)
    assert fut(base(rsi=79.0)).action == "hold"  # the spot overbought exit is not a futures rule


# ---- warm-up / errors -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["ema_50", "rsi", "macd_hist", "adx", "close", "ema_20"])
@pytest.mark.parametrize("mode", [Mode.SPOT, Mode.FUTURES])
def test_nan_means_hold_with_zero_confidence_naming_the_indicator(key, mode):
    d = rules_signal(base(**{key: NAN}), mode, "ema_20", "ema_50")
    assert (d.action, d.confidence) == ("hold", 0.0)
    assert "warming up" in d.thesis and key in d.thesis


def test_nan_in_unused_indicator_is_ignored():
    assert spot(base(sma_100=NAN, bb_upper=NAN)).action == "buy"


def test_missing_key_and_same_ema_raise():
    s = base()
    del s["ema_50"]
    with pytest.raises(ValueError, match="ema_50"):
        spot(s)
    with pytest.raises(ValueError, match="differ"):
        rules_signal(base(), Mode.SPOT, "ema_20", "ema_20")


def test_decision_is_frozen_and_confidence_bounded():
    d = spot(base())
    with pytest.raises(AttributeError):
        d.action = "sell"  # type: ignore[misc]
    with pytest.raises(ValueError):
        RuleDecision("hold", 1.5, "x")
    assert not math.isnan(d.confidence)
