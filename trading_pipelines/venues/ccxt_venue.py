"""A real exchange behind the :mod:`venue protocol <trading_pipelines.venues.protocol>`: Binance
spot (ccxt ``binance``) and USDⓈ-M perpetual futures (ccxt ``binanceusdm``), through ccxt.

Units everywhere: quantities in base units (BTC for ``BTC/USDT``), prices and money in the quote
currency (USDT), times timezone-aware UTC. Instruments are ccxt unified symbols: ``BTC/USDT`` spot,
``BTC/USDT:USDT`` the USDⓈ-M perpetual.

**Exactly once.** Every order carries the caller's client order id (ccxt
``create_order(..., {'clientOrderId': cid})``, sent as ``newClientOrderId`` — ccxt
``binance.create_order_request``; ``clientAlgoId`` on the USDⓈ-M Algo Service). Before placing, the
venue asks Binance for that id (``fetch_order(None, symbol, {'clientOrderId': cid})`` →
``origClientOrderId``; ``{'trigger': True}`` → ``GET /fapi/v1/algoOrder?clientAlgoId=…``): an
existing order is returned and nothing is sent, so a re-run after a crash between the POST and the
ledger write places nothing twice. Errors are mapped once (:mod:`~trading_pipelines.venues.ccxt_errors`):
reads are retried with tenacity (jittered exponential backoff; ``Retry-After`` for 429/418; a clock
resync for −1021). A POST Binance refused before acting on it (−1021, 429/418) is sent again; a
POST whose answer was lost (timeout, connection, 5xx) is **never** sent again until the venue
says it does not hold the order: it is looked up with backoff (``origClientOrderId``, then
``allOrders`` — ``allAlgoOrders`` for Algo Service legs — from just before the POST), and
:class:`OrderStateUnknown` is raised when Binance never answers. Binance's own duplicate-id
refusals (``-2010 Duplicate order sent``, ``-4116``, ``-20132``) are answered with the look-up.
Refusals for good (−2010 insufficient balance, filters, reduce-only rejected) raise
:class:`OrderRejected` with Binance's code.

Caveat (Binance, "Query Order" docs): a CANCELED/EXPIRED order with no fill is no longer found
after 3 days (futures) / 90 days (spot), so the look-up protects re-runs within that horizon; the
ledger's intent status protects older ones.

**Client order id → symbol.** Binance needs the symbol to look an order up and the protocol's
``fetch_order(client_order_id)`` passes only the id (which encodes nothing the venue reads), so the
venue keeps an in-process map filled by :meth:`CcxtVenue.create_order`/:meth:`create_bracket`.
After a restart callers pass ``instrument=``; otherwise the venue probes the ``instruments`` it was
built with, and raises :class:`VenueError` when it has nothing to probe (never a false ``None``).

**Futures** (``binanceusdm``): before an entry, ``set_margin_mode`` (``POST /fapi/v1/marginType``;
"−4046 No need to change margin type" is not an error) and ``set_leverage``
(``POST /fapi/v1/leverage``), and once per process one-way position mode
(``POST /fapi/v1/positionSide/dual dualSidePosition=false``; "−4059 No need to change position
side" is not an error). Stop-loss and take-profit are reduce-only conditional orders
(``stopLossPrice`` → ``STOP_MARKET``, ``takeProfitPrice`` → ``TAKE_PROFIT_MARKET``). Since
2025-12-09 Binance accepts USDⓈ-M conditional orders only on its Algo Service (the old
``/fapi/v1/order`` answers −4120); ccxt ≥ 4.5.27 routes them to ``POST /fapi/v1/algoOrder`` with
``algoType=CONDITIONAL``, ``triggerPrice`` and ``clientAlgoId`` (ccxt ``binance.create_order``:
``isAlgoOrder = isSwapOrFuture and isConditional``), and fetches/cancels them with
``{'trigger': True}``.

**Spot**: a sell stop-loss and a sell take-profit of the same base quantity cannot rest as two
orders (the second finds the base locked by the first), so :meth:`CcxtVenue.create_bracket` places
the entry and then both legs as one OCO order list (``POST /api/v3/orderList/oco`` through ccxt's
implicit ``private_post_orderlist_oco``; ccxt 4.5.90 has no unified OCO method:
``has['createOrderWithTakeProfitAndStopLoss'] = False``). Legs are placed only once the entry has
filled (entries are market, or ``LIMIT`` + ``price`` = limit IOC: fill now or expire), sized to the
filled quantity less any commission Binance took in the base asset — also when the IOC entry
ended EXPIRED after a partial fill. :meth:`CcxtVenue.create_protection` places the exit legs of an
open position (spot: one OCO list, or a lone stop; futures: two reduce-only Algo Service orders).
Once an entry filled, a leg that cannot be placed is reported on that leg (REJECTED, UNKNOWN,
or INITIALIZED when never sent) with the reason, so the entry's fill is never lost in an exception.

Secrets: the API key and secret come only from the constructor; they are scrubbed from every
exception message this module raises and from ccxt's own log lines (ccxt logs request headers,
which carry ``X-MBX-APIKEY``, at DEBUG).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, TypeVar

import ccxt
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from trading_pipelines.domain.models import Mode, Order, OrderRequest, OrderRole
from trading_pipelines.venues.ccxt_errors import (
    CLOCK,
    NETWORK,
    RATE_LIMIT,
    REJECTED,
    SCRUBBER,
    TRANSIENT_ERRORS,
    ban_window,
    binance_code,
    classify,
    retry_after_s,
)
from trading_pipelines.venues.ccxt_orders import (
    SPOT_STOP_LIMIT_SLIPPAGE,
    infer_request,
    num,
    order_args,
    order_reason,
    order_status,
    utc_ms,
)
from trading_pipelines.venues.ccxt_placing import CcxtPlacing
from trading_pipelines.venues.ccxt_reads import CcxtReads
from trading_pipelines.venues.protocol import OrderRejected, Venue, VenueError, VenueUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

_EXCHANGES = {"binance": Mode.SPOT, "binanceusdm": Mode.FUTURES}
_SCRUBBER = SCRUBBER


@dataclass
class _Known:
    """What this process placed (or found) under a client order id."""

    request: OrderRequest
    placed_at: datetime
    algo: bool  # a USDⓈ-M conditional order on the Algo Service
    venue_order_id: str | None = None
    children: list[str] = field(default_factory=list)


class CcxtVenue(CcxtPlacing, CcxtReads, Venue):
    """One Binance account through ccxt: ``exchange_id`` ``binance`` (spot, ``mode`` SPOT) or
    ``binanceusdm`` (USDⓈ-M futures, ``mode`` FUTURES). ``account`` names it in messages.

    ``api_key``/``secret``: the only source of credentials (the deployment passes them from the
    environment). ``sandbox``: spot → Binance spot testnet (ccxt ``set_sandbox_mode``); futures →
    Binance demo trading (ccxt ``enable_demo_trading``; ccxt refuses the retired futures testnet).
    ``margin_mode`` isolated|cross, set per symbol before each futures entry. ``max_retries``:
    attempts in all for a transient error (tenacity ``stop_after_attempt``), waiting
    ``retry_initial_wait_s`` × 2^n with full jitter, at most ``retry_max_wait_s`` seconds.
    ``exchange``: an already built ccxt exchange (tests inject one whose HTTP transport is
    replaced); its ``enableRateLimit`` is forced on and the given keys are set on it.
    ``instruments``: symbols to probe when an order's symbol is unknown and to read trades of.
    ``quote``: the account currency (USDT). ``rate_limit_max_wait_s``: the longest
    ``Retry-After`` / IP ban this venue waits out (longer: :class:`VenueUnavailable` naming the ban
    window). ``lookup_attempts``: look-ups after a lost placement answer before
    :class:`OrderStateUnknown`. ``sleep``: how waits are slept (tests record them).
    """

    name = "ccxt"
    simulated = False

    SPOT_STOP_LIMIT_SLIPPAGE = SPOT_STOP_LIMIT_SLIPPAGE
    LOOKUP_MARGIN_S = 60.0
    """The time-window look-up (``allOrders``) starts this long before the POST (clock skew)."""

    def __init__(self, *, exchange_id: str, account: str, mode: Mode, api_key: str | None, secret: str | None,
                 sandbox: bool = False, margin_mode: str = "isolated", max_retries: int = 4,
                 exchange: "ccxt.Exchange | None" = None, instruments: Iterable[str] = (),
                 retry_initial_wait_s: float = 0.5, retry_max_wait_s: float = 8.0, quote: str = "USDT",
                 rate_limit_max_wait_s: float = 60.0, lookup_attempts: int | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        if exchange_id not in _EXCHANGES:
            raise ValueError(f"unsupported exchange {exchange_id!r}: one of {sorted(_EXCHANGES)}")
        if _EXCHANGES[exchange_id] is not mode:
            raise ValueError(f"{exchange_id} trades {_EXCHANGES[exchange_id].value}, not {mode.value}")
        if margin_mode not in ("isolated", "cross"):
            raise ValueError(f"margin_mode must be isolated or cross, not {margin_mode!r}")
        if max_retries < 1:
            raise ValueError("max_retries counts attempts: at least 1")
        self.exchange_id, self.account, self.mode = exchange_id, account, mode
        self.margin_mode, self.max_retries, self.quote = margin_mode, max_retries, quote
        self.retry_initial_wait_s, self.retry_max_wait_s = retry_initial_wait_s, retry_max_wait_s
        self.instruments = list(instruments)
        self.rate_limit_max_wait_s = rate_limit_max_wait_s
        self.lookup_attempts = lookup_attempts or max(max_retries, 5)
        self.sleep = sleep
        self._secrets = (api_key, secret)
        _SCRUBBER.add(api_key, secret)
        options = {
            "fetchMarkets": {"types": ["spot"] if mode is Mode.SPOT else ["linear"]},  # only the markets we trade
            "fetchCurrencies": False,  # wallet/network data (a SAPI user-data call) is not needed to trade
            "fetchMargins": False,  # no cross/isolated margin pair lists: spot account only
            "warnOnFetchOpenOrdersWithoutSymbol": False,
            "defaultType": "spot" if mode is Mode.SPOT else "swap",
        }
        if exchange is None:
            exchange = getattr(ccxt, exchange_id)({"apiKey": api_key, "secret": secret, "enableRateLimit": True,
                                                   "options": options})
            if sandbox:
                if mode is Mode.SPOT:
                    exchange.set_sandbox_mode(True)
                else:
                    exchange.enable_demo_trading(True)
        else:
            exchange.options.update(options)
            if api_key is not None:
                exchange.apiKey = api_key
            if secret is not None:
                exchange.secret = secret
        exchange.enableRateLimit = True
        if exchange.logger is not None and _SCRUBBER not in exchange.logger.filters:
            exchange.logger.addFilter(_SCRUBBER)
        self.exchange = exchange
        self._known: dict[str, _Known] = {}
        self._order_cids: dict[tuple[str, str], str] = {}  # (symbol, venue order id) → client order id
        self._lock = threading.RLock()
        self._one_way_checked = False


    # ------------------------------------------------------------------------------------------ errors, retries
    def _scrub(self, text: str) -> str:
        return _SCRUBBER.scrub(text, self._secrets)

    def _kind(self, e: BaseException) -> str:
        return classify(e, binance_code(e, self._body(e)))

    def _body(self, e: BaseException):
        """The body of the response that raised ``e`` (ccxt keeps the last one): only for
        ``ExchangeError`` — a network error has no response of its own, and a stale body must not
        make a lost answer look like a refusal."""
        return getattr(self.exchange, "last_http_response", None) if isinstance(e, ccxt.ExchangeError) else None

    def _rate_wait(self, e: BaseException) -> float | None:
        """Seconds to wait out a 429/418 (``Retry-After`` of the last response, or the ban's end)."""
        return retry_after_s(getattr(self.exchange, "last_response_headers", None), str(e), self._now_ms())

    def _retry_read(self, e: BaseException) -> bool:
        if not isinstance(e, ccxt.BaseError):
            return False
        kind = self._kind(e)
        if kind == RATE_LIMIT:
            wait = self._rate_wait(e)
            return wait is None or wait <= self.rate_limit_max_wait_s
        return kind in (CLOCK, NETWORK)

    def _retry_refused(self, e: BaseException) -> bool:
        """A POST Binance refused before acting on it (clock skew, rate limit): safe to send again."""
        return isinstance(e, ccxt.BaseError) and self._kind(e) in (CLOCK, RATE_LIMIT) and self._retry_read(e)

    def _wait(self, state) -> float:
        e = state.outcome.exception()
        kind = self._kind(e)
        if kind == RATE_LIMIT:
            wait = self._rate_wait(e)
            if wait is not None:
                return wait
        if kind == CLOCK:
            return 0.0
        return wait_random_exponential(multiplier=self.retry_initial_wait_s, max=self.retry_max_wait_s)(state)

    def _before_retry(self, state) -> None:
        e = state.outcome.exception()
        if self._kind(e) == CLOCK:
            self._resync_clock()
        log.warning("%s [%s]: %s (attempt %d); retrying in %.2f s", self.exchange_id, self.account,
                    self._scrub(f"{type(e).__name__}: {e}")[:300], state.attempt_number, state.next_action.sleep)

    def _resync_clock(self) -> None:
        """Binance −1021: re-read the server's clock (ccxt ``load_time_difference``; every signed
        request then carries the corrected timestamp) and keep it aligned on market reloads
        (``adjustForTimeDifference``)."""
        self.exchange.options["adjustForTimeDifference"] = True
        try:
            diff = self.exchange.load_time_difference()
            log.warning("%s [%s]: clock skew: local clock is %s ms ahead of Binance's; resynced", self.exchange_id,
                        self.account, diff)
        except ccxt.BaseError as e:
            log.warning("%s [%s]: clock resync failed: %s", self.exchange_id, self.account, self._scrub(str(e))[:300])

    def _retrying(self, attempts: int | None = None, retry: Callable[[BaseException], bool] | None = None) -> Retrying:
        return Retrying(retry=retry_if_exception(retry or self._retry_read), stop=stop_after_attempt(attempts or self.max_retries),
                        wait=self._wait, before_sleep=self._before_retry, sleep=lambda s: self.sleep(s), reraise=True)

    def _error(self, op: str, e: BaseException, *, placement: bool = False, attempts: int | None = None) -> VenueError:
        """The protocol's error for a ccxt error (see :mod:`~trading_pipelines.venues.ccxt_errors`),
        its message scrubbed of secrets."""
        code = binance_code(e, self._body(e))
        kind = classify(e, code)
        where = f"{self.exchange_id} [{self.account}] {op}"
        what = f"{type(e).__name__}: {self._scrub(str(e))}"
        if kind == REJECTED and placement:
            return OrderRejected(f"{where}: {what}", code)
        if kind == RATE_LIMIT:
            wait = self._rate_wait(e)
            if wait is not None and wait > self.rate_limit_max_wait_s:
                return VenueUnavailable(f"{where}: rate limited, banned for {ban_window(wait)}: longer than the "
                                        f"{self.rate_limit_max_wait_s:g} s this venue waits ({what})")
        if kind in (RATE_LIMIT, CLOCK, NETWORK):
            return VenueUnavailable(f"{where}: {what} (after {attempts or self.max_retries} attempts)")
        return VenueError(f"{where}: {what}")

    def _guard(self, op: str, fn: Callable[[], T], *, placement: bool = False, attempts: int | None = None) -> T:
        """Run ``fn`` with read retries; a ccxt error becomes the protocol's error, raised outside
        the ``except`` so no unscrubbed exception rides along as its ``__context__``."""
        error: VenueError | None = None
        try:
            return self._retrying(attempts)(fn)
        except ccxt.BaseError as e:
            error = self._error(op, e, placement=placement, attempts=attempts)
        raise error

    # ------------------------------------------------------------------------------------------ markets, state
    def _markets(self) -> dict:
        return self.exchange.load_markets()

    def _market(self, instrument: str) -> dict:
        markets = self._markets()
        if instrument not in markets:
            raise VenueError(f"{self.exchange_id}: unknown instrument {instrument!r}")
        m = markets[instrument]
        if (self.mode is Mode.SPOT) != bool(m.get("spot")):
            raise VenueError(f"{instrument} is not a {self.mode.value} market on {self.exchange_id}")
        return m

    def _remember(self, request: OrderRequest, placed_at: datetime, algo: bool, venue_order_id: str | None) -> None:
        with self._lock:
            k = self._known.get(request.client_order_id)
            if k is None:
                k = self._known[request.client_order_id] = _Known(request, placed_at, algo)
            k.algo, k.venue_order_id = algo, venue_order_id or k.venue_order_id
            if venue_order_id:
                self._order_cids[(request.instrument, str(venue_order_id))] = request.client_order_id
            parent = request.parent_client_order_id
            if parent and parent in self._known and request.client_order_id not in self._known[parent].children:
                self._known[parent].children.append(request.client_order_id)

    def _is_algo(self, request: OrderRequest) -> bool:
        """A USDⓈ-M conditional order (stop-loss, take-profit): Binance's Algo Service."""
        return self.mode is Mode.FUTURES and request.role in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT)

    def _order_types(self, instrument: str) -> list[str]:
        return list((self._market(instrument).get("info") or {}).get("orderTypes") or [])

    def _order_args(self, r: OrderRequest) -> tuple[str, float | None, dict]:
        return order_args(r, self.mode, [] if self.mode is Mode.FUTURES else self._order_types(r.instrument))

    # ------------------------------------------------------------------------------------------ look-ups
    def _lookup(self, cid: str, symbol: str, algo: bool | None) -> dict | None:
        """The venue's order under ``cid`` on ``symbol`` (ccxt order dict), or None when Binance
        says it does not exist (−2013 → ccxt ``OrderNotFound``). ``algo`` None: try the regular
        book, then the Algo Service (futures). Transient errors propagate (to be retried)."""
        kinds = [False] if self.mode is Mode.SPOT else ([algo] if algo is not None else [False, True])
        for kind in kinds:
            params = {"clientOrderId": cid, **({"trigger": True} if kind else {})}
            try:
                o = self.exchange.fetch_order(None, symbol, params)
            except ccxt.OrderNotFound:
                continue
            if o and o.get("clientOrderId") == cid:
                o["_algo"] = kind
                return o
        return None

    PAGE_ORDERS = 500  # Binance's default allOrders / allAlgoOrders page

    def _listed(self, cid: str, symbol: str, algo: bool, since_ms: int | None) -> dict | None:
        """``cid`` in Binance's order list of ``symbol`` from ``since_ms`` (``allOrders``, or
        ``allAlgoOrders`` with ``{'trigger': True}``), paged forward; None when the list, read to
        its end, does not hold it (without ``since_ms``: the latest page only)."""
        params = {"trigger": True} if algo else {}
        start = since_ms
        for _ in range(50):
            batch = self.exchange.fetch_orders(symbol, start, None, params)
            for o in batch:
                if o.get("clientOrderId") == cid:
                    o["_algo"] = algo
                    return o
            if start is None or len(batch) < self.PAGE_ORDERS:
                return None
            start = max(o.get("timestamp") or start for o in batch) + 1
        return None

    def _find_definitive(self, cid: str, symbol: str, algo: bool | None, since_ms: int | None) -> dict | None:
        """One look-up round: by id, then the time-window lists. None only when all answered and
        none holds the order (definitely absent)."""
        found = self._lookup(cid, symbol, algo)
        if found is not None:
            return found
        kinds = [False] if self.mode is Mode.SPOT else ([algo] if algo is not None else [False, True])
        for kind in kinds:
            found = self._listed(cid, symbol, kind, since_ms)
            if found is not None:
                return found
        return None

    def _symbol_of(self, cid: str, instrument: str | None) -> list[str]:
        if instrument:
            return [instrument]
        k = self._known.get(cid)
        if k is not None:
            return [k.request.instrument]
        if not self.instruments:
            raise VenueError(f"{self.exchange_id} [{self.account}]: symbol of order {cid} unknown in this process; "
                             "pass instrument= (Binance looks orders up per symbol)")
        return list(self.instruments)

    def fetch_order(self, client_order_id: str, instrument: str | None = None) -> Order | None:
        """The order with this client order id (``origClientOrderId``; futures: then the Algo
        Service's ``clientAlgoId``), or None when Binance answers that it does not hold it (on
        ``instrument``, the symbol this process placed it on, or each of ``instruments``).
        Raises :class:`VenueUnavailable` when Binance does not answer."""
        def find() -> Order | None:
            k = self._known.get(client_order_id)
            for symbol in self._symbol_of(client_order_id, instrument):
                o = self._lookup(client_order_id, symbol, k.algo if k else None)
                if o is not None:
                    return self._adopt(o, k.placed_at if k else None)
            return None
        return self._guard("fetch_order", find)

    def lookup_order(self, client_order_id: str, instrument: str | None = None,
                     since: datetime | None = None) -> Order | None:
        """After a lost answer: the order, or None only when Binance definitely does not hold it —
        the ``origClientOrderId`` (futures: and ``clientAlgoId``) look-up misses *and* the order
        list from ``since`` − :attr:`LOOKUP_MARGIN_S` (``allOrders``; futures also
        ``allAlgoOrders``) does not list it. ``since``: when it was sent (default: when this
        process placed it; none known: the latest page of orders). Retried with backoff
        (``lookup_attempts``); raises :class:`VenueUnavailable` when Binance never answers."""
        k = self._known.get(client_order_id)
        since = since or (k.placed_at if k else None)
        since_ms = int((since.timestamp() - self.LOOKUP_MARGIN_S) * 1000) if since else None

        def find() -> Order | None:
            for symbol in self._symbol_of(client_order_id, instrument):
                o = self._find_definitive(client_order_id, symbol, k.algo if k else None, since_ms)
                if o is not None:
                    return self._adopt(o, k.placed_at if k else None)
            return None
        return self._guard("lookup_order", find, attempts=self.lookup_attempts)

    # ------------------------------------------------------------------------------------------ mapping
    def _adopt(self, o: dict, placed_at: datetime | None) -> Order:
        """Map a ccxt order dict to a domain :class:`Order` (:func:`~.ccxt_orders.order_status`)
        and remember it."""
        cid = o["clientOrderId"]
        k = self._known.get(cid)
        request = k.request if k else infer_request(o, self.mode, self.exchange_id)
        placed = placed_at or (k.placed_at if k else None) or utc_ms(o.get("timestamp")) or datetime.now(timezone.utc)
        self._remember(request, placed, bool(o.get("_algo", k.algo if k else False)), o.get("id"))
        filled = num(o.get("filled"))
        avg = o.get("average")
        if avg is None and filled > 0 and o.get("cost"):
            avg = num(o["cost"]) / filled
        status = order_status(o)
        return Order(client_order_id=cid, venue_order_id=str(o["id"]) if o.get("id") is not None else None,
                     request=request, status=status, placed_at=placed, filled_quantity=filled,
                     average_price=float(avg) if avg else None, reason=order_reason(o, status))


__all__ = ["CcxtVenue", "TRANSIENT_ERRORS", "VenueUnavailable"]
