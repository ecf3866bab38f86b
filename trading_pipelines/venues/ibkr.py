"""The Interactive Brokers venue: TWS or IB Gateway through ib_async, behind the venue protocol.

Scope: US equities (``SPY``, ``AAPL``) in spot mode: long entries (BUY) with a protective
bracket, exits (SELL of the held shares). Units everywhere: quantities in **whole shares**,
prices and money in **USD** (the ``currency`` given, USD by default), times timezone-aware
**UTC**. Instruments are ticker symbols, resolved to IB contracts with
``qualifyContracts(Stock(symbol, exchange, currency))`` (``exchange`` SMART by default).

**Connection.** :meth:`IbkrVenue.connect` calls ``IB().connect(host, port, clientId=client_id,
timeout=connect_timeout_s, account=account)`` unless the ``IB`` is already connected, retried
with tenacity (``connect_attempts`` attempts, exponential wait from ``connect_wait_s``), then
:meth:`~IbkrVenue.reconcile`. Any verb connects on first use. A refused or timed-out connection
raises :class:`VenueError` naming ``host:port`` and what to check (TWS/IB Gateway running and
logged in, API enabled, port, trusted IP, a client id not in use by another connection).

**Client order ids** are IB's ``orderRef``, set on every order this venue places (each bracket
leg carries its own). IB does **not** deduplicate on ``orderRef``, so exactly-once is this
adapter's job: before placing anything it looks the client order id up in ``openTrades()`` /
``trades()`` (this session), ``reqAllOpenOrders()`` (every client's open orders),
``reqCompletedOrders(apiOnly=False)`` (filled/cancelled today, manual ones too) and ``fills()``;
if it is found, the existing order is returned and nothing is placed. This holds across a
crash between ``placeOrder`` and the ledger write, because TWS/Gateway remembers the orders and
ib_async syncs them on connect. Use a fixed ``client_id`` per deployment so open orders placed
before a restart are bound to the new session (``clientId=0`` also binds manual TWS orders).

**Brackets** (:meth:`IbkrVenue.create_bracket`) use ``ib.bracketOrder(action, quantity,
limitPrice, takeProfitPrice, stopLossPrice, account=…)``: a parent and two children whose
``parentId`` is the parent's ``orderId``; IB makes the children one-cancels-other and holds them
until the parent fills. ib_async creates the legs in the order parent (``transmit=False``),
take-profit (``transmit=False``), stop-loss (``transmit=True``) and they are placed in that
order, so nothing reaches the market until the last leg is sent. A LIMIT entry uses the
request's ``price`` as the parent's limit; a MARKET entry replaces the parent with a
``MarketOrder`` under the same ``orderId`` (the children's ``parentId`` stays valid) and the
same ``transmit=False``. Entry legs are DAY orders, the stop-loss and take-profit GTC.

**Status mapping** (ib_async ``OrderStatus.status`` → :class:`OrderStatus`): PendingSubmit,
ApiPending, PreSubmitted, Submitted, PendingCancel, ApiUpdate, ValidationError → NEW (still able
to fill; PendingCancel until IB confirms the cancel); Filled → FILLED; Cancelled, ApiCancelled →
CANCELLED; Inactive → REJECTED.

**The venue wins.** Nothing is cached but contracts: every verb reads IB's state, so manual TWS
orders and positions (no ``orderRef``) are reported too. A manual order's client order id is
``ib-<permId>``.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from trading_pipelines.domain.models import (
    Fill,
    Order,
    OrderRequest,
    OrderRole,
    OrderStatus,
    OrderType,
    Position,
    PositionSide,
    Side,
)
from trading_pipelines.venues.protocol import Balance, Venue, VenueError

log = logging.getLogger(__name__)

# ib_async is imported lazily (see _ib_async) so importing this module never needs it.

_STATUS = {
    "PendingSubmit": OrderStatus.NEW,
    "ApiPending": OrderStatus.NEW,
    "PreSubmitted": OrderStatus.NEW,
    "Submitted": OrderStatus.NEW,
    "PendingCancel": OrderStatus.NEW,
    "ApiUpdate": OrderStatus.NEW,
    "ValidationError": OrderStatus.NEW,  # ib_async counts it as active: the order may still work
    "Filled": OrderStatus.FILLED,
    "Cancelled": OrderStatus.CANCELLED,
    "ApiCancelled": OrderStatus.CANCELLED,
    "Inactive": OrderStatus.REJECTED,
}
_DONE = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})

# this pipeline's client order ids (trading_pipelines.domain.ids.client_order_id)
_CID = re.compile(r"^tp-[0-9a-f]{24}-(en|sl|tp|ex|lq)$")
_ROLE_BY_CODE = {"en": OrderRole.ENTRY, "sl": OrderRole.STOP_LOSS, "tp": OrderRole.TAKE_PROFIT, "ex": OrderRole.EXIT,
                 "lq": OrderRole.LIQUIDATION}
_MANUAL_PREFIX = "ib-"

_CONNECT_ERRORS = (ConnectionError, OSError, TimeoutError)  # ConnectionRefusedError is both; asyncio.TimeoutError is TimeoutError
_UNSET_DOUBLE = 1.7976931348623157e308  # ib_async.util.UNSET_DOUBLE (sys.float_info.max)


def _ib_async():
    import ib_async

    return ib_async


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _price(v: Any) -> float | None:
    """A price field of an ib_async Order, or None when unset (UNSET_DOUBLE, None, NaN, 0 for aux)."""
    if v is None:
        return None
    v = float(v)
    if not math.isfinite(v) or v >= _UNSET_DOUBLE:
        return None
    return v


def _shares(quantity: float, what: str) -> float:
    """``quantity`` as whole shares (IB equities trade in whole shares here)."""
    whole = round(quantity)
    if abs(quantity - whole) > 1e-9 or whole <= 0:
        raise VenueError(f"{what}: IBKR orders here are whole shares, not {quantity}")
    return float(whole)


def _instrument(contract) -> str:
    return contract.symbol if contract.secType in ("STK", "") else (contract.localSymbol or contract.symbol)


def _manual_cid(order) -> str:
    return f"{_MANUAL_PREFIX}{order.permId}" if order.permId else f"{_MANUAL_PREFIX}order-{order.clientId}-{order.orderId}"


def _cid_of(order) -> str:
    return order.orderRef or _manual_cid(order)


def _ours(cid: str) -> bool:
    return bool(_CID.match(cid or ""))


def _order_type(ib_type: str) -> OrderType:
    t = (ib_type or "").upper()
    if t.startswith("STP") or t.startswith("TRAIL"):
        return OrderType.STOP
    if "LMT" in t or t in ("LOC", "REL"):
        return OrderType.LIMIT
    return OrderType.MARKET


def search_symbols(ib, pattern: str) -> list[dict]:
    """Contracts matching ``pattern`` (the first letters of a ticker, or a company name), as IB
    reports them through ``ib.reqMatchingSymbols(pattern)``, in IB's order:
    ``[{'conid', 'symbol', 'sec_type', 'primary_exchange', 'currency', 'derivative_sec_types'}]``.
    ``ib`` is a connected ``ib_async.IB`` (e.g. ``IbkrVenue(...).ib`` after ``connect()``)."""
    out = []
    for d in ib.reqMatchingSymbols(pattern) or []:
        c = d.contract
        if c is None:
            continue
        out.append({"conid": c.conId, "symbol": c.symbol, "sec_type": c.secType, "primary_exchange": c.primaryExchange,
                    "currency": c.currency, "derivative_sec_types": list(d.derivativeSecTypes or [])})
    return out


class IbkrVenue(Venue):
    """One IB account (``account``, e.g. ``DU1234567`` for paper, ``U…`` live) reached through
    TWS/IB Gateway at ``host:port`` (7497 TWS paper, 7496 TWS live, 4002/4001 Gateway paper/live)
    with API client id ``client_id``. ``ib``: an ``ib_async.IB`` to use (tests pass a fake);
    None creates one. See the module doc for units and semantics."""

    name = "ibkr"
    simulated = False

    def __init__(self, *, host: str, port: int, client_id: int, account: str, ib=None,
                 connect_timeout_s: float = 10.0, exchange: str = "SMART", currency: str = "USD",
                 connect_attempts: int = 3, connect_wait_s: float = 1.0):
        self.host, self.port, self.client_id, self.account = host, int(port), int(client_id), account
        self.connect_timeout_s = connect_timeout_s
        self.exchange, self.currency = exchange, currency
        self.connect_attempts, self.connect_wait_s = connect_attempts, connect_wait_s
        self._ib = ib
        self._contracts: dict[str, Any] = {}
        self._first_seen: dict[int, datetime] = {}  # conId → when this venue first saw the position
        self._lock = threading.RLock()  # ib_async's IB is not thread-safe: one call at a time
        self._connecting = False

    # ------------------------------------------------------------------ connection
    @property
    def ib(self):
        """The ``ib_async.IB`` in use (created on first access when none was given)."""
        if self._ib is None:
            self._ib = _ib_async().IB()
        return self._ib

    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _connection_error(self, what: str, e: BaseException) -> VenueError:
        return VenueError(
            f"IBKR {what} failed at {self._where()} (client id {self.client_id}, account {self.account}): {e!r}. "
            f"Check that TWS or IB Gateway is running and logged in on {self._where()}, that the API is enabled "
            f"(Configure → API → Settings: 'Enable ActiveX and Socket Clients', socket port {self.port}, this host "
            f"among the trusted IPs) and that no other connection uses client id {self.client_id}.")

    def connect(self) -> None:
        """Connect (``ib.connect(host, port, clientId=client_id, timeout=connect_timeout_s,
        account=account)``) unless already connected, retrying connection errors with tenacity,
        then :meth:`reconcile`. Raises :class:`VenueError` naming host:port when IB cannot be reached."""
        with self._lock:
            ib = self.ib
            if not ib.isConnected():
                retrying = Retrying(stop=stop_after_attempt(max(1, self.connect_attempts)),
                                    wait=wait_exponential(multiplier=self.connect_wait_s, max=30),
                                    retry=retry_if_exception_type(_CONNECT_ERRORS), reraise=True)
                try:
                    retrying(ib.connect, self.host, self.port, clientId=self.client_id, timeout=self.connect_timeout_s,
                             account=self.account)
                except _CONNECT_ERRORS as e:
                    raise self._connection_error("connect", e) from e
                log.info("connected to IBKR at %s (client id %s, account %s)", self._where(), self.client_id, self.account)
            self._connecting = True
            try:
                self.reconcile()
            finally:
                self._connecting = False

    def disconnect(self) -> None:
        """``ib.disconnect()`` (no-op when not connected)."""
        with self._lock:
            if self._ib is not None and self._ib.isConnected():
                self._ib.disconnect()

    def _conn(self):
        """The connected IB (connects on first use)."""
        ib = self.ib
        if not self._connecting and not ib.isConnected():
            self.connect()
        return ib

    def _call(self, what: str, fn: Callable[[Any], Any]):
        """Run ``fn(ib)`` under the lock, turning connection failures into :class:`VenueError`."""
        with self._lock:
            try:
                return fn(self._conn())
            except VenueError:
                raise
            except _CONNECT_ERRORS as e:
                raise self._connection_error(what, e) from e

    # ------------------------------------------------------------------ contracts
    def _contract(self, ib, symbol: str):
        c = self._contracts.get(symbol)
        if c is not None:
            return c
        stock = _ib_async().Stock(symbol, self.exchange, self.currency)
        qualified = [q for q in (ib.qualifyContracts(stock) or []) if q is not None and not isinstance(q, list)]
        if not qualified or not qualified[0].conId:
            raise VenueError(f"IBKR cannot resolve {symbol!r} to one {self.currency} stock on {self.exchange} "
                             f"(unknown or ambiguous: qualifyContracts returned none); use search_symbols to find its conid")
        self._contracts[symbol] = qualified[0]
        return qualified[0]

    def resolve(self, symbol: str) -> dict:
        """The qualified contract of ``symbol`` (``ib.qualifyContracts(Stock(symbol, exchange,
        currency))``): ``{'conid', 'symbol', 'sec_type', 'primary_exchange', 'currency', 'exchange'}``.
        Raises :class:`VenueError` naming the symbol when IB knows none or several."""
        c = self._call("resolve", lambda ib: self._contract(ib, symbol))
        return {"conid": c.conId, "symbol": c.symbol, "sec_type": c.secType, "primary_exchange": c.primaryExchange,
                "currency": c.currency, "exchange": c.exchange}

    # ------------------------------------------------------------------ reading IB's orders
    def _mine(self, trade) -> bool:
        acct = getattr(trade.order, "account", "")
        return not acct or not self.account or acct == self.account

    def _session_trades(self, ib) -> list:
        return [t for t in [*ib.openTrades(), *ib.trades()] if self._mine(t)]

    def _find(self, ib, cid: str):
        """The ib_async Trade of client order id ``cid`` (or, for an order known only by its
        executions, the list of its fills), looking in openTrades()/trades(), reqAllOpenOrders(),
        reqCompletedOrders(apiOnly=False) and fills(), in that order; None if IB never saw it."""
        for source in (lambda: self._session_trades(ib), ib.reqAllOpenOrders,
                       lambda: ib.reqCompletedOrders(apiOnly=False)):
            for t in source() or []:
                if self._mine(t) and _cid_of(t.order) == cid:
                    return t
        fills = [f for f in self._fills(ib) if self._fill_cid(f) == cid]
        return fills or None

    def _fills(self, ib) -> list:
        return [f for f in ib.fills() if not self.account or not f.execution.acctNumber
                or f.execution.acctNumber == self.account]

    @staticmethod
    def _fill_cid(f) -> str:
        e = f.execution
        return e.orderRef or (f"{_MANUAL_PREFIX}{e.permId}" if e.permId else f"{_MANUAL_PREFIX}exec-{e.execId}")

    def _fills_of(self, ib, order) -> list:
        cid = _cid_of(order)
        return [f for f in self._fills(ib)
                if (order.permId and f.execution.permId == order.permId) or (order.orderRef and f.execution.orderRef == cid)]

    def _parent_cid(self, ib, cid: str, order) -> str | None:
        m = _CID.match(cid)
        if m and _ROLE_BY_CODE[m.group(1)] in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT, OrderRole.LIQUIDATION):
            return cid[:-2] + "en"
        if order.parentId:
            for t in self._session_trades(ib):
                if t.order.orderId == order.parentId and t.order.clientId == order.clientId:
                    return _cid_of(t.order)
        return None

    def _role(self, cid: str, order) -> OrderRole:
        m = _CID.match(cid)
        if m:
            return _ROLE_BY_CODE[m.group(1)]
        if order.parentId or getattr(order, "parentPermId", 0):
            return OrderRole.STOP_LOSS if _order_type(order.orderType) is OrderType.STOP else OrderRole.TAKE_PROFIT
        return OrderRole.ENTRY if order.action == "BUY" else OrderRole.EXIT

    def _to_order(self, ib, trade, placed_at: datetime | None = None) -> Order | None:
        """The protocol's view of an ib_async Trade (or of an order known only by its fills)."""
        if isinstance(trade, list):
            return self._order_from_fills(trade, placed_at)
        o, st = trade.order, trade.orderStatus
        cid = _cid_of(o)
        fills = self._fills_of(ib, o)
        filled_by_fills = sum(float(f.execution.shares) for f in fills)
        filled = max(float(st.filled or 0.0), filled_by_fills, _price(getattr(o, "filledQuantity", None)) or 0.0)
        quantity = float(o.totalQuantity or 0.0) or float(st.filled + st.remaining) or filled
        if quantity <= 0:
            return None
        typ = _order_type(o.orderType)
        role = self._role(cid, o)
        parent = self._parent_cid(ib, cid, o)
        request = OrderRequest(
            client_order_id=cid, instrument=_instrument(trade.contract), side=Side.BUY if o.action == "BUY" else Side.SELL,
            type=typ, quantity=quantity, price=_price(o.lmtPrice) if typ is OrderType.LIMIT or "LMT" in o.orderType else None,
            trigger_price=_price(o.auxPrice) if typ is OrderType.STOP else None, role=role,
            reduce_only=role is not OrderRole.ENTRY, parent_client_order_id=parent,
            oco_group=o.ocaGroup or (parent if role in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT) else None))
        avg = None
        if filled > 0:
            avg = float(st.avgFillPrice) if st.avgFillPrice else (
                sum(float(f.execution.shares) * float(f.execution.price) for f in fills) / filled_by_fills
                if filled_by_fills else None)
        when = placed_at or (_utc(trade.log[0].time) if trade.log else None) or (
            min(_utc(f.time) for f in fills) if fills else None) or _now()
        status = _STATUS.get(st.status, OrderStatus.NEW)
        return Order(client_order_id=cid, venue_order_id=str(o.permId) if o.permId else None, request=request,
                     status=status, placed_at=when, filled_quantity=filled, average_price=avg)

    def _order_from_fills(self, fills: list, placed_at: datetime | None) -> Order:
        e0 = fills[0].execution
        cid = self._fill_cid(fills[0])
        qty = sum(float(f.execution.shares) for f in fills)
        avg = sum(float(f.execution.shares) * float(f.execution.price) for f in fills) / qty
        role = _ROLE_BY_CODE[_CID.match(cid).group(1)] if _ours(cid) else (
            OrderRole.ENTRY if e0.side == "BOT" else OrderRole.EXIT)
        request = OrderRequest(client_order_id=cid, instrument=_instrument(fills[0].contract),
                               side=Side.BUY if e0.side == "BOT" else Side.SELL, type=OrderType.MARKET, quantity=qty,
                               role=role, reduce_only=role is not OrderRole.ENTRY)
        return Order(client_order_id=cid, venue_order_id=str(e0.permId) if e0.permId else None, request=request,
                     status=OrderStatus.FILLED, placed_at=placed_at or min(_utc(f.time) for f in fills),
                     filled_quantity=qty, average_price=avg)

    # ------------------------------------------------------------------ placing
    def _held(self, ib, conid: int) -> float:
        return sum(float(p.position) for p in ib.positions(self.account) if p.contract.conId == conid)

    def _place(self, ib, contract, order):
        order.account = self.account
        return ib.placeOrder(contract, order)

    def create_bracket(self, entry: OrderRequest, stop_loss: OrderRequest, take_profit: OrderRequest, *,
                       placed_at: datetime, position_side: str, leverage: float = 1.0, reserve: float = 0.0,
                       margin_mode: str | None = None) -> list[Order]:
        """A long entry with its stop-loss and take-profit as one IB bracket
        (``qualifyContracts``, ``bracketOrder``, three ``placeOrder`` calls; see the module doc).
        Idempotent on each leg's client order id: legs IB already has are returned, not placed
        again (a leg missing after a crash mid-bracket is placed against the existing entry).
        Returns [entry, stop_loss, take_profit]. Quantities whole shares, prices USD."""
        self._check_bracket(entry, stop_loss, take_profit, position_side)

        def run(ib):
            found = [self._find(ib, r.client_order_id) for r in (entry, stop_loss, take_profit)]
            if found[0] is not None:
                if any(f is None for f in found[1:]):
                    log.warning("IBKR bracket %s: entry exists, placing its missing legs", entry.client_order_id)
                    return [self._to_order(ib, found[0], placed_at)] + [
                        self._single(ib, r, placed_at, position_side) if f is None else self._to_order(ib, f, placed_at)
                        for r, f in ((stop_loss, found[1]), (take_profit, found[2]))]
                return [self._to_order(ib, f, placed_at) for f in found]
            contract = self._contract(ib, entry.instrument)
            qty = _shares(entry.quantity, entry.client_order_id)
            ia = _ib_async()
            parent, tp, sl = ib.bracketOrder("BUY", qty, entry.price if entry.type is OrderType.LIMIT else 0.0,
                                             take_profit.price, stop_loss.trigger_price, account=self.account)
            if entry.type is OrderType.MARKET:
                parent = ia.MarketOrder("BUY", qty, orderId=parent.orderId, transmit=False, account=self.account)
            parent.orderRef = entry.client_order_id  # each leg its own client order id (not bracketOrder's kwargs)
            sl.orderRef, tp.orderRef = stop_loss.client_order_id, take_profit.client_order_id
            parent.tif, tp.tif, sl.tif = "DAY", "GTC", "GTC"
            trades = {}
            for leg, req in ((parent, entry), (tp, take_profit), (sl, stop_loss)):  # bracketOrder's order: the last transmits
                trades[req.client_order_id] = self._place(ib, contract, leg)
            return [self._to_order(ib, trades[r.client_order_id], placed_at) for r in (entry, stop_loss, take_profit)]

        return self._call("create_bracket", run)

    @staticmethod
    def _check_bracket(entry: OrderRequest, stop_loss: OrderRequest, take_profit: OrderRequest, position_side: str) -> None:
        if position_side != "long" or entry.side is not Side.BUY:
            raise VenueError(f"{entry.client_order_id}: the IBKR venue trades spot equities long only (BUY entries)")
        if entry.role is not OrderRole.ENTRY or entry.type not in (OrderType.MARKET, OrderType.LIMIT):
            raise VenueError(f"{entry.client_order_id}: a bracket's entry must be a MARKET or LIMIT entry order")
        if entry.type is OrderType.LIMIT and entry.price is None:
            raise VenueError(f"{entry.client_order_id}: a LIMIT entry needs a price")
        if stop_loss.type is not OrderType.STOP or stop_loss.trigger_price is None:
            raise VenueError(f"{stop_loss.client_order_id}: the stop-loss must be a STOP order with a trigger price")
        if take_profit.type is not OrderType.LIMIT or take_profit.price is None:
            raise VenueError(f"{take_profit.client_order_id}: the take-profit must be a LIMIT order with a price")
        for r in (stop_loss, take_profit):
            if r.side is not Side.SELL or r.quantity != entry.quantity or r.instrument != entry.instrument:
                raise VenueError(f"{r.client_order_id}: a protective leg sells the entry's quantity of the same instrument")

    def create_order(self, request: OrderRequest, *, placed_at: datetime, position_side: str, leverage: float = 1.0,
                     reserve: float = 0.0) -> Order:
        """Place one order (``qualifyContracts`` + ``placeOrder``, ``orderRef`` = its client order
        id), idempotent on the client order id (see the module doc). Whole shares, USD, UTC.

        * ENTRY (BUY, MARKET or LIMIT): a standalone DAY order, transmitted. Prefer
          :meth:`create_bracket`, which holds the entry until its legs are attached.
        * EXIT (SELL, MARKET): reduce-only by construction: sells ``min(quantity, held shares)``
          (``ib.positions(account)``), raises :class:`VenueError` when nothing is held; cancels
          this pipeline's resting stop-loss/take-profit on the instrument first (they would
          otherwise sell shares that are gone, i.e. go short).
        * STOP_LOSS (STOP) / TAKE_PROFIT (LIMIT) with ``parent_client_order_id``: attached to the
          parent (``parentId``) while it rests; once it filled, a standalone GTC order in OCA
          group ``oco_group`` (``ocaType=1``) for at most the held shares; when the parent was
          cancelled or rejected, nothing is placed and the leg is reported with that status.
        """
        def run(ib):
            found = self._find(ib, request.client_order_id)
            if found is not None:
                return self._to_order(ib, found, placed_at)
            return self._single(ib, request, placed_at, position_side)

        return self._call("create_order", run)

    def _single(self, ib, r: OrderRequest, placed_at: datetime, position_side: str) -> Order:
        ia = _ib_async()
        if position_side != "long":
            raise VenueError(f"{r.client_order_id}: the IBKR venue trades spot equities long only")
        contract = self._contract(ib, r.instrument)
        qty = _shares(r.quantity, r.client_order_id)
        if r.role is OrderRole.ENTRY:
            if r.side is not Side.BUY:
                raise VenueError(f"{r.client_order_id}: entries are BUY orders on the IBKR venue (spot, long only)")
            order = (ia.LimitOrder("BUY", qty, r.price) if r.type is OrderType.LIMIT else ia.MarketOrder("BUY", qty))
            order.tif = "DAY"
        elif r.role is OrderRole.EXIT:
            held = self._held(ib, contract.conId)
            if held <= 0:
                raise VenueError(f"{r.client_order_id}: no {r.instrument} shares held at IBKR account {self.account}: "
                                 f"nothing to exit")
            self._cancel_protective(ib, contract.conId)
            order = ia.MarketOrder("SELL", min(qty, math.floor(held + 1e-9)))
            order.tif = "DAY"
        elif r.role in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT):
            order = self._protective(ib, r, contract, qty)
            if isinstance(order, Order):
                return order
        else:
            raise VenueError(f"{r.client_order_id}: IBKR does not take {r.role.value} orders from the pipeline")
        order.orderRef = r.client_order_id
        return self._to_order(ib, self._place(ib, contract, order), placed_at)

    def _protective(self, ib, r: OrderRequest, contract, qty: float):
        """The ib_async order of a stop-loss/take-profit placed on its own (see create_order), or
        the Order to report when nothing can be placed."""
        ia = _ib_async()
        if r.side is not Side.SELL:
            raise VenueError(f"{r.client_order_id}: protective legs are SELL orders on the IBKR venue (spot, long only)")
        if r.type is OrderType.STOP and r.trigger_price is not None:
            order = ia.StopOrder("SELL", qty, r.trigger_price)
        elif r.type is OrderType.LIMIT and r.price is not None:
            order = ia.LimitOrder("SELL", qty, r.price)
        else:
            raise VenueError(f"{r.client_order_id}: a stop-loss is a STOP with a trigger price, "
                             f"a take-profit a LIMIT with a price")
        order.tif = "GTC"
        parent = self._find(ib, r.parent_client_order_id) if r.parent_client_order_id else None
        if parent is None:
            parent_status = None
        elif isinstance(parent, list):  # known only by its executions: it filled
            parent_status = OrderStatus.FILLED
        else:
            parent_status = _STATUS.get(parent.orderStatus.status, OrderStatus.NEW)
        if parent_status is OrderStatus.NEW:
            order.parentId = parent.order.orderId  # IB holds it until the parent fills
            return order
        if parent_status in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
            return Order(client_order_id=r.client_order_id, venue_order_id=None, request=r, status=parent_status,
                         placed_at=_now())
        held = math.floor(self._held(ib, contract.conId) + 1e-9)
        if held <= 0:
            raise VenueError(f"{r.client_order_id}: no {r.instrument} shares held at IBKR account {self.account} to protect")
        order.totalQuantity = float(min(qty, held))
        if r.oco_group:
            order.ocaGroup, order.ocaType = r.oco_group, 1  # one fills → IB cancels the others (with block)
        return order

    def _cancel_protective(self, ib, conid: int) -> None:
        for t in ib.openTrades():
            cid = _cid_of(t.order)
            if (self._mine(t) and t.contract.conId == conid and _ours(cid)
                    and _ROLE_BY_CODE[cid[-2:]] in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT)):
                ib.cancelOrder(t.order)

    # ------------------------------------------------------------------ the other verbs
    def fetch_order(self, client_order_id: str, instrument: str | None = None) -> Order | None:
        """The order with this client order id (``orderRef``; ``ib-<permId>`` for a manual
        order), looked up as in the module doc; None if IB never saw it."""
        def run(ib):
            found = self._find(ib, client_order_id)
            return self._to_order(ib, found) if found is not None else None

        return self._call("fetch_order", run)

    def cancel_order(self, client_order_id: str) -> Order:
        """``ib.cancelOrder`` of a resting order; an entry's resting stop-loss/take-profit are
        cancelled too (IB also cancels a parent's children itself). Filled or already-ended
        orders are returned as they are. The status is what IB reports right after the request
        (PendingCancel maps to NEW until IB confirms). Raises :class:`VenueError` when unknown."""
        def run(ib):
            t = self._find(ib, client_order_id)
            if t is None:
                raise VenueError(f"unknown order {client_order_id} at IBKR account {self.account}")
            if isinstance(t, list) or t.orderStatus.status in _DONE:
                return self._to_order(ib, t)
            ib.cancelOrder(t.order)
            if self._role(client_order_id, t.order) is OrderRole.ENTRY:
                for child in ib.openTrades():
                    c_cid = _cid_of(child.order)
                    sibling = (_ours(client_order_id) and _ours(c_cid) and c_cid != client_order_id
                               and c_cid[:-2] == client_order_id[:-2])
                    linked = (child.order.parentId and child.order.parentId == t.order.orderId
                              and child.order.clientId == t.order.clientId)
                    if self._mine(child) and (sibling or linked):
                        ib.cancelOrder(child.order)
            return self._to_order(ib, t)

        return self._call("cancel_order", run)

    def fetch_open_orders(self, instrument: str | None = None) -> list[Order]:
        """Resting orders (``openTrades()`` plus every client's ``reqAllOpenOrders()``, manual
        ones included), optionally of one instrument, oldest first."""
        def run(ib):
            seen: dict[str, Order] = {}
            for t in [*ib.openTrades(), *(ib.reqAllOpenOrders() or [])]:
                if not self._mine(t) or t.orderStatus.status in _DONE:
                    continue
                if instrument is not None and _instrument(t.contract) != instrument:
                    continue
                o = self._to_order(ib, t)
                if o is not None:
                    seen.setdefault(o.client_order_id, o)
            return sorted(seen.values(), key=lambda o: o.placed_at)

        return self._call("fetch_open_orders", run)

    def fetch_positions(self) -> list[Position]:
        """Open positions of the account from ``ib.positions(account)``, manual ones included,
        marked at ``ib.portfolio(account)``'s ``marketPrice`` (the average cost when IB has no
        price). ``quantity`` shares (positive; a short is reported as SHORT), ``entry_price`` IB's
        average cost per share (USD, commissions included), ``opened_at`` the earliest execution
        on the contract that IB reports (its current day), else when this venue first saw it."""
        def run(ib):
            marks = {p.contract.conId: p.marketPrice for p in ib.portfolio(self.account)}
            fills = self._fills(ib)
            out = []
            for p in ib.positions(self.account):
                qty = float(p.position)
                if qty == 0:
                    continue
                conid = p.contract.conId
                side = PositionSide.LONG if qty > 0 else PositionSide.SHORT
                mult = float(p.contract.multiplier) if p.contract.multiplier else 1.0
                entry = float(p.avgCost) / mult
                mark = _price(marks.get(conid))
                mark = mark if mark is not None and mark > 0 else entry
                opened = [_utc(f.time) for f in fills if f.contract.conId == conid
                          and f.execution.side == ("BOT" if side is PositionSide.LONG else "SLD")]
                first = self._first_seen.setdefault(conid, _now())
                out.append(Position(instrument=_instrument(p.contract), side=side, quantity=abs(qty), entry_price=entry,
                                    mark_price=mark, opened_at=min(opened) if opened else first))
            return out

        return self._call("fetch_positions", run)

    def fetch_balance(self) -> Balance:
        """From ``ib.accountValues(account)`` (falling back to ``ib.accountSummary(account)``),
        in ``currency`` (USD; IB's BASE when no USD row): ``cash`` TotalCashValue, ``equity``
        NetLiquidation, ``unrealized_pnl`` UnrealizedPnL, ``realized_pnl`` RealizedPnL (IB's,
        today's). ``reserved``: what the resting BUY entries would cost (remaining shares × limit
        price, or × mark for a market order). ``fees_paid``: the commissions of the executions
        IB reports (``fills()``, its current day)."""
        def run(ib):
            tags = ("TotalCashValue", "NetLiquidation", "UnrealizedPnL", "RealizedPnL")
            values = self._values(ib.accountValues(self.account), tags)
            if any(values.get(t) is None for t in tags):
                summary = self._values(ib.accountSummary(self.account), tags)
                values = {t: values.get(t) if values.get(t) is not None else summary.get(t) for t in tags}
            missing = [t for t in ("TotalCashValue", "NetLiquidation") if values.get(t) is None]
            if missing:
                raise VenueError(f"IBKR account {self.account} at {self._where()} reports no {', '.join(missing)} "
                                 f"in {self.currency}: is the account right and its data subscribed?")
            marks = {p.contract.conId: p.marketPrice for p in ib.portfolio(self.account)}
            reserved = 0.0
            for t in ib.openTrades():
                o = t.order
                if not self._mine(t) or o.action != "BUY" or o.parentId or t.orderStatus.status in _DONE:
                    continue
                px = _price(o.lmtPrice) if "LMT" in o.orderType else _price(marks.get(t.contract.conId))
                remaining = float(t.orderStatus.remaining) if t.orderStatus.remaining else float(o.totalQuantity)
                reserved += remaining * (px or 0.0)
            fees = sum(float(f.commissionReport.commission) for f in self._fills(ib)
                       if f.commissionReport and _price(f.commissionReport.commission) is not None)
            return Balance(cash=values["TotalCashValue"], reserved=reserved, equity=values["NetLiquidation"],
                           realized_pnl=values.get("RealizedPnL") or 0.0, unrealized_pnl=values.get("UnrealizedPnL") or 0.0,
                           fees_paid=fees)

        return self._call("fetch_balance", run)

    def _values(self, rows: Iterable, tags: tuple[str, ...]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for cur in (self.currency, "BASE"):
            for v in rows:
                mine = not self.account or v.account == self.account
                if mine and v.tag in tags and v.currency == cur and out.get(v.tag) is None:
                    try:
                        out[v.tag] = float(v.value)
                    except (TypeError, ValueError):
                        continue
        return out

    def fetch_my_trades(self, since: datetime | None = None) -> list[Fill]:
        """Executions from ``ib.fills()`` with time strictly after ``since`` (UTC), oldest first:
        ``fill_id`` IB's execId, ``client_order_id`` the execution's orderRef (``ib-<permId>``
        for a manual order), ``quantity`` shares, ``price`` USD, ``fee`` the commission report's
        commission (USD; 0 until IB sends the report). ib_async holds the executions of the
        current session (those of IB's current day are requested on connect)."""
        def run(ib):
            cutoff = _utc(since)
            out = []
            for f in self._fills(ib):
                e, t = f.execution, _utc(f.time or f.execution.time)
                if cutoff is not None and t <= cutoff:
                    continue
                fee = _price(f.commissionReport.commission) if f.commissionReport else None
                out.append(Fill(fill_id=e.execId, client_order_id=self._fill_cid(f), instrument=_instrument(f.contract),
                                side=Side.BUY if e.side == "BOT" else Side.SELL, quantity=float(e.shares),
                                price=float(e.price), fee=fee or 0.0, time=t))
            return sorted(out, key=lambda x: (x.time, x.fill_id))

        return self._call("fetch_my_trades", run)

    # ------------------------------------------------------------------ start-up reconciliation
    def reconcile(self) -> dict:
        """Read IB's state (``positions()``, ``openTrades()`` + ``reqAllOpenOrders()``,
        ``reqCompletedOrders(apiOnly=False)``, ``fills()``); the venue's state wins: nothing here
        is kept but when each position was first seen, every verb reads IB again. Returns::

            {'account', 'positions': [{'instrument', 'conid', 'quantity', 'avg_cost', 'attributed'}],
             'open_orders': [{'client_order_id', 'instrument', 'status', 'manual'}],
             'completed_orders': int, 'fills': int,
             'manual_orders': [client order ids], 'unattributed_positions': [instruments]}

        ``manual``: an order without one of this pipeline's client order ids (placed in TWS or
        by another program). ``attributed``: a position on which one of IB's reported executions
        (its current day) carries this pipeline's client order id; positions held from earlier
        days or opened by hand are unattributed. Quantities shares, costs USD."""
        def run(ib):
            fills = self._fills(ib)
            ours_on = {f.contract.conId for f in fills if _ours(f.execution.orderRef)}
            positions = []
            for p in ib.positions(self.account):
                if float(p.position) == 0:
                    continue
                self._first_seen.setdefault(p.contract.conId, _now())
                positions.append({"instrument": _instrument(p.contract), "conid": p.contract.conId,
                                  "quantity": float(p.position), "avg_cost": float(p.avgCost),
                                  "attributed": p.contract.conId in ours_on})
            open_orders, seen = [], set()
            for t in [*ib.openTrades(), *(ib.reqAllOpenOrders() or [])]:
                cid = _cid_of(t.order)
                if not self._mine(t) or t.orderStatus.status in _DONE or cid in seen:
                    continue
                seen.add(cid)
                open_orders.append({"client_order_id": cid, "instrument": _instrument(t.contract),
                                    "status": _STATUS.get(t.orderStatus.status, OrderStatus.NEW).value, "manual": not _ours(cid)})
            completed = [t for t in ib.reqCompletedOrders(apiOnly=False) or [] if self._mine(t)]
            summary = {"account": self.account, "positions": positions, "open_orders": open_orders,
                       "completed_orders": len(completed), "fills": len(fills),
                       "manual_orders": [o["client_order_id"] for o in open_orders if o["manual"]],
                       "unattributed_positions": [p["instrument"] for p in positions if not p["attributed"]]}
            log.info("IBKR %s reconciled: %d positions (%s unattributed), %d open orders (%d manual), %d completed, %d fills",
                     self.account, len(positions), len(summary["unattributed_positions"]), len(open_orders),
                     len(summary["manual_orders"]), len(completed), len(fills))
            return summary

        return self._call("reconcile", run)


__all__ = ["IbkrVenue", "search_symbols"]
