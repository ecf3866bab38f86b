"""Pre-trade guards (the VALIDATE step). Each guard returns a :class:`GuardResult`, PASS or FAIL
with a message carrying the numbers it compared. An intent is VALIDATED only if every guard passes.

Guards read the account as the *venue* reports it (:class:`AccountView`): the venue is the source
of truth for cash, positions and resting orders. Money in quote currency; ``*_pct`` in percent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from trading_pipelines.domain.costs import DEFAULT_MAX_ENTRY_SLIPPAGE_PCT, cash_price, entry_cost
from trading_pipelines.domain.models import (
    GuardResult,
    InstrumentSpec,
    IntentKind,
    Mode,
    Position,
    TradeIntent,
)

_EPS = 1e-9


@dataclass(frozen=True)
class AccountView:
    """The venue's account as seen by guards.

    ``free_cash``: spot, quote currency not tied up; futures, collateral not used as margin.
    ``equity``: cash + position value (see :class:`~trading_pipelines.domain.models.PortfolioSnapshot`).
    ``day_start_equity``: equity at 00:00 UTC of the intent's day (first snapshot of the day).
    ``resting_entries``: instruments with an entry order accepted but not yet filled.
    ``as_of``: the venue's clock for this instrument (paper: last bar processed), or None.
    """

    free_cash: float
    equity: float
    day_start_equity: float
    positions: tuple[Position, ...] = ()
    resting_entries: tuple[str, ...] = ()
    as_of: datetime | None = None


@dataclass(frozen=True)
class RiskLimits:
    """``fee_rate`` a fraction of notional (the venue's); ``max_entry_slippage_pct`` percent, the
    entry's protective band (see :mod:`~trading_pipelines.domain.costs`): the balance guard prices
    an entry at its protective limit, as the venue reserves it."""

    risk_per_trade_pct: float
    max_open_positions: int
    max_daily_loss_pct: float
    max_leverage: float = 1.0
    fee_rate: float = 0.0
    max_entry_slippage_pct: float = DEFAULT_MAX_ENTRY_SLIPPAGE_PCT


@dataclass(frozen=True)
class MarketHours:
    """Whether the market accepts the order at the intent's time (computed by ``calendars``)."""

    open: bool
    message: str


def _ok(name: str, msg: str) -> GuardResult:
    return GuardResult(guard=name, passed=True, message=msg)


def _fail(name: str, msg: str) -> GuardResult:
    return GuardResult(guard=name, passed=False, message=msg)


def guard_balance(intent: TradeIntent, acct: AccountView, limits: RiskLimits,
                  tick_size: float | None = None) -> GuardResult:
    """The entry's cost at its protective limit ≤ free cash: spot notional + fee, futures initial
    margin + fee on the notional (:func:`costs.entry_cost` at :func:`costs.cash_price`) — the very
    amount the venue reserves with the order, so an entry this guard passed is never refused for
    funds when it fills. ``tick_size`` rounds the limit as the order's is rounded (without it the
    limit is unrounded: for a buy a little higher, so never a smaller need).
    Worked example: 20 @ 100, 0.5 % band → 100.5; spot, 0.1 % fee → 2 010 + 2.01 = 2 012.01."""
    if intent.side is None or intent.entry is None:
        return _fail("balance", "entry without side or reference price")
    price = cash_price(intent.side, intent.entry, limits.max_entry_slippage_pct, tick_size)
    futures = intent.mode is Mode.FUTURES
    need = entry_cost(intent.quantity, price, intent.leverage if futures else 1.0, futures, limits.fee_rate)
    what = f"{'margin' if futures else 'notional'} + fee at {price:.10g}"
    if need <= acct.free_cash + _EPS:
        return _ok("balance", f"needs {need:.2f} ({what}) of {acct.free_cash:.2f} free")
    return _fail("balance", f"needs {need:.2f} ({what}) but only {acct.free_cash:.2f} is free")


def guard_risk_limit(intent: TradeIntent, acct: AccountView, limits: RiskLimits) -> GuardResult:
    """Risk at the stop (the planner's ``risk_amount``: from the protective limit, the worst fill)
    ≤ risk_per_trade_pct of equity; futures: leverage ≤ max and the stop triggers before the
    liquidation price."""
    cap = acct.equity * limits.risk_per_trade_pct / 100.0
    if intent.risk_amount > cap * (1 + 1e-9) + _EPS:
        return _fail("risk_limit", f"risk {intent.risk_amount:.2f} exceeds {limits.risk_per_trade_pct}% of equity ({cap:.2f})")
    if intent.mode is Mode.FUTURES:
        if intent.leverage > limits.max_leverage + _EPS:
            return _fail("risk_limit", f"leverage {intent.leverage}x exceeds max {limits.max_leverage}x")
        liq, stop = intent.liquidation_price, intent.stop
        if liq is None or stop is None:
            return _fail("risk_limit", "futures intent without liquidation price or stop")
        long = intent.position_side is not None and intent.position_side.value == "long"
        if (long and stop <= liq) or (not long and stop >= liq):
            return _fail("risk_limit", f"stop {stop} is beyond the liquidation price {liq:.2f}: liquidation would come first")
        return _ok("risk_limit", f"risk {intent.risk_amount:.2f} ≤ {cap:.2f}; {intent.leverage}x ≤ {limits.max_leverage}x; stop {stop} before liquidation {liq:.2f}")
    return _ok("risk_limit", f"risk {intent.risk_amount:.2f} ≤ {limits.risk_per_trade_pct}% of equity ({cap:.2f})")


def guard_daily_loss(intent: TradeIntent, acct: AccountView, limits: RiskLimits) -> GuardResult:
    """No new risk once equity is down ``max_daily_loss_pct`` from the day's starting equity."""
    loss = acct.day_start_equity - acct.equity
    cap = acct.day_start_equity * limits.max_daily_loss_pct / 100.0
    if loss >= cap - _EPS and cap > 0:
        return _fail("daily_loss", f"down {loss:.2f} today, limit {cap:.2f} ({limits.max_daily_loss_pct}%)")
    return _ok("daily_loss", f"today's P&L {-loss:+.2f}, limit -{cap:.2f}")


def guard_position_limit(intent: TradeIntent, acct: AccountView, limits: RiskLimits) -> GuardResult:
    """Open positions plus resting entries (other instruments) stay below ``max_open_positions``."""
    held = {p.instrument for p in acct.positions} | set(acct.resting_entries)
    held.discard(intent.instrument)
    if len(held) >= limits.max_open_positions:
        return _fail("position_limit", f"{len(held)} open of max {limits.max_open_positions}")
    return _ok("position_limit", f"{len(held)} open of max {limits.max_open_positions}")


def guard_duplicate_position(intent: TradeIntent, acct: AccountView, limits: RiskLimits) -> GuardResult:
    """No second entry on an instrument that already has a position or a resting entry at the venue."""
    if any(p.instrument == intent.instrument for p in acct.positions):
        pos = next(p for p in acct.positions if p.instrument == intent.instrument)
        return _fail("duplicate_position", f"venue already holds {pos.side.value} {pos.quantity} {intent.instrument}")
    if intent.instrument in acct.resting_entries:
        return _fail("duplicate_position", f"venue already has a resting entry order on {intent.instrument}")
    return _ok("duplicate_position", f"no position or resting entry on {intent.instrument}")


def guard_min_notional(intent: TradeIntent, instrument: InstrumentSpec) -> GuardResult:
    """Quantity ≥ the venue's minimum quantity and notional ≥ its minimum notional."""
    if intent.quantity < instrument.min_qty - _EPS:
        return _fail("min_notional", f"quantity {intent.quantity} below minimum {instrument.min_qty}")
    if intent.notional < instrument.min_notional - _EPS:
        return _fail("min_notional", f"notional {intent.notional:.2f} below minimum {instrument.min_notional}")
    return _ok("min_notional", f"quantity {intent.quantity} ≥ {instrument.min_qty}, notional {intent.notional:.2f} ≥ {instrument.min_notional}")


def guard_market_hours(hours: MarketHours) -> GuardResult:
    return _ok("market_hours", hours.message) if hours.open else _fail("market_hours", hours.message)


def guard_fresh_window(intent: TradeIntent, acct: AccountView) -> GuardResult:
    """Never place an order for a window the venue has already moved past (a late or replayed run)."""
    if acct.as_of is not None and acct.as_of > intent.window_end:
        return _fail("fresh_window", f"venue is at {acct.as_of.isoformat()}, window ended {intent.window_end.isoformat()}: a past window places no order")
    return _ok("fresh_window", f"window ends {intent.window_end.isoformat()}; venue at {acct.as_of.isoformat() if acct.as_of else 'start'}")


def guard_position_exists(intent: TradeIntent, acct: AccountView) -> GuardResult:
    """An exit needs a position to exit."""
    if any(p.instrument == intent.instrument for p in acct.positions):
        return _ok("position_exists", f"venue holds a position on {intent.instrument}")
    return _fail("position_exists", f"no position on {intent.instrument} to exit")


def run_guards(
    intent: TradeIntent,
    instrument: InstrumentSpec,
    acct: AccountView,
    limits: RiskLimits,
    hours: MarketHours,
) -> tuple[GuardResult, ...]:
    """All guards that apply to ``intent``, in a fixed order. Entries get the full set; exits get
    freshness, market hours and position-exists; a no-trade gets none."""
    if intent.kind is IntentKind.NONE:
        return ()
    if intent.kind is IntentKind.EXIT:
        return (guard_fresh_window(intent, acct), guard_market_hours(hours), guard_position_exists(intent, acct))
    return (
        guard_fresh_window(intent, acct),
        guard_market_hours(hours),
        guard_duplicate_position(intent, acct, limits),
        guard_position_limit(intent, acct, limits),
        guard_balance(intent, acct, limits, instrument.tick_size),
        guard_risk_limit(intent, acct, limits),
        guard_daily_loss(intent, acct, limits),
        guard_min_notional(intent, instrument),
    )
