"""The protection invariant as a check (the ``positions_protected`` asset check reads it): every open
position that belongs to an intent has a working reduce-only stop for its whole open quantity."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from trading_pipelines.domain.models import IntentKind, IntentStatus, OrderRole
from trading_pipelines.domain.orders import QTY_EPS, open_quantity
from trading_pipelines.ledger import legs as ledger_legs
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.ledger.models import IntentRow
from trading_pipelines.runtime import Runtime


@dataclass(frozen=True)
class Unprotected:
    """An open position without a stop for all of it: ``quantity`` open (base units) at the venue,
    ``stop_quantity`` what working stop-loss legs cover, ``why`` in words."""

    intent_id: str
    instrument: str
    quantity: float
    stop_quantity: float
    why: str


def unprotected_positions(rt: Runtime) -> list[Unprotected]:
    """The book's open positions of intents (MONITORING, UNPROTECTED, SUBMITTED with a fill) whose
    working stop-loss legs do not cover the open quantity the venue reports (rounded down to the lot
    step). A venue that reports no positions (a webhook) has nothing to check. Reads the venue once."""
    venue = rt.venue
    if not getattr(venue, "reports_positions", True):
        return []
    with venue.unit_of_work():
        positions = {p.instrument: p for p in venue.fetch_positions()}
    out: list[Unprotected] = []
    with session_scope(rt.engine) as s:
        rows = s.execute(select(IntentRow).where(
            IntentRow.strategy == rt.spec.name, IntentRow.book == rt.book, IntentRow.kind == IntentKind.ENTRY.value,
            IntentRow.status.in_((IntentStatus.MONITORING.value, IntentStatus.UNPROTECTED.value,
                                  IntentStatus.SUBMITTED.value)))).scalars().all()
        for row in rows:
            legs = [ledger_legs.to_leg(r) for r in ledger_legs.legs_of(s, row.intent_id)]
            pos = positions.get(row.instrument)
            held = pos.quantity if pos is not None and pos.side.value == row.position_side else 0.0
            open_qty = min(open_quantity(legs), held)
            if open_qty <= QTY_EPS:
                continue
            lot = rt.instrument(row.instrument).lot_step
            need = int(open_qty / lot + 1e-9) * lot if lot else open_qty
            covered = sum(g.remaining for g in legs if g.role is OrderRole.STOP_LOSS and g.working)
            if covered + max(QTY_EPS, 1e-9 * need) < need:
                out.append(Unprotected(row.intent_id, row.instrument, open_qty, covered,
                                       f"{row.instrument}: {open_qty:g} open, working stops cover {covered:g}"
                                       + (f" ({row.reason})" if row.status == IntentStatus.UNPROTECTED.value else "")))
    return out


__all__ = ["Unprotected", "unprotected_positions"]
