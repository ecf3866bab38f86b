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
ledger write places nothing twice. Transient errors (``NetworkError``, ``RateLimitExceeded``,
``ExchangeNotAvailable``, ``RequestTimeout``) are retried with tenacity (exponential backoff with
jitter), and each attempt of a ``create_order`` starts with that look-up again: a POST whose answer
was lost is found, not repeated. Binance's own duplicate-id refusals (``-2010 Duplicate order
sent``, ``-4116``, ``-20132``) are answered the same way.

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
filled quantity less any commission Binance took in the base asset.

Secrets: the API key and secret come only from the constructor; they are scrubbed from every
exception message this module raises and from ccxt's own log lines (ccxt logs request headers,
which carry ``X-MBX-APIKEY``, at DEBUG).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, TypeVar

import ccxt
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from trading_pipelines.domain.models import (
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
from trading_pipelines.venues.protocol import Balance, FuturesTerms, Venue, VenueError

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (ccxt.NetworkError, ccxt.RateLimitExceeded,
                                                 ccxt.ExchangeNotAvailable, ccxt.RequestTimeout)
"""Retried (ccxt's own hierarchy puts all four under ``NetworkError``; listed for the reader)."""

_STATUS = {"open": OrderStatus.NEW, "closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELLED,
           "canceling": OrderStatus.CANCELLED, "expired": OrderStatus.CANCELLED, "rejected": OrderStatus.REJECTED}
_DUPLICATE = ("Duplicate order sent", "-4116", "-20132", "duplicated")
_EXCHANGES = {"binance": Mode.SPOT, "binanceusdm": Mode.FUTURES}


class VenueUnavailable(VenueError):
    """The venue did not answer after all retries. For an order placement its fate is unknown:
    re-running looks it up by client order id before placing anything."""


# ---------------------------------------------------------------------------------------------- secrets
class _Scrubber(logging.Filter):
    """Redacts registered secrets (and Binance signatures / API-key headers) from text and from log
    records of the loggers it is attached to."""

    _PATTERNS = (re.compile(r"(signature=)[0-9A-Za-z%]+"),
                 re.compile(r"(X-MBX-APIKEY['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+", re.IGNORECASE))

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, *values: str | None) -> None:
        self.secrets.update(v for v in values if v and len(v) >= 4)

    def scrub(self, text: str, extra: Iterable[str | None] = ()) -> str:
        for s in sorted(self.secrets | {e for e in extra if e and len(e) >= 4}, key=len, reverse=True):
            text = text.replace(s, "***")
        for p in self._PATTERNS:
            text = p.sub(r"\1***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return True
        record.msg, record.args = self.scrub(msg), ()
        return True


_SCRUBBER = _Scrubber()


# ---------------------------------------------------------------------------------------------- state
@dataclass
class _Known:
    """What this process placed (or found) under a client order id."""

    request: OrderRequest
    placed_at: datetime
    algo: bool  # a USDⓈ-M conditional order on the Algo Service
    venue_order_id: str | None = None
    children: list[str] = field(default_factory=list)


def _utc_ms(ms: int | float | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc) if ms else None


def _f(v: Any, default: float = 0.0) -> float:
    try:
        return default if v is None else float(v)
    except (TypeError, ValueError):
        return default


class CcxtVenue(Venue):
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
    ``quote``: the account currency (USDT).
    """

    name = "ccxt"
    simulated = False

    SPOT_STOP_LIMIT_SLIPPAGE = 0.005
    """When a spot symbol does not allow ``STOP_LOSS`` (market on trigger; see its exchangeInfo
    ``orderTypes``) the stop leg is a ``STOP_LOSS_LIMIT`` whose limit sits this fraction beyond the
    trigger (sell: trigger × (1 − 0.005)), so a fast move still fills."""

    RECENT_TRADES = 100
    """Spot entry-price estimate: how many recent trades of a held asset are read (one request)."""

    def __init__(self, *, exchange_id: str, account: str, mode: Mode, api_key: str | None, secret: str | None,
                 sandbox: bool = False, margin_mode: str = "isolated", max_retries: int = 4,
                 exchange: "ccxt.Exchange | None" = None, instruments: Iterable[str] = (),
                 retry_initial_wait_s: float = 0.5, retry_max_wait_s: float = 8.0, quote: str = "USDT"):
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

    # ------------------------------------------------------------------------------------------ plumbing
    def _retrying(self) -> Retrying:
        return Retrying(retry=retry_if_exception_type(TRANSIENT_ERRORS), stop=stop_after_attempt(self.max_retries),
                        wait=wait_random_exponential(multiplier=self.retry_initial_wait_s, max=self.retry_max_wait_s),
                        reraise=True)

    def _scrub(self, text: str) -> str:
        return _SCRUBBER.scrub(text, self._secrets)

    def _guard(self, op: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` with retries; a ccxt error becomes a :class:`VenueError` whose message is
        scrubbed and which is raised outside the ``except`` so no unscrubbed exception rides along
        as its ``__context__``."""
        error: VenueError | None = None
        try:
            return self._retrying()(fn)
        except ccxt.BaseError as e:
            kind = VenueUnavailable if isinstance(e, TRANSIENT_ERRORS) else VenueError
            what = f"{type(e).__name__}: {self._scrub(str(e))}"
            if kind is VenueUnavailable:
                what += f" (after {self.max_retries} attempts)"
            error = kind(f"{self.exchange_id} [{self.account}] {op}: {what}")
        raise error

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

    def _step(self, m: dict, key: str, raw_filter: str, raw_key: str) -> float:
        """Precision as a step: ccxt's ``TICK_SIZE`` mode stores the step itself, ``DECIMAL_PLACES``
        a digit count; the raw exchangeInfo filter is the fallback."""
        p = (m.get("precision") or {}).get(key)
        if p is not None:
            return float(p) if self.exchange.precisionMode == ccxt.TICK_SIZE else 10.0 ** -float(p)
        f = next((f for f in (m.get("info") or {}).get("filters", []) if f.get("filterType") == raw_filter), {})
        return _f(f.get(raw_key))

    def instrument_rules(self, instrument: str) -> dict:
        """Binance's trading rules for ``instrument``, read from ``load_markets`` (exchangeInfo):
        ``lot_step``/``min_qty`` base units (LOT_SIZE ``stepSize``/``minQty``), ``tick_size`` quote
        currency (PRICE_FILTER ``tickSize``), ``min_notional`` quote currency (spot NOTIONAL
        ``minNotional``, futures MIN_NOTIONAL ``notional``), via ccxt's unified ``precision`` and
        ``limits``."""
        return self._guard("load_markets", lambda: self._rules(instrument))

    def _rules(self, instrument: str) -> dict:
        m = self._market(instrument)
        limits = m.get("limits") or {}
        lot = self._step(m, "amount", "LOT_SIZE", "stepSize")
        return {"lot_step": lot, "min_qty": _f((limits.get("amount") or {}).get("min"), lot),
                "tick_size": self._step(m, "price", "PRICE_FILTER", "tickSize"),
                "min_notional": _f((limits.get("cost") or {}).get("min"))}

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
        """The order with this client order id, or None if Binance never saw it (on ``instrument``,
        or the symbol this process placed it on, or each of ``instruments``)."""
        def find() -> Order | None:
            k = self._known.get(client_order_id)
            for symbol in self._symbol_of(client_order_id, instrument):
                o = self._lookup(client_order_id, symbol, k.algo if k else None)
                if o is not None:
                    return self._adopt(o, k.placed_at if k else None)
            return None
        return self._guard("fetch_order", find)

    # ------------------------------------------------------------------------------------------ mapping
    def _infer_request(self, o: dict) -> OrderRequest:
        """An :class:`OrderRequest` read back from a ccxt order this process did not place
        (after a restart): role from the order's type and reduce-only flag."""
        info = o.get("info") or {}
        raw = str(info.get("type") or info.get("orderType") or o.get("type") or "").lower()
        trigger = o.get("triggerPrice") or _f(info.get("stopPrice") or info.get("triggerPrice")) or None
        reduce = bool(o.get("reduceOnly"))
        in_list = str(info.get("orderListId", "-1")) not in ("-1", "None")
        if "take_profit" in raw or (raw == "limit_maker" and in_list):
            role, otype, price, trig = OrderRole.TAKE_PROFIT, OrderType.LIMIT, o.get("price") or trigger, None
            if self.mode is Mode.FUTURES or "take_profit" in raw:
                price = trigger or o.get("price")
        elif "stop" in raw:
            role, otype, price, trig = OrderRole.STOP_LOSS, OrderType.STOP, None, trigger
        else:
            role = OrderRole.EXIT if reduce else OrderRole.ENTRY
            otype = OrderType.LIMIT if raw == "limit" else OrderType.MARKET
            price, trig = (o.get("price") or None) if otype is OrderType.LIMIT else None, None
        qty = _f(o.get("amount")) or _f(o.get("filled"))
        if qty <= 0:
            raise VenueError(f"{self.exchange_id}: order {o.get('clientOrderId')} has no quantity")
        return OrderRequest(client_order_id=o["clientOrderId"], instrument=o["symbol"], side=Side(o["side"]), type=otype,
                            quantity=qty, price=price, trigger_price=trig, role=role,
                            reduce_only=reduce or role is not OrderRole.ENTRY)

    def _adopt(self, o: dict, placed_at: datetime | None) -> Order:
        """Map a ccxt order dict to a domain :class:`Order` (status open→NEW, closed→FILLED,
        canceled/expired→CANCELLED, rejected→REJECTED) and remember it."""
        cid = o["clientOrderId"]
        k = self._known.get(cid)
        request = k.request if k else self._infer_request(o)
        placed = placed_at or (k.placed_at if k else None) or _utc_ms(o.get("timestamp")) or datetime.now(timezone.utc)
        self._remember(request, placed, bool(o.get("_algo", k.algo if k else False)), o.get("id"))
        filled = _f(o.get("filled"))
        avg = o.get("average")
        if avg is None and filled > 0 and o.get("cost"):
            avg = _f(o["cost"]) / filled
        return Order(client_order_id=cid, venue_order_id=str(o["id"]) if o.get("id") is not None else None,
                     request=request, status=_STATUS.get(o.get("status") or "open", OrderStatus.NEW), placed_at=placed,
                     filled_quantity=filled, average_price=float(avg) if avg else None)

    # ------------------------------------------------------------------------------------------ placing
    def _order_args(self, r: OrderRequest) -> tuple[str, float | None, dict]:
        """(ccxt type, price, params) for one request (see the module doc for the mapping)."""
        params: dict[str, Any] = {"clientOrderId": r.client_order_id}
        futures = self.mode is Mode.FUTURES
        if futures and (r.reduce_only or r.role is not OrderRole.ENTRY):
            params["reduceOnly"] = True
        if r.role in (OrderRole.ENTRY, OrderRole.EXIT):
            if r.type is OrderType.LIMIT and r.price is not None:
                return "limit", r.price, {**params, "timeInForce": "IOC"}  # protective price: fill now or expire
            if r.type is OrderType.MARKET:
                return "market", None, params
            raise VenueError(f"{r.client_order_id}: a {r.role.value} is market, or limit with a price (IOC)")
        if r.role is OrderRole.STOP_LOSS:
            trigger = r.trigger_price if r.trigger_price is not None else r.price
            if trigger is None:
                raise VenueError(f"{r.client_order_id}: a stop-loss needs trigger_price")
            if futures or "STOP_LOSS" in self._order_types(r.instrument):
                return "market", None, {**params, "stopLossPrice": trigger}  # STOP_MARKET / spot STOP_LOSS
            limit = trigger * (1 - self.SPOT_STOP_LIMIT_SLIPPAGE if r.side is Side.SELL else 1 + self.SPOT_STOP_LIMIT_SLIPPAGE)
            return "limit", limit, {**params, "stopLossPrice": trigger}  # spot STOP_LOSS_LIMIT
        if r.role is OrderRole.TAKE_PROFIT:
            target = r.trigger_price if r.trigger_price is not None else r.price
            if target is None:
                raise VenueError(f"{r.client_order_id}: a take-profit needs a price")
            if futures:
                return "market", None, {**params, "takeProfitPrice": target}  # TAKE_PROFIT_MARKET (algo)
            return "limit", target, params  # spot: a resting limit sell at the target
        raise VenueError(f"{r.client_order_id}: role {r.role.value} cannot be placed")

    def _order_types(self, instrument: str) -> list[str]:
        return list((self._market(instrument).get("info") or {}).get("orderTypes") or [])

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

    def _post(self, r: OrderRequest) -> dict:
        otype, price, params = self._order_args(r)
        amount = float(self.exchange.amount_to_precision(r.instrument, r.quantity))
        try:
            return self.exchange.create_order(r.instrument, otype, r.side.value, amount, price, params)
        except (ccxt.InvalidOrder, ccxt.BadRequest, ccxt.ExchangeError) as e:
            if isinstance(e, TRANSIENT_ERRORS) or not any(d in str(e) for d in _DUPLICATE):
                raise
        found = self._lookup(r.client_order_id, r.instrument, self._is_algo(r))  # Binance already has this id
        if found is None:
            raise VenueError(f"{r.client_order_id}: Binance reports a duplicate id but does not return the order")
        return found

    def _create_once(self, r: OrderRequest, placed_at: datetime, leverage: float, margin_mode: str | None) -> Order:
        """One attempt: look the id up, and place only if Binance has never seen it."""
        self._market(r.instrument)
        algo = self._is_algo(r)
        existing = self._lookup(r.client_order_id, r.instrument, algo)
        if existing is not None:
            log.info("%s: %s already at the venue (%s), not placed again", self.account, r.client_order_id,
                     existing.get("status"))
            return self._adopt(existing, placed_at)
        if self.mode is Mode.SPOT and r.oco_group and r.role in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT):
            raise VenueError(f"{r.client_order_id}: spot bracket legs go on as one OCO list: use create_bracket")
        if self.mode is Mode.FUTURES and r.role is OrderRole.ENTRY:
            self._prepare_futures_entry(r.instrument, leverage, margin_mode)
        if self.mode is Mode.SPOT and r.role is OrderRole.EXIT:
            self._cancel_resting(r.instrument, side=r.side)  # an OCO holding the base would block the sell
        o = self._post(r)
        o["_algo"] = algo
        self._remember(r, placed_at, algo, o.get("id"))
        log.info("%s: placed %s %s %s %s (%s)", self.account, r.client_order_id, r.side.value, r.quantity, r.instrument,
                 o.get("status"))
        order = self._adopt(o, placed_at)
        if self.mode is Mode.FUTURES and r.role is OrderRole.EXIT and order.status is OrderStatus.FILLED:
            self._cancel_resting(r.instrument, side=r.side, algo_only=True)  # the closed position's legs
        return order

    def create_order(self, request: OrderRequest, *, placed_at: datetime, position_side: str, leverage: float = 1.0,
                     reserve: float = 0.0, margin_mode: str | None = None) -> Order:
        """Place ``request`` once (see the module doc). ``position_side`` long|short: one-way mode,
        so it is implied by the side and not sent; ``reserve`` is not used (Binance locks the
        funds itself); ``leverage`` (futures entries) whole number; ``margin_mode`` overrides
        the venue's for this entry."""
        if self.mode is Mode.SPOT and position_side == PositionSide.SHORT.value and request.role is OrderRole.ENTRY:
            raise VenueError(f"{request.client_order_id}: spot cannot open a short")
        return self._guard("create_order", lambda: self._create_once(request, placed_at, leverage, margin_mode))

    def create_bracket(self, entry: OrderRequest, stop_loss: OrderRequest, take_profit: OrderRequest, *,
                       placed_at: datetime, position_side: str, leverage: float = 1.0, reserve: float = 0.0,
                       margin_mode: str | None = None) -> list[Order]:
        """Entry, then (once it filled) its stop-loss and take-profit sized to the filled quantity:
        futures two reduce-only conditional orders on the Algo Service, spot one OCO list. An entry
        that did not fill (an expired IOC) gets no legs: the stored requests are returned with
        status CANCELLED. Every step is idempotent on its client order id."""
        first = self.create_order(entry, placed_at=placed_at, position_side=position_side, leverage=leverage,
                                  reserve=reserve, margin_mode=margin_mode)
        legs = (stop_loss, take_profit)
        filled = first.filled_quantity
        if filled <= 0 or first.status is OrderStatus.REJECTED:
            unplaced = [Order(client_order_id=r.client_order_id, venue_order_id=None, request=r,
                              status=OrderStatus.CANCELLED, placed_at=placed_at) for r in legs]
            return [first, *unplaced]
        qty = self._leg_quantity(first)
        sized = [r.model_copy(update={"quantity": qty}) for r in legs]
        if self.mode is Mode.FUTURES:
            return [first] + [self.create_order(r, placed_at=placed_at, position_side=position_side, leverage=leverage)
                              for r in sized]
        return [first, *self._guard("create_oco", lambda: self._oco_once(*sized, placed_at=placed_at))]

    def _leg_quantity(self, entry: Order) -> float:
        """The entry's filled base quantity, rounded down to the lot step (ccxt
        ``amount_to_precision`` truncates). Spot: at most the base asset's *free* balance, since a
        buy's commission may be taken in the base asset (filled 0.001 BTC, 0.000001 BTC fee: 0.000999
        BTC can be sold) and an OCO for more than is free is refused."""
        qty = entry.filled_quantity
        if self.mode is Mode.SPOT:
            base = self._market(entry.request.instrument)["base"]
            bal = self._guard("fetch_balance", self.exchange.fetch_balance)
            qty = min(qty, _f((bal.get(base) or {}).get("free")))
        return float(self.exchange.amount_to_precision(entry.request.instrument, qty))

    def _oco_once(self, stop_loss: OrderRequest, take_profit: OrderRequest, *, placed_at: datetime) -> list[Order]:
        """Spot: both exit legs as one OCO list (``POST /api/v3/orderList/oco``), unless Binance
        already has them. Sell OCO: above = take-profit ``LIMIT_MAKER`` at its price, below =
        stop-loss ``STOP_LOSS`` (or ``STOP_LOSS_LIMIT``) at its trigger; a buy OCO mirrors it."""
        symbol = stop_loss.instrument
        found = [self._lookup(r.client_order_id, symbol, False) for r in (stop_loss, take_profit)]
        if all(found):
            return [self._adopt(o, placed_at) for o in found]
        if any(found):
            raise VenueError(f"{symbol}: only one OCO leg of {stop_loss.client_order_id}/{take_profit.client_order_id} exists")
        if stop_loss.side is not take_profit.side:
            raise VenueError("OCO legs must be on the same side")
        m = self._market(symbol)
        ex = self.exchange
        sl_type, sl_price, _ = self._order_args(stop_loss)
        stop_leg = {"Type": "STOP_LOSS" if sl_type == "market" else "STOP_LOSS_LIMIT",
                    "StopPrice": ex.price_to_precision(symbol, stop_loss.trigger_price),
                    "ClientOrderId": stop_loss.client_order_id}
        if sl_type == "limit":
            stop_leg |= {"Price": ex.price_to_precision(symbol, sl_price), "TimeInForce": "GTC"}
        tp_leg = {"Type": "LIMIT_MAKER", "Price": ex.price_to_precision(symbol, take_profit.price or take_profit.trigger_price),
                  "ClientOrderId": take_profit.client_order_id}
        above, below = (tp_leg, stop_leg) if stop_loss.side is Side.SELL else (stop_leg, tp_leg)
        list_id = "oco-" + hashlib.sha256(f"{stop_loss.client_order_id}|{take_profit.client_order_id}".encode()).hexdigest()[:28]
        request = {"symbol": m["id"], "side": stop_loss.side.value.upper(),
                   "quantity": ex.amount_to_precision(symbol, stop_loss.quantity), "listClientOrderId": list_id,
                   "newOrderRespType": "FULL",
                   **{"above" + k: v for k, v in above.items()}, **{"below" + k: v for k, v in below.items()}}
        response = ex.private_post_orderlist_oco(request)
        reports = {r.get("clientOrderId"): ex.parse_order(r, m) for r in response.get("orderReports", [])}
        out = []
        for r in (stop_loss, take_profit):
            self._remember(r, placed_at, False, None)
            o = reports.get(r.client_order_id)
            out.append(self._adopt(o, placed_at) if o else Order(client_order_id=r.client_order_id, venue_order_id=None,
                                                                  request=r, status=OrderStatus.NEW, placed_at=placed_at))
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
        """Cancel a resting order; for an entry also its resting legs (known to this process).
        A filled, cancelled or rejected order is returned as it is (a filled entry keeps its legs:
        they protect the position). Raises :class:`VenueError` for an unknown order."""
        def cancel() -> Order:
            k = self._known.get(client_order_id)
            for symbol in self._symbol_of(client_order_id, instrument):
                o = self._lookup(client_order_id, symbol, k.algo if k else None)
                if o is None:
                    continue
                order = self._adopt(o, None)
                if order.status is not OrderStatus.NEW:
                    return order
                self._cancel_one(client_order_id, symbol, bool(o.get("_algo")))
                if order.request.role is OrderRole.ENTRY:
                    for child in list(self._known[client_order_id].children):
                        ck = self._known[child]
                        self._cancel_one(child, symbol, ck.algo)
                after = self._lookup(client_order_id, symbol, bool(o.get("_algo")))
                return self._adopt(after, None) if after else order.model_copy(update={"status": OrderStatus.CANCELLED})
            raise VenueError(f"{self.exchange_id} [{self.account}]: unknown order {client_order_id}")
        return self._guard("cancel_order", cancel)

    # ------------------------------------------------------------------------------------------ reads
    def fetch_open_orders(self, instrument: str | None = None) -> list[Order]:
        """Resting orders (futures: regular and Algo Service conditional ones), oldest first.
        Without ``instrument`` Binance answers for all symbols at a higher request weight."""
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

    def _positions(self) -> list[Position]:
        if self.mode is Mode.SPOT:
            return self._spot_positions(self.exchange.fetch_balance())[0]
        out = []
        for p in self.exchange.fetch_positions():
            qty = abs(_f(p.get("contracts")) * _f(p.get("contractSize"), 1.0))
            if qty <= 0 or p.get("side") not in ("long", "short"):
                continue
            info = p.get("info") or {}
            notional = abs(_f(p.get("notional")))
            initial = _f(p.get("initialMargin")) or _f(info.get("positionInitialMargin"))
            leverage = _f(p.get("leverage")) or (notional / initial if initial > 0 else 1.0)
            mode = p.get("marginMode")
            margin = _f(info.get("isolatedWallet")) if mode == "isolated" and _f(info.get("isolatedWallet")) else initial
            out.append(Position(instrument=p["symbol"], side=PositionSide(p["side"]), quantity=qty,
                                entry_price=_f(p.get("entryPrice")), mark_price=_f(p.get("markPrice")),
                                leverage=round(leverage, 6), margin=margin,
                                opened_at=_utc_ms(p.get("timestamp")) or datetime.now(timezone.utc),
                                liquidation_price=_f(p.get("liquidationPrice")) or None,
                                margin_mode=mode if mode in ("isolated", "cross") else None))
        return out

    def fetch_positions(self) -> list[Position]:
        """Open positions.

        Futures (``GET /fapi/v3/positionRisk``): quantity = |positionAmt|, Binance's entry, mark
        and liquidation prices, margin mode; ``margin`` = the isolated wallet (isolated) or the
        position's initial margin (cross); ``leverage`` as ccxt reports it, else notional ÷
        initial margin (v3 positionRisk has no leverage field); ``opened_at`` is the position's
        last update time (Binance reports no open time).

        Spot (``GET /api/v3/account``): every non-quote asset with a ``{asset}/USDT`` market whose
        total (free + locked) is at least the lot minimum and the minimum notional is a long
        position marked at the last price (``GET /api/v3/ticker/24hr``). Binance keeps no entry
        price for spot, so ``entry_price`` is the average price of the most recent buys that add
        up to the held quantity (one ``myTrades`` request, :attr:`RECENT_TRADES` trades), or the
        mark price when those trades do not show the buys; ``opened_at`` the oldest of those buys
        (else now)."""
        return self._guard("fetch_positions", self._positions)

    def _spot_positions(self, bal: dict) -> tuple[list[Position], float]:
        out, marked = [], 0.0
        markets = self._markets()
        for asset, total in sorted((bal.get("total") or {}).items()):
            symbol = f"{asset}/{self.quote}"
            qty = _f(total)
            if asset == self.quote or qty <= 0 or symbol not in markets:
                continue
            rules = self._rules(symbol)
            if qty < rules["min_qty"]:
                continue  # dust
            mark = _f(self.exchange.fetch_ticker(symbol).get("last"))
            if qty * mark < rules["min_notional"]:
                continue  # dust
            entry, opened = self._spot_entry(symbol, qty, mark)
            marked += qty * mark
            out.append(Position(instrument=symbol, side=PositionSide.LONG, quantity=qty, entry_price=entry,
                                mark_price=mark, opened_at=opened))
        return out, marked

    def _spot_entry(self, symbol: str, qty: float, mark: float) -> tuple[float, datetime]:
        trades = self.exchange.fetch_my_trades(symbol, None, self.RECENT_TRADES)
        need, cost, got, first = qty, 0.0, 0.0, None
        for t in sorted(trades, key=lambda t: t.get("timestamp") or 0, reverse=True):
            if t.get("side") != "buy" or need <= 1e-12:
                continue
            take = min(need, _f(t.get("amount")))
            cost, got, need = cost + take * _f(t.get("price")), got + take, need - take
            first = t.get("timestamp")
        if got <= 0:
            return mark, datetime.now(timezone.utc)
        return cost / got, _utc_ms(first) or datetime.now(timezone.utc)

    def fetch_balance(self) -> Balance:
        """Money in USDT (the quote currency).

        Futures (``GET /fapi/v3/account``, the USDT row of ``assets``): ``cash`` = walletBalance −
        positionInitialMargin, ``reserved`` = openOrderInitialMargin, ``unrealized_pnl`` =
        unrealizedProfit, ``equity`` = marginBalance (wallet + unrealized P&L).
        Spot (``GET /api/v3/account``): ``cash`` = USDT free + locked, ``reserved`` = USDT locked in
        open orders, ``equity`` = cash + Σ held quantity × last price (see :meth:`fetch_positions`),
        ``unrealized_pnl`` from the estimated entry prices. ``realized_pnl`` and ``fees_paid`` are
        0.0: Binance's account endpoints do not report them (sum :meth:`fetch_my_trades` for fees)."""
        def read() -> Balance:
            bal = self.exchange.fetch_balance()
            if self.mode is Mode.FUTURES:
                row = next((a for a in (bal.get("info") or {}).get("assets", []) if a.get("asset") == self.quote), {})
                wallet, unreal = _f(row.get("walletBalance")), _f(row.get("unrealizedProfit"))
                return Balance(cash=wallet - _f(row.get("positionInitialMargin")), reserved=_f(row.get("openOrderInitialMargin")),
                               equity=_f(row.get("marginBalance"), wallet + unreal), realized_pnl=0.0,
                               unrealized_pnl=unreal, fees_paid=0.0)
            q = bal.get(self.quote) or {}
            positions, marked = self._spot_positions(bal)
            cash = _f(q.get("total"))
            return Balance(cash=cash, reserved=_f(q.get("used")), equity=cash + marked, realized_pnl=0.0,
                           unrealized_pnl=sum(p.unrealized_pnl for p in positions), fees_paid=0.0)
        return self._guard("fetch_balance", read)

    def fetch_my_trades(self, since: datetime | None = None) -> list[Fill]:
        """Fills after ``since`` (UTC) on the symbols this venue knows (``instruments`` and those
        it placed orders on), oldest first, ``fill_id`` = Binance's trade id. With ``since`` the venue
        pages forward from it (:meth:`_trades`); without, Binance's default window (spot: latest
        500 trades, futures: last 7 days). ``fee`` in quote currency: a commission in the
        base asset is valued at the fill price, one in another asset (BNB) at its last USDT price.
        ``client_order_id``: from this process's orders, else read back from the order."""
        def read() -> list[Fill]:
            symbols = sorted(set(self.instruments) | {k.request.instrument for k in self._known.values()})
            since_ms = int(since.timestamp() * 1000) + 1 if since else None
            fills, prices = [], {}
            for symbol in symbols:
                base = self._market(symbol)["base"]
                for t in self._trades(symbol, since_ms):
                    when = _utc_ms(t.get("timestamp"))
                    if when is None or (since is not None and when <= since):
                        continue
                    fee = t.get("fee") or {}
                    cost, cur = _f(fee.get("cost")), fee.get("currency")
                    if cur == base:
                        cost *= _f(t.get("price"))
                    elif cur and cur != self.quote and cost:
                        pair = f"{cur}/{self.quote}"
                        if pair not in prices:
                            prices[pair] = _f(self.exchange.fetch_ticker(pair).get("last")) if pair in self._markets() else 0.0
                        cost *= prices[pair]
                    fills.append(Fill(fill_id=str(t["id"]), client_order_id=self._cid_of(symbol, str(t.get("order"))),
                                      instrument=symbol, side=Side(t["side"]), quantity=_f(t.get("amount")),
                                      price=_f(t.get("price")), fee=cost, time=when))
            seen = {f.fill_id: f for f in fills}
            return sorted(seen.values(), key=lambda f: (f.time, f.fill_id))
        return self._guard("fetch_my_trades", read)

    def _now_ms(self) -> int:
        """Now, epoch milliseconds UTC (the exchange's clock)."""
        return self.exchange.milliseconds()

    PAGE = 1000  # Binance's largest myTrades / userTrades page
    WEEK_MS = 7 * 24 * 3600 * 1000

    def _trades(self, symbol: str, since_ms: int | None) -> list[dict]:
        """Trades of ``symbol`` from ``since_ms`` on, paged forward: spot ``startTime`` pages of
        1000; futures windows of at most 7 days (Binance userTrades: ``endTime − startTime`` ≤ 7
        days), each paged the same way. Without ``since_ms``: one default request."""
        if since_ms is None:
            return self.exchange.fetch_my_trades(symbol)
        out: list[dict] = []
        start, now = since_ms, self._now_ms()
        for _ in range(10_000):  # a bound, not a retry: ~190 years of weekly windows
            if start > now:
                break
            end = min(start + self.WEEK_MS - 1, now) if self.mode is Mode.FUTURES else None
            batch = self.exchange.fetch_my_trades(symbol, start, self.PAGE, {"until": end} if end else {})
            out.extend(batch)
            if len(batch) >= self.PAGE:
                start = max(t.get("timestamp") or start for t in batch) + 1
            elif end is None:
                break
            else:
                start = end + 1
        return out

    def _cid_of(self, symbol: str, order_id: str) -> str:
        cid = self._order_cids.get((symbol, order_id))
        if cid is None:
            o = self.exchange.fetch_order(order_id, symbol)
            cid = o.get("clientOrderId") or ""
            self._order_cids[(symbol, order_id)] = cid
        return cid

    def futures_terms(self, instrument: str) -> FuturesTerms | None:
        """Funding and leverage terms of a USDⓈ-M perpetual (None for spot): ``mark_price`` and
        ``funding_rate`` (fraction per funding interval) and ``next_funding_time`` from
        ``GET /fapi/v1/premiumIndex`` (ccxt ``fetch_funding_rate``: ``lastFundingRate``,
        ``nextFundingTime``); ``max_leverage`` the highest ``initialLeverage`` of the symbol's
        notional brackets (``GET /fapi/v1/leverageBracket``, ccxt ``fetch_leverage_tiers``);
        ``margin_mode`` the mode this venue sets before each entry."""
        if self.mode is not Mode.FUTURES:
            return None
        def read() -> FuturesTerms:
            self._market(instrument)
            fr = self.exchange.fetch_funding_rate(instrument)
            tiers = self.exchange.fetch_leverage_tiers([instrument]).get(instrument) or []
            max_lev = max((_f(t.get("maxLeverage")) for t in tiers), default=0.0) or None
            rate = fr.get("fundingRate")
            return FuturesTerms(instrument=instrument, mark_price=_f(fr.get("markPrice")) or None,
                                funding_rate=float(rate) if rate is not None else None,
                                next_funding_time=_utc_ms(fr.get("fundingTimestamp") or fr.get("nextFundingTimestamp")),
                                max_leverage=max_lev, margin_mode=self.margin_mode)
        return self._guard("futures_terms", read)


__all__ = ["CcxtVenue", "TRANSIENT_ERRORS", "VenueUnavailable"]
