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
ApiPending, PreSubmitted, Submitted, PendingCancel, ApiUpdate, ValidationError → ACCEPTED, or
PARTIALLY_FILLED once shares filled (still able to fill; PendingCancel until IB confirms the
cancel); Filled → FILLED; Cancelled, ApiCancelled → CANCELED, keeping ``filled_quantity`` (an
entry partly filled then cancelled leaves those shares held); Inactive → ACCEPTED with
``reason`` "held by IB" and IB's words (``whyHeld``, the last error message): IB holds the order
(outside trading hours, margin, locate), it is not a rejection — unless IB's last message for it
is error 201 ("Order rejected"), then REJECTED.

**Parent ids** are scoped to the client id that placed the parent; orders of other client ids
are seen only through ``reqAllOpenOrders``. A leg placed on its own takes ``parentId`` only from
an order of *this* ``client_id``; otherwise it is placed without a parent in an OCA group
(``ocaGroup``, ``ocaType`` 1) once shares are held (:meth:`IbkrVenue.create_protection`).

**Errors**: a connection failure raises :class:`VenueUnavailable` (naming host:port and what to
check), or :class:`OrderStateUnknown` when it broke while a ``placeOrder`` was being sent; an exit
or protective leg with no shares held raises :class:`OrderRejected`.

**The venue wins.** Nothing is cached but contracts: every verb reads IB's state, so manual TWS
orders and positions (no ``orderRef``) are reported too. A manual order's client order id is
``ib-<permId>``.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any, Callable

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from trading_pipelines.domain.models import Order, OrderRequest, OrderRole, OrderStatus, OrderType, Side
from trading_pipelines.venues.protocol import OrderStateUnknown, Venue, VenueError, VenueUnavailable

from trading_pipelines.venues.ibkr_orders import (
    _CID,
    _CONNECT_ERRORS,
    _DONE,
    _MANUAL_PREFIX,
    _ROLE_BY_CODE,
    _cid_of,
    _ib_async,
    _instrument,
    _now,
    _ours,
    _order_type,
    _price,
    _utc,
    status_of,
)
from trading_pipelines.venues.ibkr_placing import IbkrPlacing
from trading_pipelines.venues.ibkr_reads import IbkrReads

log = logging.getLogger(__name__)


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


class IbkrVenue(IbkrPlacing, IbkrReads, Venue):
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
        self._sending: str | None = None  # the client order id whose placeOrder is on its way

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
        sending, self._sending = self._sending, None
        if sending:  # the socket broke while a placeOrder was on its way: the order may be at IB
            return OrderStateUnknown(
                f"IBKR {what}: the connection broke while placing {sending} at {self._where()} ({e!r}); it may be "
                f"at IB: look it up, never place it again", sending)
        return VenueUnavailable(
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
        self._sending: str | None = None  # the client order id whose placeOrder is on its way

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
            self._sending = None
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
        status, reason = status_of(trade, filled, quantity)
        return Order(client_order_id=cid, venue_order_id=str(o.permId) if o.permId else None, request=request,
                     status=status, placed_at=when, filled_quantity=filled, average_price=avg, reason=reason)

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

    # ------------------------------------------------------------------ the other verbs
    def fetch_order(self, client_order_id: str, instrument: str | None = None) -> Order | None:
        """The order with this client order id (``orderRef``; ``ib-<permId>`` for a manual
        order), looked up as in the module doc; None if IB never saw it."""
        def run(ib):
            found = self._find(ib, client_order_id)
            return self._to_order(ib, found) if found is not None else None

        return self._call("fetch_order", run)

    def cancel_order(self, client_order_id: str, instrument: str | None = None) -> Order:
        """``ib.cancelOrder`` of a resting order; an entry's resting stop-loss/take-profit are
        cancelled too (IB also cancels a parent's children itself). Filled or already-ended
        orders are returned as they are. The status is what IB reports right after the request
        (PendingCancel maps to ACCEPTED until IB confirms). ``instrument`` is not needed (IB finds
        orders by ``orderRef`` across contracts). Raises :class:`VenueError` when unknown."""
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
        ones included, and orders IB holds — ``Inactive``, which ib_async counts as done),
        optionally of one instrument, oldest first."""
        def run(ib):
            seen: dict[str, Order] = {}
            held = [t for t in ib.trades() if t.orderStatus.status == "Inactive"]  # ib_async counts them done
            for t in [*ib.openTrades(), *(ib.reqAllOpenOrders() or []), *held]:
                if not self._mine(t) or t.orderStatus.status in _DONE:
                    continue
                if instrument is not None and _instrument(t.contract) != instrument:
                    continue
                o = self._to_order(ib, t)
                if o is not None:
                    seen.setdefault(o.client_order_id, o)
            return sorted(seen.values(), key=lambda o: o.placed_at)

        return self._call("fetch_open_orders", run)


__all__ = ["IbkrVenue", "search_symbols"]
