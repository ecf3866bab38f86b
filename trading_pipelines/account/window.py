"""The account, per strategy × window, in time order — the thin shell around the pure step.

:func:`account_window` runs PLAN → VALIDATE → EXECUTE → SNAPSHOT for one window of a book: under
the book's lock (``SELECT … FOR UPDATE`` on its ``books`` row) it brings a simulated venue to the
window, reads the book's view once, calls :func:`.decide.decide_window`, records every decision
and writes ahead the legs of every order to send; after that commit the execution engine
(:mod:`.engine`) sends them, syncs every leg with the venue and takes the snapshot in one more
ledger transaction. A window the venue has already passed plans no trade.

The per-step API (:func:`plan`, :func:`validate`, :func:`execute`, :func:`snapshot`,
:func:`confirm`, :func:`cancel`, :func:`monitor`) serves the CLI, the launchpad, the sensor and
tests; every order of every one of them goes through the same engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime

import pandas as pd
from sqlalchemy import select

from trading_pipelines.account import decide
from trading_pipelines.account.engine import ExecutionEngine, orders_of, step
from trading_pipelines.account.view import account_view, advance, audit_events, snapshot_now
from trading_pipelines.domain.calendars import market_hours
from trading_pipelines.domain.ids import intent_id as make_intent_id
from trading_pipelines.domain.indicators import swing_levels
from trading_pipelines.domain.models import (
    GuardResult,
    IntentKind,
    IntentStatus,
    OrderStatus,
    PortfolioSnapshot,
    Signal,
    TradeIntent,
)
from trading_pipelines.domain.planning import MarketContext
from trading_pipelines.ledger import legs as ledger_legs
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.ledger.models import BookRow, GuardResultRow, IntentRow
from trading_pipelines.runtime import Runtime, live_trading_allowed, venue_clock
from trading_pipelines.venues.protocol import SimulatedVenue, VenueEvent


@dataclass
class WindowOutcome:
    """What one window did to a book: per instrument the intent (with guards and orders), and the snapshot."""

    window_end: datetime
    intents: dict[str, TradeIntent]
    guards: dict[str, tuple[GuardResult, ...]]
    orders: dict[str, list[dict]]
    snapshot: PortfolioSnapshot
    point_in_time: bool
    events: list[VenueEvent]


def stored_guards(s, intent_id_: str) -> tuple[GuardResult, ...]:
    rows = s.execute(select(GuardResultRow).where(GuardResultRow.intent_id == intent_id_).order_by(GuardResultRow.id)).scalars()
    return tuple(GuardResult(guard=r.guard, passed=r.passed, message=r.message) for r in rows)


def inputs(s, rt: Runtime, window_end: datetime, instruments, late: datetime | None,
           hours=None) -> decide.WindowInputs:
    """What the pure step needs from the ledger and the strategy for ``instruments`` at ``window_end``;
    ``hours``: the instruments whose market hours the guards may ask (default: all of them)."""
    stored, absent = {}, set()
    ids = {}
    for inst in instruments:
        if inst not in rt.spec.instruments:
            raise ValueError(f"{rt.spec.name} does not trade {inst!r} (instruments: {list(rt.spec.instruments)})")
        ids[make_intent_id(rt.spec.name, inst, window_end, rt.book)] = inst
    rows = {r.intent_id: r for r in s.execute(select(IntentRow).where(IntentRow.intent_id.in_(list(ids)))).scalars()} \
        if ids else {}
    for iid, inst in ids.items():
        row = rows.get(iid)
        if row is None:
            absent.add(inst)
        elif row.status != IntentStatus.PENDING.value:
            repo.keep(s, row)
            stored[inst] = (repo.intent_from_row(row), stored_guards(s, row.intent_id))
        else:
            repo.keep(s, row)
    specs = {i: rt.instrument(i) for i in instruments}
    hours = list(instruments) if hours is None else sorted({*hours, *stored})
    ex = rt.spec.execution
    return decide.WindowInputs(
        strategy=rt.spec.name, book=rt.book, window_end=window_end, limits=rt.limits, params=rt.plan_params,
        specs=specs, hours={i: market_hours(specs[i], window_end, rt.spec.bar_duration) for i in hours},
        fee_rate=getattr(rt.spec.venue, "fee_rate", 0.0), late=late, stored=stored,
        confirm_manual=ex.confirm == "manual", bar=rt.spec.bar_duration, absent=frozenset(absent),
        live=None if rt.venue.simulated else live_trading_allowed(rt.spec.name, ex.dry_run, ex.live_ack))


def record(s, rt: Runtime, lin: repo.Lineage, d: decide.Decision, engine: ExecutionEngine, placed_at: datetime,
           absent: frozenset = frozenset()):
    """Write one decision (intent, guards, statuses) and, for a send, its legs ahead; the command."""
    if d.stored:
        if d.intent.status is not IntentStatus.VALIDATED:
            repo.audit(s, lin, "replan_ignored", intent_id=d.intent.intent_id, stored_status=d.intent.status.value)
    else:
        repo.record_intent(s, lin, d.intent, known_absent=d.intent.instrument in absent)
    if d.guards:
        repo.record_guards(s, lin, d.intent.intent_id, d.guards)
    for status, reason in d.statuses:
        repo.set_intent_status(s, lin, d.intent.intent_id, status, reason)
    if d.command != "send":
        return None
    return engine.stage_send(s, d.intent.model_copy(update={"status": IntentStatus.VALIDATED}), placed_at, d.reserve)


def take_snapshot(s, rt: Runtime, lin: repo.Lineage, window_end: datetime, late: datetime | None,
                  after_last: bool = False) -> tuple[PortfolioSnapshot, bool]:
    """``after_last``: the book has recorded no window at or after this one (no stored snapshot to read)."""
    stored = None if after_last else repo.stored_snapshot(s, lin)
    if stored is not None:
        return stored, True
    if late is None:
        snap = snapshot_now(rt, window_end)
        repo.record_snapshot(s, lin, rt.spec.mode.value, snap, new=after_last)
        repo.book_progress(s, rt.spec.name, rt.book, window_end)
        return snap, True
    repo.audit(s, lin, "snapshot_not_point_in_time", window_end=window_end.isoformat(), account_clock=late.isoformat())
    return snapshot_now(rt, late), False


def account_window(rt: Runtime, window_end: datetime, signals: dict[str, Signal], markets: dict[str, MarketContext | None],
                   partition_key: str, run_id: str) -> WindowOutcome:
    """PLAN → VALIDATE → EXECUTE → SNAPSHOT for one window of the book (see the module doc)."""
    engine = ExecutionEngine(rt, run_id)
    lin0 = rt.lineage("*", partition_key, run_id)
    result: dict = {}
    cmds: list = []
    with step(rt) as s:
        book = s.get(BookRow, (rt.book, rt.spec.name))
        after_last = book.last_done is None or window_end > book.last_done
        late = advance(s, rt, window_end, lin0)
        # only a signal that can become an order needs the guards' view and market hours
        guards_needed = [] if late is not None else [i for i, sig in signals.items()
                                                      if decide.actionable(sig) and markets.get(i) is not None]
        inp = inputs(s, rt, window_end, signals, late, hours=guards_needed)
        view = account_view(s, rt, window_end, for_guards=bool(guards_needed or inp.stored))
        decisions = decide.decide_window(view, signals, markets, inp)
        for inst, d in decisions.items():
            cmd = record(s, rt, rt.lineage(inst, partition_key, run_id), d, engine, window_end, inp.absent)
            if cmd is not None:
                cmds.append(cmd)
        if not cmds:  # nothing to send: the sync and the snapshot in this same transaction
            from trading_pipelines.account import sync as book_sync
            from trading_pipelines.account.engine import EngineRun

            cmds = book_sync.sync(engine, s, None, EngineRun())
            if not cmds:
                result["snap"] = take_snapshot(s, rt, lin0, window_end, late, after_last)
                result["view"] = _outcome(s, decisions)
    if cmds:
        def then(s) -> None:
            result["snap"] = take_snapshot(s, rt, lin0, window_end, late, after_last)
            result["view"] = _outcome(s, decisions)
        engine.run(cmds, then=then)
    intents, guards, orders = result["view"]
    snap, pit = result["snap"]
    return WindowOutcome(window_end, intents, guards, orders, snap, pit, [])


def _outcome(s, decisions: dict[str, decide.Decision]):
    intents, guards, orders = {}, {}, {}
    for inst, d in decisions.items():
        row = s.get(IntentRow, d.intent.intent_id)
        intents[inst] = d.intent.model_copy(update={"status": IntentStatus(row.status), "reason": row.reason})
        guards[inst] = d.guards or stored_guards(s, d.intent.intent_id) if d.intent.kind is not IntentKind.NONE else ()
        orders[inst] = orders_of(s, d.intent.intent_id) if d.intent.kind is not IntentKind.NONE else []
    return intents, guards, orders


# ---- per-step API (one transaction each, then the engine; the CLI's confirm/cancel, the monitor, tests)


def market_of(rt: Runtime, frame: pd.DataFrame) -> MarketContext:
    last = frame.iloc[-1]
    low, high = swing_levels(frame, min(rt.spec.template.stop.swing_lookback, len(frame)))
    return MarketContext(last_close=float(last["close"]), atr=float(last["atr"]) if not pd.isna(last["atr"]) else math.nan,
                         swing_low=low, swing_high=high)


def plan(rt: Runtime, lin: repo.Lineage, signal: Signal, frame: pd.DataFrame) -> TradeIntent:
    """PLAN one instrument's signal (see :func:`account_window`); a stored intent that left PENDING stands."""
    with step(rt) as s:
        late = advance(s, rt, signal.window_end, lin)
        inp = inputs(s, rt, signal.window_end, [lin.instrument], late)
        if lin.instrument in inp.stored:
            intent = inp.stored[lin.instrument][0]
            repo.audit(s, lin, "replan_ignored", intent_id=intent.intent_id, stored_status=intent.status.value,
                       new_action=signal.action, new_confidence=signal.confidence)
            return intent
        intent = decide.plan(signal, market_of(rt, frame), inp, account_view(s, rt, signal.window_end))
        repo.record_intent(s, lin, intent)
        return repo.intent_from_row(s.get(IntentRow, intent.intent_id))


def validate(rt: Runtime, lin: repo.Lineage, intent: TradeIntent) -> tuple[TradeIntent, tuple[GuardResult, ...]]:
    """VALIDATE a PENDING intent (guards recorded); any other stored intent returns with its stored guards."""
    with step(rt) as s:
        row = s.get(IntentRow, intent.intent_id)
        if row is None:
            raise KeyError(f"intent {intent.intent_id} was never planned")
        stored = repo.intent_from_row(row)
        if stored.kind is IntentKind.NONE:
            return stored, ()
        if row.status != IntentStatus.PENDING.value:
            return stored, stored_guards(s, stored.intent_id)
        guards = validate_in(s, rt, lin, stored, advance(s, rt, stored.window_end, lin))
        row = s.get(IntentRow, stored.intent_id)
        return stored.model_copy(update={"status": IntentStatus(row.status), "reason": row.reason}), guards


def validate_in(s, rt: Runtime, lin: repo.Lineage, intent: TradeIntent, late: datetime | None = None
                ) -> tuple[GuardResult, ...]:
    """VALIDATE a planned intent inside the caller's step: guards on the book's view now, recorded,
    and the intent VALIDATED or REJECTED (a manual plan, the per-step :func:`validate`)."""
    inp = inputs(s, rt, intent.window_end, [intent.instrument], late)
    guards, status, reason = decide.validate(intent, inp, account_view(s, rt, intent.window_end))
    repo.record_guards(s, lin, intent.intent_id, guards)
    repo.set_intent_status(s, lin, intent.intent_id, status, reason)
    return guards


def execute(rt: Runtime, lin: repo.Lineage, intent: TradeIntent) -> tuple[TradeIntent, list[dict]]:
    """EXECUTE the stored VALIDATED intent, once (the ledger row, not the caller's copy, is sent)."""
    engine = ExecutionEngine(rt, lin.run_id)
    cmds = []
    with step(rt) as s:
        row = s.get(IntentRow, intent.intent_id)
        if row is None:
            raise KeyError(f"intent {intent.intent_id} was never planned")
        stored = repo.intent_from_row(row)
        if stored.status is IntentStatus.VALIDATED:
            late = advance(s, rt, stored.window_end, lin)
            inp = inputs(s, rt, stored.window_end, [stored.instrument], late)
            view = account_view(s, rt, stored.window_end)
            pre, why = decide.recheck(stored, view, rt.limits, inp.specs[stored.instrument].tick_size)
            d = (decide.Decision(stored, stored=True, guards=pre, statuses=((IntentStatus.CANCELLED, why),)) if why
                 else decide.decide_one(stored, inp, view, stored_guards(s, stored.intent_id)))
            cmd = record(s, rt, lin, replace(d, stored=True) if not why else d, engine, stored.window_end)
            cmds = [cmd] if cmd else []
    engine.run(cmds, intent_ids=[intent.intent_id])
    return finish(rt, intent)


def finish(rt: Runtime, intent: TradeIntent) -> tuple[TradeIntent, list[dict]]:
    with session_scope(rt.engine) as s:
        row = s.get(IntentRow, intent.intent_id)
        final = IntentStatus(row.status) if row else intent.status
        return intent.model_copy(update={"status": final, "reason": row.reason if row else intent.reason}), \
            orders_of(s, intent.intent_id)


def snapshot(rt: Runtime, lin: repo.Lineage, window_end: datetime) -> tuple[PortfolioSnapshot, bool]:
    """The book at the window end as the venue reports it, synced into the ledger. Returns
    (snapshot, point_in_time); a stored snapshot of the window is never overwritten."""
    engine = ExecutionEngine(rt, lin.run_id)
    with step(rt) as s:
        late = advance(s, rt, window_end, lin)
    out = {}
    engine.run([], then=lambda s: out.update(snap=take_snapshot(s, rt, lin, window_end, late)))
    return out["snap"]


def _stored_intent(s, intent_id_: str) -> tuple[IntentRow, TradeIntent]:
    row = s.get(IntentRow, intent_id_)
    if row is None:
        raise KeyError(f"unknown intent {intent_id_!r}")
    return row, repo.intent_from_row(row)


def send_now(s, rt: Runtime, engine: ExecutionEngine, lin: repo.Lineage, intent: TradeIntent, *,
             check_fresh: bool, placed_at: datetime, dry_run_by: str | None = None):
    """The manual routes' send (confirm, the launchpad's execute): the pre-submit re-check on the
    book's view now (a failure CANCELS the intent with the reason), then the legs written ahead —
    or, ``dry_run_by``, recorded as DRY_RUN and never sent. Returns the engine command (or None)."""
    view = account_view(s, rt, intent.window_end)
    pre, why = decide.recheck(intent, view, rt.limits, rt.instrument(intent.instrument).tick_size, check_fresh=check_fresh)
    if why:
        repo.record_guards(s, lin, intent.intent_id, pre)
        repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.CANCELLED, why)
        return None
    if dry_run_by is not None:
        engine.stage_send(s, intent, placed_at, status=OrderStatus.DRY_RUN)
        legs = ledger_legs.legs_of(s, intent.intent_id)
        repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.DRY_RUN,
                               f"dry run by {dry_run_by}: {len(legs)} orders recorded, nothing sent to {rt.venue.name}: "
                               + ", ".join(r.client_order_id for r in legs))
        return None
    if not rt.venue.simulated:
        ex = rt.spec.execution
        allowed, reason = live_trading_allowed(rt.spec.name, ex.dry_run, ex.live_ack)
        if not allowed:
            repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.DRY_RUN, reason)
            return None
    reserve = 0.0
    if intent.kind is IntentKind.ENTRY:
        from trading_pipelines.account.sync import reserve_of

        reserve = reserve_of(rt, intent)
    return engine.stage_send(s, intent, placed_at, reserve)


def confirm(rt: Runtime, intent_id_: str, run_id: str = "cli") -> tuple[TradeIntent, list[dict]]:
    """Manually confirm an AWAITING_CONFIRMATION intent: re-check under the book lock, then send.
    A signal is good for one bar: once the venue has passed the bar after the window, the intent
    is CANCELLED as expired instead (fail closed). Raises ``ValueError`` for any other status."""
    engine = ExecutionEngine(rt, run_id)
    cmds = []
    with step(rt) as s:
        row, intent = _stored_intent(s, intent_id_)
        lin = repo.Lineage(row.strategy, row.instrument, row.partition_key, run_id, row.book)
        if row.status != IntentStatus.AWAITING_CONFIRMATION.value:
            raise ValueError(f"intent {intent_id_} is {row.status}, not AWAITING_CONFIRMATION")
        advance(s, rt, intent.window_end, lin)
        clock = venue_clock(rt)
        expiry = intent.window_end + rt.spec.bar_duration
        if clock is not None and clock >= expiry:
            repo.set_intent_status(s, lin, intent_id_, IntentStatus.CANCELLED,
                                   f"expired: confirmed after the venue reached {clock.isoformat()} (valid until {expiry.isoformat()})")
        else:
            repo.audit(s, lin, "confirm", intent_id=intent_id_)
            cmd = send_now(s, rt, engine, lin, intent, check_fresh=False,
                           placed_at=max(intent.window_end, clock) if clock else intent.window_end)
            cmds = [cmd] if cmd else []
    engine.run(cmds, intent_ids=[intent_id_])
    return finish(rt, intent)


def cancel(rt: Runtime, intent_id_: str, run_id: str = "cli", *, who: str | None = None,
           reason: str | None = None) -> tuple[TradeIntent, list[dict]]:
    """Cancel an intent that has not traded: a VALIDATED or AWAITING_CONFIRMATION intent is marked
    CANCELLED; a SUBMITTED one has its working legs cancelled at the venue through the engine,
    after the engine synced it with the venue (committed even if the cancel is refused). An intent
    whose entry already traded, even in part, cannot be cancelled (exit the position instead):
    ``ValueError``, as for any status with nothing to cancel."""
    from trading_pipelines.account.engine import Cmd

    engine = ExecutionEngine(rt, run_id)
    engine.run([], intent_ids=[intent_id_])  # the venue is the source of truth: the ledger first
    who = who or run_id
    cmds = []
    with step(rt) as s:
        row, intent = _stored_intent(s, intent_id_)
        lin = repo.Lineage(row.strategy, row.instrument, row.partition_key, run_id, row.book)
        status = IntentStatus(row.status)
        legs = ledger_legs.legs_of(s, intent_id_)
        if status is IntentStatus.SUBMITTED:
            traded = [r for r in legs if r.role in ("entry", "exit") and (r.filled_quantity or 0) > 0]
            if traded:
                raise ValueError(f"intent {intent_id_} already traded ({traded[0].role} {traded[0].client_order_id} "
                                 f"filled at {traded[0].average_price}); exit the position instead")
            cmds = [Cmd("cancel", intent_id_, (r.client_order_id,), why=f"cancelled by {who}") for r in legs
                    if OrderStatus(r.status).working and r.role in ("entry", "exit")]
        elif status in (IntentStatus.MONITORING, IntentStatus.UNPROTECTED, IntentStatus.CLOSED, IntentStatus.SENT,
                        IntentStatus.DRY_RUN):
            raise ValueError(f"intent {intent_id_} is {status.value}: already executed, it cannot be cancelled"
                             + (" (exit the position instead)" if status is not IntentStatus.DRY_RUN else ""))
        elif status not in (IntentStatus.VALIDATED, IntentStatus.AWAITING_CONFIRMATION):
            raise ValueError(f"intent {intent_id_} is {status.value}: nothing to cancel")
        why = f"cancelled by {who}" + (f": {reason}" if reason else "")
        repo.audit(s, lin, "cancel", intent_id=intent_id_, previous_status=status.value, who=who, reason=reason,
                   cancelled_at_venue=[c.cids[0] for c in cmds])
        if not cmds:
            repo.set_intent_status(s, lin, intent_id_, IntentStatus.CANCELLED, why)
    if cmds:
        engine.run(cmds, intent_ids=[intent_id_])
        with step(rt) as s:  # a leg the venue would not cancel (it traded meanwhile) keeps the intent as derived
            row = s.get(IntentRow, intent_id_)
            if row.status == IntentStatus.CANCELLED.value:
                row.reason = why  # the cause is the human's; the venue's words are in the history
    return finish(rt, intent)


def monitor(rt: Runtime, lin: repo.Lineage, as_of: datetime) -> list[VenueEvent]:
    """Advance the book's simulated venue to ``as_of`` (new bars: fills, stop and take-profit
    hits, liquidations), then run the engine over every open intent of the book: legs synced,
    positions recorded, the protection invariant kept, orphaned reduce-only legs cancelled.
    Returns the venue events, each audited."""
    with step(rt) as s:
        events = rt.venue.advance(rt.instruments, as_of) if isinstance(rt.venue, SimulatedVenue) else []
        audit_events(s, rt, lin, events)
    ExecutionEngine(rt, lin.run_id).run([])
    return events


def has_activity(rt: Runtime) -> bool:
    """Whether the book holds a position or a resting order."""
    with rt.venue.unit_of_work():
        return bool(rt.venue.fetch_positions() or rt.venue.fetch_open_orders())


__all__ = ["WindowOutcome", "account_window", "cancel", "confirm", "execute", "finish", "has_activity", "inputs",
           "monitor", "plan", "send_now", "snapshot", "step", "stored_guards", "take_snapshot", "validate", "validate_in"]
