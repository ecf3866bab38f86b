"""Reading one intent or a mode's history: the intent with its guards, status history, orders
(legs with their fills) and audit trail, as JSON-able dicts (the CLI's ``intent show`` and
``history``, the launchpad jobs' outputs)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from trading_pipelines.domain.models import IntentStatus, Mode
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.ledger.models import (
    LIVE_BOOK,
    AuditRow,
    FillRow,
    GuardResultRow,
    IntentRow,
    IntentStatusRow,
    OrderRow,
)


class Refused(ValueError):
    """An operation refused before it changed anything; the message says why."""


def _row(s, intent_id: str) -> IntentRow:
    row = s.get(IntentRow, intent_id)
    if row is None:
        raise Refused(f"unknown intent {intent_id!r}")
    return row


def _iso(v):
    return v.isoformat() if isinstance(v, datetime) else v


def _order_dict(o: OrderRow, fills: list[FillRow] | None = None) -> dict:
    d = {"client_order_id": o.client_order_id, "intent_id": o.intent_id, "strategy": o.strategy, "book": o.book,
         "instrument": o.instrument, "mode": o.mode, "venue": o.venue, "role": o.role, "side": o.side, "type": o.type,
         "quantity": o.quantity, "price": o.price, "trigger_price": o.trigger_price, "reduce_only": o.reduce_only,
         "status": o.status, "filled_quantity": o.filled_quantity, "average_price": o.average_price,
         "placed_at": _iso(o.placed_at)}
    if fills is not None:
        d["fills"] = [{"fill_id": f.fill_id, "quantity": f.quantity, "price": f.price, "fee": f.fee, "time": _iso(f.time)}
                      for f in fills]
    return d


_INTENT_FIELDS = ("intent_id", "strategy", "book", "instrument", "mode", "window_end", "partition_key", "kind", "side",
                  "position_side", "quantity", "entry", "stop", "take_profit", "leverage", "margin_mode",
                  "liquidation_price", "risk_amount", "notional", "margin", "equity", "status", "reason", "created_at",
                  "updated_at")


def intent_report(s, intent_id: str) -> dict:
    """One intent as a JSON-able dict: its fields, ``origin`` (manual | pipeline), ``guards`` (each
    with its message, pre-submit re-checks included), ``orders`` (each with its fills),
    ``transitions`` (every status reached, with its cause and run) and ``audit`` (the audit rows
    that name the intent or one of its orders, oldest first). Raises :class:`Refused` if unknown."""
    row = _row(s, intent_id)
    guards = [{"guard": g.guard, "passed": g.passed, "message": g.message, "run_id": g.run_id}
              for g in s.execute(select(GuardResultRow).where(GuardResultRow.intent_id == intent_id)
                                 .order_by(GuardResultRow.id)).scalars()]
    orders = list(s.execute(select(OrderRow).where(OrderRow.intent_id == intent_id)
                            .order_by(OrderRow.placed_at, OrderRow.client_order_id)).scalars())
    cids = {o.client_order_id for o in orders}
    fills: dict[str, list] = {}
    if cids:
        for f in s.execute(select(FillRow).where(FillRow.client_order_id.in_(cids)).order_by(FillRow.time)).scalars():
            fills.setdefault(f.client_order_id, []).append(f)
    transitions = [{"from": h.from_status, "to": h.to_status, "reason": h.reason, "run_id": h.run_id, "at": _iso(h.at)}
                   for h in s.execute(select(IntentStatusRow).where(IntentStatusRow.intent_id == intent_id)
                                      .order_by(IntentStatusRow.id)).scalars()]
    prefix = f"tp-{intent_id[3:]}-"
    stmt = select(AuditRow).where(AuditRow.strategy == row.strategy, AuditRow.book == row.book)
    if row.created_at is not None:
        stmt = stmt.where(AuditRow.at >= row.created_at - timedelta(minutes=1))
    audit = [{"at": _iso(a.at), "event": a.event, "run_id": a.run_id, "detail": a.detail}
             for a in s.execute(stmt.order_by(AuditRow.id)).scalars()
             if isinstance(a.detail, dict) and (a.detail.get("intent_id") == intent_id
                                                or str(a.detail.get("client_order_id") or "").startswith(prefix))]
    report = {k: _iso(getattr(row, k)) for k in _INTENT_FIELDS}
    report["origin"] = "manual" if any(a["event"] == "manual_plan" for a in audit) else "pipeline"
    report.update(guards=guards, orders=[_order_dict(o, fills.get(o.client_order_id, [])) for o in orders],
                  transitions=transitions, audit=audit)
    return report


def show_intent(engine, intent_id: str) -> dict:
    """:func:`intent_report` in its own read transaction."""
    with session_scope(engine) as s:
        return intent_report(s, intent_id)


def history(engine, mode: Mode | str, strategy: str | None = None, book: str | None = LIVE_BOOK) -> dict:
    """Intents and orders of one mode (spot | futures), oldest first: ``{"mode", "strategy",
    "book", "intents": [...], "orders": [...]}``; intents with their order count, no-trades left
    out (they place nothing). ``book`` None: every book (replays included)."""
    try:
        mode = Mode(mode.lower() if isinstance(mode, str) else mode)
    except ValueError:
        raise Refused(f"mode {mode!r} is not spot or futures") from None
    with session_scope(engine) as s:
        ist = select(IntentRow).where(IntentRow.mode == mode.value, IntentRow.status != IntentStatus.NO_TRADE.value)
        ost = select(OrderRow).where(OrderRow.mode == mode.value)
        if strategy:
            ist, ost = ist.where(IntentRow.strategy == strategy), ost.where(OrderRow.strategy == strategy)
        if book:
            ist, ost = ist.where(IntentRow.book == book), ost.where(OrderRow.book == book)
        orders = list(s.execute(ost.order_by(OrderRow.placed_at, OrderRow.client_order_id)).scalars())
        per_intent: dict[str, int] = {}
        for o in orders:
            per_intent[o.intent_id] = per_intent.get(o.intent_id, 0) + 1
        manual = {a.detail.get("intent_id") for a in s.execute(select(AuditRow).where(AuditRow.event == "manual_plan"))
                  .scalars() if isinstance(a.detail, dict)}
        intents = [{"intent_id": r.intent_id, "strategy": r.strategy, "book": r.book, "instrument": r.instrument,
                    "mode": r.mode, "window_end": _iso(r.window_end), "kind": r.kind, "side": r.side,
                    "quantity": r.quantity, "entry": r.entry, "stop": r.stop, "take_profit": r.take_profit,
                    "status": r.status, "reason": r.reason, "origin": "manual" if r.intent_id in manual else "pipeline",
                    "orders": per_intent.get(r.intent_id, 0)}
                   for r in s.execute(ist.order_by(IntentRow.window_end, IntentRow.instrument, IntentRow.created_at)).scalars()]
        return {"mode": mode.value, "strategy": strategy, "book": book, "intents": intents,
                "orders": [_order_dict(o) for o in orders]}
