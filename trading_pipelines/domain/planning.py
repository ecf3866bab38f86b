"""The PLAN step: turn a signal into a trade intent (pure).

Entry reference price is the last closed bar's close. The order itself is a protective limit
(IOC at the next bar's open, priced ``max_entry_slippage_pct`` beyond the close: see
:mod:`costs`), so the worst price it can fill at is that limit. The stop is technical (see
:mod:`stops`), the size follows the fixed-fractional risk rule *at the limit* (see :mod:`sizing`):
``quantity = equity × risk_pct / |limit − stop|``, and ``risk_amount`` is the loss at the stop
from the limit, ``quantity × |limit − stop|`` — the most the trade can lose at its stop. The
target is ``take_profit_r`` × the stop distance from the close. The provider's own stop and
target are never used, but they must be credible (:func:`stops.answer_levels_problem`: the stop
within ``max_stop_atr`` × ATR of the close, the target within ``max_target_r`` R): an answer
whose levels are absurd (``take_profit: 1e300``, ``stop: 1e-300``) is not trusted to be right
about its action either. Anything that prevents a sound plan (a hold, low confidence — entries against
``min_confidence``, exits against ``min_exit_confidence`` —, indicators still warming
up, implausible provider levels, a size below one lot) becomes a NO_TRADE intent with its
reason — never an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from trading_pipelines.domain.costs import DEFAULT_MAX_ENTRY_SLIPPAGE_PCT, protective_limit
from trading_pipelines.domain.ids import intent_id
from trading_pipelines.domain.models import (
    InstrumentSpec,
    IntentKind,
    IntentStatus,
    Mode,
    PositionSide,
    Side,
    Signal,
    TradeIntent,
)
from trading_pipelines.domain.sizing import liquidation_price, risk_position_size
from trading_pipelines.domain.stops import (
    DEFAULT_MAX_STOP_ATR,
    DEFAULT_MAX_TARGET_R,
    answer_levels_problem,
    take_profit,
    technical_stop,
)


@dataclass(frozen=True)
class PlanParams:
    """Planning parameters from the strategy file. ``risk_per_trade_pct`` and
    ``max_entry_slippage_pct`` (the entry's protective band beyond the last close) in percent.
    ``max_stop_atr`` (ATR multiples) and ``max_target_r`` (R multiples): the bounds on the
    provider's own stop and target (the strategy's ``risk.max_stop_atr``/``risk.max_target_r``)."""

    risk_per_trade_pct: float = 1.0
    min_confidence: float = 0.55
    # Minimum confidence of an exit (sell/close). The strategy file's ``risk.min_exit_confidence``
    # (None there = ``min_confidence``) is resolved by the caller; the default 0.0 leaves exits ungated.
    min_exit_confidence: float = 0.0
    stop_method: Literal["atr", "swing"] = "atr"
    atr_multiple: float = 2.0
    buffer_atr: float = 0.25
    take_profit_r: float = 2.0
    leverage: float = 1.0
    margin_mode: Literal["isolated", "cross"] | None = None
    max_entry_slippage_pct: float = DEFAULT_MAX_ENTRY_SLIPPAGE_PCT
    max_stop_atr: float = DEFAULT_MAX_STOP_ATR
    max_target_r: float = DEFAULT_MAX_TARGET_R


@dataclass(frozen=True)
class MarketContext:
    """What the planner knows of the market at the window's end (quote currency)."""

    last_close: float
    atr: float
    swing_low: float
    swing_high: float


_ENTRY = {"buy": PositionSide.LONG, "long": PositionSide.LONG, "short": PositionSide.SHORT}
_EXIT = {"sell", "close"}


def plan_intent(signal: Signal, instrument: InstrumentSpec, equity: float, market: MarketContext, p: PlanParams,
                book: str = "live") -> TradeIntent:
    """Plan for ``signal``. Entry intents carry quantity, stop, target and (futures) leverage,
    margin and liquidation price; exit intents carry quantity 0, meaning "the whole position the
    venue reports at execution time" (the venue is the source of truth)."""
    base = dict(
        intent_id=intent_id(signal.strategy, signal.instrument, signal.window_end, book),
        strategy=signal.strategy,
        instrument=signal.instrument,
        window_end=signal.window_end,
        mode=signal.mode,
        equity=equity,
    )

    def no_trade(reason: str) -> TradeIntent:
        return TradeIntent(**base, kind=IntentKind.NONE, status=IntentStatus.NO_TRADE, reason=reason)

    if signal.no_trade_reason:
        return no_trade(f"signal failed: {signal.no_trade_reason}")
    if signal.action == "hold":
        return no_trade(signal.thesis if signal.thesis.lower().startswith("hold") else f"hold: {signal.thesis}")
    if signal.action in _EXIT:
        if not signal.confidence >= p.min_exit_confidence:
            return no_trade(f"exit confidence {signal.confidence:.2f} below minimum {p.min_exit_confidence:.2f}")
        return TradeIntent(**base, kind=IntentKind.EXIT, side=None, status=IntentStatus.PENDING,
                           entry=market.last_close, reason=f"{signal.action}: {signal.thesis}")
    if signal.confidence < p.min_confidence:
        return no_trade(f"confidence {signal.confidence:.2f} below minimum {p.min_confidence:.2f}")
    pos_side = _ENTRY[signal.action]
    entry = market.last_close
    try:
        stop = technical_stop(
            pos_side, entry, market.atr, method=p.stop_method, tick_size=instrument.tick_size,
            atr_multiple=p.atr_multiple, swing_low=market.swing_low, swing_high=market.swing_high, buffer_atr=p.buffer_atr,
        )
        target = take_profit(pos_side, entry, stop, p.take_profit_r, instrument.tick_size)
        implausible = answer_levels_problem(pos_side, entry, market.atr, signal.stop, signal.take_profit, own_stop=stop,
                                            max_stop_atr=p.max_stop_atr, max_target_r=p.max_target_r)
        if implausible is not None:
            return no_trade(f"{signal.provider} levels refused: {implausible}")
        limit = protective_limit(pos_side.entry_side, entry, p.max_entry_slippage_pct, instrument.tick_size)
        if (limit <= stop) if pos_side is PositionSide.LONG else (limit >= stop):
            raise ValueError(f"protective limit {limit} is not on the entry side of the stop {stop}")
        qty = risk_position_size(equity, p.risk_per_trade_pct, limit, stop, instrument.lot_step)
    except ValueError as e:
        return no_trade(f"cannot plan: {e}")
    if qty <= 0 or not math.isfinite(qty):
        return no_trade(f"size rounds below one lot ({instrument.lot_step}) at {p.risk_per_trade_pct}% risk")
    notional = qty * entry
    leverage = p.leverage if signal.mode is Mode.FUTURES else 1.0
    liq = (
        liquidation_price(entry, leverage, pos_side, instrument.maintenance_margin_rate)
        if signal.mode is Mode.FUTURES
        else None
    )
    return TradeIntent(
        **base,
        kind=IntentKind.ENTRY,
        side=pos_side.entry_side,
        position_side=pos_side,
        quantity=qty,
        entry=entry,
        stop=stop,
        take_profit=target,
        leverage=leverage,
        margin_mode=p.margin_mode if signal.mode is Mode.FUTURES else None,
        liquidation_price=liq,
        risk_amount=qty * float(abs(Decimal(str(limit)) - Decimal(str(stop)))),
        notional=notional,
        margin=notional / leverage,
        status=IntentStatus.PENDING,
        reason=f"{signal.action} ({signal.confidence:.2f}): {signal.thesis}",
    )


__all__ = ["PlanParams", "MarketContext", "plan_intent", "Side"]
