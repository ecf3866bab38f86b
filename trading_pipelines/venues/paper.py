"""The paper venue: a simulated exchange behind the :mod:`venue protocol <trading_pipelines.venues.protocol>`.

It fills orders against real bars with the rules of :mod:`trading_pipelines.domain.paper`, bar by
bar, up to a clock that only moves forward (:meth:`PaperExchange.advance`):

1. isolated futures are liquidated before anything else a bar does;
2. orders placed at or before a bar's open are executed at that open: an entry is a protective
   limit, immediate-or-cancel (:mod:`trading_pipelines.domain.costs`): a buy fills at the open plus
   slippage, capped at its limit, when the bar opens at or below the limit, and otherwise EXPIRES
   (status CANCELLED, an ``expired`` event with the reason, e.g. "gap: open 159.28 above
   protective limit 150.80", its bracket legs cancelled); sells mirror that. A market order (an
   exit, or an unprotected entry) fills at the open plus slippage. An entry it cannot fund (the
   cost at the fill price, :func:`~trading_pipelines.domain.costs.entry_cost`, against the cash not
   reserved by *other* resting entries), or a second position on the instrument, is rejected with
   its bracket legs. Once an entry fills, its bracket is re-anchored to the fill: a take-profit at
   or short of the fill (a long's at or below it) is cancelled (a ``cancelled`` event with the
   reason) rather than "taking profit" at a loss in the bar the position opened; a stop at or
   beyond the fill stays armed and fills in that bar (the position is past its invalidation level);
3. the bracket (stop-loss + take-profit, one-cancels-other) of an open position is checked
   against the bar's range (stop first when one bar reaches both, unless it opened through the
   target);
4. positions are marked at the close.

**Unreadable bars stay in their instrument.** When the bars an instrument must be filled over
cannot be read (``bars_fn`` raises :class:`~trading_pipelines.venues.protocol.BarsUnreadable`, e.g.
a bad CSV row), that instrument is frozen where it stands: its clock does not move, its position
keeps the mark of its last readable bar, its resting orders neither fill nor expire, and each
advance reports a ``bars_unreadable`` event with the reason. Nobody can say what those bars would
have filled, so nothing is made up; every other instrument advances as usual.

**Its own store.** The exchange keeps its books in its own database (``paper_*`` tables, by
default a SQLite file beside the ledger, never the ledger's session): one ``paper_accounts`` row
per account holds the money and, as JSON, the live state (resting orders, positions, per-instrument
clocks); orders that left the book and every fill are appended to ``paper_orders`` and
``paper_fills``. Each call loads the account under a lock (``SELECT … FOR UPDATE`` on Postgres,
``BEGIN IMMEDIATE`` on SQLite) and saves it in one transaction; :meth:`unit_of_work` groups
many calls into one load and one save (replays use it per window).

Idempotency: a client order id the exchange has seen is never accepted twice; the existing order
is returned instead (Binance answers a duplicate ``newClientOrderId`` with an error that the
ccxt executor treats the same way).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable, Iterable, Iterator

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from trading_pipelines.domain.models import (
    Bar,
    Fill,
    Mode,
    Order,
    OrderRequest,
    OrderRole,
    OrderStatus,
    OrderType,
    Position,
    PositionSide,
    Side,
)
from trading_pipelines.domain.costs import entry_cost
from trading_pipelines.domain.paper import bracket_exit, bracket_leg_wrong_side, entry_fill_price, market_fill_price, realized_pnl
from trading_pipelines.domain.sizing import liquidation_price, round_to_tick
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.ledger.models import PaperAccountRow, PaperFillRow, PaperOrderRow
from trading_pipelines.venues.protocol import Balance, BarsUnreadable, FuturesTerms, SimulatedVenue, VenueError, VenueEvent

from trading_pipelines.venues.paper_liquidation import Liquidations
from trading_pipelines.venues.paper_state import _Book, _dt, _Order, _Position

BarsFn = Callable[[str, datetime, datetime], pd.DataFrame]
"""(instrument, start, end) → bars with open_time ≥ start and close ≤ end (see MarketDataSource.bars_between)."""

_EPS = 1e-9


class PaperExchange(Liquidations, SimulatedVenue):
    """A simulated exchange account named ``account`` (one per strategy and book).

    ``engine``: the venue's own database (see the module doc). Money in quote currency;
    ``fee_rate`` a fraction of notional (0.001 = 0.1 %); ``slippage_bps`` basis points.
    """

    name = "paper"

    def __init__(self, account: str, mode: Mode, starting_cash: float, fee_rate: float, slippage_bps: float,
                 bars_fn: BarsFn, bar_duration: timedelta, engine: Engine, tick_sizes: dict[str, float] | None = None,
                 maintenance_margin_rates: dict[str, float] | None = None):
        self.account = account
        self.mode = mode
        self.starting_cash = starting_cash
        self.fee_rate = fee_rate
        self.slippage_bps = slippage_bps
        self.bars_fn = bars_fn
        self.bar = bar_duration
        self.engine = engine
        self.tick_sizes = tick_sizes or {}
        self.mmr = maintenance_margin_rates or {}
        self._local = threading.local()  # a unit of work belongs to the thread that opened it

    @property
    def _held(self) -> tuple[Session, PaperAccountRow, _Book] | None:
        return getattr(self._local, "held", None)

    @_held.setter
    def _held(self, value) -> None:
        self._local.held = value

    # ------------------------------------------------------------------ storage
    def _load(self, s: Session) -> tuple[PaperAccountRow, _Book]:
        stmt = select(PaperAccountRow).where(PaperAccountRow.account == self.account).with_for_update()
        row = s.execute(stmt).scalar_one_or_none()
        if row is None:
            # concurrent first calls race to open the account: insert-if-absent, then read it back
            dialect = s.get_bind().dialect.name
            insert = {"postgresql": pg_insert, "sqlite": sqlite_insert}.get(dialect)
            if insert is None:
                raise VenueError(f"paper venue needs PostgreSQL or SQLite, not {dialect}")
            s.execute(insert(PaperAccountRow).values(
                account=self.account, mode=self.mode.value, starting_cash=self.starting_cash, cash=self.starting_cash,
                realized_pnl=0.0, fees_paid=0.0, state={}).on_conflict_do_nothing(index_elements=["account"]))
            row = s.execute(stmt).scalar_one()
        st = row.state or {}
        orders = [_Order.from_json(o) for o in st.get("orders", [])]
        book = _Book(cash=row.cash, realized_pnl=row.realized_pnl, fees_paid=row.fees_paid,
                     orders={o.client_order_id: o for o in orders},
                     positions={p["instrument"]: _Position.from_json(p) for p in st.get("positions", [])},
                     clocks={k: _dt(v) for k, v in st.get("clocks", {}).items()}, rev=st.get("rev", 0))
        return row, book

    def revision(self) -> tuple:
        """A fingerprint that changes whenever anything a reconcile reads changes (orders, fills,
        positions and their marks, money), saved or still in this unit of work: a reader that saw
        this revision has seen everything."""
        with self._book() as (_, b):
            return (b.rev, len(b.done), len(b.new_fills), b.cash, b.realized_pnl, b.fees_paid,
                    tuple((o.client_order_id, o.status, o.armed) for o in b.orders.values()),
                    tuple((p.instrument, p.quantity, p.mark_price) for p in b.positions.values()))

    def _save(self, s: Session, row: PaperAccountRow, book: _Book) -> None:
        state = book.state_json()
        before = row.state or {}
        changed = (book.done or book.new_fills or (row.cash, row.realized_pnl, row.fees_paid) != (book.cash, book.realized_pnl, book.fees_paid)
                   or {k: v for k, v in before.items() if k not in ("rev", "clocks")} != {k: v for k, v in state.items() if k != "clocks"})
        book.rev += 1 if changed else 0
        state["rev"] = book.rev
        if state == before and not changed:
            return
        row.cash, row.realized_pnl, row.fees_paid = book.cash, book.realized_pnl, book.fees_paid
        row.state = state
        for o in book.done:  # orders first: fills reference them
            s.merge(PaperOrderRow(
                client_order_id=o.client_order_id, venue_order_id=o.venue_order_id, account=self.account,
                instrument=o.instrument, side=o.side, type=o.type, role=o.role, quantity=o.quantity, price=o.price,
                trigger_price=o.trigger_price, reduce_only=o.reduce_only, parent_client_order_id=o.parent_client_order_id,
                oco_group=o.oco_group, position_side=o.position_side, leverage=o.leverage, reserved=o.reserved,
                status=o.status, placed_at=o.placed_at, filled_at=o.filled_at, fill_price=o.fill_price))
        s.flush()
        s.add_all(book.new_fills)
        book.done, book.new_fills = [], []
        s.flush()

    @contextmanager
    def unit_of_work(self) -> Iterator["PaperExchange"]:
        """Load the account once (locked), run the block's calls in memory, save once at the end
        (all or nothing). Nested units of work join the outer one."""
        if self._held is not None:
            yield self
            return
        with session_scope(self.engine) as s:
            row, book = self._load(s)
            self._held = (s, row, book)
            try:
                yield self
                self._save(s, row, book)
            finally:
                self._held = None

    @contextmanager
    def _book(self) -> Iterator[tuple[Session, _Book]]:
        with self.unit_of_work():
            s, _, book = self._held
            yield s, book

    def _history(self, s: Session, cid: str) -> Order | None:
        row = s.get(PaperOrderRow, cid)
        if row is None or row.account != self.account:
            return None
        return _Order(client_order_id=row.client_order_id, venue_order_id=row.venue_order_id, instrument=row.instrument,
                      side=row.side, type=row.type, role=row.role, quantity=row.quantity, placed_at=row.placed_at,
                      price=row.price, trigger_price=row.trigger_price, reduce_only=row.reduce_only,
                      parent_client_order_id=row.parent_client_order_id, oco_group=row.oco_group,
                      position_side=row.position_side, leverage=row.leverage, reserved=row.reserved, status=row.status,
                      filled_at=row.filled_at, fill_price=row.fill_price).domain()

    # ------------------------------------------------------------------ reads
    def clock(self) -> datetime | None:
        with self._book() as (_, b):
            return max(b.clocks.values(), default=None)

    def instrument_clock(self, instrument: str) -> datetime | None:
        with self._book() as (_, b):
            return b.clocks.get(instrument)

    def fetch_positions(self) -> list[Position]:
        """Open positions at the last bar's close; futures with their isolated liquidation price
        (the one :meth:`_liquidate` acts on) and margin mode ``isolated``."""
        with self._book() as (_, b):
            out = [p.domain() for p in b.positions.values()]
        if self.mode is not Mode.FUTURES:
            return out
        return [p.model_copy(update={"margin_mode": "isolated", "liquidation_price": liquidation_price(
            p.entry_price, p.leverage, p.side, self.mmr.get(p.instrument, 0.0))}) for p in out]

    def futures_terms(self, instrument: str) -> FuturesTerms | None:
        """The simulated perpetual's terms: isolated margin; no funding is simulated (None) and the
        venue sets no leverage limit of its own (the strategy's ``max_leverage`` applies)."""
        if self.mode is not Mode.FUTURES:
            return None
        return FuturesTerms(instrument=instrument, mark_price=None, funding_rate=None, next_funding_time=None,
                            max_leverage=None, margin_mode="isolated")

    def fetch_open_orders(self, instrument: str | None = None) -> list[Order]:
        with self._book() as (_, b):
            rows = [o for o in b.orders.values() if instrument is None or o.instrument == instrument]
            return [o.domain() for o in sorted(rows, key=lambda o: o.placed_at)]

    def fetch_order(self, client_order_id: str, instrument: str | None = None) -> Order | None:
        with self._book() as (s, b):
            o = b.orders.get(client_order_id) or next((d for d in b.done if d.client_order_id == client_order_id), None)
            return o.domain() if o is not None else self._history(s, client_order_id)

    def fetch_my_trades(self, since: datetime | None = None) -> list[Fill]:
        with self._book() as (s, b):
            stmt = select(PaperFillRow).where(PaperFillRow.account == self.account)
            if since is not None:
                stmt = stmt.where(PaperFillRow.time > since)
            rows = list(s.execute(stmt).scalars()) + [f for f in b.new_fills if since is None or f.time > since]
            seen: dict[str, PaperFillRow] = {r.fill_id: r for r in rows}
            return [Fill(fill_id=r.fill_id, client_order_id=r.client_order_id, instrument=r.instrument, side=Side(r.side),
                         quantity=r.quantity, price=r.price, fee=r.fee, time=r.time)
                    for r in sorted(seen.values(), key=lambda r: (r.time, r.fill_id))]

    def fetch_balance(self) -> Balance:
        with self._book() as (_, b):
            positions = list(b.positions.values())
            unreal = sum(p.domain().unrealized_pnl for p in positions)
            if self.mode is Mode.SPOT:
                equity = b.cash + sum(p.quantity * p.mark_price for p in positions)
            else:
                equity = b.cash + sum(p.margin for p in positions) + unreal
            reserved = sum(o.reserved for o in b.orders.values() if o.role == OrderRole.ENTRY.value)
            return Balance(cash=b.cash, reserved=reserved, equity=equity, realized_pnl=b.realized_pnl,
                           unrealized_pnl=unreal, fees_paid=b.fees_paid)

    def entry_cost(self, quantity: float, price: float, leverage: float) -> float:
        """Cash an entry needs: spot notional + fee; futures initial margin + fee (quote currency),
        by the one cost model (:func:`trading_pipelines.domain.costs.entry_cost`)."""
        return entry_cost(quantity, price, leverage, self.mode is Mode.FUTURES, self.fee_rate)

    def _fmt(self, instrument: str, price: float) -> str:
        tick = self.tick_sizes.get(instrument)
        if tick:
            decimals = max(0, -Decimal(str(tick)).normalize().as_tuple().exponent)
            return f"{price:.{decimals}f}"
        return f"{price:.10g}"

    # ------------------------------------------------------------------ orders
    def create_order(self, request: OrderRequest, *, placed_at: datetime, position_side: str, leverage: float = 1.0,
                     reserve: float = 0.0) -> Order:
        with self._book() as (s, b):
            existing = self.fetch_order(request.client_order_id)
            if existing is not None:
                return existing
            r = request
            o = _Order(client_order_id=r.client_order_id, venue_order_id="P" + r.client_order_id[3:], instrument=r.instrument,
                       side=r.side.value, type=r.type.value, role=r.role.value, quantity=r.quantity, placed_at=placed_at,
                       price=r.price, trigger_price=r.trigger_price, reduce_only=r.reduce_only,
                       parent_client_order_id=r.parent_client_order_id, oco_group=r.oco_group, position_side=position_side,
                       leverage=leverage, reserved=reserve if r.role is OrderRole.ENTRY else 0.0)
            if o.parent_client_order_id:
                parent = b.orders.get(o.parent_client_order_id) or self.fetch_order(o.parent_client_order_id)
                o.armed = parent is not None and parent.status in (OrderStatus.FILLED.value, OrderStatus.FILLED)
            else:  # a protective leg placed for an open position (the engine's repair): live at once
                o.armed = o.role in (OrderRole.STOP_LOSS.value, OrderRole.TAKE_PROFIT.value)
            b.orders[o.client_order_id] = o
            return o.domain()

    def cancel_order(self, client_order_id: str) -> Order:
        with self._book() as (_, b):
            o = b.orders.get(client_order_id)
            if o is None:
                known = self.fetch_order(client_order_id)
                if known is None:
                    raise VenueError(f"unknown order {client_order_id}")
                return known  # already filled, cancelled or rejected: nothing to do
            self._end(b, o, OrderStatus.CANCELED)
            self._cancel_children(b, client_order_id)
            return o.domain()

    # ------------------------------------------------------------------ simulation
    def advance(self, instruments: Iterable[str], as_of: datetime) -> list[VenueEvent]:
        """Bring each instrument's clock to ``as_of`` over the bars that closed since (see the
        module doc for what a bar does). Account-wide figures are then those of ``as_of``."""
        events: list[VenueEvent] = []
        with self._book() as (_, b):
            for inst in sorted(set(instruments) | set(b.positions) | {o.instrument for o in b.orders.values()}):
                events.extend(self._advance_one(b, inst, as_of))
        return events

    def _advance_one(self, b: _Book, instrument: str, as_of: datetime) -> list[VenueEvent]:
        start = b.clocks.get(instrument)
        if start is None:
            start = min((o.placed_at for o in b.orders.values() if o.instrument == instrument), default=as_of)
        events: list[VenueEvent] = []
        idle = instrument not in b.positions and not any(o.instrument == instrument for o in b.orders.values())
        if as_of > start and not idle:  # an instrument with nothing at the venue only moves its clock
            try:
                bars = self.bars_fn(instrument, start, as_of)
            except BarsUnreadable as e:  # frozen where it stands (module doc); the others go on
                return [VenueEvent("bars_unreadable", instrument, "", "", float("nan"), 0.0, as_of, reason=str(e))]
            for ts, o, h, lo, c, v in zip(bars.index, bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"]):
                bar = Bar(open_time=ts.to_pydatetime(), open=o, high=h, low=lo, close=c, volume=v)
                events.extend(self._process_bar(b, instrument, bar))
        b.clocks[instrument] = max(as_of, start, b.clocks.get(instrument, as_of))
        return events

    def _end(self, b: _Book, o: _Order, status: OrderStatus) -> None:
        o.status = status.value
        b.orders.pop(o.client_order_id, None)
        b.done.append(o)

    def _reserved(self, b: _Book, exclude: str | None = None) -> float:
        return sum(o.reserved for o in b.orders.values() if o.role == OrderRole.ENTRY.value and o.client_order_id != exclude)

    def _on_tick(self, instrument: str, price: float) -> float:
        tick = self.tick_sizes.get(instrument)
        return round_to_tick(price, tick) if tick else price  # exchanges fill on the price grid

    def _reanchor(self, b: _Book, entry: _Order, fill: float, time: datetime) -> list[VenueEvent]:
        """Re-check the entry's bracket against its fill (see the module doc): a take-profit on the
        wrong side of the fill is cancelled; a stop on the wrong side stays (it fills this bar)."""
        legs = [o for o in b.orders.values() if o.parent_client_order_id == entry.client_order_id]
        stop = next((o for o in legs if o.role == OrderRole.STOP_LOSS.value), None)
        target = next((o for o in legs if o.role == OrderRole.TAKE_PROFIT.value), None)
        _, bad_target = bracket_leg_wrong_side(PositionSide(entry.position_side or "long"), fill,
                                               stop.trigger_price if stop else None, target.price if target else None)
        if not bad_target:
            return []
        beyond = "above" if (entry.position_side or "long") == PositionSide.LONG.value else "below"
        why = (f"re-anchored: take-profit {self._fmt(entry.instrument, target.price)} is not {beyond} the fill "
               f"{self._fmt(entry.instrument, fill)}; cancelled, the stop stays")
        self._end(b, target, OrderStatus.CANCELED)
        return [VenueEvent("cancelled", entry.instrument, target.client_order_id, target.role, target.price,
                           target.quantity, time, reason=why)]

    def _fill(self, b: _Book, o: _Order, price: float, time: datetime) -> float:
        price = self._on_tick(o.instrument, price)
        fee = o.quantity * price * self.fee_rate
        o.filled_at, o.fill_price = time, price
        self._end(b, o, OrderStatus.FILLED)
        b.new_fills.append(PaperFillRow(fill_id=f"{o.client_order_id}-1", client_order_id=o.client_order_id, account=self.account,
                                        instrument=o.instrument, side=o.side, quantity=o.quantity, price=price, fee=fee, time=time))
        b.fees_paid += fee
        b.cash -= fee
        return price

    def _open_position(self, b: _Book, o: _Order, price: float, time: datetime) -> None:
        notional = o.quantity * price
        margin = notional / o.leverage if self.mode is Mode.FUTURES else 0.0  # spot pays the notional instead
        b.cash -= margin if self.mode is Mode.FUTURES else notional
        b.positions[o.instrument] = _Position(instrument=o.instrument, side=o.position_side or "long", quantity=o.quantity,
                                              entry_price=price, leverage=o.leverage, margin=margin, mark_price=price,
                                              opened_at=time, entry_client_order_id=o.client_order_id)
        for child in b.orders.values():
            if child.parent_client_order_id == o.client_order_id:
                child.armed = True

    def _close_position(self, b: _Book, pos: _Position, price: float) -> float:
        pnl = realized_pnl(PositionSide(pos.side), pos.entry_price, price, pos.quantity)
        if self.mode is Mode.FUTURES:
            pnl = max(pnl, -pos.margin)  # isolated margin: a position can lose its margin and no more
            b.cash += pos.margin + pnl
        else:
            b.cash += pos.quantity * price
        b.realized_pnl += pnl
        del b.positions[pos.instrument]
        return pnl

    def _process_bar(self, b: _Book, instrument: str, bar: Bar) -> list[VenueEvent]:
        events: list[VenueEvent] = []
        liquidated = self._liquidate(b, instrument, bar)
        if liquidated is not None:
            events.append(liquidated)
        resting = sorted((o for o in b.orders.values() if o.instrument == instrument), key=lambda o: o.placed_at)
        for o in resting:
            protected = o.type == OrderType.LIMIT.value and o.role == OrderRole.ENTRY.value and o.price is not None
            if (o.type != OrderType.MARKET.value and not protected) or o.placed_at > bar.open_time \
                    or o.status != OrderStatus.ACCEPTED.value:
                continue
            pos = b.positions.get(instrument)
            if protected:  # IOC at this open: fills within its limit or expires
                price = entry_fill_price(Side(o.side), o.price, bar, self.slippage_bps)
                if price is None:
                    beyond = "above" if o.side == Side.BUY.value else "below"
                    why = (f"gap: open {self._fmt(instrument, bar.open)} {beyond} protective limit "
                           f"{self._fmt(instrument, o.price)}")
                    self._end(b, o, OrderStatus.EXPIRED)
                    self._cancel_children(b, o.client_order_id)
                    events.append(VenueEvent("expired", instrument, o.client_order_id, o.role, bar.open, o.quantity,
                                             bar.open_time, reason=why))
                    continue
            else:
                price = market_fill_price(Side(o.side), bar, self.slippage_bps)
            if o.role == OrderRole.ENTRY.value:
                reason = None
                if pos is not None:  # the venue refuses a second position (one-way mode)
                    reason = "position already open"
                else:
                    need = self.entry_cost(o.quantity, self._on_tick(instrument, price), o.leverage)
                    free = b.cash - self._reserved(b, exclude=o.client_order_id)
                    if need > free + _EPS:
                        reason = f"insufficient funds: needs {need:.2f}, {free:.2f} free"
                if reason:
                    self._end(b, o, OrderStatus.REJECTED)
                    self._cancel_children(b, o.client_order_id)
                    events.append(VenueEvent("rejected", instrument, o.client_order_id, o.role, price, o.quantity,
                                             bar.open_time, reason=reason))
                    continue
                price = self._fill(b, o, price, bar.open_time)
                self._open_position(b, o, price, bar.open_time)
                events.append(VenueEvent("fill", instrument, o.client_order_id, o.role, price, o.quantity, bar.open_time))
                events.extend(self._reanchor(b, o, price, bar.open_time))
            else:  # exit
                if pos is None:  # nothing to reduce: the venue refuses a reduce-only order
                    self._end(b, o, OrderStatus.REJECTED)
                    events.append(VenueEvent("rejected", instrument, o.client_order_id, o.role, price, o.quantity,
                                             bar.open_time, reason="no position to reduce"))
                    continue
                events.append(self._close_with(b, o, pos, price, bar.open_time))
        pos = b.positions.get(instrument)
        if pos is not None:
            legs = [o for o in b.orders.values() if o.instrument == instrument and o.armed]
            stop = next((o for o in legs if o.role == OrderRole.STOP_LOSS.value), None)
            target = next((o for o in legs if o.role == OrderRole.TAKE_PROFIT.value), None)
            hit = bracket_exit(PositionSide(pos.side), stop.trigger_price if stop else None,
                               target.price if target else None, bar, self.slippage_bps)
            if hit is not None:
                role, price = hit
                events.append(self._close_with(b, stop if role is OrderRole.STOP_LOSS else target, pos, price, bar.open_time))
        pos = b.positions.get(instrument)
        if pos is not None:
            pos.mark_price = bar.close
        return events

    def _close_with(self, b: _Book, order: _Order, pos: _Position, price: float, time: datetime) -> VenueEvent:
        """Fill a reduce-only ``order`` (exit, stop-loss, take-profit) that closes ``pos``, and end
        the position's other bracket legs."""
        price = self._fill(b, order, price, time)
        pnl = self._close_position(b, pos, price)
        self._cancel_brackets(b, pos.instrument)
        return VenueEvent("fill", pos.instrument, order.client_order_id, order.role, price, order.quantity, time, pnl)

    def _cancel_children(self, b: _Book, parent_cid: str) -> None:
        for child in [o for o in b.orders.values() if o.parent_client_order_id == parent_cid]:
            self._end(b, child, OrderStatus.CANCELED)

    def _cancel_brackets(self, b: _Book, instrument: str) -> None:
        for o in [o for o in b.orders.values() if o.instrument == instrument and o.reduce_only
                  and o.role in (OrderRole.STOP_LOSS.value, OrderRole.TAKE_PROFIT.value)]:
            self._end(b, o, OrderStatus.CANCELED)


__all__ = ["BarsFn", "PaperExchange"]
