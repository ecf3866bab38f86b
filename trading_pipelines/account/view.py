"""The book as its venue reports it, read once per step: balance, positions, resting orders, the
day's starting equity, and the clocks a window is judged by. Reads only — the account step
(:mod:`.decide`) decides on this view and the engine (:mod:`.engine`) acts on it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from trading_pipelines.domain.guards import AccountView
from trading_pipelines.domain.models import (
    IntentKind,
    IntentStatus,
    OrderRole,
    OrderStatus,
    PortfolioSnapshot,
    Position,
    PositionSide,
)
from trading_pipelines.domain.paper import entry_reserve
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.models import IntentRow, OrderRow
from trading_pipelines import runtime
from trading_pipelines.runtime import Runtime
from trading_pipelines.venues.protocol import SimulatedVenue, VenueEvent


IN_FLIGHT = (OrderStatus.INITIALIZED.value, OrderStatus.SUBMITTED.value, OrderStatus.UNKNOWN.value)


def day_start(s, rt: Runtime, at: datetime) -> float | None:
    """The day's starting equity (see :func:`repo.day_start_equity`), cached per UTC day once
    the day has begun on the book (a snapshot strictly before ``at`` exists for it)."""
    midnight = at.replace(hour=0, minute=0, second=0, microsecond=0)
    day = (at.date(), at == midnight)  # the window ending at 00:00 reads the day before's last snapshot
    if day in rt._day_start:
        return rt._day_start[day]
    value = repo.day_start_equity(s, rt.spec.name, at, rt.book)
    if value is not None:
        rt._day_start[day] = value
    return value


def audit_events(s, rt: Runtime, lin: repo.Lineage, events: list[VenueEvent]) -> None:
    for ev in events:
        repo.audit(s, repo.Lineage(rt.spec.name, ev.instrument, lin.partition_key, lin.run_id, rt.book), "venue_event",
                   kind=ev.kind, role=ev.role, client_order_id=ev.client_order_id, price=ev.price,
                   quantity=ev.quantity, time=ev.time.isoformat(), realized_pnl=ev.realized_pnl,
                   reason=ev.reason or None)
        if ev.reason:
            rt._venue_reasons[ev.client_order_id] = f"{ev.kind}: {ev.reason}"


def guard_clock(rt: Runtime, window_end: datetime) -> datetime | None:
    """``AccountView.as_of`` for the fresh-window guard: a simulated venue's clock; for a real
    venue the wall clock once the next bar has closed (the window is no longer the current one,
    its bar is stale), else None — a window is tradable live only during the bar after it."""
    if isinstance(rt.venue, SimulatedVenue):
        return rt.venue.clock()
    now = runtime.WALL_CLOCK()
    return now if now >= window_end + rt.spec.bar_duration else None


def advance(s, rt: Runtime, window_end: datetime, lin: repo.Lineage) -> datetime | None:
    """Bring the book's simulated venue to ``window_end`` (every instrument of the strategy, plus
    any retired one still holding a position or resting order), auditing what it did; return the
    venue's clock if it is already past the window (a late or out-of-order run), else None."""
    if not isinstance(rt.venue, SimulatedVenue):
        return None
    audit_events(s, rt, lin, rt.venue.advance(rt.instruments, window_end))
    clock = rt.venue.clock()
    return clock if clock is not None and clock > window_end else None


def book_positions(s, rt: Runtime, reported: list[Position] | None = None) -> list[Position]:
    """The book's open positions: what the venue reports (``reported``: already read); for a
    fire-and-forget venue (a webhook, ``reports_positions`` False) what the ledger sent it — fail
    closed: an entry SENT on an instrument counts as open until an exit on that instrument is SENT
    after it (so a second entry is a duplicate, and an exit has a position to close), at the
    planned entry price."""
    if getattr(rt.venue, "reports_positions", True):
        return rt.venue.fetch_positions() if reported is None else reported
    rows = s.execute(select(IntentRow).where(IntentRow.strategy == rt.spec.name, IntentRow.book == rt.book,
                                             IntentRow.status == IntentStatus.SENT.value)
                     .order_by(IntentRow.window_end)).scalars().all()
    open_: dict[str, IntentRow] = {}
    for r in rows:
        if r.kind == IntentKind.ENTRY.value:
            open_[r.instrument] = r
        elif r.kind == IntentKind.EXIT.value:
            open_.pop(r.instrument, None)
    return [Position(instrument=r.instrument, side=PositionSide(r.position_side), quantity=r.quantity, entry_price=r.entry,
                     mark_price=r.entry, leverage=r.leverage, margin=r.margin, opened_at=r.window_end)
            for r in open_.values()]


def account_view(s, rt: Runtime, window_end: datetime, *, for_guards: bool = True) -> AccountView:
    """Guards' view of the book, from the venue: free cash net of reserved, equity, positions,
    resting entries, the venue clock; the day's starting equity from the ledger's snapshots.

    Fail closed: an entry the ledger has written ahead (INITIALIZED, SUBMITTED, UNKNOWN) that the
    venue does not list yet — another run's send between its commit and the venue's answer, or a
    crashed one — counts as resting, holding back the reserve it will take. ``for_guards`` False:
    the planner's part only (equity and positions; no guard will run on it — a window of holds)."""
    bal = rt.venue.fetch_balance()
    positions = tuple(book_positions(s, rt))
    if not for_guards:
        return AccountView(free_cash=bal.free, equity=bal.equity, day_start_equity=bal.equity, positions=positions,
                           as_of=guard_clock(rt, window_end))
    open_entries = [o for o in rt.venue.fetch_open_orders() if o.request.role is OrderRole.ENTRY]
    resting = {o.request.instrument for o in open_entries}
    free = bal.free
    known = {o.client_order_id for o in open_entries}
    for row, intent in in_flight_entries(s, rt):
        if row.client_order_id in known or any(p.instrument == row.instrument for p in positions):
            continue
        resting.add(row.instrument)
        free -= entry_reserve_of(rt, intent)
    day = day_start(s, rt, window_end)
    return AccountView(free_cash=free, equity=bal.equity, day_start_equity=day if day is not None else bal.equity,
                       positions=positions, resting_entries=tuple(sorted(resting)), as_of=guard_clock(rt, window_end))


def in_flight_entries(s, rt: Runtime) -> list:
    """(leg row, intent) of the book's entry legs written ahead or sent without an answer."""
    rows = s.execute(select(OrderRow).where(OrderRow.strategy == rt.spec.name, OrderRow.book == rt.book,
                                            OrderRow.role == OrderRole.ENTRY.value,
                                            OrderRow.status.in_(IN_FLIGHT))).scalars().all()
    return [(r, repo.intent_from_row(s.get(IntentRow, r.intent_id))) for r in rows]


def entry_reserve_of(rt: Runtime, intent) -> float:
    """The quote currency the venue holds back for the intent's entry (``domain.paper.entry_reserve``
    at its protective limit), as the engine passes it with the order."""
    return entry_reserve(intent.quantity, intent.entry, intent.leverage, intent.mode.value == "futures",
                         getattr(rt.spec.venue, "fee_rate", 0.0), side=intent.side,
                         max_entry_slippage_pct=rt.limits.max_entry_slippage_pct,
                         tick_size=rt.instrument(intent.instrument).tick_size)


def snapshot_now(rt: Runtime, as_of: datetime) -> PortfolioSnapshot:
    bal = rt.venue.fetch_balance()
    return PortfolioSnapshot(strategy=rt.spec.name, as_of=as_of, cash=bal.cash, equity=bal.equity,
                             realized_pnl=bal.realized_pnl, unrealized_pnl=bal.unrealized_pnl,
                             positions=tuple(rt.venue.fetch_positions()))


__all__ = ["IN_FLIGHT", "account_view", "entry_reserve_of", "in_flight_entries", "advance", "audit_events", "book_positions", "day_start", "guard_clock", "snapshot_now"]
