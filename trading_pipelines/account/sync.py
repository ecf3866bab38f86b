"""The engine's sync of a book with its venue, under the book's lock (see :mod:`.engine`).

One pass: look up every leg that is not terminal by its client order id and fold the report in;
record new fills and move the positions; then, per intent, re-dispatch legs that were written
ahead but never reached the venue, enforce the protection invariant, and derive the intent's
status from its legs. Returns the commands the next dispatch must send (their legs are staged).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import select

from trading_pipelines.account.requests import exit_order, generation_of, protective_requests
from trading_pipelines.domain.models import (
    IntentKind,
    IntentStatus,
    Order,
    OrderRequest,
    OrderRole,
    OrderStatus,
    OrderType,
    Position,
    TradeIntent,
)
from trading_pipelines.domain.intents import ALLOWED
from trading_pipelines.domain.orders import (
    QTY_EPS,
    apply_report,
    derive_intent_status,
    entry_filled,
    protection,
)
from trading_pipelines.ledger import legs as ledger_legs
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.models import IntentRow, OrderRow
from trading_pipelines import runtime
from trading_pipelines.venues.protocol import SimulatedVenue, VenueUnavailable

WATCHED = (IntentStatus.SUBMITTED.value, IntentStatus.MONITORING.value, IntentStatus.UNPROTECTED.value)


def sync(engine, s, intent_ids: list[str] | None, out) -> list:
    """One sync pass (see the module doc); ``out`` (an ``EngineRun``) collects what it did."""
    rt = engine.rt
    venue = rt.venue
    strategy, book = rt.spec.name, rt.book
    rev = getattr(venue, "revision", None)
    current = rev() if rev else None
    changed = s.info.pop("folded", False) | s.info.pop("staged", False)
    if current is not None and current == rt._reconciled and not changed:
        return []  # nothing at the venue changed since this runtime's last clean sync, and nothing of ours since
    if intent_ids is None:
        watched = s.execute(select(IntentRow.intent_id).where(IntentRow.strategy == strategy, IntentRow.book == book,
                                                              IntentRow.status.in_(WATCHED))).scalars()
        ids = sorted(set(ledger_legs.open_intent_ids(s, strategy, book)) | set(watched))
    else:
        ids = sorted(set(intent_ids))
    rows = {i: ledger_legs.legs_of(s, i) for i in ids}
    for i in ids:
        lin = engine.lineage(s.get(IntentRow, i))
        for row in rows[i]:
            if OrderStatus(row.status).terminal or row.status == OrderStatus.INITIALIZED.value:
                continue
            report, answered = engine.look_up(row)
            leg = apply_report(ledger_legs.to_leg(row), report, answered=answered)
            if leg.status.terminal and not leg.reason and row.client_order_id in rt._venue_reasons:
                leg = replace(leg, reason=rt._venue_reasons[row.client_order_id])  # the simulated venue's words
            ledger_legs.apply_leg(s, lin, row, leg, report.venue_order_id if report is not None else None)
    reports_positions = getattr(venue, "reports_positions", True)
    positions = {p.instrument: p for p in venue.fetch_positions()} if reports_positions else None
    record_venue_fills(s, venue, strategy, book, rt.spec.mode.value, positions)
    cmds: list = []
    for i in ids:
        cmds += _intent(engine, s, s.get(IntentRow, i), positions, out)
    if intent_ids is None and positions is not None:
        cmds += _foreign_orphans(engine, s, positions)
    s.flush()
    in_doubt = any(r.status in (OrderStatus.SUBMITTED.value, OrderStatus.UNKNOWN.value, OrderStatus.INITIALIZED.value)
                   for rs in rows.values() for r in rs)  # the loaded rows carry this pass's updates
    # a clean sync of the whole book lets the next one skip while the venue's revision stands still
    rt._reconciled = rev() if rev and intent_ids is None and not cmds and not in_doubt else None
    return cmds


def record_venue_fills(s, venue, strategy: str, book: str, mode: str, positions: dict[str, Position] | None) -> dict:
    """Record the fills the venue reports since the newest on record, and the positions they move
    (:func:`~trading_pipelines.ledger.legs.record_fills`); a fill of an order no leg names is
    mirrored first (:func:`mirror_fill`). Returns the counts of what changed."""
    fills = ledger_legs.unknown_fills(s, venue.fetch_my_trades(ledger_legs.newest_fill_time(s, strategy, book)))
    for f in fills:
        if s.get(OrderRow, f.client_order_id) is None:
            mirror_fill(s, venue, strategy, book, f)
    return ledger_legs.record_fills(s, strategy, book, mode, fills, positions)


def mirror_fill(s, venue, strategy: str, book: str, f) -> None:
    """A fill of an order no leg of ours was staged for: the venue's own (a liquidation, under its
    parent entry's intent) or one placed by hand at the venue against a position of ours (a close
    by hand, recorded as a reduce-only exit of that position's intent)."""
    try:
        o = venue.fetch_order(f.client_order_id, instrument=f.instrument)
    except Exception:  # noqa: BLE001 - the fill itself says enough to record it
        o = None
    parent = s.get(OrderRow, o.request.parent_client_order_id) if o is not None and o.request.parent_client_order_id else None
    if parent is not None:
        ledger_legs.mirror_order(s, o, parent.intent_id, book, "placed by the venue")
        return
    open_pos = ledger_legs.open_position_rows(s, strategy, book).get(f.instrument)
    if open_pos is None or (f.side.value == "buy") == (open_pos.side == "long"):
        return  # not against a position of ours: not the ledger's business
    entry = s.execute(select(OrderRow).where(OrderRow.strategy == strategy, OrderRow.book == book,
                                             OrderRow.instrument == f.instrument, OrderRow.role == OrderRole.ENTRY.value,
                                             OrderRow.filled_quantity > 0).order_by(OrderRow.placed_at.desc())).scalars().first()
    if entry is None:
        return
    # a conditional leg of ours that the venue reports triggered (Binance USDⓈ-M's Algo Service: the
    # algo order is FINISHED with nothing filled, the fill belongs to the market order it became)
    triggered = next((r for r in ledger_legs.legs_of(s, entry.intent_id)
                      if r.role in (OrderRole.STOP_LOSS.value, OrderRole.TAKE_PROFIT.value)
                      and r.status == OrderStatus.FILLED.value and (r.filled_quantity or 0.0) <= QTY_EPS), None)
    role = OrderRole(triggered.role) if triggered is not None else OrderRole.EXIT
    why = f"the market order {triggered.client_order_id} triggered" if triggered is not None else "placed at the venue by hand"
    req = OrderRequest(client_order_id=f.client_order_id, instrument=f.instrument, side=f.side, type=OrderType.MARKET,
                       quantity=f.quantity, role=role, reduce_only=True)
    mirrored = Order(client_order_id=f.client_order_id, venue_order_id=o.venue_order_id if o else None, request=req,
                     status=OrderStatus.FILLED, placed_at=f.time, filled_quantity=f.quantity, average_price=f.price)
    ledger_legs.mirror_order(s, mirrored, entry.intent_id, book, why)


def fresh(rt, intent: TradeIntent) -> bool:
    """Whether an entry may still be sent: until the bar after its window has passed (the venue's
    clock for a simulated venue, the wall clock for a real one)."""
    clock = rt.venue.clock() if isinstance(rt.venue, SimulatedVenue) else runtime.WALL_CLOCK()
    return clock is None or clock < intent.window_end + rt.spec.bar_duration


def reserve_of(rt, intent: TradeIntent) -> float:
    from trading_pipelines.account.view import entry_reserve_of

    return entry_reserve_of(rt, intent)


def _intent(engine, s, row: IntentRow, positions: dict | None, out) -> list:
    from trading_pipelines.account.engine import Cmd

    rt = engine.rt
    if row.kind == IntentKind.NONE.value:
        return []
    intent = repo.intent_from_row(row)
    lin = engine.lineage(row)
    rows = ledger_legs.legs_of(s, row.intent_id)
    if not rows:
        return []
    cmds: list = []
    staged = [r for r in rows if r.status == OrderStatus.INITIALIZED.value]
    if staged:  # written ahead, and the venue definitely does not hold them: send them now
        by_role = {r.role: r for r in staged}
        if OrderRole.ENTRY.value in by_role:
            trio = [by_role.get(k) for k in ("entry", "stop_loss", "take_profit")]
            if fresh(rt, intent) and all(trio):
                _resubmit(s, lin, trio)
                cmds.append(Cmd("bracket", row.intent_id, tuple(r.client_order_id for r in trio), reserve=reserve_of(rt, intent),
                                why="written ahead, not at the venue: sent now"))
            else:
                for r in staged:
                    ledger_legs.apply_leg(s, lin, r, _canceled(r, "not sent: the window passed before it reached the venue"))
        else:
            protective = [r for r in staged if r.role in ("stop_loss", "take_profit")]
            exits = [r for r in staged if r.role == "exit"]
            if protective and positions is not None:  # never reached the venue: sized to what is open now
                pos = positions.get(intent.instrument)
                held = pos.quantity if pos is not None and pos.side is intent.position_side else 0.0
                qty = _lot(rt, intent.instrument, min(held, max(
                    0.0, sum(r.filled_quantity or 0 for r in rows if r.role == "entry")
                    - sum(r.filled_quantity or 0 for r in rows if r.role not in ("entry",)))))
                for r in protective:
                    if qty > 0 and abs(r.quantity - qty) > 1e-12:
                        repo.audit(s, lin, "order_resized", client_order_id=r.client_order_id, quantity=qty,
                                   was=r.quantity, reason="written ahead for the bracket, sent for the open quantity")
                        r.quantity = qty
            if protective:
                _resubmit(s, lin, protective)
                cmds.append(Cmd("protect", row.intent_id, tuple(r.client_order_id for r in sorted(protective, key=_stop_first))))
            for r in exits:
                _resubmit(s, lin, [r])
                cmds.append(Cmd("order", row.intent_id, (r.client_order_id,)))
    elif intent.kind is IntentKind.ENTRY and positions is not None:
        cmds += _protect(engine, s, lin, intent, rows, positions, out)
    _derive(engine, s, lin, row, intent, positions, pending=bool(cmds))
    return cmds


def _stop_first(r: OrderRow) -> int:
    return 0 if r.role == "stop_loss" else 1


def _resubmit(s, lin, rows: list[OrderRow]) -> None:
    for r in rows:
        r.status = OrderStatus.SUBMITTED.value
        repo.audit(s, lin, "order_resubmit", client_order_id=r.client_order_id,
                   reason="written ahead, definitely not at the venue: sent now")


def _canceled(r: OrderRow, why: str):
    from dataclasses import replace

    return replace(ledger_legs.to_leg(r), status=OrderStatus.CANCELED, reason=why)


def _protect(engine, s, lin, intent: TradeIntent, rows: list[OrderRow], positions: dict, out) -> list:
    """Enforce the protection invariant for one entry intent (see ``domain.orders.protection``)."""
    from trading_pipelines.account.engine import Cmd

    rt = engine.rt
    legs = [ledger_legs.to_leg(r) for r in rows]
    pos = positions.get(intent.instrument)
    venue_open = pos.quantity if pos is not None and pos.side is intent.position_side else 0.0
    entry = next((g for g in legs if g.role is OrderRole.ENTRY), None)
    avg = entry.average_price if entry is not None else None
    tp_ok = intent.take_profit is not None and avg is not None and (
        intent.take_profit > avg if intent.position_side.value == "long" else intent.take_profit < avg)
    prot = protection(legs, has_take_profit=tp_ok, venue_open=venue_open, lot_step=rt.instrument(intent.instrument).lot_step)
    cmds = [Cmd("cancel", intent.intent_id, (cid,), why="protection: cancelled before its replacement"
                if prot.place else "no position behind it (one-cancels-other)") for cid in prot.cancel]
    for cid in prot.cancel:
        repo.audit(s, lin, "order_cancel_requested", client_order_id=cid,
                   reason="resized to the open quantity" if prot.place else "no position behind it")
    if not prot.place:
        return cmds
    stops = [g for g in legs if g.role is OrderRole.STOP_LOSS]
    newest_stop = max(stops, key=lambda g: generation_of(g.client_order_id), default=None)
    exits = [g for g in legs if g.role is OrderRole.EXIT]
    if newest_stop is not None and newest_stop.status is OrderStatus.REJECTED and not any(g.working for g in exits):
        return cmds + _unprotectable(engine, s, lin, intent, rows, pos, prot.quantity, newest_stop.reason, out)
    gen = 1 + max((generation_of(g.client_order_id) for g in legs if g.role in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT)),
                  default=-1)
    stop, target = protective_requests(intent, _lot(rt, intent.instrument, prot.quantity), gen)
    placed_at = _now(rt)
    new = [stop] + ([target] if prot.take_profit else [])
    for r in new:
        ledger_legs.stage_leg(s, lin, intent.intent_id, rt.spec.mode.value, rt.venue.name, r, placed_at)
    repo.audit(s, lin, "protection", intent_id=intent.intent_id, open_quantity=prot.quantity,
               placed=[r.client_order_id for r in new], cancelled=list(prot.cancel))
    return cmds + [Cmd("protect", intent.intent_id, tuple(r.client_order_id for r in new),
                       why=f"stop-loss for the open {prot.quantity:g}")]


def _unprotectable(engine, s, lin, intent, rows, pos, qty: float, why: str, out) -> list:
    """No stop can rest (the venue refused it): flatten with a reduce-only market order, or flag
    the intent UNPROTECTED (``execution.protection``)."""
    from trading_pipelines.account.engine import Cmd

    rt = engine.rt
    if rt.spec.execution.protection == "flag" or pos is None:
        if IntentStatus.UNPROTECTED in ALLOWED[IntentStatus(s.get(IntentRow, intent.intent_id).status)]:
            repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.UNPROTECTED,
                                   f"no stop-loss rests for the open {qty:g}: {why}")
        repo.audit(s, lin, "unprotected", intent_id=intent.intent_id, open_quantity=qty, reason=why)
        out.flagged.append(intent.intent_id)
        return []
    gen = 1 + max((generation_of(r.client_order_id) for r in rows if r.role == OrderRole.EXIT.value), default=-1)
    req = exit_order(intent.intent_id, pos.model_copy(update={"quantity": qty}), gen)
    ledger_legs.stage_leg(s, lin, intent.intent_id, rt.spec.mode.value, rt.venue.name, req, _now(rt))
    repo.audit(s, lin, "flatten", intent_id=intent.intent_id, client_order_id=req.client_order_id, quantity=qty,
               reason=f"the venue refused the stop-loss ({why}): flattened with a reduce-only market order")
    out.flattened.append(intent.intent_id)
    return [Cmd("order", intent.intent_id, (req.client_order_id,), why="flatten: no stop could rest")]


def _lot(rt, instrument: str, qty: float) -> float:
    """Round a leg's quantity down to the lot step (a partial fill is on the grid already; this
    keeps float noise off it)."""
    from trading_pipelines.domain.sizing import round_down_to_step

    try:
        return round_down_to_step(qty * (1 + 1e-12), rt.instrument(instrument).lot_step) or qty
    except Exception:  # noqa: BLE001
        return qty


def _now(rt) -> datetime:
    return (rt.venue.clock() if isinstance(rt.venue, SimulatedVenue) else None) or runtime.WALL_CLOCK()


def _derive(engine, s, lin, row: IntentRow, intent: TradeIntent, positions: dict | None, pending: bool) -> None:
    """The intent's status from its legs (``domain.orders.derive_intent_status``), with the
    realized P&L of a closed position and what rests for an open one."""
    rows = ledger_legs.legs_of(s, row.intent_id)
    legs = [ledger_legs.to_leg(r) for r in rows]
    flat = positions is not None and intent.instrument not in positions
    status, reason = derive_intent_status(intent.kind, legs, venue_flat=flat and entry_filled(legs) > QTY_EPS)
    current = IntentStatus(row.status)
    if status is IntentStatus.MONITORING:
        working = {g.role for g in legs if g.working and g.role in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT)}
        resting = " and ".join(r.value.replace("_", "-") for r in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT) if r in working)
        reason = reason.replace(": position open", f": position open, {resting} resting" if resting else ": position open")
        if current is IntentStatus.UNPROTECTED and OrderRole.STOP_LOSS not in working:
            return
    if status is IntentStatus.CLOSED and intent.kind is IntentKind.ENTRY:
        reason = _closed_reason(s, engine.rt, intent, rows, reason)
    if status is current or status not in ALLOWED[current]:
        if status is not current and not current.value in ("CANCELLED", "FAILED", "CLOSED", "DRY_RUN"):
            repo.audit(s, lin, "status_not_derived", intent_id=row.intent_id, current=current.value, derived=status.value)
        return
    repo.set_intent_status(s, lin, row.intent_id, status, reason)


def _closed_reason(s, rt, intent: TradeIntent, rows: list[OrderRow], reason: str) -> str:
    from trading_pipelines.ledger.models import FillRow

    entry = next((r for r in rows if r.role == OrderRole.ENTRY.value), None)
    first = s.execute(select(FillRow.time).where(FillRow.client_order_id == entry.client_order_id)
                      .order_by(FillRow.time).limit(1)).scalar_one_or_none() if entry else None
    pos = ledger_legs.position_of(s, rt.spec.name, rt.book, intent.instrument, first) if first else None
    if pos is None or pos.status != "closed":
        return reason
    how = (f"closed by its {pos.exit_reason} at {pos.exit_price}" if pos.exit_price is not None
           else f"closed at the venue ({pos.exit_reason}), no closing fill reported")
    fees = pos.fees or 0.0
    return (f"position {how}: realized P&L {pos.realized_pnl:+.2f} (quote currency, before fees); fees {fees:.2f}, "
            f"net {pos.realized_pnl - fees:+.2f}")


def _foreign_orphans(engine, s, positions: dict) -> list:
    """Reduce-only orders of ours (client order id ``tp-…``) that no ledger leg names and that
    have no position behind them — left by a crash of older code or placed by hand under our ids:
    cancelled and audited."""
    rt = engine.rt
    cmds: list = []
    try:
        resting = rt.venue.fetch_open_orders()
    except VenueUnavailable:
        return []
    for o in resting:
        r = o.request
        if not (r.reduce_only and o.client_order_id.startswith("tp-") and r.instrument not in positions):
            continue
        if s.get(OrderRow, o.client_order_id) is not None:
            continue  # ours, on record: the intent's own protection pass decides
        parent = r.parent_client_order_id and rt.venue.fetch_order(r.parent_client_order_id, instrument=r.instrument)
        if parent and parent.status.working:
            continue
        repo.audit(s, repo.Lineage(rt.spec.name, r.instrument, "orphan", engine.run_id, rt.book), "orphan_cancel",
                   client_order_id=o.client_order_id, role=r.role.value,
                   reason="a reduce-only order with no position behind it and no leg on record")
        try:
            rt.venue.cancel_order(o.client_order_id)
        except Exception:  # noqa: BLE001 - the next tick tries again
            pass
    return cmds


__all__ = ["fresh", "mirror_fill", "record_venue_fills", "reserve_of", "sync"]
