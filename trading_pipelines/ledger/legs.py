"""Order legs, fills and positions in the ledger: what the venue *reported*, recorded.

No venue is called here (a venue never shares the ledger's session): the account layer reads the
venue and hands its reports in. Legs are rows of ``orders`` keyed on the client order id, with the
leg state of :mod:`trading_pipelines.domain.orders`. A leg is written *before* it is sent
(:func:`stage_leg`, status SUBMITTED, committed before the venue call), so every order that can
exist at a venue has a ledger row that names it — after a crash at any point the engine finds it
by its client order id.

Positions aggregate fills (per strategy, book and instrument): an entry fill opens a position or
adds to it (average entry price, quantity-weighted), a reduce-only fill takes from it; a position
is closed when its open quantity (``quantity − exit_quantity``) reaches zero, or when the venue no
longer reports one (closed by hand or by the venue, with no fill of ours to explain it). Realized
P&L is Σ side × (exit price − average entry) × quantity over its exit fills (quote currency,
before fees); ``fees`` sums the fees of every fill of the position.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from trading_pipelines.domain.models import Fill, Order, OrderRequest, OrderRole, OrderStatus, Position
from trading_pipelines.domain.orders import QTY_EPS, Leg
from trading_pipelines.ledger.models import FillRow, IntentRow, OrderRow, PositionRow
from trading_pipelines.ledger.repo import Lineage, audit

NON_TERMINAL = tuple(s.value for s in OrderStatus if not s.terminal)


def to_leg(row: OrderRow) -> Leg:
    return Leg(client_order_id=row.client_order_id, role=OrderRole(row.role), quantity=row.quantity,
               status=OrderStatus(row.status), filled_quantity=row.filled_quantity or 0.0,
               average_price=row.average_price, reason=row.reason or "")


def request_of(row: OrderRow) -> OrderRequest:
    """The order request a leg row was staged with."""
    from trading_pipelines.domain.models import OrderType, Side

    return OrderRequest(client_order_id=row.client_order_id, instrument=row.instrument, side=Side(row.side),
                        type=OrderType(row.type), quantity=row.quantity, price=row.price, trigger_price=row.trigger_price,
                        role=OrderRole(row.role), reduce_only=row.reduce_only)


def legs_of(s: Session, intent_id: str) -> list[OrderRow]:
    return list(s.execute(select(OrderRow).where(OrderRow.intent_id == intent_id)
                          .order_by(OrderRow.placed_at, OrderRow.client_order_id)).scalars())


def open_intent_ids(s: Session, strategy: str, book: str) -> list[str]:
    """Intents of the book with a leg that is not terminal (working, staged, or unanswered)."""
    return list(s.execute(select(OrderRow.intent_id).where(OrderRow.strategy == strategy, OrderRow.book == book,
                                                           OrderRow.status.in_(NON_TERMINAL)).distinct()).scalars())


def stage_leg(s: Session, lin: Lineage, intent_id: str, mode: str, venue: str, r: OrderRequest, placed_at: datetime,
              status: OrderStatus = OrderStatus.SUBMITTED, reason: str = "") -> OrderRow:
    """Write a leg before it is sent (SUBMITTED), or as DRY_RUN; a leg already on record is
    returned as it is (the write-ahead of a re-run finds its own row)."""
    row = s.get(OrderRow, r.client_order_id)
    if row is not None:
        return row
    row = OrderRow(client_order_id=r.client_order_id, intent_id=intent_id, strategy=lin.strategy, book=lin.book,
                   instrument=r.instrument, partition_key=lin.partition_key, run_id=lin.run_id, mode=mode, venue=venue,
                   role=r.role.value, side=r.side.value, type=r.type.value, quantity=r.quantity, price=r.price,
                   trigger_price=r.trigger_price, reduce_only=r.reduce_only, status=status.value, placed_at=placed_at,
                   reason=reason or None)
    s.add(row)
    audit(s, lin, "order", client_order_id=r.client_order_id, role=r.role.value, side=r.side.value, type=r.type.value,
          quantity=r.quantity, price=r.price, trigger_price=r.trigger_price, status=status.value, venue=venue)
    return row


def record_reported(s: Session, lin: Lineage, intent_id: str, mode: str, venue: str, orders: list[Order]) -> list[OrderRow]:
    """Legs for orders a venue already reports (adopted as the venue has them: status, fills)."""
    out = []
    for o in orders:
        row = stage_leg(s, lin, intent_id, mode, venue, o.request, o.placed_at, status=o.status, reason=o.reason)
        row.filled_quantity, row.average_price, row.venue_order_id = o.filled_quantity, o.average_price, o.venue_order_id
        out.append(row)
    s.flush()
    return out


def apply_leg(s: Session, lin: Lineage, row: OrderRow, leg: Leg, venue_order_id: str | None = None) -> bool:
    """Write ``leg`` (the fold of a venue report, :func:`domain.orders.apply_report`) into its row;
    an ``order_status`` audit row records each change of state. Returns whether anything changed."""
    changed = (row.status != leg.status.value or abs((row.filled_quantity or 0.0) - leg.filled_quantity) > QTY_EPS
               or row.quantity != leg.quantity or (leg.reason and row.reason != leg.reason))
    if venue_order_id and row.venue_order_id != venue_order_id:
        row.venue_order_id = venue_order_id
    if not changed:
        return False
    if row.status != leg.status.value:
        audit(s, lin, "order_status", client_order_id=row.client_order_id, role=row.role, from_status=row.status,
              to_status=leg.status.value, filled_quantity=leg.filled_quantity, average_price=leg.average_price,
              reason=leg.reason or None)
    row.status, row.filled_quantity, row.average_price = leg.status.value, leg.filled_quantity, leg.average_price
    row.quantity = leg.quantity
    if leg.reason:
        row.reason = leg.reason
    return True


def mirror_order(s: Session, o: Order, intent_id: str, book: str, reason: str, run_id: str = "venue") -> OrderRow:
    """Record an order the venue holds that no leg of ours was staged for — one the venue placed
    itself (a liquidation) or one placed by hand at the venue — under ``intent_id`` (the intent
    whose position it trades)."""
    intent = s.get(IntentRow, intent_id)
    r = o.request
    row = OrderRow(client_order_id=o.client_order_id, intent_id=intent_id, strategy=intent.strategy,
                   instrument=r.instrument, book=book, partition_key=intent.partition_key, run_id=run_id, mode=intent.mode,
                   venue="venue", role=r.role.value, side=r.side.value, type=r.type.value, quantity=r.quantity,
                   price=r.price, trigger_price=r.trigger_price, reduce_only=r.reduce_only, status=o.status.value,
                   venue_order_id=o.venue_order_id, filled_quantity=o.filled_quantity, average_price=o.average_price,
                   placed_at=o.placed_at, reason=reason)
    s.add(row)
    audit(s, Lineage(intent.strategy, r.instrument, intent.partition_key, run_id, book), "venue_order",
          client_order_id=o.client_order_id, role=r.role.value, price=o.average_price, quantity=r.quantity, reason=reason)
    s.flush()
    return row


def newest_fill_time(s: Session, strategy: str, book: str) -> datetime | None:
    """Where the next ``fetch_my_trades`` starts (one microsecond before the newest fill on record)."""
    t = s.execute(select(FillRow.time).where(FillRow.strategy == strategy, FillRow.book == book)
                  .order_by(FillRow.time.desc()).limit(1)).scalar_one_or_none()
    return t - timedelta(microseconds=1) if t is not None else None


def unknown_fills(s: Session, fills: list[Fill]) -> list[Fill]:
    """The fills the ledger has not recorded yet."""
    if not fills:
        return []
    known = set(s.execute(select(FillRow.fill_id).where(FillRow.fill_id.in_([f.fill_id for f in fills]))).scalars())
    return [f for f in fills if f.fill_id not in known]


def open_position_rows(s: Session, strategy: str, book: str) -> dict[str, PositionRow]:
    return {r.instrument: r for r in s.execute(select(PositionRow).where(
        PositionRow.strategy == strategy, PositionRow.book == book, PositionRow.status == "open")).scalars()}


def record_fills(s: Session, strategy: str, book: str, mode: str, fills: list[Fill],
                 venue_positions: dict[str, Position] | None) -> dict[str, int]:
    """Record new ``fills`` (each of a leg on record) and move the book's positions with them (see
    the module doc), then mark open positions from ``venue_positions`` (instrument → the venue's
    position; None: not read) and close those the venue no longer holds. Returns counts:
    ``fills``, ``positions_opened``, ``positions_closed``."""
    changed = {"fills": 0, "positions_opened": 0, "positions_closed": 0}
    open_rows = open_position_rows(s, strategy, book)
    for f in sorted(fills, key=lambda f: (f.time, f.fill_id)):
        order = s.get(OrderRow, f.client_order_id)
        if order is None:
            continue
        s.add(FillRow(fill_id=f.fill_id, client_order_id=f.client_order_id, strategy=strategy, book=book,
                      instrument=f.instrument, side=f.side.value, quantity=f.quantity, price=f.price, fee=f.fee, time=f.time))
        changed["fills"] += 1
        row = open_rows.get(f.instrument)
        if order.role == OrderRole.ENTRY.value:
            if row is None:
                intent = s.get(IntentRow, order.intent_id)
                side = intent.position_side if intent and intent.position_side else ("long" if f.side.value == "buy" else "short")
                row = PositionRow(strategy=strategy, book=book, instrument=f.instrument, mode=mode, side=side,
                                  quantity=f.quantity, entry_price=f.price, mark_price=f.price, fees=f.fee, exit_quantity=0.0,
                                  leverage=intent.leverage if intent else 1.0, opened_at=f.time, status="open",
                                  realized_pnl=0.0)
                s.add(row)
                open_rows[f.instrument] = row
                changed["positions_opened"] += 1
            else:  # one position per instrument: another fill of an entry adds to it
                total = row.quantity + f.quantity
                row.entry_price = (row.entry_price * row.quantity + f.price * f.quantity) / total
                row.quantity, row.fees = total, (row.fees or 0.0) + f.fee
        elif order.reduce_only and row is not None:
            left = row.quantity - (row.exit_quantity or 0.0)
            q = min(f.quantity, left)
            sign = 1.0 if row.side == "long" else -1.0
            row.realized_pnl = (row.realized_pnl or 0.0) + sign * (f.price - row.entry_price) * q
            row.exit_quantity = (row.exit_quantity or 0.0) + q
            row.fees = (row.fees or 0.0) + f.fee
            row.exit_price, row.exit_reason, row.exit_fill_id, row.mark_price = f.price, order.role, f.fill_id, f.price
            if row.quantity - row.exit_quantity <= QTY_EPS * max(1.0, row.quantity):
                row.status, row.closed_at = "closed", f.time
                open_rows.pop(f.instrument)
                changed["positions_closed"] += 1
    s.flush()
    if venue_positions is not None:
        for inst, row in list(open_rows.items()):
            p = venue_positions.get(inst)
            if p is not None:
                row.mark_price = p.mark_price
            elif (row.exit_quantity or 0.0) > 0:  # our exits took it (a spot dust remainder the venue no longer counts)
                row.status = "closed"
                row.closed_at = row.closed_at or s.get(FillRow, row.exit_fill_id).time
                changed["positions_closed"] += 1
            else:  # the venue no longer holds it and no fill of ours explains why: say so, never guess a price
                row.status, row.exit_reason = "closed", "venue_closed"
                changed["positions_closed"] += 1
        s.flush()
    return changed


def position_of(s: Session, strategy: str, book: str, instrument: str, opened_from: datetime) -> PositionRow | None:
    """The position row an entry filled at or after ``opened_from`` opened (the newest such)."""
    return s.execute(select(PositionRow).where(PositionRow.strategy == strategy, PositionRow.book == book,
                                               PositionRow.instrument == instrument, PositionRow.opened_at >= opened_from)
                     .order_by(PositionRow.opened_at).limit(1)).scalar_one_or_none()


__all__ = ["NON_TERMINAL", "apply_leg", "record_reported", "legs_of", "mirror_order", "newest_fill_time", "open_intent_ids",
           "open_position_rows", "position_of", "record_fills", "request_of", "stage_leg", "to_leg", "unknown_fills"]
