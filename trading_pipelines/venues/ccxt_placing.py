"""The write side of :class:`~trading_pipelines.venues.ccxt_venue.CcxtVenue`: placing orders
exactly once (entries, exits, brackets, the exit legs of an open position) and cancelling them,
on Binance through ccxt. See :mod:`~trading_pipelines.venues.ccxt_venue` for the rules; a mixin:
the venue class supplies the exchange, the in-process maps, the retry policy (``_retrying``,
``_guard``, ``_error``, ``_kind``) and the look-ups (``_lookup``, ``_find_definitive``, ``_adopt``)."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone
from typing import Callable, TypeVar

import ccxt

from trading_pipelines.domain.models import Mode, Order, OrderRequest, OrderRole, OrderStatus, PositionSide, Side
from trading_pipelines.venues.ccxt_errors import DUPLICATE, NETWORK
from trading_pipelines.venues.ccxt_orders import num, oco_request
from trading_pipelines.venues.protocol import OrderRejected, OrderStateUnknown, VenueError, VenueUnavailable

log = logging.getLogger("trading_pipelines.venues.ccxt_venue")

T = TypeVar("T")


class _Lost(Exception):
    """A placement was sent and its answer did not come back (``reason`` scrubbed)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class CcxtPlacing:
    """Placing and cancelling (see each method)."""

    # ------------------------------------------------------------------------------------------ placing
    def _send(self, op: str, cid: str, symbol: str, algo: bool, since: datetime, send: Callable[[], T],
              found: Callable[[], T | None], find: Callable[[int], T | None]) -> T:
        """POST exactly once: ``send()``; a refusal before acting (−1021, 429/418) is sent again
        after the resync/wait; a duplicate-id refusal answers ``found()``; a lost answer is looked
        up (``find(since_ms)``, with backoff) and only a *definitely absent* order is sent once
        more. Raises :class:`OrderRejected`, :class:`OrderStateUnknown` or :class:`VenueUnavailable`."""
        now = min(since, datetime.now(timezone.utc))
        since_ms = int((now.timestamp() - self.LOOKUP_MARGIN_S) * 1000)
        for _ in range(2):
            error: VenueError | None = None
            try:
                try:
                    return self._retrying(retry=self._retry_refused)(send)
                except ccxt.BaseError as e:
                    kind = self._kind(e)
                    if kind == DUPLICATE:
                        error = VenueError(f"{cid}: Binance reports a duplicate id but does not return the order")
                        answer = self._guard(op, found)
                        if answer is not None:
                            return answer
                    elif kind == NETWORK:
                        raise _Lost(self._scrub(f"{type(e).__name__}: {e}")) from None
                    else:
                        error = self._error(op, e, placement=True)
            except _Lost as lost:
                log.warning("%s [%s]: the answer to placing %s was lost (%s): looking it up", self.exchange_id,
                            self.account, cid, lost.reason[:200])
                try:
                    answer = self._retrying(self.lookup_attempts)(lambda: find(since_ms))
                except ccxt.BaseError as e:
                    error = OrderStateUnknown(
                        f"{self.exchange_id} [{self.account}] {op}: the answer to placing {cid} on {symbol} was lost "
                        f"({lost.reason}) and Binance did not answer the look-ups ({type(e).__name__}: "
                        f"{self._scrub(str(e))}): it may exist; look it up, never send it again", cid)
                else:
                    if answer is not None:
                        return answer
                    log.warning("%s [%s]: %s is definitely not at Binance: sending it once more", self.exchange_id,
                                self.account, cid)
                    error = VenueUnavailable(f"{self.exchange_id} [{self.account}] {op}: the answers to placing {cid} "
                                             "were lost twice and Binance holds no such order: nothing placed")
                    continue
            raise error
        raise error

    def _post(self, r: OrderRequest, placed_at: datetime) -> dict:
        otype, price, params = self._order_args(r)
        amount = float(self.exchange.amount_to_precision(r.instrument, r.quantity))
        algo = self._is_algo(r)
        return self._send("create_order", r.client_order_id, r.instrument, algo, placed_at,
                          lambda: self.exchange.create_order(r.instrument, otype, r.side.value, amount, price, params),
                          lambda: self._lookup(r.client_order_id, r.instrument, algo),
                          lambda since_ms: self._find_definitive(r.client_order_id, r.instrument, algo, since_ms))

    def _prepare_futures_entry(self, symbol: str, leverage: float, margin_mode: str | None) -> None:
        """One-way mode (once per process), margin mode and leverage for ``symbol`` (Binance keeps
        both per symbol). Leverage must be a whole number (Binance: integer 1–125)."""
        if not self._one_way_checked:
            try:
                self.exchange.set_position_mode(False, symbol)
            except ccxt.BaseError as e:
                if "-4059" not in str(e) and "No need to change position side" not in str(e):
                    raise
            self._one_way_checked = True
        mode = margin_mode or self.margin_mode
        try:
            self.exchange.set_margin_mode(mode, symbol)
        except ccxt.MarginModeAlreadySet:
            pass
        except ccxt.BaseError as e:
            if "-4046" not in str(e) and "No need to change margin type" not in str(e):
                raise
        lev = round(leverage)
        if abs(lev - leverage) > 1e-9 or lev < 1:
            raise VenueError(f"{symbol}: Binance takes whole leverage 1–125, not {leverage}")
        self.exchange.set_leverage(lev, symbol)

    def _create(self, r: OrderRequest, placed_at: datetime, leverage: float, margin_mode: str | None,
                spot_leg: bool = False) -> Order:
        """Look the id up, and place only if Binance has never seen it."""
        op = "create_order"
        self._guard(op, lambda: self._market(r.instrument))
        algo = self._is_algo(r)
        existing = self._guard(op, lambda: self._lookup(r.client_order_id, r.instrument, algo))
        if existing is not None:
            log.info("%s: %s already at the venue (%s), not placed again", self.account, r.client_order_id,
                     existing.get("status"))
            return self._adopt(existing, placed_at)
        if (self.mode is Mode.SPOT and r.oco_group and r.role in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT)
                and not spot_leg):
            raise VenueError(f"{r.client_order_id}: spot bracket legs go on as one OCO list: use create_bracket "
                             "or create_protection")
        if self.mode is Mode.FUTURES and r.role is OrderRole.ENTRY:
            self._guard(op, lambda: self._prepare_futures_entry(r.instrument, leverage, margin_mode), placement=True)
        if self.mode is Mode.SPOT and r.role is OrderRole.EXIT:
            self._guard(op, lambda: self._cancel_resting(r.instrument, side=r.side))  # an OCO holding the base
        o = self._post(r, placed_at)
        o["_algo"] = algo
        self._remember(r, placed_at, algo, o.get("id"))
        log.info("%s: placed %s %s %s %s (%s)", self.account, r.client_order_id, r.side.value, r.quantity, r.instrument,
                 o.get("status"))
        order = self._adopt(o, placed_at)
        if self.mode is Mode.FUTURES and r.role is OrderRole.EXIT and order.status is OrderStatus.FILLED:
            self._guard(op, lambda: self._cancel_resting(r.instrument, side=r.side, algo_only=True))  # the closed position's legs
        return order

    def create_order(self, request: OrderRequest, *, placed_at: datetime, position_side: str, leverage: float = 1.0,
                     reserve: float = 0.0, margin_mode: str | None = None) -> Order:
        """Place ``request`` once (see the module doc). ``position_side`` long|short: one-way mode,
        so it is implied by the side and not sent; ``reserve`` is not used (Binance locks the
        funds itself); ``leverage`` (futures entries) whole number; ``margin_mode`` overrides
        the venue's for this entry. Raises :class:`OrderRejected` (refused for good),
        :class:`OrderStateUnknown` (sent, answer lost, look-ups unanswered) or
        :class:`VenueUnavailable` (nothing sent, or definitely not placed)."""
        if self.mode is Mode.SPOT and position_side == PositionSide.SHORT.value and request.role is OrderRole.ENTRY:
            raise OrderRejected(f"{request.client_order_id}: spot cannot open a short")
        return self._create(request, placed_at, leverage, margin_mode)

    @staticmethod
    def _unplaced(r: OrderRequest, placed_at: datetime, status: OrderStatus, reason: str) -> Order:
        return Order(client_order_id=r.client_order_id, venue_order_id=None, request=r, status=status,
                     placed_at=placed_at, reason=reason)

    def _legs(self, legs: list[OrderRequest], placed_at: datetime, place: Callable[[], list[Order]]) -> list[Order]:
        """``place()`` the legs; a failure is reported on the legs instead of raised (REJECTED,
        UNKNOWN when sent with no answer, INITIALIZED when never sent) with its message."""
        try:
            return place()
        except OrderRejected as e:
            return [self._unplaced(r, placed_at, OrderStatus.REJECTED, str(e)) for r in legs]
        except OrderStateUnknown as e:
            return [self._unplaced(r, placed_at, OrderStatus.UNKNOWN, str(e)) for r in legs]
        except VenueUnavailable as e:
            return [self._unplaced(r, placed_at, OrderStatus.INITIALIZED, str(e)) for r in legs]

    def create_bracket(self, entry: OrderRequest, stop_loss: OrderRequest, take_profit: OrderRequest, *,
                       placed_at: datetime, position_side: str, leverage: float = 1.0, reserve: float = 0.0,
                       margin_mode: str | None = None) -> list[Order]:
        """Entry, then (once anything filled) its stop-loss and take-profit sized to the filled
        quantity (:meth:`create_protection`). An entry that filled nothing (an IOC EXPIRED
        unfilled, REJECTED) gets no legs: they are returned CANCELED with the reason. An IOC that
        EXPIRED after a partial fill is returned EXPIRED with its ``filled_quantity`` and its legs
        are sized to it. The entry's errors raise; a leg's are reported on the leg. Every step
        is idempotent on its client order id."""
        first = self.create_order(entry, placed_at=placed_at, position_side=position_side, leverage=leverage,
                                  reserve=reserve, margin_mode=margin_mode)
        legs = [stop_loss, take_profit]
        if first.filled_quantity <= 0:
            why = f"not placed: the entry {first.client_order_id} is {first.status.value} with nothing filled"
            return [first, *(self._unplaced(r, placed_at, OrderStatus.CANCELED, why) for r in legs)]
        if self.mode is Mode.SPOT:  # a re-run: resting legs lock the base, so the free balance is no measure
            found = self._guard("create_bracket", lambda: [self._lookup(r.client_order_id, r.instrument, False)
                                                           for r in legs])
            if all(found):
                return [first, *(self._adopt(o, placed_at) for o in found)]
        qty = self._guard("create_bracket", lambda: self._leg_quantity(first))
        if qty <= 0:
            why = f"not placed: nothing of the {first.filled_quantity:g} filled is free to sell"
            return [first, *(self._unplaced(r, placed_at, OrderStatus.REJECTED, why) for r in legs)]
        sized = [r.model_copy(update={"quantity": qty}) for r in legs]
        return [first, *self.create_protection(sized[0], sized[1], placed_at=placed_at, position_side=position_side,
                                               leverage=leverage)]

    def create_protection(self, stop_loss: OrderRequest, take_profit: OrderRequest | None, *, placed_at: datetime,
                          position_side: str, leverage: float = 1.0) -> list[Order]:
        """The exit legs of an open position, each idempotent on its client order id; returns
        [stop_loss] or [stop_loss, take_profit] as Binance reports them, a leg that could not be
        placed with its status and reason (REJECTED / UNKNOWN / INITIALIZED) instead of raising.

        Spot: one OCO list (:meth:`_oco`), or a lone ``STOP_LOSS``/``STOP_LOSS_LIMIT`` when
        ``take_profit`` is None. Futures: two reduce-only Algo Service conditional orders
        (``clientAlgoId``), not one-cancels-other at Binance (cancel the sibling when one fills)."""
        legs = [stop_loss] + ([take_profit] if take_profit is not None else [])
        if self.mode is Mode.SPOT:
            if take_profit is None:
                return self._legs(legs, placed_at, lambda: [self._create(stop_loss, placed_at, leverage, None, True)])
            return self._legs(legs, placed_at, lambda: self._oco(stop_loss, take_profit, placed_at=placed_at))
        return [self._legs([r], placed_at, lambda r=r: [self._create(r, placed_at, leverage, None)])[0] for r in legs]

    def _leg_quantity(self, entry: Order) -> float:
        """The entry's filled base quantity, rounded down to the lot step (ccxt
        ``amount_to_precision`` truncates). Spot: at most the base asset's *free* balance, since a
        buy's commission may be taken in the base asset (filled 0.001 BTC, 0.000001 BTC fee: 0.000999
        BTC can be sold) and an OCO for more than is free is refused."""
        qty = entry.filled_quantity
        if self.mode is Mode.SPOT:
            base = self._market(entry.request.instrument)["base"]
            qty = min(qty, num((self.exchange.fetch_balance().get(base) or {}).get("free")))
        if qty <= 0:
            return 0.0
        try:
            return float(self.exchange.amount_to_precision(entry.request.instrument, qty))
        except ccxt.InvalidOrder:  # below the lot step
            return 0.0

    def _oco(self, stop_loss: OrderRequest, take_profit: OrderRequest, *, placed_at: datetime) -> list[Order]:
        """Spot: both exit legs as one OCO list (``POST /api/v3/orderList/oco``), unless Binance
        already has them. One leg alone at Binance: when it filled (or partly), the other is not
        placed (CANCELED, with the reason); when it rests unfilled it is cancelled and the list is
        placed under both ids (Binance's client order ids are unique among *open* orders only);
        when it ended unfilled the list is placed."""
        symbol, legs = stop_loss.instrument, (stop_loss, take_profit)
        found = self._guard("create_oco", lambda: [self._lookup(r.client_order_id, symbol, False) for r in legs])
        if all(found):
            return [self._adopt(o, placed_at) for o in found]
        if any(found):
            have = next(self._adopt(o, placed_at) for o in found if o is not None)
            if have.filled_quantity > 0:
                why = f"not placed: its sibling {have.client_order_id} is {have.status.value} ({have.filled_quantity:g} filled)"
                return [have if o is not None else self._unplaced(r, placed_at, OrderStatus.CANCELED, why)
                        for r, o in zip(legs, found)]
            if have.status.working:
                log.warning("%s: only %s of the OCO rests: cancelling it to place the list", self.account,
                            have.client_order_id)
                self._guard("cancel_order", lambda: self._cancel_one(have.client_order_id, symbol, False))
        m = self._guard("create_oco", lambda: self._market(symbol))
        ex = self.exchange
        list_id = "oco-" + hashlib.sha256(f"{stop_loss.client_order_id}|{take_profit.client_order_id}".encode()).hexdigest()[:28]
        request = oco_request(ex, m, stop_loss, take_profit, self._order_types(symbol), list_id)

        def send() -> dict:
            response = ex.private_post_orderlist_oco(request)
            return {r.get("clientOrderId"): ex.parse_order(r, m) for r in response.get("orderReports", [])}

        def find(since_ms: int | None = None) -> dict | None:
            first = (self._find_definitive(stop_loss.client_order_id, symbol, False, since_ms) if since_ms is not None
                     else self._lookup(stop_loss.client_order_id, symbol, False))
            if first is None:
                return None
            return {stop_loss.client_order_id: first, take_profit.client_order_id: self._lookup(take_profit.client_order_id, symbol, False)}

        reports = self._send("create_oco", stop_loss.client_order_id, symbol, False, placed_at, send, find, find)
        out = []
        for r in legs:
            self._remember(r, placed_at, False, None)
            o = reports.get(r.client_order_id)
            out.append(self._adopt(o, placed_at) if o else self._unplaced(r, placed_at, OrderStatus.ACCEPTED, ""))
        log.info("%s: placed OCO %s (%s, %s)", self.account, list_id, stop_loss.client_order_id, take_profit.client_order_id)
        return out

    # ------------------------------------------------------------------------------------------ cancelling
    def _cancel_one(self, cid: str, symbol: str, algo: bool) -> None:
        params = {"clientOrderId": cid, **({"trigger": True} if algo else {})}
        try:
            self.exchange.cancel_order(None, symbol, params)
        except ccxt.OrderNotFound:
            pass  # gone meanwhile (filled, or cancelled with its OCO sibling)
        except ccxt.OperationRejected as e:  # spot −2011 "Unknown order sent."
            if "-2011" not in str(e) and "Unknown order" not in str(e):
                raise

    def _cancel_resting(self, symbol: str, side: Side, algo_only: bool = False) -> None:
        """Cancel resting exit-side orders on ``symbol`` (spot: an OCO's legs; futures: reduce-only
        conditional legs of a position that was just closed)."""
        books = [True] if algo_only else ([False] if self.mode is Mode.SPOT else [False, True])
        for algo in books:
            for o in self.exchange.fetch_open_orders(symbol, None, None, {"trigger": True} if algo else {}):
                if o.get("side") == side.value and o.get("clientOrderId"):
                    self._cancel_one(o["clientOrderId"], symbol, algo)

    def cancel_order(self, client_order_id: str, instrument: str | None = None) -> Order:
        """Cancel a resting order (futures Algo Service legs by ``clientAlgoId`` with
        ``{'trigger': True}``; a spot OCO leg cancels its list); for an entry also its resting legs
        (known to this process). A filled, cancelled, expired or rejected order is returned as it
        is (a filled entry keeps its legs: they protect the position). Raises :class:`VenueError`
        for an unknown order, :class:`VenueUnavailable` when Binance does not answer."""
        def cancel() -> Order:
            k = self._known.get(client_order_id)
            for symbol in self._symbol_of(client_order_id, instrument):
                o = self._lookup(client_order_id, symbol, k.algo if k else None)
                if o is None:
                    continue
                order = self._adopt(o, None)
                if not order.status.working:
                    return order
                self._cancel_one(client_order_id, symbol, bool(o.get("_algo")))
                if order.request.role is OrderRole.ENTRY:
                    for child in list(self._known[client_order_id].children):
                        ck = self._known[child]
                        self._cancel_one(child, symbol, ck.algo)
                after = self._lookup(client_order_id, symbol, bool(o.get("_algo")))
                return self._adopt(after, None) if after else order.model_copy(update={"status": OrderStatus.CANCELED})
            raise VenueError(f"{self.exchange_id} [{self.account}]: unknown order {client_order_id}")
        return self._guard("cancel_order", cancel)

    # ------------------------------------------------------------------------------------------ reads
    def fetch_open_orders(self, instrument: str | None = None) -> list[Order]:
        """Resting orders (futures: regular and Algo Service conditional ones), oldest first, each
        with its client order id (``clientAlgoId`` for algo orders), role and ``reduce_only``
        (read back from the order when this process did not place it). Without ``instrument``
        Binance answers for all symbols at a higher request weight."""
        def read() -> list[Order]:
            books = [False] if self.mode is Mode.SPOT else [False, True]
            raw = []
            for algo in books:
                for o in self.exchange.fetch_open_orders(instrument, None, None, {"trigger": True} if algo else {}):
                    if o.get("clientOrderId"):
                        o["_algo"] = algo
                        raw.append(o)
            raw.sort(key=lambda o: o.get("timestamp") or 0)
            return [self._adopt(o, None) for o in raw]
        return self._guard("fetch_open_orders", read)


__all__ = ["CcxtPlacing"]
