"""The execution engine: one route for every order.

The pipeline's account step, manual execution (CLI and launchpad), confirm, cancel and the
position monitor all submit through :meth:`ExecutionEngine.run`, and crash recovery is that same
call run again. Each leg (entry, stop-loss, take-profit, exit) has its own state
(:mod:`trading_pipelines.domain.orders`); the intent's status is derived from its legs.

How a leg travels (write-ahead, then the venue, then one ledger write set):

1. **Stage** — the leg is written to the ledger as SUBMITTED (:func:`~trading_pipelines.ledger.legs.stage_leg`)
   and *committed* before anything is sent, so every order that can exist at the venue has a
   ledger row naming its client order id.
2. **Dispatch** — the venue calls, in a new transaction under the book's lock (the venue's unit of
   work saves before the ledger commits the answers). The adapter maps its errors once
   (:mod:`trading_pipelines.venues.protocol`): :class:`OrderRejected` → the leg is REJECTED (an
   entry's intent FAILED with the venue's words; the window goes on); :class:`OrderStateUnknown` /
   :class:`VenueUnavailable` → UNKNOWN, never sent again, looked up with backoff
   (:data:`LOOKUP_BUDGET_S`) until the venue says found or definitely absent.
3. **Sync** — under the book's lock: every non-terminal leg is looked up by its client order id and
   the report folded in; new fills are recorded and positions aggregated; then the protection
   invariant is enforced and anything missing is staged for the next dispatch.

**The protection invariant**, after every call: an open position that belongs to an intent has a
resting reduce-only stop for its whole open quantity (a partly filled entry's legs are resized to
what filled and the rest of the entry is cancelled), or it is flattened with a reduce-only market
order (``execution.protection: flatten``, the default) or its intent is UNPROTECTED (``flag``).
Reduce-only legs with no position behind them are cancelled (one-cancels-other emulation for
Binance USDⓈ-M, whose conditional legs are not OCO at the venue), within the same call.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable, Literal

from sqlalchemy import select
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from trading_pipelines.account import sync as book_sync
from trading_pipelines.account.requests import exit_order, order_requests
from trading_pipelines.account.view import book_positions
from trading_pipelines.domain.models import IntentKind, IntentStatus, Order, OrderRequest, OrderStatus, TradeIntent
from trading_pipelines.domain.orders import apply_report
from trading_pipelines.ledger import legs as ledger_legs
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.ledger.models import IntentRow, OrderRow
from trading_pipelines.runtime import Runtime
from trading_pipelines.venues.protocol import OrderRejected, VenueError, VenueUnavailable

LOOKUP_INITIAL_WAIT_S = 0.5
LOOKUP_MAX_WAIT_S = 4.0
LOOKUP_BUDGET_S = 15.0
"""Look-ups of a leg whose answer was lost: exponential backoff from 0.5 s up to 4 s between tries,
for at most 15 s; after that the leg stays UNKNOWN and the next engine call looks again."""

MAX_ROUNDS = 4
"""Dispatch → sync rounds in one call (placing a resized stop after cancelling the old one, a
flatten after a refused stop, …); what is still pending after them waits for the next call."""


@dataclass(frozen=True)
class Cmd:
    """One venue action: ``bracket`` (an entry with its stop-loss and take-profit), ``order`` (one
    order: an exit, a flatten), ``protect`` (stop-loss [+ take-profit] of an open position),
    ``cancel`` (one leg). ``cids``: the staged legs it places, or the leg it cancels."""

    kind: Literal["bracket", "order", "protect", "cancel"]
    intent_id: str
    cids: tuple[str, ...]
    why: str = ""
    reserve: float = 0.0
    # what the staging transaction wrote (the dispatch then reads nothing back); None: read the legs
    intent: TradeIntent | None = field(default=None, compare=False)
    requests: tuple[OrderRequest, ...] | None = field(default=None, compare=False)
    placed_at: datetime | None = None


@dataclass
class Outcome:
    """What the venue answered for one leg: ``order`` (its report), ``rejected`` (the venue's words),
    or ``unknown`` (no answer: look it up)."""

    order: Order | None = None
    rejected: str | None = None
    unknown: str | None = None


@dataclass
class EngineRun:
    """What one engine call did (for the caller's output and the audit): commands dispatched,
    legs whose fate is still unknown, positions flattened or flagged."""

    dispatched: list[Cmd] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    flattened: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    pending: list[Cmd] = field(default_factory=list)


class ExecutionEngine:
    """The one route for a book's orders (see the module doc). ``rt``: the book's runtime."""

    def __init__(self, rt: Runtime, run_id: str = "engine"):
        self.rt, self.run_id = rt, run_id

    # ------------------------------------------------------------------ staging
    def lineage(self, row: IntentRow) -> repo.Lineage:
        return repo.Lineage(row.strategy, row.instrument, row.partition_key, self.run_id, row.book)

    def stage_send(self, s, intent: TradeIntent, placed_at: datetime, reserve: float = 0.0,
                   status: OrderStatus = OrderStatus.SUBMITTED) -> Cmd | None:
        """Stage the orders of a VALIDATED / AWAITING_CONFIRMATION intent (entry: its bracket; exit:
        the reduce-only market order for the whole position the venue reports) and move the intent
        to SUBMITTED — or DRY_RUN with ``status`` DRY_RUN (recorded, never sent). Returns the
        command to dispatch after the caller commits (None: nothing to send; an exit with no
        position is FAILED)."""
        rt, row = self.rt, s.get(IntentRow, intent.intent_id)
        lin = self.lineage(row)
        if intent.kind is IntentKind.ENTRY:
            requests = order_requests(intent, rt.limits.max_entry_slippage_pct, rt.instrument(intent.instrument).tick_size)
            kind = "bracket"
        else:
            pos = next((p for p in book_positions(s, rt) if p.instrument == intent.instrument), None)
            if pos is None:
                repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.FAILED,
                                       f"not sent: no {intent.instrument} position to exit")
                return None
            requests, kind = [exit_order(intent.intent_id, pos)], "order"
        for r in requests:
            ledger_legs.stage_leg(s, lin, intent.intent_id, rt.spec.mode.value, rt.venue.name, r, placed_at, status=status)
        cids = tuple(r.client_order_id for r in requests)
        s.info["staged"] = True
        if status is OrderStatus.DRY_RUN:
            return None
        repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.SUBMITTED,
                               f"{len(cids)} orders for {rt.venue.name} (written ahead, then sent): " + ", ".join(cids))
        s.flush()
        return Cmd(kind, intent.intent_id, cids, reserve=reserve, intent=intent, requests=tuple(requests), placed_at=placed_at)

    # ------------------------------------------------------------------ the call
    def run(self, cmds: list[Cmd] = (), *, intent_ids: list[str] | None = None,
            then: Callable | None = None) -> EngineRun:
        """Dispatch ``cmds`` (staged and committed by the caller), then sync the book — the intents
        ``intent_ids`` (None: every open intent of the book) — until nothing is pending or
        :data:`MAX_ROUNDS` rounds ran. ``then(s)`` runs inside the last ledger transaction (the
        window's snapshot). Idempotent: after a crash anywhere, calling it again finishes the job."""
        out = EngineRun()
        pending = list(cmds)
        for round_ in range(MAX_ROUNDS):
            out.dispatched += pending
            # the venue calls run under the book's lock, inside its unit of work: the venue saves first
            # (leaving the with-block), then the ledger commits its answers — and the legs were
            # committed before this transaction began (written ahead), so a crash in between loses nothing
            with self.step() as s:
                outcomes = self.dispatch(pending, s) if pending else {}
                self.fold(s, outcomes)
                pending = book_sync.sync(self, s, intent_ids, out)
                last = not pending or round_ == MAX_ROUNDS - 1
                if last:
                    out.pending = pending  # staged and committed: the next call sends them
                    if then is not None:
                        then(s)
            if last:
                break
        return out

    def step(self):
        return step(self.rt)

    # ------------------------------------------------------------------ the venue
    def dispatch(self, cmds: list[Cmd], s) -> dict[str, Outcome]:
        """Send ``cmds`` to the venue (one unit of work), their legs already committed; ``s``: the
        ledger session of the step they run in (read only here). Every leg gets an
        :class:`Outcome`; nothing raises for one command's failure."""
        legs: dict[str, tuple] = {}
        intents = {cmd.intent_id: cmd.intent for cmd in cmds if cmd.intent is not None}
        for cmd in cmds:
            if cmd.requests is None or cmd.intent is None:
                for c in cmd.cids:
                    row = s.get(OrderRow, c)
                    legs[c] = (ledger_legs.request_of(row), row.placed_at)
                intents[cmd.intent_id] = repo.intent_from_row(s.get(IntentRow, cmd.intent_id))
        for cmd in cmds:
            if cmd.requests is not None:
                legs.update({r.client_order_id: (r, cmd.placed_at) for r in cmd.requests})
        out: dict[str, Outcome] = {}
        venue = self.rt.venue
        with venue.unit_of_work():
            for cmd in cmds:
                try:
                    for cid, o in self._send(cmd, legs, intents[cmd.intent_id]).items():
                        out[cid] = Outcome(order=o)
                except OrderRejected as e:
                    why = f"{e} (code {e.code})" if e.code is not None and str(e.code) not in str(e) else str(e)
                    out.update({c: Outcome(rejected=why) for c in cmd.cids})
                except VenueUnavailable as e:
                    out.update({c: Outcome(unknown=str(e)) for c in cmd.cids})
                except VenueError as e:  # a refusal the adapter did not classify: final for this leg, fail closed
                    out.update({c: Outcome(rejected=str(e)) for c in cmd.cids})
        return out

    def _send(self, cmd: Cmd, legs: dict[str, tuple], intent: TradeIntent) -> dict[str, Order]:
        venue = self.rt.venue
        reqs = [legs[c][0] for c in cmd.cids]
        placed_at = legs[cmd.cids[0]][1]
        side = intent.position_side.value if intent.position_side else "long"
        if cmd.kind == "cancel":
            r = reqs[0]
            return {r.client_order_id: venue.cancel_order(r.client_order_id, **_instrument_kw(venue, r.instrument))}
        if cmd.kind == "bracket":
            entry, stop, target = reqs
            legs = [r.model_copy(update={"parent_client_order_id": entry.client_order_id,
                                         "oco_group": entry.client_order_id}) for r in (stop, target)]
            orders = venue.create_bracket(entry, *legs, placed_at=placed_at, position_side=side,
                                          leverage=intent.leverage, reserve=cmd.reserve, margin_mode=intent.margin_mode)
            return {o.client_order_id: o for o in orders}
        if cmd.kind == "protect":
            stop = reqs[0]
            target = reqs[1] if len(reqs) > 1 else None
            orders = venue.create_protection(stop, target, placed_at=placed_at, position_side=side, leverage=intent.leverage)
            return {o.client_order_id: o for o in orders}
        pos_side = _position_side(self.rt, intent, reqs[0])
        return {reqs[0].client_order_id: venue.create_order(reqs[0], placed_at=placed_at, position_side=pos_side,
                                                            leverage=intent.leverage)}

    def fold(self, s, outcomes: dict[str, Outcome]) -> None:
        """Fold the venue's answers into the legs (one place: :func:`domain.orders.apply_report`).
        A leg with no answer becomes UNKNOWN and is looked up with backoff right away."""
        for cid, oc in outcomes.items():
            row = s.get(OrderRow, cid)
            if row is None:
                continue
            lin = self.lineage(s.get(IntentRow, row.intent_id))
            leg = ledger_legs.to_leg(row)
            if oc.order is not None:
                leg = apply_report(leg, oc.order)
                ledger_legs.apply_leg(s, lin, row, leg, oc.order.venue_order_id)
            elif oc.rejected is not None:
                if not leg.status.terminal:
                    ledger_legs.apply_leg(s, lin, row, replace(leg, status=OrderStatus.REJECTED, reason=oc.rejected[:500]))
            else:
                ledger_legs.apply_leg(s, lin, row, apply_report(leg, None, answered=False))
                repo.audit(s, lin, "order_unknown", client_order_id=cid, reason=oc.unknown[:500] if oc.unknown else None)
        if outcomes:
            s.info["folded"] = True  # the sync that follows must run even if the venue's revision did not move
        s.flush()

    def look_up(self, row: OrderRow) -> tuple[Order | None, bool]:
        """The venue's report of a leg (Order, True), definitely absent (None, True), or no answer
        (None, False). Legs whose answer was lost (SUBMITTED, UNKNOWN) are looked up with backoff."""
        venue = self.rt.venue
        lost = row.status in (OrderStatus.SUBMITTED.value, OrderStatus.UNKNOWN.value)
        if not lost:
            try:
                return venue.fetch_order(row.client_order_id, instrument=row.instrument), True
            except VenueUnavailable:
                return None, False
        retrying = Retrying(retry=retry_if_exception_type(VenueUnavailable), reraise=True,
                            wait=wait_exponential(multiplier=LOOKUP_INITIAL_WAIT_S, max=LOOKUP_MAX_WAIT_S),
                            stop=stop_after_delay(LOOKUP_BUDGET_S))
        try:
            return retrying(venue.lookup_order, row.client_order_id, row.instrument, row.placed_at), True
        except VenueUnavailable:
            return None, False


@contextmanager
def step(rt: Runtime):
    """A ledger transaction holding the book's lock (its row stays in the session: ``s.get(BookRow,
    …)`` reads it without a query), with the venue in one unit of work, committed first."""
    with session_scope(rt.engine) as s:
        repo.lock_book(s, rt.spec.name, rt.book)
        with rt.venue.unit_of_work():
            yield s


def _instrument_kw(venue, instrument: str) -> dict:
    import inspect

    try:
        return {"instrument": instrument} if "instrument" in inspect.signature(venue.cancel_order).parameters else {}
    except (TypeError, ValueError):
        return {}


def _position_side(rt: Runtime, intent: TradeIntent, req) -> str:
    if intent.position_side is not None:
        return intent.position_side.value
    pos = next((p for p in rt.venue.fetch_positions() if p.instrument == req.instrument), None) \
        if getattr(rt.venue, "reports_positions", True) else None
    return pos.side.value if pos is not None else ("long" if req.side.value == "sell" else "short")


def orders_of(s, intent_id: str) -> list[dict]:
    """The intent's legs as plain dicts (outputs, the CLI)."""
    rows = s.execute(select(OrderRow).where(OrderRow.intent_id == intent_id).order_by(OrderRow.client_order_id)).scalars()
    return [{"client_order_id": o.client_order_id, "role": o.role, "side": o.side, "type": o.type, "quantity": o.quantity,
             "price": o.price, "trigger_price": o.trigger_price, "status": o.status, "filled_quantity": o.filled_quantity,
             "reason": o.reason} for o in rows]


__all__ = ["Cmd", "EngineRun", "ExecutionEngine", "LOOKUP_BUDGET_S", "MAX_ROUNDS", "Outcome", "orders_of", "step"]
