"""Technical stops and take-profits.

- ATR stop (Wilder, *New Concepts in Technical Trading Systems*, 1978): entry ∓ k × ATR.
- Swing stop: beyond the lowest low (long) / highest high (short) of the recent bars, pushed out
  by a buffer of ``buffer_atr`` × ATR so that a retest of the swing does not trigger it.
- Take-profit at ``r_multiple`` × the stop distance ("R multiple").
Prices in quote currency; results rounded to the tick size *away from entry* for stops (never a
tighter stop than computed) and to the nearest tick for targets.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

from trading_pipelines.domain.models import PositionSide
from trading_pipelines.domain.sizing import round_to_tick


def _round(price: float, tick: float, up: bool) -> float:
    p, t = Decimal(str(price)), Decimal(str(tick))
    return float((p / t).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR) * t)


def technical_stop(
    side: PositionSide,
    entry: float,
    atr: float,
    *,
    method: Literal["atr", "swing"],
    tick_size: float,
    atr_multiple: float = 2.0,
    swing_low: float | None = None,
    swing_high: float | None = None,
    buffer_atr: float = 0.25,
) -> float:
    """Stop-loss price for a position entered at ``entry``.

    Raises ``ValueError`` if ATR is not a positive finite number, a swing level is missing, or the
    resulting stop is not on the loss side of entry (e.g. a swing low above entry for a long).

    Worked example: long, entry 100, ATR 2.5, ``atr`` with k = 2 → 95.0.
    """
    if not (atr > 0 and math.isfinite(atr)):
        raise ValueError(f"ATR must be a positive number, got {atr}")
    long = side is PositionSide.LONG
    if method == "atr":
        raw = entry - atr_multiple * atr if long else entry + atr_multiple * atr
    elif method == "swing":
        level = swing_low if long else swing_high
        if level is None or not math.isfinite(level):
            raise ValueError("swing stop needs the swing low (long) / swing high (short)")
        raw = level - buffer_atr * atr if long else level + buffer_atr * atr
    else:
        raise ValueError(f"unknown stop method {method!r}")
    stop = _round(raw, tick_size, up=not long)
    if (long and stop >= entry) or (not long and stop <= entry) or stop <= 0:
        raise ValueError(f"stop {stop} is not on the loss side of entry {entry} for a {side.value}")
    return stop


def take_profit(side: PositionSide, entry: float, stop: float, r_multiple: float, tick_size: float) -> float:
    """Target at ``r_multiple`` × |entry − stop| beyond entry. Worked example: long 100, stop 95, 2R → 110."""
    distance = abs(entry - stop)
    raw = entry + r_multiple * distance if side is PositionSide.LONG else entry - r_multiple * distance
    if raw <= 0:
        raise ValueError(f"take-profit {raw} is not a positive price")
    return round_to_tick(raw, tick_size)
