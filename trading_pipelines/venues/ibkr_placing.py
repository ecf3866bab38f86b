"""The write side of :class:`~trading_pipelines.venues.ibkr.IbkrVenue`: brackets, single orders
and the OCA-grouped exit legs of an open position, each idempotent on its client order id
(``orderRef``). See :mod:`trading_pipelines.venues.ibkr` for the rules. A mixin: the venue class
supplies ``account``, ``client_id``, ``_call``, ``_contract``, ``_find``, ``_to_order`` and ``_mine``."""

from __future__ import annotations

import logging
import math
from datetime import datetime

from trading_pipelines.domain.models import Order, OrderRequest, OrderRole, OrderStatus, OrderType, Side
from trading_pipelines.venues.ibkr_orders import _ROLE_BY_CODE, _cid_of, _ib_async, _now, _ours, _shares
from trading_pipelines.venues.protocol import OrderRejected, VenueError

log = logging.getLogger("trading_pipelines.venues.ibkr")


class IbkrPlacing:
    """Placing orders at IB (see each method)."""

    # ------------------------------------------------------------------ placing
    def _held(self, ib, conid: int) -> float:
        return sum(float(p.position) for p in ib.positions(self.account) if p.contract.conId == conid)

    def _place(self, ib, contract, order):
        order.account = self.account
        self._sending = order.orderRef or None
        trade = ib.placeOrder(contract, order)
        self._sending = None
        return trade

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
                raise OrderRejected(f"{r.client_order_id}: no {r.instrument} shares held at IBKR account {self.account}: "
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
            parent_status, parent_filled = None, 0.0
        elif isinstance(parent, list):  # known only by its executions: it filled
            parent_status, parent_filled = OrderStatus.FILLED, 1.0
        else:
            p = self._to_order(ib, parent)
            parent_status, parent_filled = (p.status, p.filled_quantity) if p else (None, 0.0)
        if parent_status is OrderStatus.ACCEPTED and parent_filled <= 0:
            if parent.order.orderId and parent.order.clientId == self.client_id:
                order.parentId = parent.order.orderId  # IB holds it until the parent fills
                return order
            # parentId is scoped to the client id that placed the parent: another client's entry
            # cannot be a parent here, and a leg without one would sell shares not yet held
            return Order(client_order_id=r.client_order_id, venue_order_id=None, request=r,
                         status=OrderStatus.INITIALIZED, placed_at=_now(),
                         reason=f"not placed: the entry {r.parent_client_order_id} (client id {parent.order.clientId or '?'}, "
                                f"not {self.client_id}) still works with nothing filled; protect the position once it fills")
        if parent_status in (OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED) and parent_filled <= 0:
            return Order(client_order_id=r.client_order_id, venue_order_id=None, request=r, status=OrderStatus.CANCELED,
                         placed_at=_now(), reason=f"not placed: the entry {r.parent_client_order_id} is "
                                                  f"{parent_status.value} with nothing filled")
        held = math.floor(self._held(ib, contract.conId) + 1e-9)
        if held <= 0:
            raise OrderRejected(f"{r.client_order_id}: no {r.instrument} shares held at IBKR account {self.account} to protect")
        order.totalQuantity = float(min(qty, held))
        if r.oco_group:
            order.ocaGroup, order.ocaType = r.oco_group, 1  # one fills → IB cancels the others (with block)
        return order

    def create_protection(self, stop_loss: OrderRequest, take_profit: OrderRequest | None, *, placed_at: datetime,
                          position_side: str, leverage: float = 1.0) -> list[Order]:
        """The exit legs of an open position as one OCA group, no parent (``parentId`` is scoped to
        the client id that placed the entry, so a leg never borrows one): a GTC ``StopOrder`` and,
        when given, a GTC ``LimitOrder`` take-profit, both SELL, ``ocaGroup`` = the stop-loss's
        ``oco_group`` (else ``oca-<stop-loss id>``), ``ocaType`` 1 (one fills → IB cancels the
        rest), each for min(quantity, held shares). Each leg is transmitted (an OCA order held with
        ``transmit=False`` is not sent by a later one), the stop first so the position is never
        without it. Idempotent per client order id: a leg IB has is returned, a missing one joins
        the existing leg's OCA group; when one leg already filled the other is not placed
        (CANCELED, with the reason). Raises :class:`OrderRejected` when no shares are held."""
        if position_side != "long":
            raise OrderRejected(f"{stop_loss.client_order_id}: the IBKR venue trades spot equities long only")
        legs = [stop_loss] + ([take_profit] if take_profit is not None else [])
        if stop_loss.type is not OrderType.STOP or stop_loss.trigger_price is None:
            raise VenueError(f"{stop_loss.client_order_id}: the stop-loss must be a STOP order with a trigger price")
        if take_profit is not None and (take_profit.type is not OrderType.LIMIT or take_profit.price is None):
            raise VenueError(f"{take_profit.client_order_id}: the take-profit must be a LIMIT order with a price")

        def run(ib):
            ia = _ib_async()
            found = [self._find(ib, r.client_order_id) for r in legs]
            have = [self._to_order(ib, f, placed_at) if f is not None else None for f in found]
            done = next((o for o in have if o is not None and o.filled_quantity > 0), None)
            group = next((f.order.ocaGroup for f in found if f is not None and not isinstance(f, list) and f.order.ocaGroup),
                         None) or stop_loss.oco_group or f"oca-{stop_loss.client_order_id}"
            contract = self._contract(ib, stop_loss.instrument) if None in have else None
            out = []
            for r, o in zip(legs, have):
                if o is not None:
                    out.append(o)
                    continue
                if done is not None:
                    out.append(Order(client_order_id=r.client_order_id, venue_order_id=None, request=r,
                                     status=OrderStatus.CANCELED, placed_at=placed_at,
                                     reason=f"not placed: {done.client_order_id} is {done.status.value} "
                                            f"({done.filled_quantity:g} shares filled)"))
                    continue
                held = math.floor(self._held(ib, contract.conId) + 1e-9)
                if held <= 0:
                    raise OrderRejected(f"{r.client_order_id}: no {r.instrument} shares held at IBKR account "
                                        f"{self.account} to protect")
                qty = float(min(_shares(r.quantity, r.client_order_id), held))
                order = (ia.StopOrder("SELL", qty, r.trigger_price) if r.role is OrderRole.STOP_LOSS
                         else ia.LimitOrder("SELL", qty, r.price))
                order.tif, order.ocaGroup, order.ocaType, order.orderRef = "GTC", group, 1, r.client_order_id
                out.append(self._to_order(ib, self._place(ib, contract, order), placed_at))
            return out

        return self._call("create_protection", run)

    def _cancel_protective(self, ib, conid: int) -> None:
        for t in ib.openTrades():
            cid = _cid_of(t.order)
            if (self._mine(t) and t.contract.conId == conid and _ours(cid)
                    and _ROLE_BY_CODE[cid[-2:]] in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT)):
                ib.cancelOrder(t.order)


__all__ = ["IbkrPlacing"]
