"""Deterministic signal rules: the offline default provider (no API key, no network).

This is a plain trend-following rule, *not* an edge: it exists so a strategy runs end to end
without an LLM and so every branch of the pipeline has a predictable input. Pure functions; no
Dagster, no I/O.

Inputs are the last closed bar's indicator summary (``dict[str, float]``): ``close`` (quote
currency), ``rsi`` (0..100), ``macd_hist`` (quote currency), ``adx`` (0..100) and two EMA keys
(``ema_<n>``, quote currency) chosen by the caller as the fast and the slow average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trading_pipelines.domain.models import FuturesAction, Mode, SpotAction

RSI_LONG_MIN = 40.0
RSI_LONG_MAX = 70.0
RSI_SPOT_EXIT = 78.0
RSI_SHORT_MIN = 30.0
RSI_SHORT_MAX = 60.0
ADX_TREND_GONE = 18.0
EXIT_CONFIDENCE = 0.6
HOLD_CONFIDENCE = 0.5


@dataclass(frozen=True)
class RuleDecision:
    """The rule's verdict: ``action`` (a :class:`SpotAction` or :class:`FuturesAction` value),
    ``confidence`` in [0, 1] and a ``thesis`` naming the numbers that decided it."""

    action: str
    confidence: float
    thesis: str

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence} outside [0, 1]")


def entry_confidence(adx: float) -> float:
    """Confidence of an entry: ``clamp(0.5 + (min(adx, 50) - 20) / 60, 0.3, 0.95)``.

    ADX 20 → 0.5, ADX 35 → 0.75, ADX ≥ 47 → 0.95, ADX ≤ 8 → 0.3.
    """
    return min(max(0.5 + (min(adx, 50.0) - 20.0) / 60.0, 0.3), 0.95)


def fmt_num(x: float, signed: bool = False) -> str:
    """Compact human formatting: for |x| ≥ 1, ``max(2, 6 - integer digits)`` decimals with trailing
    zeros dropped; below 1, 6 significant digits; ``+`` prefix when ``signed``.
    ``84210.50`` → ``"84210.5"``, ``2.34567`` → ``"2.34567"``, ``70.0`` → ``"70"``."""
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 1:
        decimals = max(2, 6 - len(str(int(abs(x)))))
        s = f"{x:.{decimals}f}".rstrip("0").rstrip(".")
    else:
        s = f"{x:.6g}"
    if s in ("-0", "-0.0"):
        s = "0"
    if signed and not s.startswith("-"):
        s = "+" + s
    return s


def _label(key: str) -> str:
    """``ema_50`` → ``EMA50``; other keys upper-cased."""
    return key.replace("_", "").upper() if key.startswith(("ema_", "sma_")) else key.upper()


def rules_signal(summary: dict[str, float], mode: Mode, ema_fast: str, ema_slow: str) -> RuleDecision:
    """Decide one action from the last closed bar's indicators.

    Spot (long-only):

    - ``buy`` when close > slow EMA, fast EMA > slow EMA, MACD histogram > 0 and 40 ≤ RSI ≤ 70;
    - ``sell`` (exit) when (close < fast EMA and MACD histogram < 0) or RSI > 78;
    - otherwise ``hold``. (The buy and sell conditions cannot both hold.)

    Futures:

    - ``close`` when ADX < 18 (trend gone) — checked first: a trend-following rule does not open
      a position when it has just said the trend is gone;
    - ``long`` on the spot buy conditions;
    - ``short`` on the mirror: close < slow EMA, fast EMA < slow EMA, MACD histogram < 0 and
      30 ≤ RSI ≤ 60;
    - otherwise ``hold``.

    Confidence: entries :func:`entry_confidence` (ADX), exits 0.6, hold 0.5. If any of close, RSI,
    MACD histogram, ADX or the two EMAs is NaN (indicator warm-up) or infinite, the decision is
    ``hold`` with confidence 0 and a thesis naming the indicators that are warming up.

    Raises ``ValueError`` if a needed key is missing from ``summary`` or ``ema_fast == ema_slow``.
    """
    if ema_fast == ema_slow:
        raise ValueError(f"fast and slow EMA must differ (both {ema_fast!r})")
    needed = ("close", ema_fast, ema_slow, "macd_hist", "rsi", "adx")
    missing = [k for k in needed if k not in summary]
    if missing:
        raise ValueError(f"summary lacks {missing} (has {sorted(summary)})")
    not_ready = [k for k in needed if not math.isfinite(float(summary[k]))]
    if not_ready:
        return RuleDecision(
            action="hold",
            confidence=0.0,
            thesis=f"hold: indicators warming up (NaN): {', '.join(not_ready)}; no rule applied",
        )

    close = float(summary["close"])
    fast = float(summary[ema_fast])
    slow = float(summary[ema_slow])
    hist = float(summary["macd_hist"])
    rsi = float(summary["rsi"])
    adx = float(summary["adx"])
    f_l, s_l = _label(ema_fast), _label(ema_slow)
    c_s, f_s, s_s = fmt_num(close), fmt_num(fast), fmt_num(slow)
    h_s, r_s, a_s = fmt_num(hist, signed=True), fmt_num(rsi), fmt_num(adx)
    context = f"close {c_s}, {f_l} {f_s}, {s_l} {s_s}, MACD hist {h_s}, RSI {r_s}, ADX {a_s}"

    long_setup = close > slow and fast > slow and hist > 0 and RSI_LONG_MIN <= rsi <= RSI_LONG_MAX
    long_thesis = (
        f"close {c_s} > {s_l} {s_s}, {f_l} {f_s} > {s_l} {s_s}, MACD hist {h_s}, "
        f"RSI {r_s} in [{fmt_num(RSI_LONG_MIN)}, {fmt_num(RSI_LONG_MAX)}], ADX {a_s}"
    )

    if mode is Mode.SPOT:
        if long_setup:
            return RuleDecision(SpotAction.BUY.value, entry_confidence(adx), f"buy: {long_thesis}")
        reasons = []
        if close < fast and hist < 0:
            reasons.append(f"close {c_s} < {f_l} {f_s} and MACD hist {h_s}")
        if rsi > RSI_SPOT_EXIT:
            reasons.append(f"RSI {r_s} > {fmt_num(RSI_SPOT_EXIT)} (overbought)")
        if reasons:
            return RuleDecision(SpotAction.SELL.value, EXIT_CONFIDENCE, f"sell: {'; '.join(reasons)} ({context})")
        return RuleDecision(SpotAction.HOLD.value, HOLD_CONFIDENCE, f"hold: no rule fired ({context})")

    if mode is Mode.FUTURES:
        if adx < ADX_TREND_GONE:
            return RuleDecision(
                FuturesAction.CLOSE.value,
                EXIT_CONFIDENCE,
                f"close: ADX {a_s} < {fmt_num(ADX_TREND_GONE)} (trend gone) ({context})",
            )
        if long_setup:
            return RuleDecision(FuturesAction.LONG.value, entry_confidence(adx), f"long: {long_thesis}")
        if close < slow and fast < slow and hist < 0 and RSI_SHORT_MIN <= rsi <= RSI_SHORT_MAX:
            return RuleDecision(
                FuturesAction.SHORT.value,
                entry_confidence(adx),
                f"short: close {c_s} < {s_l} {s_s}, {f_l} {f_s} < {s_l} {s_s}, MACD hist {h_s}, "
                f"RSI {r_s} in [{fmt_num(RSI_SHORT_MIN)}, {fmt_num(RSI_SHORT_MAX)}], ADX {a_s}",
            )
        return RuleDecision(FuturesAction.HOLD.value, HOLD_CONFIDENCE, f"hold: no rule fired ({context})")

    raise ValueError(f"unknown mode {mode!r}")
