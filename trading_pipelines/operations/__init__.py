"""The intent lifecycle by hand: plan, inspect, execute (DRY_RUN or LIVE) and cancel one intent.

The launchpad jobs (:mod:`trading_pipelines.intent_jobs`) and the CLI (``trading-pipelines
intent …``, ``history``) call these functions; they are built on the account's per-step API
(:mod:`trading_pipelines.account.window`: its book lock, guards, pre-submit re-check) and send
through the one execution engine (:mod:`trading_pipelines.account.engine`), so a manual intent is
planned, validated, sent and reconciled exactly as the pipeline's are.

**Manual plans.** :func:`plan_manual` plans the latest *closed* window of the strategy: the window
whose end is at or before now (for replay-data strategies, the last window of their data), with a
manual signal (confidence 1.0, thesis ``manual plan by <who>``) through the planner the pipeline
uses (technical stop, 1 %-risk sizing at the protective limit), on the book's equity or on
``capital``; it is validated at once (every guard recorded). It never writes the window's
``signals`` row (that is the pipeline's).

**Manual intent ids** (:func:`manual_intent_id`): ``"it-" + 24 hex`` of sha256 over
``manual|strategy|instrument|window_end(ISO, UTC)|side|capital|seq`` (``|book`` appended off the
live book). The pipeline's id hashes ``strategy|instrument|window_end``, so the two never collide,
and client order ids derive from it the usual way. ``capital`` is ``equity`` when the book's
equity sizes the plan, else the amount (``%.10g``). ``seq`` is the n-th manual plan with these
parameters in this window: a request whose newest same-parameter intent is still open (PENDING,
VALIDATED, AWAITING_CONFIRMATION) returns that intent (a retried launch plans nothing new);
otherwise (it was rejected, cancelled, dry-run, executed) the next ``seq`` is planned. Manual
intents are marked by a ``manual_plan`` audit row.

**Execution.** :func:`execute_intent` executes a VALIDATED or AWAITING_CONFIRMATION intent of the
live book, once. A plan is good for one bar (as a manual confirmation is): once the venue's clock
(a simulated venue) or the wall clock (a real one) reaches ``window_end + bar`` the intent is
CANCELLED as expired. Otherwise the pre-submit re-check runs under the book lock (a failure
CANCELS the intent with the reason, as in the pipeline), then

* ``DRY_RUN``: the orders that would be sent are recorded with status DRY_RUN and the intent
  becomes DRY_RUN; nothing reaches the venue.
* ``LIVE``: the orders go through the execution engine (legs written ahead, then the venue
  protocol, idempotent per client order id). After a crash anywhere in that send, the same call
  run again finishes it: an intent whose legs are in doubt (written ahead, or sent with no answer)
  is synced with the venue by client order id — adopted, or sent if the venue definitely never got
  it — never refused and never sent twice. Refused unless ``acknowledge_risk`` is true **and** the deployment's live switch
  ``TRADING_PIPELINES_LIVE=1`` is set — on every venue, the simulated paper venue included (LIVE
  means "as if real": one rule for all venues, so switching a strategy's venue never silently
  widens what LIVE does). On a real (non-simulated) venue the strategy must also be acknowledged
  live in its file (``execution.dry_run: false``, ``execution.live_ack: <name>``; see
  :func:`runtime.live_trading_allowed`), so the engine never downgrades a LIVE request to DRY_RUN.

**Refusals** raise :class:`Refused` (a ``ValueError``) before anything is written: the ledger and
the venue are unchanged. Every change is audited: status transitions with their cause
(``repo.set_intent_status``: an ``intent_status`` audit row and an ``intent_status_history`` row),
plus ``manual_plan``, ``execute`` and ``cancel`` rows naming who and why.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
from datetime import datetime, timezone

import pandas as pd

from trading_pipelines import runtime
from trading_pipelines.account import window
from trading_pipelines.account.engine import ExecutionEngine, step
from trading_pipelines.account.view import advance
from trading_pipelines.analysis.frames import freshness, indicator_frame
from trading_pipelines.assets.partitions import window_key
from trading_pipelines.domain.indicators import swing_levels
from trading_pipelines.domain.intents import ALLOWED
from trading_pipelines.domain.models import (
    FuturesAction,
    IntentKind,
    IntentStatus,
    Mode,
    OrderStatus,
    Signal,
    SpotAction,
)
from trading_pipelines.domain.planning import MarketContext, plan_intent
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.ledger.models import LIVE_BOOK, IntentRow
from trading_pipelines.stores.market_data import MarketDataError
from trading_pipelines.account.decide import sane_to_send
from trading_pipelines.operations.reads import Refused, _row, history, intent_report, show_intent  # noqa: F401
from trading_pipelines.venues.protocol import VenueError

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

NOT_EXECUTED = frozenset({IntentStatus.PENDING, IntentStatus.VALIDATED, IntentStatus.AWAITING_CONFIRMATION})
"""Statuses of an intent that has not been executed (anything else: executed, or finished)."""

EXECUTABLE = frozenset({IntentStatus.VALIDATED, IntentStatus.AWAITING_CONFIRMATION})
"""Statuses :func:`execute_intent` accepts."""

_NEVER_SENT = frozenset({IntentStatus.NO_TRADE, IntentStatus.REJECTED, IntentStatus.CANCELLED, IntentStatus.FAILED})
"""Finished without an order reaching the venue (nothing to cancel, nothing to execute)."""


class ExecutionMode(str, enum.Enum):
    DRY_RUN = "DRY_RUN"  # record the orders that would be sent; nothing reaches the venue
    LIVE = "LIVE"  # send through the venue protocol


# ---------------------------------------------------------------- ids and windows


def manual_intent_id(strategy: str, instrument: str, window_end: datetime, side: str, capital: float | None,
                     seq: int, book: str = LIVE_BOOK) -> str:
    """The id of the ``seq``-th manual plan of (strategy, instrument, window, side, capital) on
    ``book`` (see the module doc). ``"it-" + 24 hex``: client order ids derive from it."""
    if window_end.tzinfo is None:
        raise ValueError(f"naive datetime {window_end!r}: window ends must be timezone-aware UTC")
    cap = "equity" if capital is None else f"{capital:.10g}"
    raw = (f"manual|{strategy}|{instrument}|{window_end.astimezone(timezone.utc).isoformat()}|{side}|{cap}|{seq}"
           + ("" if book == LIVE_BOOK else f"|{book}"))
    return "it-" + hashlib.sha256(raw.encode()).hexdigest()[:24]


def latest_closed_window(spec, now: datetime | None = None) -> datetime:
    """The end (UTC) of the strategy's latest closed window: the last window boundary at or before
    ``now`` (default: the wall clock), bounded by ``data.windows_end`` (replay data: the last
    window of its data). Raises :class:`Refused` when no window has closed yet."""
    bar = spec.bar_duration
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    bound = min(now, spec.data.windows_end) if spec.data.windows_end is not None else now
    end = _EPOCH + ((bound - _EPOCH) // bar) * bar
    start = spec.data.windows_start
    first_start = _EPOCH + -((_EPOCH - start) // bar) * bar  # the first boundary at or after windows_start
    if end < first_start + bar:
        raise Refused(f"{spec.name} has no closed {spec.timeframe} window at {bound.isoformat()} "
                      f"(its first window ends {(first_start + bar).isoformat()})")
    return end


def _actions(mode: Mode) -> list[str]:
    enum_ = SpotAction if mode is Mode.SPOT else FuturesAction
    return [a.value for a in enum_ if a.value != "hold"]


def _market(rt: runtime.Runtime, instrument: str, window_end: datetime) -> MarketContext:
    """The planner's market context at ``window_end``, exactly as the pipeline's analysis computes
    it (chunked indicator frame sliced point in time); :class:`Refused` on bad or stale data."""
    try:
        frame = indicator_frame(rt, instrument, window_end)
    except (MarketDataError, ValueError) as e:
        raise Refused(f"cannot plan {instrument} for the window ending {window_end.isoformat()}: bad data: {e}") from None
    stale = freshness(rt, frame, window_end)
    if stale:
        raise Refused(f"cannot plan {instrument} for the window ending {window_end.isoformat()}: {stale}")
    if len(frame) < min(rt.spec.template.lookback_bars, 30):
        raise Refused(f"cannot plan {instrument}: only {len(frame)} bars before {window_end.isoformat()}")
    if frame["volume"].iloc[-1] <= 0:
        raise Refused(f"cannot plan {instrument}: the newest bar ({frame.index[-1].isoformat()}) has zero volume")
    last = frame.iloc[-1]
    low, high = swing_levels(frame, min(rt.spec.template.stop.swing_lookback, len(frame)))
    return MarketContext(last_close=float(last["close"]), atr=float(last["atr"]) if not pd.isna(last["atr"]) else math.nan,
                         swing_low=low, swing_high=high)


# ---------------------------------------------------------------- plan


def plan_manual(rt: runtime.Runtime, instrument: str, side: str, capital: float | None = None, *,
                who: str = "unknown", run_id: str = "manual", now: datetime | None = None) -> dict:
    """Plan and validate a manual intent for the latest closed window (see the module doc).
    ``side``: buy|sell (spot), long|short|close (futures); ``capital`` (quote currency) sizes the
    plan instead of the book's equity. Returns :func:`intent_report` of the intent (VALIDATED,
    REJECTED with the failed guards, or NO_TRADE with the planner's reason). Raises
    :class:`Refused` for a bad request, bad or stale data, or a venue already past the window."""
    spec = rt.spec
    side = (side or "").strip().lower()
    if rt.book != LIVE_BOOK:
        raise Refused(f"manual plans are for the live book, not {rt.book!r}")
    if instrument not in spec.instruments:
        raise Refused(f"{spec.name} does not trade {instrument!r} (instruments: {list(spec.instruments)})")
    if side not in _actions(spec.mode):
        raise Refused(f"side {side!r} is not a {spec.mode.value} side of {spec.name} (one of: {', '.join(_actions(spec.mode))})")
    if capital is not None and not (capital > 0 and math.isfinite(capital)):
        raise Refused(f"capital must be a positive amount of quote currency, got {capital}")
    window_end = latest_closed_window(spec, now)
    market = _market(rt, instrument, window_end)
    lin = repo.Lineage(spec.name, instrument, window_key(spec, window_end), run_id, rt.book)
    request = {"strategy": spec.name, "instrument": instrument, "window_end": window_end.isoformat(), "side": side,
               "capital": capital}
    with step(rt) as s:
        seq, existing = 1, None
        while True:
            iid = manual_intent_id(spec.name, instrument, window_end, side, capital, seq, rt.book)
            row = s.get(IntentRow, iid)
            if row is None:
                break
            if IntentStatus(row.status) in NOT_EXECUTED:
                existing = row
                break
            seq += 1
        if existing is not None:  # the same request again while its intent is open: that intent
            repo.audit(s, lin, "manual_plan_repeated", intent_id=iid, status=existing.status, who=who, **request)
            return intent_report(s, iid)
        late = advance(s, rt, window_end, lin)
        if late is not None:
            raise Refused(f"the {spec.name} venue is at {late.isoformat()}, past the window ending "
                          f"{window_end.isoformat()}: a past window plans no trade")
        equity = rt.venue.fetch_balance().equity
        sizing = equity if capital is None else capital
        thesis = f"manual plan by {who}"
        signal = Signal(strategy=spec.name, instrument=instrument, window_end=window_end, mode=spec.mode, action=side,
                        confidence=1.0, thesis=thesis, provider="manual", model="none",
                        prompt_hash=hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest())
        intent = plan_intent(signal, rt.instrument(instrument), sizing, market, rt.plan_params, rt.book)
        intent = intent.model_copy(update={"intent_id": iid})
        repo.audit(s, lin, "manual_plan", intent_id=iid, who=who, seq=seq, equity=equity, sizing_equity=sizing,
                   last_close=market.last_close, atr=market.atr, **request)
        repo.record_intent(s, lin, intent)
        if intent.kind is not IntentKind.NONE:
            window.validate_in(s, rt, lin, intent)
        return intent_report(s, iid)


# ---------------------------------------------------------------- execute


def _lineage(row: IntentRow, run_id: str) -> repo.Lineage:
    return repo.Lineage(row.strategy, row.instrument, row.partition_key, run_id, row.book)


def _refuse_unexecutable(row: IntentRow, mode: ExecutionMode) -> None:
    status = IntentStatus(row.status)
    if row.book != LIVE_BOOK:
        raise Refused(f"intent {row.intent_id} is on the replay book {row.book!r}: a replay is a finished simulation, "
                      f"only live-book intents are executed by hand")
    if status in EXECUTABLE:
        if mode is ExecutionMode.DRY_RUN and IntentStatus.DRY_RUN not in ALLOWED[status]:
            raise Refused(f"intent {row.intent_id} is {status.value}: it cannot become DRY_RUN from there "
                          f"(execute it LIVE or cancel it)")
        return
    if status is IntentStatus.PENDING:
        raise Refused(f"intent {row.intent_id} is PENDING: it was never validated, nothing to execute")
    if status in _NEVER_SENT:
        raise Refused(f"intent {row.intent_id} is {status.value}, not executable"
                      + (f" ({row.reason})" if row.reason else ""))
    raise Refused(f"intent {row.intent_id} is {status.value}: already executed, it is never executed twice")


def _refuse_live(rt: runtime.Runtime, acknowledge_risk: bool, environ) -> None:
    if not acknowledge_risk:
        raise Refused("LIVE execution refused: acknowledge_risk is not set (the CLI's --acknowledge-risk); LIVE "
                      "sends real orders through the venue")
    if environ.get(runtime.LIVE_SWITCH_ENV) != "1":
        raise Refused(f"LIVE execution refused: the deployment's live switch {runtime.LIVE_SWITCH_ENV}=1 is not set "
                      f"(required for LIVE on every venue, the simulated paper venue included)")
    if not rt.venue.simulated:
        ex = rt.spec.execution
        allowed, why = runtime.live_trading_allowed(rt.spec.name, ex.dry_run, ex.live_ack, environ)
        if not allowed:
            raise Refused(f"LIVE execution refused on the {rt.venue.name} venue: {why}")


def _in_doubt(s, intent_id: str) -> bool:
    """Whether any leg of the intent is written ahead or sent without an answer (a crashed send)."""
    from trading_pipelines.ledger import legs as ledger_legs

    return any(r.status in (OrderStatus.INITIALIZED.value, OrderStatus.SUBMITTED.value, OrderStatus.UNKNOWN.value)
               for r in ledger_legs.legs_of(s, intent_id))


def execute_intent(rt: runtime.Runtime, intent_id: str, mode: ExecutionMode | str = ExecutionMode.DRY_RUN,
                   acknowledge_risk: bool = False, *, who: str = "unknown", run_id: str = "manual",
                   environ=None) -> dict:
    """Execute one VALIDATED / AWAITING_CONFIRMATION intent of the live book, once, in ``mode``
    (see the module doc). Returns :func:`intent_report` of the intent afterwards (DRY_RUN,
    SUBMITTED — or CANCELLED/FAILED when it expired or the pre-submit re-check failed). A LIVE call
    for an intent whose send crashed (legs in doubt) resumes it through the engine. Raises
    :class:`Refused` (nothing changed) for an unknown, unexecutable or already executed intent,
    and for LIVE without ``acknowledge_risk`` or without the live switch."""
    environ = os.environ if environ is None else environ
    try:
        mode = ExecutionMode(mode.upper() if isinstance(mode, str) else mode)
    except ValueError:
        raise Refused(f"mode {mode!r} is not DRY_RUN or LIVE") from None
    with session_scope(rt.engine) as s:  # refusals first, outside the book lock: nothing is touched
        row = _row(s, intent_id)
        resume = mode is ExecutionMode.LIVE and row.book == LIVE_BOOK and _in_doubt(s, intent_id)
        if not resume:
            _refuse_unexecutable(row, mode)
    if mode is ExecutionMode.LIVE:
        _refuse_live(rt, acknowledge_risk, environ)
    engine = ExecutionEngine(rt, run_id)
    if resume:  # the same call run again after a crash: the engine finishes the send, nothing is sent twice
        with step(rt) as s:
            repo.audit(s, _lineage(_row(s, intent_id), run_id), "execute_resumed", intent_id=intent_id, who=who,
                       reason="legs in doubt after a crash: synced with the venue by client order id")
        engine.run([], intent_ids=[intent_id])
        with session_scope(rt.engine) as s:
            return intent_report(s, intent_id)
    cmds = []
    with step(rt) as s:
        row = _row(s, intent_id)
        _refuse_unexecutable(row, mode)  # again under the lock: another run may have executed it meanwhile
        intent = repo.intent_from_row(row)
        previous = intent.status
        lin = _lineage(row, run_id)
        advance(s, rt, intent.window_end, lin)
        clock = runtime.venue_clock(rt)
        at = clock  # simulated: the venue's clock; real venues: runtime.WALL_CLOCK
        expiry = intent.window_end + rt.spec.bar_duration
        repo.audit(s, lin, "execute", intent_id=intent_id, mode=mode.value, who=who, previous_status=previous.value,
                   acknowledge_risk=bool(acknowledge_risk))
        if at is not None and at >= expiry:
            repo.set_intent_status(s, lin, intent_id, IntentStatus.CANCELLED,
                                   f"expired: {mode.value} execution by {who} at {at.isoformat()}, the plan was valid "
                                   f"until {expiry.isoformat()} (one bar after its window)")
            return intent_report(s, intent_id)
        if previous is IntentStatus.VALIDATED:
            ok, why = sane_to_send(intent, window.stored_guards(s, intent_id))
            if not ok:
                repo.set_intent_status(s, lin, intent_id, IntentStatus.FAILED, f"not sent: {why}")
                return intent_report(s, intent_id)
        placed_at = max(intent.window_end, clock) if clock else intent.window_end
        cmd = window.send_now(s, rt, engine, lin, intent, check_fresh=False, placed_at=placed_at,
                              dry_run_by=who if mode is ExecutionMode.DRY_RUN else None)
        cmds = [cmd] if cmd is not None else []
    engine.run(cmds, intent_ids=[intent_id])
    with session_scope(rt.engine) as s:
        return intent_report(s, intent_id)


# ---------------------------------------------------------------- cancel


def cancel_intent(rt: runtime.Runtime, intent_id: str, reason: str | None = None, *, who: str = "unknown",
                  run_id: str = "manual") -> dict:
    """Cancel an intent that has not traded: VALIDATED / AWAITING_CONFIRMATION are marked
    CANCELLED; a SUBMITTED one has its resting entry (and its bracket) cancelled at the venue
    through the execution engine, after the engine synced it with the venue (committed even when
    the cancel is refused). Refused (:class:`Refused`): an unknown intent, one whose entry filled
    (exit the position instead), one executed otherwise (DRY_RUN, SENT, monitored, closed …) or
    already finished."""
    with session_scope(rt.engine) as s:
        row = _row(s, intent_id)
        status = IntentStatus(row.status)
    if status in _NEVER_SENT or status is IntentStatus.PENDING:
        raise Refused(f"intent {intent_id} is {status.value}: nothing to cancel")
    if status not in EXECUTABLE and status is not IntentStatus.SUBMITTED:
        raise Refused(f"intent {intent_id} is {status.value}: already executed, it cannot be cancelled"
                      + (" (exit the position instead)" if status is not IntentStatus.DRY_RUN else ""))
    try:
        window.cancel(rt, intent_id, run_id, who=who, reason=reason)
    except ValueError as e:
        raise Refused(str(e)) from None
    with session_scope(rt.engine) as s:
        return intent_report(s, intent_id)


# ---------------------------------------------------------------- runtimes


def resolve_contracts(rt: runtime.Runtime, run_id: str = "cli") -> list[dict]:
    """The IB contract of each instrument of an ``ibkr`` strategy (``qualifyContracts`` through
    the venue: conid, primary exchange, currency), each recorded in the ledger's audit trail as
    ``contract_resolved`` so the conid an order was placed on is on record. Raises :class:`Refused`
    when the strategy's venue is not IBKR, or naming an instrument IB cannot resolve unambiguously."""
    resolve = getattr(rt.venue, "resolve", None)
    if rt.spec.venue.kind != "ibkr" or resolve is None:
        raise Refused(f"strategy {rt.spec.name!r} trades on {rt.spec.venue.kind!r}, not ibkr: no IB contracts to resolve")
    out = []
    with session_scope(rt.engine) as s:
        for inst in rt.spec.instruments:
            try:
                c = resolve(inst)
            except VenueError as e:
                raise Refused(str(e)) from None
            out.append({"instrument": inst, **c})
            repo.audit(s, repo.Lineage(rt.spec.name, inst, "contracts", run_id, LIVE_BOOK), "contract_resolved", **c)
    return out


def search_contracts(venue, pattern: str) -> list[dict]:
    """IB's symbol search (``reqMatchingSymbols``) for ``pattern``: conids and listings."""
    from trading_pipelines.venues.ibkr import search_symbols

    return search_symbols(venue.ib, pattern)


def runtime_for(trading, spec):
    """The live book's runtime of ``spec`` without a signal provider (manual operations never ask
    for a signal, so they need no provider key)."""
    return trading.runtime(spec, signals=False)


def intent_owner(engine, intent_id: str) -> tuple[str, str]:
    """(strategy, book) of a recorded intent; :class:`Refused` if unknown."""
    with session_scope(engine) as s:
        row = _row(s, intent_id)
        return row.strategy, row.book


__all__ = ["EXECUTABLE", "ExecutionMode", "NOT_EXECUTED", "Refused", "cancel_intent", "execute_intent", "history",
           "intent_owner", "intent_report", "latest_closed_window", "manual_intent_id", "plan_manual", "runtime_for",
           "show_intent"]
