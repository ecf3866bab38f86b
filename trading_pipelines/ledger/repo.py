"""Ledger writes and reads. Every writer is an upsert keyed on the row's natural key, so a
re-run of the same partition updates rows in place and never duplicates them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trading_pipelines.domain.intents import transition
from trading_pipelines.domain.models import GuardResult, IntentStatus, PortfolioSnapshot, Position, Signal, TradeIntent
from trading_pipelines.ledger.models import (
    LIVE_BOOK,
    AuditRow,
    BookRow,
    FillRow,
    GuardResultRow,
    IntentRow,
    IntentStatusRow,
    OrderRow,
    PositionRow,
    ProviderCallRow,
    SignalRow,
    SnapshotRow,
    utcnow,
)


@dataclass(frozen=True)
class Lineage:
    """Where a row came from: the strategy, instrument, partition key and Dagster run id, and the
    book (``live`` or a replay book) it belongs to."""

    strategy: str
    instrument: str
    partition_key: str
    run_id: str
    book: str = LIVE_BOOK


def keep(s: Session, row):
    """Hold ``row`` for the rest of the transaction. A session's identity map holds clean objects
    weakly: without a reference, the next ``s.get`` of a row this step just wrote is a new SELECT
    (measured: 5 per window in a replay)."""
    s.info.setdefault("held_rows", []).append(row)
    return row


def audit(s: Session, lin: Lineage, event: str, **detail: Any) -> None:
    s.add(AuditRow(strategy=lin.strategy, book=lin.book, instrument=lin.instrument, partition_key=lin.partition_key,
                   run_id=lin.run_id, event=event, detail=_clean(detail)))


def _clean(v: Any) -> Any:
    """JSON-safe: NaN and infinities become None (Postgres JSON refuses them)."""
    if isinstance(v, float) and v != v or v in (float("inf"), float("-inf")):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def record_signal(s: Session, lin: Lineage, sig: Signal, *, prompt: str, request_json: dict | None,
                  response_text: str | None, usage: dict, latency_ms: float | None,
                  chart_key: str | None, chart_sha256: str | None, market: dict | None = None,
                  existing: dict | None = None) -> SignalRow:
    """Insert or update the signal of (strategy, instrument, window). ``existing``: the rows of a
    batch already loaded by :func:`signal_rows` (saves a query per window)."""
    if existing is not None:
        row = existing.get(sig.window_end)
    else:
        row = s.execute(select(SignalRow).where(SignalRow.strategy == sig.strategy, SignalRow.instrument == sig.instrument,
                                                SignalRow.window_end == sig.window_end)).scalar_one_or_none()
    if row is None:
        row = SignalRow(strategy=sig.strategy, instrument=sig.instrument, window_end=sig.window_end)
        s.add(row)
    values = dict(
        partition_key=lin.partition_key, run_id=lin.run_id, mode=sig.mode.value, action=sig.action,
        confidence=sig.confidence, entry=sig.entry, stop=sig.stop, take_profit=sig.take_profit, thesis=sig.thesis,
        provider=sig.provider, model=sig.model, prompt_hash=sig.prompt_hash, prompt=prompt, request_json=request_json,
        response_text=response_text, prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"), total_tokens=usage.get("total_tokens"),
        latency_ms=latency_ms, chart_key=chart_key, chart_sha256=chart_sha256, no_trade_reason=sig.no_trade_reason,
        market=_clean(market),
    )
    for k, v in values.items():
        setattr(row, k, v)
    audit(s, lin, "signal", action=sig.action, confidence=sig.confidence, provider=sig.provider, model=sig.model,
          prompt_hash=sig.prompt_hash, no_trade_reason=sig.no_trade_reason)
    return row  # flushed with the window's other rows (the session autoflushes before any read)


def signal_rows(s: Session, strategy: str, instrument: str, window_ends: list[datetime]) -> dict[datetime, SignalRow]:
    """The stored signals of ``instrument`` at ``window_ends``, by window end (one query)."""
    rows = s.execute(select(SignalRow).where(SignalRow.strategy == strategy, SignalRow.instrument == instrument,
                                             SignalRow.window_end >= min(window_ends), SignalRow.window_end <= max(window_ends))).scalars()
    return {r.window_end: r for r in rows}


def set_signal_charts(s: Session, strategy: str, instrument: str, charts: dict) -> None:
    """Record the chart (``ChartRef``: key, sha256) of each window's signal, once it is stored."""
    if not charts:
        return
    rows = signal_rows(s, strategy, instrument, list(charts))
    for end, ref in charts.items():
        row = rows.get(end)
        if row is not None:
            row.chart_key, row.chart_sha256 = ref.key, ref.sha256
    s.flush()


# ---------------------------------------------------------------- provider calls (append-only)


def _no_nul(v: Any) -> Any:
    """``v`` with NUL removed from every string (Postgres refuses NUL in text and JSON)."""
    if isinstance(v, str):
        return v.replace("\x00", "")
    if isinstance(v, dict):
        return {_no_nul(k): _no_nul(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_no_nul(x) for x in v]
    return v


def record_provider_call(s: Session, lin: Lineage, *, window_end: datetime, mode: str, provider: str, model: str,
                         agent: str, prompt: str, prompt_hash: str, template: str | None = None,
                         template_sha256: str | None = None,
                         base_url_host: str | None = None, parameters: dict | None = None, system_text: str | None = None,
                         chart_key: str | None = None, chart_sha256: str | None = None, request_json: dict | None = None,
                         response_text: str | None = None, parsed_signal: dict | None = None, error: str | None = None,
                         usage: dict | None = None, latency_ms: float | None = None, http_calls: int = 0,
                         estimated_cost_usd: float | None = None, cache_key: str | None = None, cache_hit: bool = False,
                         cached_from: int | None = None) -> ProviderCallRow:
    """Append one provider call (never updated afterwards). Text is stored without NUL; JSON
    without NaN/infinities."""
    usage = usage or {}
    row = ProviderCallRow(
        strategy=lin.strategy, instrument=lin.instrument, partition_key=lin.partition_key, run_id=lin.run_id,
        window_end=window_end, mode=mode, provider=provider, model=model, agent=agent, template=template,
        template_sha256=template_sha256,
        base_url_host=base_url_host, parameters=_no_nul(_clean(parameters)), system_text=_no_nul(system_text),
        prompt=_no_nul(prompt), prompt_hash=prompt_hash, chart_key=chart_key, chart_sha256=chart_sha256,
        request_json=_no_nul(_clean(request_json)), response_text=_no_nul(response_text),
        parsed_signal=_no_nul(_clean(parsed_signal)), error=_no_nul(error), prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"), total_tokens=usage.get("total_tokens"), latency_ms=latency_ms,
        http_calls=http_calls, estimated_cost_usd=estimated_cost_usd, cache_key=cache_key, cache_hit=cache_hit,
        cached_from=cached_from, created_at=utcnow())
    s.add(row)
    s.flush()
    return keep(s, row)


def cached_call(s: Session, cache_key: str) -> ProviderCallRow | None:
    """The newest recorded call with ``cache_key`` whose answer arrived (``error`` is NULL)."""
    return s.execute(select(ProviderCallRow).where(ProviderCallRow.cache_key == cache_key, ProviderCallRow.error.is_(None),
                                                   ProviderCallRow.parsed_signal.is_not(None))
                     .order_by(ProviderCallRow.id.desc()).limit(1)).scalar_one_or_none()


def provider_usage(s: Session, strategy: str, *, day: datetime | None = None,
                   run_id: str | None = None) -> tuple[int, float]:
    """(total tokens, estimated USD cost) of ``strategy``'s provider calls, cache hits excluded:
    those made on the UTC day of ``day`` (``created_at``), and/or those of ``run_id``. A call
    without reported usage or without a price counts 0."""
    from sqlalchemy import func

    stmt = select(func.coalesce(func.sum(ProviderCallRow.total_tokens), 0),
                  func.coalesce(func.sum(ProviderCallRow.estimated_cost_usd), 0.0)).where(
        ProviderCallRow.strategy == strategy, ProviderCallRow.cache_hit.is_(False))
    if day is not None:
        start = datetime(day.year, day.month, day.day, tzinfo=day.tzinfo)
        stmt = stmt.where(ProviderCallRow.created_at >= start, ProviderCallRow.created_at < start + timedelta(days=1))
    if run_id is not None:
        stmt = stmt.where(ProviderCallRow.run_id == run_id)
    tokens, cost = s.execute(stmt).one()
    return int(tokens or 0), float(cost or 0.0)


def provider_calls(s: Session, strategy: str | None = None, instrument: str | None = None) -> list[ProviderCallRow]:
    """Recorded provider calls, oldest first (optionally of one strategy / instrument)."""
    stmt = select(ProviderCallRow)
    if strategy:
        stmt = stmt.where(ProviderCallRow.strategy == strategy)
    if instrument:
        stmt = stmt.where(ProviderCallRow.instrument == instrument)
    return list(s.execute(stmt.order_by(ProviderCallRow.id)).scalars())


def used_signal_intents(s: Session, strategy: str, instrument: str, window_ends: list[datetime]) -> dict[datetime, IntentRow]:
    """The live-book intents of ``instrument`` at ``window_ends`` that have left PENDING, by
    window end (their signal is spent: a re-run must not replace it). One query."""
    from trading_pipelines.domain.ids import intent_id

    if not window_ends:
        return {}
    ids = {intent_id(strategy, instrument, e, LIVE_BOOK): e for e in window_ends}
    rows = s.execute(select(IntentRow).where(IntentRow.intent_id.in_(list(ids)),
                                             IntentRow.status != IntentStatus.PENDING.value)).scalars()
    return {ids[r.intent_id]: r for r in rows}


def set_signal_call(s: Session, row: SignalRow, call_id: int | None) -> None:
    """Point the signal row at the provider call it came from (``None``: no call was made)."""
    row.call_id = call_id


def _history(s: Session, intent_id: str, old: str | None, new: str, reason: str, run_id: str, new_intent: bool = False) -> None:
    """One history row per status reached; ``new_intent``: the intent was just inserted (nothing to look up)."""
    exists = None if new_intent else s.execute(select(IntentStatusRow).where(
        IntentStatusRow.intent_id == intent_id, IntentStatusRow.to_status == new)).scalar_one_or_none()
    if exists is None:
        s.add(IntentStatusRow(intent_id=intent_id, from_status=old, to_status=new, reason=reason, run_id=run_id))


def record_intent(s: Session, lin: Lineage, intent: TradeIntent, *, known_absent: bool = False) -> IntentRow:
    """Insert the planned intent, or replace a still-PENDING one with the re-run's plan. An intent
    that already moved past PENDING (validated, submitted, filled …) is never changed here.
    ``known_absent``: the caller just read that no row exists (one SELECT fewer)."""
    row = None if known_absent else s.get(IntentRow, intent.intent_id)
    fields = intent.model_dump(exclude={"intent_id", "strategy", "instrument", "status"})
    fields = {k: (v.value if hasattr(v, "value") else v) for k, v in fields.items()}
    if row is None:
        row = IntentRow(intent_id=intent.intent_id, strategy=intent.strategy, instrument=intent.instrument, book=lin.book,
                        status=intent.status.value, **fields, partition_key=lin.partition_key, run_id=lin.run_id)
        s.add(row)  # the unit of work inserts it before its history rows (their foreign key): no flush needed here
        _history(s, intent.intent_id, None, IntentStatus.PENDING.value, "planned", lin.run_id, new_intent=True)
        if intent.status is not IntentStatus.PENDING:
            _history(s, intent.intent_id, IntentStatus.PENDING.value, intent.status.value, intent.reason, lin.run_id,
                     new_intent=True)
    elif row.status == IntentStatus.PENDING.value:
        # an unvalidated plan is replaced whole by the re-run's (a crash after planning must not
        # leave the old plan to be validated and sent when the new signal says otherwise)
        for k, v in fields.items():
            setattr(row, k, v)
        row.run_id, row.partition_key = lin.run_id, lin.partition_key
        if intent.status is not IntentStatus.PENDING:
            transition(IntentStatus.PENDING, intent.status)
            row.status = intent.status.value
            _history(s, intent.intent_id, IntentStatus.PENDING.value, intent.status.value, intent.reason, lin.run_id)
    audit(s, lin, "intent", intent_id=intent.intent_id, kind=intent.kind.value, status=row.status, reason=intent.reason,
          quantity=intent.quantity, entry=intent.entry, stop=intent.stop, take_profit=intent.take_profit)
    return keep(s, row)  # flushed by the session's next read or its commit


def intent_from_row(row: IntentRow) -> TradeIntent:
    """The domain intent stored in ``row``."""
    fields = {c.key: getattr(row, c.key) for c in IntentRow.__table__.columns
              if c.key in TradeIntent.model_fields}
    return TradeIntent.model_validate(fields)


def set_intent_status(s: Session, lin: Lineage, intent_id: str, new: IntentStatus, reason: str = "") -> IntentRow:
    """Move an intent through the state machine (raises InvalidTransition on an illegal move)."""
    row = s.get(IntentRow, intent_id)
    if row is None:
        raise KeyError(f"unknown intent {intent_id}")
    old = IntentStatus(row.status)
    transition(old, new)
    if old is not new:
        row.status = new.value
        if reason:
            row.reason = reason
        _history(s, intent_id, old.value, new.value, reason, lin.run_id)
        audit(s, lin, "intent_status", intent_id=intent_id, from_status=old.value, to_status=new.value, reason=reason)
    s.flush()
    return row


def record_guards(s: Session, lin: Lineage, intent_id: str, results: tuple[GuardResult, ...] | list[GuardResult]) -> None:
    """One row per (intent, guard): inserted, or updated in place (pre-submit re-checks)."""
    stored = {r.guard: r for r in s.execute(select(GuardResultRow).where(GuardResultRow.intent_id == intent_id)).scalars()}
    for g in results:
        row = stored.get(g.guard)
        if row is None:
            s.add(GuardResultRow(intent_id=intent_id, guard=g.guard, passed=g.passed, message=g.message, run_id=lin.run_id))
        else:
            row.passed, row.message, row.run_id = g.passed, g.message, lin.run_id
    s.flush()


# ---------------------------------------------------------------- books


def ensure_book(s: Session, strategy: str, book: str, *, kind: str, venue_account: str, starting_cash: float,
                first_window: datetime | None = None, last_window: datetime | None = None,
                instruments: list[str] | None = None, config_hash: str = "", run_id: str = "") -> BookRow:
    """The book's row, created on first use (insert-if-absent, safe under concurrent first runs)."""
    row = s.get(BookRow, (book, strategy))
    if row is None:
        dialect = s.get_bind().dialect.name
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        s.execute(insert(BookRow).values(
            book_id=book, strategy=strategy, kind=kind, venue_account=venue_account, starting_cash=starting_cash,
            first_window=first_window, last_window=last_window, instruments=list(instruments or []),
            config_hash=config_hash, windows_done=0, run_id=run_id, created_at=utcnow()
        ).on_conflict_do_nothing(index_elements=["book_id", "strategy"]))
        row = s.get(BookRow, (book, strategy))
    return row


def lock_book(s: Session, strategy: str, book: str) -> BookRow:
    """Serialize account-changing work on a book: ``SELECT … FOR UPDATE`` on its row (Postgres;
    SQLite transactions already hold the database's write lock). The live book's row is created
    on first use."""
    stmt = select(BookRow).where(BookRow.book_id == book, BookRow.strategy == strategy).with_for_update()
    row = s.execute(stmt).scalar_one_or_none()
    if row is None:
        if book != LIVE_BOOK:
            raise KeyError(f"unknown book {book!r} of {strategy}")
        ensure_book(s, strategy, book, kind="live", venue_account=strategy, starting_cash=0.0)
        row = s.execute(stmt).scalar_one()
    return keep(s, row)


def book_progress(s: Session, strategy: str, book: str, window_end: datetime) -> None:
    row = s.get(BookRow, (book, strategy))
    if row is not None and (row.last_done is None or window_end > row.last_done):
        row.windows_done += 1
        row.last_done = window_end


def _snapshot_row(s: Session, lin: Lineage) -> SnapshotRow | None:
    return s.execute(select(SnapshotRow).where(SnapshotRow.strategy == lin.strategy, SnapshotRow.book == lin.book,
                                               SnapshotRow.partition_key == lin.partition_key)).scalar_one_or_none()


def record_snapshot(s: Session, lin: Lineage, mode: str, snap: PortfolioSnapshot, new: bool = False) -> SnapshotRow:
    """Record the book's snapshot of ``lin``'s window; ``new``: the caller knows none is stored."""
    row = None if new else _snapshot_row(s, lin)
    if row is None:
        row = SnapshotRow(strategy=lin.strategy, book=lin.book, partition_key=lin.partition_key, instrument=lin.instrument)
        s.add(row)
    row.run_id, row.mode, row.as_of = lin.run_id, mode, snap.as_of
    row.cash, row.equity, row.realized_pnl, row.unrealized_pnl = snap.cash, snap.equity, snap.realized_pnl, snap.unrealized_pnl
    row.positions = [p.model_dump(mode="json") for p in snap.positions]
    return row


def stored_snapshot(s: Session, lin: Lineage) -> PortfolioSnapshot | None:
    """The snapshot recorded for ``lin``'s partition, if any."""
    row = _snapshot_row(s, lin)
    if row is None:
        return None
    return PortfolioSnapshot(strategy=row.strategy, as_of=row.as_of, cash=row.cash, equity=row.equity,
                             realized_pnl=row.realized_pnl, unrealized_pnl=row.unrealized_pnl,
                             positions=tuple(Position.model_validate(p) for p in row.positions))


def day_start_equity(s: Session, strategy: str, at: datetime, book: str = LIVE_BOOK) -> float | None:
    """Equity of the last snapshot at or before 00:00 UTC of ``at``'s day and strictly before ``at``
    (None if none): the day's starting equity for the daily-loss guard."""
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    # strictly before ``at``: a snapshot of the same window (another instrument's, just taken) is
    # not the day's baseline
    row = s.execute(select(SnapshotRow).where(SnapshotRow.strategy == strategy, SnapshotRow.book == book, SnapshotRow.as_of <= day,
                                              SnapshotRow.as_of < at)
                    .order_by(SnapshotRow.as_of.desc()).limit(1)).scalar_one_or_none()
    return row.equity if row else None


def _dt(v):
    return v.isoformat() if isinstance(v, datetime) else v


def _row_dict(row, exclude: tuple[str, ...] = ()) -> dict:
    return {c.name: _dt(getattr(row, c.key)) for c in row.__table__.columns if c.name not in exclude}


def status_report(s: Session, strategy: str | None = None, book: str | None = None) -> dict[str, list[dict]]:
    """The ledger as one JSON-able object: ``books``, ``signals``, ``intents`` (each with
    ``guards`` and ``status_history``), ``orders`` (each with ``fills``), ``positions``,
    ``snapshots``; optionally of one strategy and one book (signals belong to no book)."""
    def q(model, *order):
        stmt = select(model)
        if strategy:
            stmt = stmt.where(model.strategy == strategy)
        if book and hasattr(model, "book"):
            stmt = stmt.where(model.book == book)
        return list(s.execute(stmt.order_by(*order)).scalars())

    guards: dict[str, list] = {}
    for g in s.execute(select(GuardResultRow).order_by(GuardResultRow.id)).scalars():
        guards.setdefault(g.intent_id, []).append({"guard": g.guard, "passed": g.passed, "message": g.message})
    hist: dict[str, list] = {}
    for h in s.execute(select(IntentStatusRow).order_by(IntentStatusRow.id)).scalars():
        hist.setdefault(h.intent_id, []).append({"from": h.from_status, "to": h.to_status, "reason": h.reason, "at": _dt(h.at)})
    fills: dict[str, list] = {}
    for f in s.execute(select(FillRow).order_by(FillRow.time)).scalars():
        fills.setdefault(f.client_order_id, []).append(_row_dict(f))
    return {
        "books": [_row_dict(r) for r in q(BookRow, BookRow.created_at)],
        "signals": [_row_dict(r, ("prompt", "request_json")) for r in q(SignalRow, SignalRow.window_end, SignalRow.instrument)],
        "intents": [dict(_row_dict(r), guards=guards.get(r.intent_id, []), status_history=hist.get(r.intent_id, []))
                    for r in q(IntentRow, IntentRow.window_end, IntentRow.instrument)],
        "orders": [dict(_row_dict(r), fills=fills.get(r.client_order_id, [])) for r in q(OrderRow, OrderRow.placed_at, OrderRow.client_order_id)],
        "positions": [_row_dict(r) for r in q(PositionRow, PositionRow.opened_at)],
        "snapshots": [_row_dict(r) for r in q(SnapshotRow, SnapshotRow.as_of, SnapshotRow.instrument)],
    }


__all__ = ["Lineage", "audit", "record_signal", "record_provider_call", "cached_call", "provider_calls",
           "used_signal_intents", "set_signal_call", "record_intent", "intent_from_row", "set_intent_status", "record_guards",
           "ensure_book", "lock_book", "book_progress", "record_snapshot", "stored_snapshot", "day_start_equity", "status_report"]
