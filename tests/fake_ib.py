"""A fake ``ib_async.IB`` for offline tests of :mod:`trading_pipelines.venues.ibkr`.

It stands in for TWS / IB Gateway, which cannot run here (it needs an IB login, a display or
IBC, and the network). :class:`FakeIB` implements exactly the calls the IBKR venue makes, with the
signatures of ib_async 2.1, and answers with ib_async's real objects (``Contract``/``Stock``,
``Order``/``LimitOrder``/``StopOrder``/``MarketOrder``, ``Trade``, ``OrderStatus``, ``Fill``,
``Execution``, ``CommissionReport``, ``Position``, ``PortfolioItem``, ``AccountValue``,
``ContractDescription``). ``bracketOrder`` *is* ib_async's own ``IB.bracketOrder`` (it only needs
``self.client.getReqId()``), so the tests check the real leg construction and transmit flags.

It plays the gateway too, synchronously and simply:

* ``placeOrder`` assigns ``orderId`` (when 0), ``clientId`` and a ``permId`` (the gateway's ack,
  which a real one sends a few ms later). An order with ``transmit=False`` waits
  (PendingSubmit); a transmitted order goes to Submitted, and a transmitted child transmits its
  parent (Submitted) and the parent's other children (PreSubmitted: held until the parent fills).
* :meth:`FakeIB.fill` executes an order (Fill with Execution + CommissionReport, position and
  portfolio updated); a filled parent releases its children (Submitted); a filled child cancels
  its siblings (IB's bracket OCA), as a filled order of an OCA group (``ocaType`` 1) cancels the
  rest of its group.
* ``cancelOrder`` is confirmed at once (Cancelled); IB would also cancel a parent's children by
  itself, this fake does not, so tests see what the adapter cancels.
* ``reqCompletedOrders`` answers like TWS does: fresh ``Trade`` objects carrying what the
  completed-order message carries (``permId``, ``orderRef``, status; no ``orderId``, ``clientId``
  or ``parentId``).
* Client ids: ``client_id`` is the connected session's; tests set it (and ``client._next``, IB's
  next valid order id, which is per client) to play a second process with another client id.
  Orders are keyed by (clientId, orderId), and ``parentId`` resolves within the placing client id.
* The state survives a "process crash": a second adapter given the same FakeIB sees what the
  gateway remembers. :meth:`FakeIB.forget_session` drops what only the crashed ib_async session
  knew (its done trades), leaving what TWS reports (open orders, completed orders, executions).

Every call is appended to :attr:`FakeIB.calls` by name; every placed order to
:attr:`FakeIB.placed` as ``(contract, order)``; ``crash_after_placements = n`` makes the n-th
following ``placeOrder`` raise :class:`SimulatedCrash` *after* the gateway accepted it.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

from ib_async import (
    IB,
    AccountValue,
    CommissionReport,
    Contract,
    ContractDescription,
    Execution,
    Fill,
    LimitOrder,
    Order,
    OrderStatus,
    PortfolioItem,
    Position,
    Trade,
    TradeLogEntry,
)
from ib_async import util

ACCOUNT = "DU1234567"

# Real IB contract ids: SPY 756733 (ARCA), AAPL 265598 (NASDAQ). "DUAL" is made up: two US stocks
# under one symbol, so qualifyContracts finds it ambiguous (returns None for it).
CONTRACTS = {
    "SPY": [Contract(secType="STK", conId=756733, symbol="SPY", exchange="SMART", primaryExchange="ARCA", currency="USD",
                     localSymbol="SPY", tradingClass="SPY")],
    "AAPL": [Contract(secType="STK", conId=265598, symbol="AAPL", exchange="SMART", primaryExchange="NASDAQ",
                      currency="USD", localSymbol="AAPL", tradingClass="NMS")],
    "DUAL": [Contract(secType="STK", conId=900001, symbol="DUAL", exchange="SMART", primaryExchange="NYSE", currency="USD"),
             Contract(secType="STK", conId=900002, symbol="DUAL", exchange="SMART", primaryExchange="NASDAQ", currency="USD")],
}

# What reqMatchingSymbols('AAPL') answers (the first entry is the real one; the others are
# illustrative listings elsewhere with made-up conids).
MATCHING = [
    ContractDescription(contract=Contract(conId=265598, symbol="AAPL", secType="STK", primaryExchange="NASDAQ", currency="USD"),
                        derivativeSecTypes=["CFD", "OPT", "IOPT", "WAR", "BAG"]),
    ContractDescription(contract=Contract(conId=38708077, symbol="AAPL", secType="STK", primaryExchange="MEXI", currency="MXN"),
                        derivativeSecTypes=[]),
    ContractDescription(contract=Contract(conId=273982664, symbol="AAPL", secType="STK", primaryExchange="EBS", currency="CHF"),
                        derivativeSecTypes=[]),
    ContractDescription(contract=Contract(conId=756733, symbol="SPY", secType="STK", primaryExchange="ARCA", currency="USD"),
                        derivativeSecTypes=["OPT", "FUT"]),
]


class SimulatedCrash(BaseException):
    """The process dies (like KeyboardInterrupt, nothing should catch it)."""


class _FakeClient:
    """The part of ``ib_async.Client`` that ``IB.bracketOrder`` uses."""

    def __init__(self, ib: "FakeIB"):
        self._ib = ib
        self._next = 1

    def getReqId(self) -> int:
        if not self._ib.connected:
            raise ConnectionError("Not connected")
        n, self._next = self._next, self._next + 1
        return n


class FakeIB:
    """Stands in for ``ib_async.IB`` connected to TWS / IB Gateway (see the module doc)."""

    bracketOrder = IB.bracketOrder  # ib_async's own: LimitOrder parent (transmit=False), TP (False), SL (True)

    def __init__(self, account: str = ACCOUNT, *, connected: bool = False, refuse_connects: int = 0,
                 now: datetime = datetime(2024, 5, 1, 14, 30, tzinfo=timezone.utc)):
        self.account = account
        self.connected = connected
        self.refuse_connects = refuse_connects  # this many connect() calls fail with ConnectionRefusedError
        self.client_id = 7 if connected else 0
        self.client = _FakeClient(self)
        self.now = now
        self.calls: list[str] = []
        self.connect_calls: list[tuple] = []
        self.placed: list[tuple[Contract, Order]] = []
        self.cancelled: list[int] = []  # orderIds (permIds for manual orders) cancelOrder was called with
        self.crash_after_placements: int | None = None
        self._trades: dict = {}  # key (clientId, orderId), or permId for manual orders → Trade
        self._session_done: set = set()  # keys of done trades only the ib_async session knows of
        self._fills: list[Fill] = []
        self._positions: dict[int, Position] = {}
        self._marks: dict[int, float] = {}
        self._account_values: list[AccountValue] = []
        self._summary: list[AccountValue] = []
        self._perm = 1_800_000_000
        self._exec = 0

    # ------------------------------------------------------------------ helpers for tests
    def tick(self, seconds: float = 1.0) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def _contract(self, symbol: str) -> Contract:
        return copy.copy(CONTRACTS[symbol][0])

    def set_account_values(self, values: dict[str, float], currency: str = "USD", summary: bool = False) -> None:
        """``accountValues()`` rows (or ``accountSummary()`` rows with ``summary``), tag → USD."""
        rows = [AccountValue(account=self.account, tag=t, value=f"{v:.2f}", currency=currency, modelCode="")
                for t, v in values.items()]
        rows.append(AccountValue(account=self.account, tag="AccountType", value="INDIVIDUAL", currency="", modelCode=""))
        if summary:
            self._summary = rows
        else:
            self._account_values = rows

    def set_mark(self, symbol: str, price: float) -> None:
        self._marks[CONTRACTS[symbol][0].conId] = price

    def add_manual_position(self, symbol: str, shares: float, avg_cost: float, mark: float | None = None) -> None:
        """A position bought by hand in TWS (no orderRef, no execution this session)."""
        c = self._contract(symbol)
        self._positions[c.conId] = Position(self.account, c, shares, avg_cost)
        if mark is not None:
            self._marks[c.conId] = mark

    def add_manual_order(self, symbol: str, action: str, shares: float, limit: float) -> Trade:
        """A limit order typed into TWS: orderId 0, clientId 0, no orderRef, keyed by permId."""
        self._perm += 1
        order = LimitOrder(action, shares, limit, permId=self._perm, account=self.account, tif="DAY")
        status = OrderStatus(orderId=0, status=OrderStatus.Submitted, remaining=shares, permId=self._perm)
        trade = Trade(self._contract(symbol), order, status, [], [TradeLogEntry(self.tick(), OrderStatus.Submitted)])
        self._trades[self._perm] = trade
        return trade

    def trade_by_ref(self, order_ref: str) -> Trade:
        return next(t for t in self._trades.values() if t.order.orderRef == order_ref)

    def fill(self, order_ref: str, price: float, shares: float | None = None, commission: float = 1.0,
             realized: float = 0.0) -> Fill:
        """Execute (all of, or ``shares`` of) the order with this orderRef at ``price`` (USD)."""
        trade = self.trade_by_ref(order_ref)
        o, st = trade.order, trade.orderStatus
        qty = float(shares if shares is not None else st.remaining or o.totalQuantity)
        self._exec += 1
        t = self.tick()
        cum = st.filled + qty
        avg = ((st.avgFillPrice * st.filled) + price * qty) / cum
        ex = Execution(execId=f"0000e0d5.6630a1b2.{self._exec:02d}.01", time=t, acctNumber=self.account, exchange="ISLAND",
                       side="BOT" if o.action == "BUY" else "SLD", shares=qty, price=price, permId=o.permId,
                       clientId=o.clientId, orderId=o.orderId, cumQty=cum, avgPrice=avg, orderRef=o.orderRef)
        cr = CommissionReport(execId=ex.execId, commission=commission, currency="USD", realizedPNL=realized)
        f = Fill(trade.contract, ex, cr, t)
        self._fills.append(f)
        trade.fills.append(f)
        st.filled, st.remaining, st.avgFillPrice, st.lastFillPrice = cum, float(o.totalQuantity) - cum, avg, price
        if st.remaining <= 0:
            st.status = OrderStatus.Filled
            trade.log.append(TradeLogEntry(t, OrderStatus.Filled))
            for child in self._children(o):
                if child.orderStatus.status not in OrderStatus.DoneStates:
                    child.orderStatus.status = OrderStatus.Submitted
            if o.parentId:  # IB's bracket OCA: the other child is cancelled
                for sib in self._children(self._trades[(o.clientId, o.parentId)].order):
                    if sib is not trade and sib.orderStatus.status not in OrderStatus.DoneStates:
                        sib.orderStatus.status = OrderStatus.Cancelled
            if o.ocaGroup and o.ocaType == 1:  # an OCA group: one fills, IB cancels the others
                for other in self._trades.values():
                    if (other is not trade and other.order.ocaGroup == o.ocaGroup
                            and other.orderStatus.status not in OrderStatus.DoneStates):
                        other.orderStatus.status = OrderStatus.Cancelled
        cid = trade.contract.conId
        old = self._positions.get(cid)
        held, cost = (float(old.position), float(old.avgCost)) if old else (0.0, 0.0)
        signed = qty if o.action == "BUY" else -qty
        new = held + signed
        if new == 0:
            self._positions.pop(cid, None)
        else:
            avg_cost = (held * cost + signed * price) / new if o.action == "BUY" else cost
            self._positions[cid] = Position(self.account, trade.contract, new, avg_cost)
        self._marks[cid] = price
        return f

    def forget_session(self) -> None:
        """A new process connects: ib_async no longer knows the done trades of the old session,
        only what TWS reports (open orders, completed orders, today's executions)."""
        self._session_done = {k for k, t in self._trades.items() if t.orderStatus.status in OrderStatus.DoneStates}

    def _children(self, order: Order) -> list[Trade]:
        return [t for t in self._trades.values()
                if order.orderId and t.order.parentId == order.orderId and t.order.clientId == order.clientId]

    def _need(self) -> None:
        if not self.connected:
            raise ConnectionError("Not connected")

    # ------------------------------------------------------------------ ib_async.IB calls
    def connect(self, host: str = "127.0.0.1", port: int = 7497, clientId: int = 1, timeout: float = 4,
                readonly: bool = False, account: str = "", raiseSyncErrors: bool = False, fetchFields=None):
        self.calls.append("connect")
        self.connect_calls.append((host, port, clientId, timeout, account))
        if self.refuse_connects > 0:
            self.refuse_connects -= 1
            raise ConnectionRefusedError(111, f"Connect call failed ('{host}', {port})")
        self.connected, self.client_id = True, int(clientId)
        return self

    def disconnect(self) -> None:
        self.calls.append("disconnect")
        self.connected = False

    def isConnected(self) -> bool:
        return self.connected

    def qualifyContracts(self, *contracts: Contract) -> list[Contract | None]:
        """Like ib_async 2.1: fills the contracts in place; None in the slot of an unknown or
        ambiguous one; exchange SMART kept."""
        self.calls.append("qualifyContracts")
        self._need()
        out: list[Contract | None] = []
        for c in contracts:
            matches = [m for m in CONTRACTS.get(c.symbol, [])
                       if (not c.secType or m.secType == c.secType) and (not c.currency or m.currency == c.currency)]
            if len(matches) != 1:
                out.append(None)
                continue
            m = copy.copy(matches[0])
            if c.exchange == "SMART":
                m.exchange = "SMART"
            util.dataclassUpdate(c, m)
            out.append(c)
        return out

    def reqMatchingSymbols(self, pattern: str) -> list[ContractDescription]:
        self.calls.append("reqMatchingSymbols")
        self._need()
        p = pattern.upper()
        return [copy.deepcopy(d) for d in MATCHING if d.contract.symbol.startswith(p)]

    def placeOrder(self, contract: Contract, order: Order) -> Trade:
        self.calls.append("placeOrder")
        self._need()
        order.orderId = order.orderId or self.client.getReqId()
        order.clientId = self.client_id
        key = (order.clientId, order.orderId)
        if key in self._trades:
            raise AssertionError(f"FakeIB: modifying orders is not simulated (orderId {order.orderId})")
        self._perm += 1
        order.permId = self._perm
        t = self.tick(0.001)
        status = OrderStatus(orderId=order.orderId, status=OrderStatus.PendingSubmit, remaining=float(order.totalQuantity),
                             permId=order.permId, parentId=order.parentId, clientId=order.clientId)
        trade = Trade(contract, order, status, [], [TradeLogEntry(t, OrderStatus.PendingSubmit)])
        self._trades[key] = trade
        self.placed.append((contract, order))
        if order.transmit:
            parent = self._trades.get((order.clientId, order.parentId)) if order.parentId else None
            if parent is not None:
                if parent.orderStatus.status == OrderStatus.PendingSubmit:
                    parent.orderStatus.status = OrderStatus.Submitted
                held = parent.orderStatus.status != OrderStatus.Filled
                for child in self._children(parent.order):
                    if child.orderStatus.status == OrderStatus.PendingSubmit:
                        child.orderStatus.status = OrderStatus.PreSubmitted if held else OrderStatus.Submitted
            else:
                status.status = OrderStatus.Submitted
        if self.crash_after_placements is not None:
            self.crash_after_placements -= 1
            if self.crash_after_placements <= 0:
                self.crash_after_placements = None
                raise SimulatedCrash(f"crash after placing orderId {order.orderId} ({order.orderRef})")
        return trade

    def cancelOrder(self, order: Order, manualCancelOrderTime: str = "") -> Trade | None:
        self.calls.append("cancelOrder")
        self._need()
        key = (order.clientId, order.orderId) if order.orderId > 0 else order.permId
        trade = self._trades.get(key)
        self.cancelled.append(order.orderId if order.orderId > 0 else order.permId)
        if trade is not None and trade.orderStatus.status not in OrderStatus.DoneStates - {OrderStatus.Inactive}:  # a held order can be cancelled
            trade.orderStatus.status = OrderStatus.Cancelled
            trade.log.append(TradeLogEntry(self.tick(), OrderStatus.Cancelled))
        return trade

    def trades(self) -> list[Trade]:
        self.calls.append("trades")
        return [t for k, t in self._trades.items() if k not in self._session_done]

    def openTrades(self) -> list[Trade]:
        self.calls.append("openTrades")
        return [t for t in self._trades.values() if t.orderStatus.status not in OrderStatus.DoneStates]

    def reqAllOpenOrders(self) -> list[Trade]:
        self.calls.append("reqAllOpenOrders")
        self._need()
        return [t for t in self._trades.values() if t.orderStatus.status not in OrderStatus.DoneStates]

    def reqCompletedOrders(self, apiOnly: bool) -> list[Trade]:
        self.calls.append("reqCompletedOrders")
        self._need()
        out = []
        for t in self._trades.values():
            if t.orderStatus.status not in OrderStatus.DoneStates or (apiOnly and t.order.orderId <= 0):
                continue
            o = copy.copy(t.order)
            o.orderId, o.clientId, o.parentId = 0, 0, 0  # the completed-order message has none of these
            o.filledQuantity = t.orderStatus.filled
            out.append(Trade(copy.copy(t.contract), o, OrderStatus(orderId=0, status=t.orderStatus.status), [], []))
        return out

    def fills(self) -> list[Fill]:
        self.calls.append("fills")
        return list(self._fills)

    def positions(self, account: str = "") -> list[Position]:
        self.calls.append("positions")
        return [p for p in self._positions.values() if not account or p.account == account]

    def portfolio(self, account: str = "") -> list[PortfolioItem]:
        self.calls.append("portfolio")
        out = []
        for p in self._positions.values():
            if account and p.account != account or p.contract.conId not in self._marks:
                continue
            mark = self._marks[p.contract.conId]
            out.append(PortfolioItem(p.contract, p.position, mark, mark * p.position, p.avgCost,
                                     (mark - p.avgCost) * p.position, 0.0, p.account))
        return out

    def accountValues(self, account: str = "") -> list[AccountValue]:
        self.calls.append("accountValues")
        return [v for v in self._account_values if not account or v.account == account]

    def accountSummary(self, account: str = "") -> list[AccountValue]:
        self.calls.append("accountSummary")
        self._need()
        return [v for v in self._summary if not account or v.account == account]


__all__ = ["ACCOUNT", "CONTRACTS", "FakeIB", "MATCHING", "SimulatedCrash"]
