"""Indicators: worked properties on constructed bars and on the real BTC/USDT 4h sample data."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from trading_pipelines.config import BollingerParams, IndicatorConfig, MacdParams, WindowParam
from trading_pipelines.domain.indicators import (
    compute_indicators,
    indicator_columns,
    indicator_summary,
    required_bars,
    swing_levels,
)
from trading_pipelines.stores.market_data import CsvReplaySource

DEFAULT = IndicatorConfig()
# fits in 20 bars: RSI 14 needs 14, ADX 5 needs 10, MACD 3/6/3 needs 8, SMA 10 needs 10
SMALL = IndicatorConfig(
    rsi=WindowParam(window=14),
    macd=MacdParams(fast=3, slow=6, signal=3),
    atr=WindowParam(window=5),
    bollinger=BollingerParams(window=10),
    adx=WindowParam(window=5),
    ema=(5,),
    sma=(10,),
)


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    return CsvReplaySource().frame("BTC/USDT", "4h")


def make_bars(close: list[float], half_range: float = 1.0) -> pd.DataFrame:
    """Gapless bars: each opens at the previous close; high/low = close ± half_range."""
    close_s = pd.Series(close, dtype="float64")
    open_s = close_s.shift(1).fillna(close_s.iloc[0])
    index = pd.date_range("2025-01-01", periods=len(close), freq="4h", tz="UTC", name="open_time")
    return pd.DataFrame(
        {
            "open": open_s.to_numpy(),
            "high": (close_s + half_range).to_numpy(),
            "low": (close_s - half_range).to_numpy(),
            "close": close_s.to_numpy(),
            "volume": 1.0,
        },
        index=index,
    )


def test_columns_are_added_to_a_copy(btc):
    bars = btc.iloc[:150]
    frame = compute_indicators(bars, DEFAULT)
    assert list(frame.columns) == [*bars.columns, *indicator_columns(DEFAULT)]
    assert indicator_columns(DEFAULT)[-3:] == ["ema_20", "ema_50", "sma_100"]
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]  # input untouched
    pd.testing.assert_frame_equal(frame[bars.columns], bars)


def test_oscillators_stay_within_0_and_100_on_real_data(btc):
    frame = compute_indicators(btc, DEFAULT)
    for col in ("rsi", "adx", "adx_pos", "adx_neg"):
        values = frame[col].dropna()
        assert len(values) > 2000
        assert values.between(0, 100).all(), col
    bands = frame[["bb_upper", "bb_middle", "bb_lower"]].dropna()
    assert len(bands) == len(frame) - 19
    assert (bands["bb_upper"] >= bands["bb_middle"]).all() and (bands["bb_middle"] >= bands["bb_lower"]).all()
    assert (frame["atr"].dropna() > 0).all()


def test_warm_up_rows_are_nan_not_zero(btc):
    frame = compute_indicators(btc.iloc[:150], DEFAULT)
    # first defined row (0-based) with the default windows 14 / 12-26-9 / 20 / 20, 50 / 100
    first_valid = {
        "rsi": 13, "atr": 13, "adx_pos": 15, "adx_neg": 15, "adx": 27,
        "macd": 25, "macd_signal": 33, "macd_hist": 33,
        "bb_upper": 19, "ema_20": 19, "ema_50": 49, "sma_100": 99,
    }  # fmt: skip
    for col, row in first_valid.items():
        assert frame[col].iloc[:row].isna().all(), col
        assert frame[col].iloc[row:].notna().all(), col
    assert (frame[["atr", "adx", "adx_pos", "adx_neg"]] != 0).all().all()


def test_indicators_at_a_row_ignore_later_bars(btc):
    """No look-ahead: appending 60 later bars changes none of the first 200 rows."""
    short = compute_indicators(btc.iloc[:200], DEFAULT)
    longer = compute_indicators(btc.iloc[:260], DEFAULT)
    pd.testing.assert_frame_equal(longer.iloc[:200], short)


def test_every_close_rising_by_one_gives_rsi_100():
    frame = compute_indicators(make_bars([100.0 + i for i in range(20)]), SMALL)
    assert frame["rsi"].iloc[-1] == 100.0
    assert (frame["rsi"].dropna() == 100.0).all()
    assert frame["adx_neg"].iloc[-1] == 0.0  # no down-move at all: -DI is 0
    assert frame["macd"].iloc[-1] > 0


def test_moving_averages_of_a_constant_equal_the_constant():
    frame = compute_indicators(make_bars([50.0] * 20), SMALL)
    last = frame.iloc[-1]
    assert last["sma_10"] == pytest.approx(50.0, abs=1e-12)
    assert last["ema_5"] == pytest.approx(50.0, abs=1e-12)
    # zero spread: the bands collapse onto the middle
    assert last["bb_upper"] == last["bb_middle"] == last["bb_lower"] == pytest.approx(50.0, abs=1e-12)


def test_atr_of_a_constant_range_of_two_is_two():
    # high - low = 2 on every bar and each bar opens at the previous close, which lies inside
    # the next bar's range, so the true range is 2 on every bar
    frame = compute_indicators(make_bars([100.0 + 0.5 * i for i in range(20)]), SMALL)
    atr = frame["atr"]
    assert atr.iloc[:4].isna().all()  # window 5: warm-up rows 0-3
    assert np.allclose(atr.iloc[4:], 2.0)


def test_too_few_bars_says_needed_and_given(btc):
    assert required_bars(DEFAULT) == 100  # sma_100 is the longest
    assert required_bars(SMALL) == 14  # rsi 14
    with pytest.raises(ValueError, match="need at least 100 bars .* got 99"):
        compute_indicators(btc.iloc[:99], DEFAULT)
    compute_indicators(btc.iloc[:100], DEFAULT)  # exactly enough


def test_missing_or_nan_prices_are_rejected(btc):
    with pytest.raises(ValueError, match=r"lack columns \['high'\]"):
        compute_indicators(btc.iloc[:150].drop(columns="high"), DEFAULT)
    bars = btc.iloc[:150].copy()
    bars.iloc[7, bars.columns.get_loc("close")] = np.nan
    with pytest.raises(ValueError, match="close is NaN at row 7"):
        compute_indicators(bars, DEFAULT)


def test_summary_of_the_flash_crash_window():
    bars = CsvReplaySource().bars("BTC/USDT", "4h", end=datetime(2025, 10, 11, tzinfo=timezone.utc), limit=150)
    frame = compute_indicators(bars, DEFAULT)
    summary = indicator_summary(frame)
    assert set(summary) == {"close", *indicator_columns(DEFAULT)}
    assert summary["close"] == 112774.5  # the 2025-10-10 20:00Z bar
    assert summary["rsi"] == round(frame["rsi"].iloc[-1], 2)
    assert summary["atr"] == round(frame["atr"].iloc[-1], 2)
    # a −3.3 % bar after a −3.5 % bar: oversold, close below the lower band, −DI above +DI
    assert summary["rsi"] < 30
    assert summary["close"] < summary["bb_lower"]
    assert summary["adx_neg"] > summary["adx_pos"]
    assert all(isinstance(v, float) for v in summary.values())


def test_summary_keeps_undefined_values_as_nan(btc):
    """Consumers (rules_signal, prompts) read NaN as "warming up"; a missing key would be an error."""
    frame = compute_indicators(btc.iloc[:150], DEFAULT)
    frame.iloc[-1, frame.columns.get_loc("adx")] = np.nan  # e.g. ADX of degenerate data
    summary = indicator_summary(frame)
    assert set(summary) == {"close", *indicator_columns(DEFAULT)}
    assert np.isnan(summary["adx"])
    assert all(np.isfinite(v) for k, v in summary.items() if k != "adx")
    with pytest.raises(ValueError, match="non-empty frame"):
        indicator_summary(frame.iloc[:0])


def test_summary_precision_follows_the_price():
    # a sub-dollar price keeps 6 decimals instead of 2: 0.1 + i/1000 closes, SMA 10 of the last 10
    frame = compute_indicators(make_bars([0.1 + i / 1000 for i in range(20)], half_range=0.0005), SMALL)
    summary = indicator_summary(frame)
    assert summary["close"] == 0.119
    assert summary["sma_10"] == 0.1145  # mean of 0.110 ... 0.119
    assert summary["rsi"] == 100.0


def test_swing_levels_of_the_20_bars_up_to_the_crash(btc):
    bars = btc.loc[: pd.Timestamp("2025-10-10T20:00Z")]
    # lowest low: the crash bar itself (102000.0); highest high: 2025-10-08 16:00Z (124197.25)
    assert swing_levels(bars, 20) == (102000.0, 124197.25)
    assert swing_levels(bars, 1) == (102000.0, 117214.64)
    with pytest.raises(ValueError, match="need 5000 bars, got 1344"):
        swing_levels(bars, 5000)
    with pytest.raises(ValueError, match="lookback must be >= 1"):
        swing_levels(bars, 0)
