"""Technical stops and take-profits.

- ATR stop (Wilder, *New Concepts in Technical Trading Systems*, 1978): entry ∓ k × ATR.
- Swing stop: beyond the lowest low (long) / highest high (short) of the recent bars, pushed out
  by a buffer of ``buffer_atr`` × ATR so that a retest of the swing does not trigger it.
- Take-profit at ``r_multiple`` × the stop distance ("R multiple").
- The bounds on a provider's own stop and target (:func:`answer_levels_problem`): the stop
  within ``max_stop_atr`` × ATR of entry, the target within ``max_target_r`` R.
Prices in quote currency; results rounded to the tick size *away from entry* for stops (never a
tighter stop than computed) and to the nearest tick for targets.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

from trading_pipelines.domain.models import PositionSide
from trading_pipelines.domain.rules import fmt_num
from trading_pipelines.domain.sizing import round_to_tick

DEFAULT_MAX_STOP_ATR = 5.0
DEFAULT_MAX_TARGET_R = 10.0


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


def _price(x: float) -> str:
    """A price for a message: from 1, thousands separated with 2 decimals (more when it has them,
    ``1.2345``); below 1 ``fmt_num``; scientific for the absurd (``1e-300``, ``1e+300``)."""
    if not math.isfinite(x) or abs(x) >= 1e15 or (x != 0 and abs(x) < 1e-6):
        return f"{x:.4g}"
    if abs(x) < 1:
        return fmt_num(x)
    return f"{x:,.2f}" if abs(x - round(x, 2)) <= 1e-9 * abs(x) else f"{x:,.{max(2, 6 - len(str(int(abs(x)))))}f}"


def _times(r: float) -> str:
    return f"{r:,.2f}" if r < 1e6 else f"{r:.4g}"


def answer_levels_problem(
    side: PositionSide,
    entry: float,
    atr: float,
    stop: float | None,
    take_profit: float | None,
    *,
    own_stop: float,
    max_stop_atr: float = DEFAULT_MAX_STOP_ATR,
    max_target_r: float = DEFAULT_MAX_TARGET_R,
) -> str | None:
    """Why a provider's own ``stop``/``take_profit`` for an entry at ``entry`` are not credible, or
    ``None`` when they are (or were not given). Prices in quote currency; ``atr`` the window's ATR
    (quote currency, > 0); ``own_stop`` the planner's technical stop.

    - the stop on the loss side of entry, at most ``max_stop_atr`` × ATR from it;
    - the target on the profit side, at most ``max_target_r`` R from entry, where R (the risk per
      unit) is ``|entry − stop|`` of the provider's stop, or of ``own_stop`` when it gave none.

    Worked example: long, entry 64 000, ATR 850, stop 1e-300 → "stop 1e-300 is 75.29 ATR from
    entry 64,000.00 (max 5 ATR = 4,250.00)"; with stop 62 300 (2 ATR, R = 1 700) a target of
    1e300 is 5.882e+296 R (max 10 R = 81,000.00).

    Raises ``ValueError`` if ``atr`` is not a positive finite number.
    """
    if not (atr > 0 and math.isfinite(atr)):
        raise ValueError(f"ATR must be a positive number, got {atr}")
    long = side is PositionSide.LONG
    if stop is not None:
        if not math.isfinite(stop) or (stop >= entry if long else stop <= entry):
            return f"stop {_price(stop)} is not {'below' if long else 'above'} entry {_price(entry)} for a {side.value}"
        distance = abs(entry - stop)
        if not distance <= max_stop_atr * atr * (1 + 1e-12):
            return (f"stop {_price(stop)} is {_times(distance / atr)} ATR from entry {_price(entry)} "
                    f"(max {fmt_num(max_stop_atr)} ATR = {_price(max_stop_atr * atr)})")
    if take_profit is not None:
        if not math.isfinite(take_profit) or (take_profit <= entry if long else take_profit >= entry):
            return (f"take-profit {_price(take_profit)} is not {'above' if long else 'below'} entry {_price(entry)} "
                    f"for a {side.value}")
        ref, whose = (stop, "its stop") if stop is not None else (own_stop, "the planner's stop")
        risk = abs(entry - ref)
        if not risk > 0:
            return f"take-profit {_price(take_profit)} cannot be measured in R: {whose} {_price(ref)} is at entry"
        reward = abs(take_profit - entry)
        if not reward <= max_target_r * risk * (1 + 1e-12):
            return (f"take-profit {_price(take_profit)} is {_times(reward / risk)} R from entry {_price(entry)} "
                    f"(R = {_price(risk)} to {whose} {_price(ref)}; max {fmt_num(max_target_r)} R = "
                    f"{_price(entry + max_target_r * risk if long else entry - max_target_r * risk)})")
    return None
