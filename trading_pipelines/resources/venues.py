"""Venues: where orders go. The venue is the source of truth for cash, positions and orders.

:class:`PaperVenue` is a simulated exchange whose books live in the ``paper_*`` tables. It fills
orders against real bars with the rules of :mod:`trading_pipelines.domain.paper`, bar by bar, up
to a clock that only moves forward (:meth:`PaperVenue.advance`). Every method takes the caller's
SQLAlchemy ``Session`` so a step's venue writes and ledger writes commit together.

Idempotency: a client order id the venue has seen is never accepted twice; the existing order
is returned instead (Binance answers a duplicate ``newClientOrderId`` with an error; the ccxt
executor treats that error the same way).

Live venues (Binance via ccxt, IBKR via ib_async, webhook) plug in behind the same methods; the
executor refuses to send them anything unless the strategy is acknowledged live (see
:func:`live_trading_allowed`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterable

import pandas as pd
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from trading_pipelines.domain.guards import AccountView
from trading_pipelines.domain.ids import client_order_id
from trading_pipelines.domain.models import (
    Bar,
    Fill,
    IntentKind,
    Mode,
    Order,
    OrderRequest,
    OrderRole,
    OrderStatus,
    OrderType,
    PortfolioSnapshot,
    Position,
    PositionSide,
    Side,
    TradeIntent,
)
from trading_pipelines.domain.paper import bracket_exit, market_fill_price, realized_pnl
from trading_pipelines.domain.sizing import liquidation_price, round_to_tick
from trading_pipelines.ledger.models import (
    PaperAccountRow,
    PaperClockRow,
    PaperFillRow,
    PaperOrderRow,
    PaperPositionRow,
)

LIVE_SWITCH_ENV = "TRADING_PIPELINES_LIVE"

BarsFn = Callable[[str, datetime, datetime], pd.DataFrame]
"""(instrument, start, end) → bars with open_time ≥ start and close ≤ end (see MarketDataSource.bars_between)."""


class VenueError(RuntimeError):
    pass


def live_trading_allowed(strategy: str, dry_run: bool, live_ack: str | None, environ=os.environ) -> tuple[bool, str]:
    """Live orders need all three: ``dry_run: false``, ``live_ack`` equal to the strategy name, and
    ``TRADING_PIPELINES_LIVE=1`` in the deployment. Returns (allowed, reason)."""
    if dry_run:
        return False, "dry-run (execution.dry_run is true)"
    if live_ack != strategy:
        return False, f"execution.live_ack must equal {strategy!r} to trade live"
    if environ.get(LIVE_SWITCH_ENV) != "1":
        return False, f"{LIVE_SWITCH_ENV}=1 is not set in this deployment"
    return True, "live trading acknowledged"


@dataclass(frozen=True)
class VenueEvent:
    """Something the venue did while advancing: a fill of an order (entry, stop-loss, take-profit, exit)."""

    kind: str
    instrument: str
    client_order_id: str
    role: str
    price: float
    quantity: float
    time: datetime
    realized_pnl: float | None = None


def _order(row: PaperOrderRow) -> Order:
    req = OrderRequest(
        client_order_id=row.client_order_id,
        instrument=row.instrument,
        side=Side(row.side),
        type=OrderType(row.type),
        quantity=row.quantity,
        price=row.price,
        trigger_price=row.trigger_price,
        role=OrderRole(row.role),
        reduce_only=row.reduce_only,
        parent_client_order_id=row.parent_client_order_id,
        oco_group=row.oco_group,
    )
    return Order(
        client_order_id=row.client_order_id,
        venue_order_id=row.venue_order_id,
        request=req,
        status=OrderStatus(row.status),
        placed_at=row.placed_at,
        filled_quantity=row.quantity if row.status == OrderStatus.FILLED.value else 0.0,
        average_price=row.fill_price,
    )


class PaperVenue:
    """A simulated exchange account named ``account`` (one per strategy)."""

    name = "paper"
    simulated = True

    def __init__(self, account: str, mode: Mode, starting_cash: float, fee_rate: float, slippage_bps: float,
                 bars_fn: BarsFn, bar_duration: timedelta, tick_sizes: dict[str, float] | None = None,
                 maintenance_margin_rates: dict[str, float] | None = None):
        self.account = account
        self.mode = mode
        self.starting_cash = starting_cash
        self.fee_rate = fee_rate
        self.slippage_bps = slippage_bps
        self.bars_fn = bars_fn
        self.bar = bar_duration
        self.tick_sizes = tick_sizes or {}
        self.mmr = maintenance_margin_rates or {}

    # ------------------------------------------------------------------ account
    def _account(self, s: Session, lock: bool = False) -> PaperAccountRow:
        stmt = select(PaperAccountRow).where(PaperAccountRow.account == self.account)
        if lock:
            stmt = stmt.with_for_update()
        row = s.execute(stmt).scalar_one_or_none()
        if row is None:
            # Concurrent first runs race to open the account: insert-if-absent, then read it back.
            dialect = s.get_bind().dialect.name
            insert = {"postgresql": pg_insert, "sqlite": sqlite_insert}.get(dialect)
            if insert is None:
                raise VenueError(f"paper venue needs PostgreSQL or SQLite, not {dialect}")
            s.execute(insert(PaperAccountRow).values(
                account=self.account, mode=self.mode.value, starting_cash=self.starting_cash, cash=self.starting_cash,
                realized_pnl=0.0, fees_paid=0.0).on_conflict_do_nothing(index_elements=["account"]))
            row = s.execute(stmt).scalar_one()
        return row

    def lock(self, s: Session) -> None:
        """Serialize account-changing work: row lock on Postgres (``SELECT … FOR UPDATE``)."""
        self._account(s, lock=True)

    def clock(self, s: Session, instrument: str) -> datetime | None:
        row = s.get(PaperClockRow, (self.account, instrument))
        return row.as_of if row else None

    def positions(self, s: Session) -> list[Position]:
        rows = s.execute(select(PaperPositionRow).where(PaperPositionRow.account == self.account)).scalars()
        return [
            Position(instrument=r.instrument, side=PositionSide(r.side), quantity=r.quantity, entry_price=r.entry_price,
                     mark_price=r.mark_price, leverage=r.leverage, margin=r.margin, opened_at=r.opened_at)
            for r in rows
        ]

    def open_orders(self, s: Session, instrument: str | None = None) -> list[Order]:
        stmt = select(PaperOrderRow).where(PaperOrderRow.account == self.account, PaperOrderRow.status == OrderStatus.NEW.value)
        if instrument:
            stmt = stmt.where(PaperOrderRow.instrument == instrument)
        return [_order(r) for r in s.execute(stmt.order_by(PaperOrderRow.placed_at)).scalars()]

    def get_order(self, s: Session, cid: str) -> Order | None:
        row = s.get(PaperOrderRow, cid)
        return _order(row) if row and row.account == self.account else None

    def fills(self, s: Session, cid: str) -> list[Fill]:
        rows = s.execute(select(PaperFillRow).where(PaperFillRow.client_order_id == cid).order_by(PaperFillRow.time)).scalars()
        return [Fill(client_order_id=r.client_order_id, instrument=r.instrument, side=Side(r.side), quantity=r.quantity,
                     price=r.price, fee=r.fee, time=r.time) for r in rows]

    def all_fill_rows(self, s: Session) -> list[PaperFillRow]:
        return list(s.execute(select(PaperFillRow).where(PaperFillRow.account == self.account)).scalars())

    def snapshot(self, s: Session, as_of: datetime) -> PortfolioSnapshot:
        acct = self._account(s)
        positions = self.positions(s)
        unreal = sum(p.unrealized_pnl for p in positions)
        if self.mode is Mode.SPOT:
            equity = acct.cash + sum(p.quantity * p.mark_price for p in positions)
        else:
            equity = acct.cash + sum(p.margin + p.unrealized_pnl for p in positions)
        return PortfolioSnapshot(strategy=self.account, as_of=as_of, cash=acct.cash, equity=equity,
                                 realized_pnl=acct.realized_pnl, unrealized_pnl=unreal, positions=tuple(positions))

    def reserved(self, s: Session, exclude: str | None = None) -> float:
        """Quote currency held back for resting entry orders (all but ``exclude``)."""
        rows = s.execute(select(PaperOrderRow).where(
            PaperOrderRow.account == self.account, PaperOrderRow.status == OrderStatus.NEW.value,
            PaperOrderRow.role == OrderRole.ENTRY.value)).scalars()
        return sum(r.reserved for r in rows if r.client_order_id != exclude)

    def max_clock(self, s: Session) -> datetime | None:
        """The latest bar close the venue has processed on any instrument of the account."""
        clocks = s.execute(select(PaperClockRow.as_of).where(PaperClockRow.account == self.account)).scalars().all()
        return max(clocks, default=None)

    def account_view(self, s: Session, instrument: str, day_start_equity: float | None) -> AccountView:
        """Guards' view: free cash net of what resting entries reserve; ``as_of`` is the account's
        latest clock (a window the account has moved past is stale for every instrument)."""
        snap = self.snapshot(s, datetime.now().astimezone())
        resting = tuple(sorted({o.request.instrument for o in self.open_orders(s) if o.request.role is OrderRole.ENTRY}))
        return AccountView(free_cash=snap.cash - self.reserved(s), equity=snap.equity,
                           day_start_equity=day_start_equity if day_start_equity is not None else snap.equity,
                           positions=snap.positions, resting_entries=resting, as_of=self.max_clock(s))

    def _entry_cost(self, quantity: float, price: float, leverage: float) -> float:
        """Cash an entry needs: spot notional + fee; futures initial margin + fee (quote currency)."""
        notional = quantity * price
        return (notional / leverage if self.mode is Mode.FUTURES else notional) + notional * self.fee_rate

    # ------------------------------------------------------------------ orders
    def submit(self, s: Session, intent: TradeIntent, placed_at: datetime) -> list[Order]:
        """Place the orders for a VALIDATED intent at ``placed_at`` (the window end).

        Entry: a market entry plus a stop-loss (stop-market) and a take-profit (limit), both
        reduce-only and one-cancels-other, live once the entry fills (a bracket order).
        Exit: a reduce-only market order for the whole position. Idempotent per client order id.
        """
        self.lock(s)
        if intent.kind is IntentKind.ENTRY:
            assert intent.side and intent.position_side and intent.stop and intent.take_profit
            entry_cid = client_order_id(intent.intent_id, OrderRole.ENTRY)
            exit_side = intent.side.opposite
            reqs = [
                OrderRequest(client_order_id=entry_cid, instrument=intent.instrument, side=intent.side, type=OrderType.MARKET,
                             quantity=intent.quantity, role=OrderRole.ENTRY),
                OrderRequest(client_order_id=client_order_id(intent.intent_id, OrderRole.STOP_LOSS), instrument=intent.instrument,
                             side=exit_side, type=OrderType.STOP, quantity=intent.quantity, trigger_price=intent.stop,
                             role=OrderRole.STOP_LOSS, reduce_only=True, parent_client_order_id=entry_cid, oco_group=entry_cid),
                OrderRequest(client_order_id=client_order_id(intent.intent_id, OrderRole.TAKE_PROFIT), instrument=intent.instrument,
                             side=exit_side, type=OrderType.LIMIT, quantity=intent.quantity, price=intent.take_profit,
                             role=OrderRole.TAKE_PROFIT, reduce_only=True, parent_client_order_id=entry_cid, oco_group=entry_cid),
            ]
            pos_side, lev = intent.position_side.value, intent.leverage
        elif intent.kind is IntentKind.EXIT:
            pos = next((p for p in self.positions(s) if p.instrument == intent.instrument), None)
            if pos is None:
                raise VenueError(f"no {intent.instrument} position to exit")
            reqs = [OrderRequest(client_order_id=client_order_id(intent.intent_id, OrderRole.EXIT), instrument=intent.instrument,
                                 side=pos.side.exit_side, type=OrderType.MARKET, quantity=pos.quantity, role=OrderRole.EXIT,
                                 reduce_only=True)]
            pos_side, lev = pos.side.value, pos.leverage
        else:
            raise VenueError(f"intent {intent.intent_id} is a no-trade; nothing to submit")
        out = []
        for r in reqs:
            existing = s.get(PaperOrderRow, r.client_order_id)
            if existing is None:
                existing = PaperOrderRow(
                    client_order_id=r.client_order_id, venue_order_id="P" + r.client_order_id[3:], account=self.account,
                    instrument=r.instrument, side=r.side.value, type=r.type.value, role=r.role.value, quantity=r.quantity,
                    price=r.price, trigger_price=r.trigger_price, reduce_only=r.reduce_only,
                    parent_client_order_id=r.parent_client_order_id, oco_group=r.oco_group, position_side=pos_side,
                    leverage=lev, status=OrderStatus.NEW.value, placed_at=placed_at,
                    # market entries fill at an unknown open: reserve at the planned entry plus a slippage margin
                    reserved=self._entry_cost(r.quantity, (intent.entry or 0.0) * (1 + 2 * self.slippage_bps / 10_000 + 0.01), lev)
                    if r.role is OrderRole.ENTRY else 0.0)
                s.add(existing)
                s.flush()
            out.append(_order(existing))
        return out

    def cancel(self, s: Session, cid: str) -> Order:
        """Cancel a resting order (and, for an entry, its bracket children). Filled orders stay filled."""
        row = s.get(PaperOrderRow, cid)
        if row is None or row.account != self.account:
            raise VenueError(f"unknown order {cid}")
        if row.status == OrderStatus.NEW.value:
            row.status = OrderStatus.CANCELLED.value
            self._cancel_children(s, cid)
        s.flush()
        return _order(row)

    # ------------------------------------------------------------------ simulation
    def advance(self, s: Session, instrument: str, as_of: datetime) -> list[VenueEvent]:
        """Process every bar of ``instrument`` that closed after the clock and at or before
        ``as_of``: fill resting entries and exits at the bar's open, then check brackets against
        the bar's range, then mark positions at the close. The clock never moves backwards."""
        self.lock(s)
        clock_row = s.get(PaperClockRow, (self.account, instrument))
        start = clock_row.as_of if clock_row else None
        pending = self.open_orders(s, instrument)
        if start is None:
            start = min((o.placed_at for o in pending), default=as_of)
        events: list[VenueEvent] = []
        if as_of > start:
            bars = self.bars_fn(instrument, start, as_of)
            for ts, b in bars.iterrows():
                bar = Bar(open_time=ts.to_pydatetime(), open=b.open, high=b.high, low=b.low, close=b.close, volume=b.volume)
                events.extend(self._process_bar(s, instrument, bar))
        if clock_row is None:
            s.add(PaperClockRow(account=self.account, instrument=instrument, as_of=max(as_of, start)))
        elif as_of > clock_row.as_of:
            clock_row.as_of = as_of
        s.flush()
        return events

    def _rows(self, s: Session, instrument: str) -> list[PaperOrderRow]:
        return list(s.execute(select(PaperOrderRow).where(
            PaperOrderRow.account == self.account, PaperOrderRow.instrument == instrument,
            PaperOrderRow.status == OrderStatus.NEW.value).order_by(PaperOrderRow.placed_at)).scalars())

    def _fill(self, s: Session, row: PaperOrderRow, price: float, time: datetime) -> PaperFillRow:
        tick = self.tick_sizes.get(row.instrument)
        if tick:  # exchanges fill on the price grid
            price = round_to_tick(price, tick)
        fee = row.quantity * price * self.fee_rate
        row.status, row.fill_price, row.filled_at = OrderStatus.FILLED.value, price, time
        f = PaperFillRow(fill_id=f"{row.client_order_id}-1", client_order_id=row.client_order_id, account=self.account,
                         instrument=row.instrument, side=row.side, quantity=row.quantity, price=price, fee=fee, time=time)
        s.add(f)
        acct = self._account(s)
        acct.fees_paid += fee
        acct.cash -= fee
        return f

    def _open_position(self, s: Session, row: PaperOrderRow, price: float, time: datetime) -> None:
        acct = self._account(s)
        notional = row.quantity * price
        margin = notional / row.leverage if self.mode is Mode.FUTURES else 0.0  # spot pays the notional instead
        acct.cash -= margin if self.mode is Mode.FUTURES else notional
        s.add(PaperPositionRow(account=self.account, instrument=row.instrument, side=row.position_side or "long",
                               quantity=row.quantity, entry_price=price, leverage=row.leverage,
                               margin=margin, mark_price=price, opened_at=time))

    def _close_position(self, s: Session, pos: PaperPositionRow, price: float) -> float:
        acct = self._account(s)
        pnl = realized_pnl(PositionSide(pos.side), pos.entry_price, price, pos.quantity)
        if self.mode is Mode.FUTURES:
            pnl = max(pnl, -pos.margin)  # isolated margin: a position can lose its margin and no more
            acct.cash += pos.margin + pnl
        else:
            acct.cash += pos.quantity * price
        acct.realized_pnl += pnl
        s.delete(pos)
        return pnl

    def _process_bar(self, s: Session, instrument: str, bar: Bar) -> list[VenueEvent]:
        events: list[VenueEvent] = []
        # 1. isolated futures: liquidation comes before anything else the bar does (see _liquidate).
        liquidated = self._liquidate(s, instrument, bar)
        if liquidated is not None:
            events.append(liquidated)
        rows = self._rows(s, instrument)
        by_cid = {r.client_order_id: r for r in rows}
        # 2. market orders placed at or before this bar's open fill at its open.
        for r in rows:
            if r.type != OrderType.MARKET.value or r.placed_at > bar.open_time:
                continue
            pos = s.get(PaperPositionRow, (self.account, instrument))
            price = market_fill_price(Side(r.side), bar, self.slippage_bps)
            if r.role == OrderRole.ENTRY.value:
                reason = None
                if pos is not None:  # the venue refuses a second position (one-way mode)
                    reason = "position already open"
                else:
                    need = self._entry_cost(r.quantity, price, r.leverage)
                    free = self._account(s).cash - self.reserved(s, exclude=r.client_order_id)
                    if need > free + 1e-9:
                        reason = f"insufficient funds: needs {need:.2f}, {free:.2f} free"
                if reason:
                    self._reject_entry(s, r)
                    events.append(VenueEvent("rejected", instrument, r.client_order_id, r.role, price, r.quantity, bar.open_time))
                    continue
                price = self._fill(s, r, price, bar.open_time).price
                self._open_position(s, r, price, bar.open_time)
                events.append(VenueEvent("fill", instrument, r.client_order_id, r.role, price, r.quantity, bar.open_time))
            else:  # exit
                if pos is None:
                    r.status = OrderStatus.REJECTED.value
                    continue
                price = self._fill(s, r, price, bar.open_time).price
                pnl = self._close_position(s, pos, price)
                self._cancel_brackets(s, instrument)
                events.append(VenueEvent("fill", instrument, r.client_order_id, r.role, price, r.quantity, bar.open_time, pnl))
        pos = s.get(PaperPositionRow, (self.account, instrument))
        # 3. brackets of the open position (children of a filled entry).
        if pos is not None:
            legs = [r for r in by_cid.values() if r.status == OrderStatus.NEW.value and r.parent_client_order_id
                    and (p := s.get(PaperOrderRow, r.parent_client_order_id)) is not None and p.status == OrderStatus.FILLED.value]
            stop = next((r for r in legs if r.role == OrderRole.STOP_LOSS.value), None)
            target = next((r for r in legs if r.role == OrderRole.TAKE_PROFIT.value), None)
            hit = bracket_exit(PositionSide(pos.side), stop.trigger_price if stop else None,
                               target.price if target else None, bar, self.slippage_bps)
            if hit is not None:
                role, price = hit
                leg = stop if role is OrderRole.STOP_LOSS else target
                price = self._fill(s, leg, price, bar.open_time).price
                pnl = self._close_position(s, pos, price)
                self._cancel_brackets(s, instrument)
                events.append(VenueEvent("fill", instrument, leg.client_order_id, leg.role, price, leg.quantity, bar.open_time, pnl))
        # 4. mark to the close.
        pos = s.get(PaperPositionRow, (self.account, instrument))
        if pos is not None:
            pos.mark_price = bar.close
        s.flush()
        return events

    def _liquidate(self, s: Session, instrument: str, bar: Bar) -> VenueEvent | None:
        """Isolated futures liquidation on ``bar``, before any other order of the bar.

        Triggers when the bar opens beyond the liquidation price, or when its range reaches the
        liquidation price and no stop-loss sits strictly before it. The venue closes the position
        with a reduce-only LIQUIDATION order filled at the liquidation price (the open if the bar
        gapped through it, but never past the bankruptcy price, where the loss equals the margin);
        the margin left after that loss is taken as the liquidation fee, so the position loses
        exactly its margin (Binance keeps the remainder for its insurance fund).
        """
        pos = s.get(PaperPositionRow, (self.account, instrument))
        if pos is None or self.mode is not Mode.FUTURES:
            return None
        side = PositionSide(pos.side)
        liq = liquidation_price(pos.entry_price, pos.leverage, side, self.mmr.get(instrument, 0.0))
        long = side is PositionSide.LONG
        stop = next((r.trigger_price for r in self._rows(s, instrument) if r.role == OrderRole.STOP_LOSS.value), None)
        gapped = bar.open <= liq if long else bar.open >= liq
        reached = bar.low <= liq if long else bar.high >= liq
        stop_first = stop is not None and (stop > liq if long else stop < liq)
        if not (gapped or (reached and not stop_first)):
            return None
        price = bar.open if gapped else liq
        pnl = realized_pnl(side, pos.entry_price, price, pos.quantity)
        if pnl < -pos.margin:  # gapped past bankruptcy: the insurance fund absorbs the rest
            price = pos.entry_price - pos.margin / pos.quantity if long else pos.entry_price + pos.margin / pos.quantity
            pnl = -pos.margin
        entry = s.execute(select(PaperOrderRow).where(
            PaperOrderRow.account == self.account, PaperOrderRow.instrument == instrument,
            PaperOrderRow.role == OrderRole.ENTRY.value, PaperOrderRow.status == OrderStatus.FILLED.value)
            .order_by(PaperOrderRow.filled_at.desc())).scalars().first()
        cid = (entry.client_order_id[:-3] + "-lq") if entry else f"tp-liq{bar.open_time:%Y%m%d%H%M}-lq"
        row = PaperOrderRow(client_order_id=cid, venue_order_id="P" + cid[3:], account=self.account, instrument=instrument,
                            side=side.exit_side.value, type=OrderType.MARKET.value, role=OrderRole.LIQUIDATION.value,
                            quantity=pos.quantity, reduce_only=True, parent_client_order_id=entry.client_order_id if entry else None,
                            position_side=side.value, leverage=pos.leverage, status=OrderStatus.FILLED.value,
                            placed_at=bar.open_time, filled_at=bar.open_time, fill_price=price)
        s.add(row)
        s.flush()  # the order row before its fill (foreign key)
        fee = pos.margin + pnl  # what is left of the margin goes to the venue
        s.add(PaperFillRow(fill_id=f"{cid}-1", client_order_id=cid, account=self.account, instrument=instrument,
                           side=row.side, quantity=pos.quantity, price=price, fee=fee, time=bar.open_time))
        acct = self._account(s)
        acct.realized_pnl += pnl
        acct.fees_paid += fee
        qty = pos.quantity
        s.delete(pos)
        s.flush()
        self._cancel_brackets(s, instrument)
        return VenueEvent("fill", instrument, cid, OrderRole.LIQUIDATION.value, price, qty, bar.open_time, pnl)

    def _reject_entry(self, s: Session, row: PaperOrderRow) -> None:
        """The venue refuses an entry: it and its bracket legs end (no orphaned stop or target)."""
        row.status = OrderStatus.REJECTED.value
        self._cancel_children(s, row.client_order_id)

    def _cancel_children(self, s: Session, parent_cid: str) -> None:
        """Cancel the resting bracket legs of ``parent_cid``."""
        for child in s.execute(select(PaperOrderRow).where(PaperOrderRow.parent_client_order_id == parent_cid)).scalars():
            if child.status == OrderStatus.NEW.value:
                child.status = OrderStatus.CANCELLED.value

    def advance_account(self, s: Session, instruments: Iterable[str], as_of: datetime) -> list[VenueEvent]:
        """:meth:`advance` every instrument of the account to ``as_of``, so account-wide figures
        (equity, cash, positions) are those of ``as_of`` and not of whichever clock ran last."""
        events: list[VenueEvent] = []
        for inst in sorted(set(instruments)):
            events.extend(self.advance(s, inst, as_of))
        return events

    def _cancel_brackets(self, s: Session, instrument: str) -> None:
        for r in self._rows(s, instrument):
            if r.reduce_only and r.role in (OrderRole.STOP_LOSS.value, OrderRole.TAKE_PROFIT.value):
                r.status = OrderStatus.CANCELLED.value


def instruments_with_activity(venue: PaperVenue, s: Session) -> Iterable[str]:
    return sorted({p.instrument for p in venue.positions(s)} | {o.request.instrument for o in venue.open_orders(s)})
