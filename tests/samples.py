"""Shared test inputs."""

from __future__ import annotations


def indicator_summary(**overrides: float) -> dict[str, float]:
    """A BTC 4h-like indicator summary in an uptrend (close above EMA20 > EMA50, MACD up, RSI 58)."""
    s = {
        "close": 84210.5,
        "ema_20": 83900.0,
        "ema_50": 83100.2,
        "sma_100": 80500.0,
        "rsi": 58.1,
        "macd": 310.2,
        "macd_signal": 189.8,
        "macd_hist": 120.4,
        "atr": 950.0,
        "bb_upper": 85500.0,
        "bb_middle": 83700.0,
        "bb_lower": 81900.0,
        "adx": 27.3,
        "adx_pos": 28.0,
        "adx_neg": 14.0,
    }
    s.update(overrides)
    return s
