"""Technical indicators over OHLCV bars, computed with the ``ta`` library (no hand-written math).

Pure functions: no Dagster, no I/O. Input frames have the OHLCV shape of
``trading_pipelines.stores.market_data`` (rows are bars in time order; prices in quote
currency). Every indicator at row T depends only on rows <= T (no look-ahead), and is NaN during
its warm-up rather than a made-up 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from ta.momentum import RSIIndicator
from ta.trend import ADXIndicator, EMAIndicator, MACD, SMAIndicator
from ta.volatility import AverageTrueRange, BollingerBands

if TYPE_CHECKING:  # the strategy file's indicator block; the domain takes any object with these fields
    from trading_pipelines.config import IndicatorConfig

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
#: indicator columns on a 0-100 scale (summarised with 2 decimals); the rest are in quote currency
OSCILLATOR_COLUMNS: frozenset[str] = frozenset({"rsi", "adx", "adx_pos", "adx_neg"})
_FIXED_COLUMNS: tuple[str, ...] = (
    "rsi", "macd", "macd_signal", "macd_hist", "atr",
    "bb_upper", "bb_middle", "bb_lower", "adx", "adx_pos", "adx_neg",
)  # fmt: skip


def indicator_columns(cfg: IndicatorConfig) -> list[str]:
    """Names of the columns :func:`compute_indicators` adds, in order."""
    return [*_FIXED_COLUMNS, *(f"ema_{n}" for n in cfg.ema), *(f"sma_{n}" for n in cfg.sma)]


def required_bars(cfg: IndicatorConfig) -> int:
    """Fewest bars for which every indicator is defined on the last row.

    RSI w: w; MACD: slow + signal − 1; ATR w: w; Bollinger w: w; ADX w: 2w (ta's +DI/−DI are
    defined from row w+1, ADX from row 2w−1, 0-based); EMA/SMA n: n.
    """
    return max(
        cfg.rsi.window,
        cfg.macd.slow + cfg.macd.signal - 1,
        cfg.atr.window,
        cfg.bollinger.window,
        2 * cfg.adx.window,
        *cfg.ema,
        *cfg.sma,
    )


def compute_indicators(bars: pd.DataFrame, cfg: IndicatorConfig) -> pd.DataFrame:
    """A copy of ``bars`` with indicator columns added (see :func:`indicator_columns`).

    ``bars``: OHLCV rows in time order (needs ``high``, ``low``, ``close``; other columns kept).
    Added: ``rsi`` (0-100), ``macd``, ``macd_signal``, ``macd_hist`` (quote currency),
    ``atr`` (quote currency), ``bb_upper``, ``bb_middle``, ``bb_lower`` (quote currency),
    ``adx``, ``adx_pos``, ``adx_neg`` (0-100), ``ema_<n>``, ``sma_<n>`` (quote currency).
    Warm-up rows are NaN (ta writes 0 for ATR/ADX warm-up; those are converted to NaN).

    Raises ValueError if a price column is missing or has NaN, or if there are fewer rows than
    :func:`required_bars` (the message gives needed vs given).
    """
    missing = [c for c in ("high", "low", "close") if c not in bars.columns]
    if missing:
        raise ValueError(f"compute_indicators: bars lack columns {missing} (have {list(bars.columns)})")
    for col in ("high", "low", "close"):
        nan = bars[col].isna().to_numpy().nonzero()[0]
        if len(nan):
            raise ValueError(f"compute_indicators: {col} is NaN at row {int(nan[0])} ({bars.index[nan[0]]})")
    need = required_bars(cfg)
    if len(bars) < need:
        raise ValueError(f"compute_indicators: need at least {need} bars for this indicator set, got {len(bars)}")

    out = bars.copy()
    high, low, close = (out[c].astype("float64") for c in ("high", "low", "close"))

    out["rsi"] = RSIIndicator(close, window=cfg.rsi.window).rsi()

    macd = MACD(close, window_slow=cfg.macd.slow, window_fast=cfg.macd.fast, window_sign=cfg.macd.signal)
    out["macd"] = macd.macd()
    out["macd_signal"] = macd.macd_signal()
    out["macd_hist"] = macd.macd_diff()

    w = cfg.atr.window
    atr = AverageTrueRange(high, low, close, window=w).average_true_range().to_numpy(copy=True)
    atr[: w - 1] = np.nan  # ta fills the warm-up with 0
    out["atr"] = atr

    bb = BollingerBands(close, window=cfg.bollinger.window, window_dev=cfg.bollinger.std)
    out["bb_upper"] = bb.bollinger_hband()
    out["bb_middle"] = bb.bollinger_mavg()
    out["bb_lower"] = bb.bollinger_lband()

    w = cfg.adx.window
    adx = ADXIndicator(high, low, close, window=w)
    for col, series, first_valid in (
        ("adx", adx.adx(), 2 * w - 1),
        ("adx_pos", adx.adx_pos(), w + 1),
        ("adx_neg", adx.adx_neg(), w + 1),
    ):
        values = series.to_numpy(copy=True)
        values[:first_valid] = np.nan  # ta fills the warm-up with 0
        out[col] = values

    for n in cfg.ema:
        out[f"ema_{n}"] = EMAIndicator(close, window=n).ema_indicator()
    for n in cfg.sma:
        out[f"sma_{n}"] = SMAIndicator(close, window=n).sma_indicator()
    return out


def _price_decimals(close: float) -> int:
    """Decimals that keep about 6-7 significant digits of a price (BTC 104381.03 → 2, DOGE 0.1 → 6)."""
    if not (math.isfinite(close) and close > 0):
        return 2
    return max(2, 5 - math.floor(math.log10(close)))


def indicator_summary(frame: pd.DataFrame) -> dict[str, float]:
    """Last row of a :func:`compute_indicators` frame as ``{name: value}``, for prompts and metadata.

    Keys: ``close`` and every indicator column present (``rsi``, ``macd``..., ``ema_<n>``,
    ``sma_<n>``). Oscillators (0-100: rsi, adx, adx_pos, adx_neg) are rounded to 2 decimals;
    quote-currency values to the precision of the close (2 decimals for BTC, more for small
    prices). Every key is always present: an indicator undefined on the last row (warm-up,
    degenerate data) is ``nan``, which consumers read as "not ready" (``rules_signal`` holds,
    prompts print "n/a"). Raises ValueError on an empty frame or one without ``close``.
    """
    if frame.empty or "close" not in frame.columns:
        raise ValueError("indicator_summary: need a non-empty frame with a close column")
    last = frame.iloc[-1]
    close = float(last["close"])
    decimals = _price_decimals(close)
    names = ["close", *(c for c in frame.columns if c in _FIXED_COLUMNS or c.startswith(("ema_", "sma_")))]
    summary: dict[str, float] = {}
    for name in names:
        value = float(last[name])
        summary[name] = round(value, 2 if name in OSCILLATOR_COLUMNS else decimals) if math.isfinite(value) else math.nan
    return summary


def swing_levels(bars: pd.DataFrame, lookback: int) -> tuple[float, float]:
    """``(lowest low, highest high)`` of the last ``lookback`` bars, in quote currency.

    Raises ValueError if ``lookback`` < 1 or there are fewer than ``lookback`` bars.
    """
    if lookback < 1:
        raise ValueError(f"swing_levels: lookback must be >= 1, got {lookback}")
    if len(bars) < lookback:
        raise ValueError(f"swing_levels: need {lookback} bars, got {len(bars)}")
    window = bars.iloc[-lookback:]
    return float(window["low"].min()), float(window["high"].max())
