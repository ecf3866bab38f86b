"""The account step's functional core (pure: no I/O, no ledger, no venue).

:func:`decide_window` takes the book as the venue reported it at the start of the window (an
:class:`~trading_pipelines.domain.guards.AccountView`), what the ledger already decided for the
window, the window's signals and market contexts and the limits, and returns one
:class:`Decision` per instrument: the intent (planned: technical stop, 1 %-risk sizing), its
guard results, the statuses it goes through and the command for the execution engine (send,
await confirmation, dry run, or nothing). Instruments are decided in name order; each later one
sees the cash and the resting entries the earlier ones' sends take (the same reserve the venue
holds back, :func:`~trading_pipelines.domain.paper.entry_reserve`), exactly as the venue will.

The thin shell around it (:mod:`.window`) reads the view once, calls this, then applies the
decisions: the ledger's write-ahead of every leg, the venue, then one ledger write set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from trading_pipelines.domain.guards import (
    AccountView,
    MarketHours,
    RiskLimits,
    guard_balance,
    guard_duplicate_position,
    guard_fresh_window,
    guard_position_exists,
    guard_position_limit,
    run_guards,
)
from trading_pipelines.domain.models import GuardResult, InstrumentSpec, IntentKind, IntentStatus, Signal, TradeIntent
from trading_pipelines.domain.paper import entry_reserve
from trading_pipelines.domain.planning import MarketContext, PlanParams, plan_intent

NAN_MARKET = MarketContext(math.nan, math.nan, math.nan, math.nan)

Command = Literal["send", "await_confirmation", "dry_run", "none"]


@dataclass(frozen=True)
class Decision:
    """One instrument's outcome of the window.

    ``intent``: the plan as recorded (status PENDING, or NO_TRADE for a no-trade). ``stored``: the
    ledger's own intent was kept (it left PENDING in an earlier run: a re-run never overwrites
    what was decided). ``guards``: results to record now (empty when none ran). ``statuses``: the
    transitions to record after PENDING, each with its reason, in order. ``command``: what the
    engine is asked to do. ``reserve``: quote currency the venue holds back for a sent entry."""

    intent: TradeIntent
    stored: bool = False
    guards: tuple[GuardResult, ...] = ()
    statuses: tuple[tuple[IntentStatus, str], ...] = ()
    command: Command = "none"
    reserve: float = 0.0

    @property
    def final_status(self) -> IntentStatus:
        return self.statuses[-1][0] if self.statuses else self.intent.status


@dataclass(frozen=True)
class WindowInputs:
    """What the pure step needs beside the signals. ``specs``: each instrument's trading rules
    (the venue's lot/tick/min-notional where it publishes them); ``hours``: whether each market
    is open at the window (calendars); ``late``: the venue's clock when it is already past the
    window (a late run plans nothing); ``stored``: intents the ledger already holds for this
    window that left PENDING, with their stored guards; ``live``: (allowed, why) of the live
    switch on a real venue (None: a simulated venue, always sends)."""

    strategy: str
    book: str
    window_end: datetime
    limits: RiskLimits
    params: PlanParams
    specs: dict[str, InstrumentSpec]
    hours: dict[str, MarketHours]
    fee_rate: float = 0.0
    late: datetime | None = None
    stored: dict[str, tuple[TradeIntent, tuple[GuardResult, ...]]] = field(default_factory=dict)
    confirm_manual: bool = False
    live: tuple[bool, str] | None = None
    bar: timedelta | None = None
    absent: frozenset[str] = frozenset()  # instruments with no intent on record for this window (the shell's hint)


def sane_to_send(intent: TradeIntent, guards: tuple[GuardResult, ...] | list[GuardResult]) -> tuple[bool, str]:
    """The last invariant before money moves: a VALIDATED intent with guards on record, every one
    passed, and (entries) a positive size with the stop on the loss side of entry."""
    if intent.status is not IntentStatus.VALIDATED:
        return False, f"status is {intent.status.value}, not VALIDATED"
    if not guards:
        return False, "no guard results on record"
    if not all(g.passed for g in guards):
        return False, "a guard failed: " + ", ".join(g.guard for g in guards if not g.passed)
    if intent.kind is IntentKind.ENTRY:
        if not (intent.quantity > 0 and intent.entry and intent.stop and intent.position_side):
            return False, "entry without size, entry price, stop or side"
        if (intent.stop < intent.entry) != (intent.position_side.value == "long"):
            return False, f"stop {intent.stop} is on the wrong side of entry {intent.entry}"
    elif intent.kind is not IntentKind.EXIT:
        return False, "a no-trade intent has nothing to send"
    return True, "ok"


def actionable(signal: Signal) -> bool:
    """Whether a signal can become an order (a buy, sell, long, short or close that did not fail):
    only such a window needs the guards' full view of the book."""
    return signal.action != "hold" and not signal.no_trade_reason


def plan(signal: Signal, market: MarketContext | None, inputs: WindowInputs, view: AccountView) -> TradeIntent:
    """PLAN: the intent for ``signal`` on the book's equity. A late window or a window without a
    market context plans a no-trade naming why; a spot sell / futures close with nothing held is a
    hold (nothing to exit), not an order for the guards to refuse."""
    spec = inputs.specs[signal.instrument]
    if inputs.late is not None:
        late = signal.model_copy(update={
            "no_trade_reason": f"late review: the account is at {inputs.late.isoformat()}, past the window end "
                               f"{signal.window_end.isoformat()}; a past window plans no trade"})
        return plan_intent(late, spec, 0.0, NAN_MARKET, inputs.params, inputs.book)
    if market is None:
        sig = signal if signal.no_trade_reason else signal.model_copy(update={"no_trade_reason": "no market context"})
        return plan_intent(sig, spec, 0.0, NAN_MARKET, inputs.params, inputs.book)
    if signal.action in ("sell", "close") and not signal.no_trade_reason and not any(
            p.instrument == signal.instrument for p in view.positions):
        signal = signal.model_copy(update={"action": "hold", "thesis": f"hold: {signal.action} signal but no "
                                           f"{signal.instrument} position to exit ({signal.thesis})"})
    return plan_intent(signal, spec, view.equity, market, inputs.params, inputs.book)


def validate(intent: TradeIntent, inputs: WindowInputs, view: AccountView
             ) -> tuple[tuple[GuardResult, ...], IntentStatus, str]:
    """VALIDATE: every guard on ``view``; (results, VALIDATED or REJECTED, the reason)."""
    guards = tuple(run_guards(intent, inputs.specs[intent.instrument], view, inputs.limits, inputs.hours[intent.instrument]))
    failed = [g for g in guards if not g.passed]
    if failed:
        return guards, IntentStatus.REJECTED, "; ".join(f"{g.guard}: {g.message}" for g in failed)
    return guards, IntentStatus.VALIDATED, "all guards passed"


def decide_one(intent: TradeIntent, inputs: WindowInputs, view: AccountView,
               guards: tuple[GuardResult, ...] | None = None) -> Decision:
    """VALIDATE → EXECUTE (decision only) of one planned intent on ``view``. ``guards``: results
    already on record (a stored VALIDATED intent being executed); else the guards run now."""
    if intent.kind is IntentKind.NONE:
        return Decision(intent)
    statuses: list[tuple[IntentStatus, str]] = []
    if guards is None:
        guards, status, reason = validate(intent, inputs, view)
        if status is IntentStatus.REJECTED:
            return Decision(intent, guards=guards, statuses=((status, reason),))
        statuses.append((status, reason))
        new_guards = guards
    else:
        new_guards = ()
    validated = intent.model_copy(update={"status": IntentStatus.VALIDATED})
    ok, why = sane_to_send(validated, guards)
    if not ok:
        return Decision(intent, guards=new_guards, statuses=(*statuses, (IntentStatus.FAILED, f"not sent: {why}")))
    if inputs.confirm_manual:
        return Decision(intent, guards=new_guards, statuses=(*statuses, (
            IntentStatus.AWAITING_CONFIRMATION, "execution.confirm is manual: `trading-pipelines confirm "
                                                + intent.intent_id + "`")), command="await_confirmation")
    if inputs.live is not None and not inputs.live[0]:
        return Decision(intent, guards=new_guards, statuses=(*statuses, (IntentStatus.DRY_RUN, inputs.live[1])),
                        command="dry_run")
    reserve = 0.0
    if intent.kind is IntentKind.ENTRY:
        spec = inputs.specs[intent.instrument]
        reserve = entry_reserve(intent.quantity, intent.entry, intent.leverage, intent.mode.value == "futures",
                                inputs.fee_rate, side=intent.side, max_entry_slippage_pct=inputs.limits.max_entry_slippage_pct,
                                tick_size=spec.tick_size)
    return Decision(intent, guards=new_guards, statuses=tuple(statuses), command="send", reserve=reserve)


def recheck(intent: TradeIntent, view: AccountView, limits: RiskLimits, tick_size: float | None,
            check_fresh: bool = True) -> tuple[tuple[GuardResult, ...], str | None]:
    """The pre-submit re-check of a stored intent about to be sent (time and other instruments'
    runs may have invalidated it): the guards it re-ran, prefixed ``pre_submit_``, and the reason
    to CANCEL it (None: send). ``check_fresh`` False: the caller has its own staleness rule (a
    manual confirmation's expiry)."""
    checks = [guard_fresh_window(intent, view)] if check_fresh else []
    if intent.kind is IntentKind.ENTRY:
        checks += [guard_duplicate_position(intent, view, limits), guard_position_limit(intent, view, limits),
                   guard_balance(intent, view, limits, tick_size)]
    else:
        checks.append(guard_position_exists(intent, view))
    failed = [g for g in checks if not g.passed]
    if not failed:
        return (), None
    return (tuple(g.model_copy(update={"guard": f"pre_submit_{g.guard}"}) for g in checks),
            "; ".join(f"pre-submit {g.guard}: {g.message}" for g in failed))


def after(view: AccountView, d: Decision) -> AccountView:
    """The view the next instrument sees: a sent entry holds back its reserve and rests."""
    if d.command != "send" or d.intent.kind is not IntentKind.ENTRY:
        return view
    return replace(view, free_cash=view.free_cash - d.reserve,
                   resting_entries=tuple(sorted({*view.resting_entries, d.intent.instrument})))


def decide_window(view: AccountView, signals: dict[str, Signal], markets: dict[str, MarketContext | None],
                  inputs: WindowInputs) -> dict[str, Decision]:
    """PLAN → VALIDATE → EXECUTE (decisions and commands) for every instrument of ``signals``, in
    name order, each on the view the earlier ones left (see the module doc)."""
    out: dict[str, Decision] = {}
    for inst in sorted(signals):
        stored = inputs.stored.get(inst)
        if stored is not None:
            intent, guards = stored
            if intent.status is IntentStatus.VALIDATED:  # validated by an earlier step, never sent
                pre, why = recheck(intent, view, inputs.limits, inputs.specs[inst].tick_size)
                d = (Decision(intent, guards=pre, statuses=((IntentStatus.CANCELLED, why),)) if why
                     else decide_one(intent, inputs, view, guards))
                d = replace(d, stored=True)
            else:
                d = Decision(intent, stored=True, guards=())
        else:
            d = decide_one(plan(signals[inst], markets.get(inst), inputs, view), inputs, view)
        out[inst] = d
        view = after(view, d)
    return out


__all__ = ["Decision", "WindowInputs", "actionable", "after", "decide_one", "decide_window", "plan", "recheck", "sane_to_send", "validate"]
