"""CcxtVenue against real ccxt ``binance`` / ``binanceusdm`` objects, offline.

What is faked: **only the HTTP transport**. Each exchange's ``session`` (the ``requests.Session``
that ccxt's ``Exchange.fetch`` sends through) is replaced by :class:`FakeBinance`, which records
every request and answers like Binance: recorded JSON from ``tests/fixtures/ccxt`` (verbatim ccxt
static fixtures: exchangeInfo symbol entries inside ``markets_binance.json``'s ``info``, and
``response_binance.json``'s positionRisk, futures account, ticker and userTrades answers) or,
where no recording exists (order placement, OCO, Algo Service, leverage, marginType,
premiumIndex, leverageBracket), JSON in the shapes of Binance's API docs and ccxt's
``binance.parse_order`` comments. ccxt itself runs for real: market loading, request building,
HMAC signing, rate limiting, error mapping (``handle_errors``) and parsing. One level below
replacing ``exchange.fetch`` (ccxt's own offline technique), so Binance error bodies go through
ccxt's real error mapping.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import ccxt
import pytest
import requests

from trading_pipelines.domain.models import Mode, OrderRequest, OrderRole, OrderStatus, OrderType, PositionSide, Side
from trading_pipelines.venues.ccxt_venue import CcxtVenue, VenueUnavailable
from trading_pipelines.venues.protocol import VenueError

FIXTURES = Path(__file__).parent / "fixtures" / "ccxt"
MARKETS = json.loads((FIXTURES / "markets_binance.json").read_text())
RESPONSES = json.loads((FIXTURES / "response_binance.json").read_text())["methods"]


def recorded(method: str, description: str):
    return next(c for c in RESPONSES[method] if c["description"] == description)["httpResponse"]


KEY, SECRET = "fakeApiKey-K3y-0123456789", "fakeSecret-S3cr3t-9876543210"
T0 = datetime(2024, 7, 28, 10, 0, tzinfo=timezone.utc)
NOW_MS = 1722161166529


class Crash(BaseException):
    """The process dies (not an Exception: nothing retries or translates it)."""


def _response(url: str, status: int, body, headers: dict | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code, r.url, r.reason = status, url, "OK" if status == 200 else "Bad Request"
    r._content = json.dumps(body).encode()
    r.headers["Content-Type"] = "application/json"
    r.headers.update(headers or {})
    return r


def _not_found():
    return 400, {"code": -2013, "msg": "Order does not exist."}


class FakeBinance(requests.Session):
    """Binance's REST API as a requests session: records each request (method, path, params,
    headers) and keeps a small order book so look-ups see what was placed. ``script`` maps
    ``"METHOD /path"`` to a list of steps consumed one per matching request: an exception to
    raise before the request is handled, ``"lost"`` (handle it, then raise a read timeout: the
    answer is lost), ``(status, body)`` or ``(status, body, headers)`` to answer instead, or None
    to handle the request normally. ``spot_fill_ratio``: the part of a spot LIMIT (IOC) entry that
    fills before the rest EXPIRES; ``commission_asset``: where the 0.1 % spot commission is taken."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[dict] = []
        self.script: dict[str, list] = {}
        self.orders: dict[str, dict] = {}  # client order id → raw order (regular book)
        self.algo: dict[str, dict] = {}  # clientAlgoId → raw algo order
        self.next_id = 1000
        self.fill_price = {"BTCUSDT": "43000.00"}
        self.balances = {"USDT": ["1000.00000000", "0.00000000"], "BTC": ["0.00000000", "0.00000000"]}
        self.my_trades: dict[str, list] = {}
        self.spot_expire_limit = False
        self.spot_fill_ratio = 1.0
        self.commission_asset = "BTC"

    # ---------------------------------------------------------------- plumbing
    def request(self, method, url, data=None, headers=None, **kw):
        parts = urlsplit(url)
        body = data.decode() if isinstance(data, bytes) else (data or "")
        params = dict(parse_qsl(parts.query)) | dict(parse_qsl(body))
        entry = {"method": method, "path": parts.path, "params": params, "headers": dict(headers or {}), "url": url}
        self.log.append(entry)
        key = f"{method} {parts.path}"
        step = self.script[key].pop(0) if self.script.get(key) else None
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, tuple):
            return _response(url, *step)
        if callable(step):
            step()
        status, answer = self.handle(method, parts.path, params)
        if step == "lost":
            raise requests.exceptions.ReadTimeout("read timed out")
        return _response(url, status, answer)

    def calls(self, method: str, path: str) -> list[dict]:
        return [e for e in self.log if e["method"] == method and e["path"] == path]

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    # ---------------------------------------------------------------- routes
    def handle(self, method: str, path: str, p: dict):
        route = getattr(self, "h_" + method + path.replace("/", "_"), None)
        if route is None:
            raise AssertionError(f"unexpected request {method} {path}")
        return route(p)

    def h_GET_api_v3_exchangeInfo(self, p):  # exchangeInfo symbol entries recorded in the markets fixture
        return 200, {"timezone": "UTC", "symbols": [m["info"] for m in MARKETS.values() if m.get("spot") and m.get("info")]}

    def h_GET_fapi_v1_exchangeInfo(self, p):
        return 200, {"timezone": "UTC", "symbols": [m["info"] for m in MARKETS.values()
                                                    if m.get("linear") and m.get("swap") and m.get("info")]}

    # spot
    def h_POST_api_v3_order(self, p):
        sym, qty = p["symbol"], p["quantity"]
        price = self.fill_price[sym]
        if p["type"] not in ("MARKET", "LIMIT"):  # a lone stop leg rests
            o = {"symbol": sym, "orderId": self._id(), "orderListId": -1, "clientOrderId": p["newClientOrderId"],
                 "transactTime": NOW_MS, "price": p.get("price", "0.00000000"), "origQty": qty, "executedQty": "0.00000000",
                 "cummulativeQuoteQty": "0.00000000", "status": "NEW", "timeInForce": p.get("timeInForce", "GTC"),
                 "type": p["type"], "side": p["side"], "stopPrice": p.get("stopPrice"), "workingTime": -1,
                 "selfTradePreventionMode": "NONE"}
            self.orders[o["clientOrderId"]] = o
            return 200, o
        ratio = 0.0 if p["type"] == "LIMIT" and self.spot_expire_limit else (self.spot_fill_ratio if p["type"] == "LIMIT" else 1.0)
        done = f"{float(qty) * ratio:.8f}"
        expired = ratio < 1.0
        o = {"symbol": sym, "orderId": self._id(), "orderListId": -1, "clientOrderId": p["newClientOrderId"],
             "transactTime": NOW_MS, "price": p.get("price", "0.00000000"), "origQty": qty,
             "executedQty": done, "cummulativeQuoteQty": f"{float(done) * float(price):.8f}",
             "status": "EXPIRED" if expired else "FILLED", "timeInForce": p.get("timeInForce", "GTC"),
             "type": p["type"], "side": p["side"], "workingTime": NOW_MS, "selfTradePreventionMode": "NONE"}
        fee = f"{float(done) * 0.001:.8f}"  # 0.1 % commission, taken in the bought asset unless commission_asset says
        if float(done) > 0:
            o["fills"] = [{"price": price, "qty": done, "commission": fee, "commissionAsset": self.commission_asset,
                           "tradeId": self._id()}]
            kept = float(fee) if self.commission_asset == "BTC" else 0.0
            self.balances["BTC"][0] = f"{float(self.balances['BTC'][0]) + float(done) - kept:.8f}"
        self.orders[o["clientOrderId"]] = {k: v for k, v in o.items() if k != "fills"}
        return 200, o

    def _find(self, p):
        o = self.orders.get(p.get("origClientOrderId")) or next(
            (o for o in self.orders.values() if str(o["orderId"]) == p.get("orderId")), None)
        return (200, o) if o and o["symbol"] == p["symbol"] else _not_found()

    def h_GET_api_v3_order(self, p):
        return self._find(p)

    def h_DELETE_api_v3_order(self, p):
        o = self.orders.get(p["origClientOrderId"])
        if o is None or o["status"] != "NEW":
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        for other in self.orders.values():  # cancelling one leg of an order list cancels the list
            if other is o or (o["orderListId"] != -1 and other["orderListId"] == o["orderListId"]):
                other["status"] = "CANCELED"
        return 200, o

    def h_POST_api_v3_orderList_oco(self, p):
        list_id = self._id()
        reports = []
        for leg in ("above", "below"):
            o = {"symbol": p["symbol"], "orderId": self._id(), "orderListId": list_id,
                 "clientOrderId": p[leg + "ClientOrderId"], "transactTime": NOW_MS,
                 "price": p.get(leg + "Price", "0.00000000"), "origQty": p["quantity"], "executedQty": "0.00000000",
                 "cummulativeQuoteQty": "0.00000000", "status": "NEW", "timeInForce": p.get(leg + "TimeInForce", "GTC"),
                 "type": p[leg + "Type"], "side": p["side"], "workingTime": -1, "selfTradePreventionMode": "NONE"}
            if p.get(leg + "StopPrice"):
                o["stopPrice"] = p[leg + "StopPrice"]
            self.orders[o["clientOrderId"]] = o
            reports.append(o)
        return 200, {"orderListId": list_id, "contingencyType": "OCO", "listStatusType": "EXEC_STARTED",
                     "listOrderStatus": "EXECUTING", "listClientOrderId": p["listClientOrderId"],
                     "transactionTime": NOW_MS, "symbol": p["symbol"],
                     "orders": [{"symbol": r["symbol"], "orderId": r["orderId"], "clientOrderId": r["clientOrderId"]}
                                for r in reports], "orderReports": reports}

    def _all(self, book: dict, p) -> tuple[int, list]:  # allOrders / allAlgoOrders: from startTime, oldest first
        start = int(p.get("startTime", 0))
        rows = [o for o in book.values() if o["symbol"] == p.get("symbol", o["symbol"])
                and int(o.get("time") or o.get("transactTime") or o.get("updateTime") or o.get("createTime") or 0) >= start]
        return 200, rows[: int(p.get("limit", 500))]

    def h_GET_api_v3_allOrders(self, p):
        return self._all(self.orders, p)

    def h_GET_fapi_v1_allOrders(self, p):
        return self._all(self.orders, p)

    def h_GET_fapi_v1_allAlgoOrders(self, p):
        return self._all(self.algo, p)

    def h_GET_api_v3_time(self, p):
        return 200, {"serverTime": NOW_MS}

    def h_GET_fapi_v1_time(self, p):
        return 200, {"serverTime": NOW_MS}

    def h_GET_api_v3_openOrders(self, p):
        return 200, [o for o in self.orders.values() if o["status"] == "NEW" and p.get("symbol") in (None, o["symbol"])]

    def h_GET_api_v3_account(self, p):  # shape of the recorded spot account answer
        acct = {k: v for k, v in recorded("fetchBalance", "Spot balance").items() if k != "balances"}
        return 200, acct | {"balances": [{"asset": a, "free": f, "locked": l} for a, (f, l) in self.balances.items()]}

    def h_GET_api_v3_ticker_24hr(self, p):
        assert p["symbol"] == "BTCUSDT"
        return 200, recorded("fetchTicker", "public spot ticker")

    def h_GET_api_v3_myTrades(self, p):
        return 200, [t for t in self.my_trades.get(p["symbol"], []) if int(t["time"]) >= int(p.get("startTime", 0))]

    # USDⓈ-M futures
    def h_POST_fapi_v1_positionSide_dual(self, p):
        return 400, {"code": -4059, "msg": "No need to change position side."}

    def h_POST_fapi_v1_marginType(self, p):
        return 400, {"code": -4046, "msg": "No need to change margin type."}

    def h_POST_fapi_v1_leverage(self, p):
        return 200, {"leverage": int(p["leverage"]), "maxNotionalValue": "50000000", "symbol": p["symbol"]}

    def h_POST_fapi_v1_order(self, p):
        assert p["type"] in ("MARKET", "LIMIT"), "conditional types are refused here since 2025-12-09 (-4120)"
        o = {"orderId": self._id(), "symbol": p["symbol"], "status": "FILLED", "clientOrderId": p["newClientOrderId"],
             "price": "0.00", "avgPrice": "67450.00", "origQty": p["quantity"], "executedQty": p["quantity"],
             "cumQuote": f"{float(p['quantity']) * 67450:.5f}", "timeInForce": "GTC", "type": p["type"],
             "reduceOnly": p.get("reduceOnly") == "true", "closePosition": False, "side": p["side"],
             "positionSide": "BOTH", "stopPrice": "0.00", "workingType": "CONTRACT_PRICE", "priceProtect": False,
             "origType": p["type"], "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER",
             "goodTillDate": 0, "updateTime": NOW_MS}
        self.orders[o["clientOrderId"]] = o
        return 200, o

    def h_GET_fapi_v1_order(self, p):
        return self._find(p)

    def h_POST_fapi_v1_algoOrder(self, p):  # shape: ccxt binance.parse_order, "linear swap conditional order"
        o = {"algoId": self._id(), "clientAlgoId": p["clientAlgoId"], "algoType": p["algoType"], "orderType": p["type"],
             "symbol": p["symbol"], "side": p["side"], "positionSide": "BOTH", "timeInForce": "GTC",
             "quantity": p["quantity"], "algoStatus": "NEW", "triggerPrice": p["triggerPrice"], "price": "0.00",
             "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": "CONTRACT_PRICE",
             "priceMatch": "NONE", "closePosition": False, "priceProtect": False,
             "reduceOnly": p.get("reduceOnly") == "true", "createTime": NOW_MS, "updateTime": NOW_MS,
             "triggerTime": 0, "goodTillDate": 0}
        self.algo[o["clientAlgoId"]] = o
        return 200, o

    def h_GET_fapi_v1_algoOrder(self, p):
        o = self.algo.get(p.get("clientAlgoId"))
        return (200, o) if o else _not_found()

    def h_DELETE_fapi_v1_algoOrder(self, p):
        o = self.algo[p["clientAlgoId"]]
        o["algoStatus"] = "CANCELED"
        return 200, {"algoId": o["algoId"], "clientAlgoId": o["clientAlgoId"], "code": "200", "msg": "success"}

    def h_GET_fapi_v1_openOrders(self, p):
        return 200, [o for o in self.orders.values() if o["status"] == "NEW"]

    def h_GET_fapi_v1_openAlgoOrders(self, p):
        return 200, [o for o in self.algo.values() if o["algoStatus"] == "NEW"]

    def h_GET_fapi_v3_positionRisk(self, p):
        return 200, recorded("fetchPositions", "Fetch linear positions with symbols")

    def h_GET_fapi_v3_account(self, p):
        return 200, recorded("fetchBalance", "Linear swap balance")

    def h_GET_fapi_v1_leverageBracket(self, p):  # shape: Binance docs "Notional and Leverage Brackets"
        return 200, [{"symbol": "BTCUSDT", "notionalCoef": 1.0, "brackets": [
            {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0.0},
            {"bracket": 2, "initialLeverage": 100, "notionalCap": 250000, "notionalFloor": 50000, "maintMarginRatio": 0.005, "cum": 50.0}]}]

    def h_GET_fapi_v1_premiumIndex(self, p):  # shape: Binance docs "Mark Price"
        return 200, {"symbol": "BTCUSDT", "markPrice": "67582.20000000", "indexPrice": "67550.10000000",
                     "estimatedSettlePrice": "67500.00000000", "lastFundingRate": "0.00010000",
                     "interestRate": "0.00010000", "nextFundingTime": 1722182400000, "time": NOW_MS}

    def h_GET_fapi_v1_userTrades(self, p):
        return 200, [t for t in recorded("fetchMyTrades", "Swap private trade")
                     if int(p.get("startTime", 0)) <= int(t["time"]) <= int(p.get("endTime", 2**62))]


def exchange_factory(fake: FakeBinance):
    """``exchange_id -> ccxt exchange`` whose HTTP session is ``fake`` (for ``venues.factory.CLIENTS["ccxt"]``)."""
    def build(exchange_id: str) -> ccxt.Exchange:
        exchange = getattr(ccxt, exchange_id)()
        exchange.session = fake
        return exchange
    return build


def make(exchange_id: str = "binance", **kw) -> tuple[CcxtVenue, FakeBinance]:
    fake = FakeBinance()
    exchange = exchange_factory(fake)(exchange_id)
    mode = Mode.SPOT if exchange_id == "binance" else Mode.FUTURES
    venue = CcxtVenue(exchange_id=exchange_id, account="acct-test", mode=mode, api_key=KEY, secret=SECRET,
                      exchange=exchange, retry_initial_wait_s=0, **kw)
    return venue, fake


def again(venue: CcxtVenue, **kw) -> CcxtVenue:
    """A fresh process on the same account: same exchange (and fake Binance), empty in-process maps."""
    return CcxtVenue(exchange_id=venue.exchange_id, account=venue.account, mode=venue.mode, api_key=KEY, secret=SECRET,
                     exchange=venue.exchange, retry_initial_wait_s=0, **kw)


def spot_entry(cid="tp-aaaaaaaaaaaaaaaaaaaaaaaa-en", **kw) -> OrderRequest:
    return OrderRequest(client_order_id=cid, instrument="BTC/USDT", side=Side.BUY, type=OrderType.MARKET,
                        quantity=0.001, role=OrderRole.ENTRY, **kw)


def legs(instrument: str, side: Side, qty: float, stop: float, target: float, entry_cid: str):
    base = entry_cid[:-3]
    return (OrderRequest(client_order_id=base + "-sl", instrument=instrument, side=side, type=OrderType.STOP, quantity=qty,
                         trigger_price=stop, role=OrderRole.STOP_LOSS, reduce_only=True,
                         parent_client_order_id=entry_cid, oco_group=entry_cid),
            OrderRequest(client_order_id=base + "-tp", instrument=instrument, side=side, type=OrderType.LIMIT, quantity=qty,
                         price=target, role=OrderRole.TAKE_PROFIT, reduce_only=True,
                         parent_client_order_id=entry_cid, oco_group=entry_cid))


def signed(call: dict) -> bool:
    return "signature" in call["params"] and "timestamp" in call["params"] and call["headers"].get("X-MBX-APIKEY") == KEY


# ------------------------------------------------------------------------------------------------ rules
def test_instrument_rules_come_from_exchange_info():
    """Faked: HTTP transport, answering exchangeInfo with the recorded symbol entries. Worked values
    (LOT_SIZE / PRICE_FILTER / NOTIONAL filters): BTC/USDT lot 0.00001, min qty 0.00001, tick 0.01,
    min notional 5; BTC/USDT:USDT lot 0.001, min qty 0.001, tick 0.1, min notional 5 (MIN_NOTIONAL)."""
    spot, fake = make("binance")
    assert spot.instrument_rules("BTC/USDT") == {"lot_step": 0.00001, "min_qty": 0.00001, "tick_size": 0.01, "min_notional": 5.0}
    assert spot.instrument_rules("ETH/USDT") == {"lot_step": 0.0001, "min_qty": 0.0001, "tick_size": 0.01, "min_notional": 5.0}
    assert [c["path"] for c in fake.log] == ["/api/v3/exchangeInfo"]  # loaded once, spot only, no margin/SAPI calls
    fut, ffake = make("binanceusdm")
    assert fut.instrument_rules("BTC/USDT:USDT") == {"lot_step": 0.001, "min_qty": 0.001, "tick_size": 0.1, "min_notional": 5.0}
    assert [c["path"] for c in ffake.log] == ["/fapi/v1/exchangeInfo"]
    with pytest.raises(VenueError, match="unknown instrument"):  # spot loads spot markets only
        spot.instrument_rules("BTC/USDT:USDT")
    assert spot.exchange.enableRateLimit is True


def test_constructor_refuses_a_mode_that_does_not_fit_the_exchange():
    """Nothing faked: no request is made."""
    with pytest.raises(ValueError, match="binance trades spot"):
        CcxtVenue(exchange_id="binance", account="a", mode=Mode.FUTURES, api_key=KEY, secret=SECRET)
    built = CcxtVenue(exchange_id="binanceusdm", account="a", mode=Mode.FUTURES, api_key=KEY, secret=SECRET)
    assert built.exchange.enableRateLimit is True and built.exchange.apiKey == KEY


# ------------------------------------------------------------------------------------------------ spot orders
def test_spot_market_entry_checks_the_id_then_posts_signed_with_new_client_order_id():
    """Faked: HTTP transport (look-up answers −2013 "Order does not exist.", then the POST fills)."""
    venue, fake = make()
    order = venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    lookup, post = fake.calls("GET", "/api/v3/order")[0], fake.calls("POST", "/api/v3/order")[0]
    assert fake.log.index(lookup) < fake.log.index(post)
    assert lookup["params"]["origClientOrderId"] == "tp-aaaaaaaaaaaaaaaaaaaaaaaa-en" and signed(lookup)
    assert signed(post)
    assert post["params"] | {"timestamp": "-", "signature": "-"} == {
        "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001", "newOrderRespType": "FULL",
        "newClientOrderId": "tp-aaaaaaaaaaaaaaaaaaaaaaaa-en", "recvWindow": "10000", "timestamp": "-", "signature": "-"}
    assert order.status is OrderStatus.FILLED and order.filled_quantity == 0.001 and order.average_price == 43000.0
    assert order.venue_order_id == "1001" and order.request.role is OrderRole.ENTRY


def test_fetch_order_by_client_id_uses_orig_client_order_id():
    """Faked: HTTP transport. A fresh process knows no symbols: it needs ``instrument=`` or a list of
    instruments to probe, and never answers a false None."""
    venue, fake = make()
    venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    assert venue.fetch_order("tp-aaaaaaaaaaaaaaaaaaaaaaaa-en").status is OrderStatus.FILLED  # symbol from the map
    fresh = again(venue)
    with pytest.raises(VenueError, match="pass instrument="):
        fresh.fetch_order("tp-aaaaaaaaaaaaaaaaaaaaaaaa-en")
    got = fresh.fetch_order("tp-aaaaaaaaaaaaaaaaaaaaaaaa-en", instrument="BTC/USDT")
    assert got.status is OrderStatus.FILLED and got.request.role is OrderRole.ENTRY and got.request.quantity == 0.001
    assert fake.log[-1]["params"]["origClientOrderId"] == "tp-aaaaaaaaaaaaaaaaaaaaaaaa-en"
    assert again(venue, instruments=["ETH/USDT", "BTC/USDT"]).fetch_order("tp-aaaaaaaaaaaaaaaaaaaaaaaa-en").status is OrderStatus.FILLED
    assert again(venue, instruments=["ETH/USDT"]).fetch_order("tp-aaaaaaaaaaaaaaaaaaaaaaaa-en") is None


def test_crash_after_the_post_then_rerun_places_exactly_one_order():
    """Faked: HTTP transport; and a crash injected in this process right after Binance answered the
    POST (before anything could be written to a ledger). The re-run, a fresh venue object, finds
    the order by client order id and sends no second POST."""
    venue, fake = make()
    real = venue.exchange.create_order

    def answered_then_crash(*a, **kw):
        real(*a, **kw)
        raise Crash()

    venue.exchange.create_order = answered_then_crash
    with pytest.raises(Crash):
        venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    venue.exchange.create_order = real
    order = again(venue).create_order(spot_entry(), placed_at=T0, position_side="long")
    assert order.status is OrderStatus.FILLED and order.venue_order_id == "1001"
    assert len(fake.calls("POST", "/api/v3/order")) == 1
    assert len(fake.calls("GET", "/api/v3/order")) == 2  # one look-up per attempt


def test_transient_errors_are_retried_and_a_lost_answer_is_found_not_reposted():
    """Faked: HTTP transport. The first look-up hits a connection error (ccxt ``NetworkError``);
    the POST is accepted by Binance but its answer is lost (read timeout → ccxt ``RequestTimeout``).
    The retried attempt looks the id up again, finds the order, and does not POST again."""
    venue, fake = make()
    fake.script = {"GET /api/v3/order": [requests.exceptions.ConnectionError("connection reset")],
                   "POST /api/v3/order": ["lost"]}
    order = venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    assert order.status is OrderStatus.FILLED
    assert len(fake.calls("POST", "/api/v3/order")) == 1
    assert len(fake.calls("GET", "/api/v3/order")) == 3  # failed, not found, found


def test_retries_stop_after_max_retries_with_venue_unavailable():
    """Faked: HTTP transport; every request times out."""
    venue, fake = make(max_retries=3)
    venue.instrument_rules("BTC/USDT")
    fake.script = {"GET /api/v3/order": [requests.exceptions.ReadTimeout("timed out")] * 5}
    with pytest.raises(VenueUnavailable, match="after 3 attempts"):
        venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    assert len(fake.calls("GET", "/api/v3/order")) == 3 and not fake.calls("POST", "/api/v3/order")


def test_insufficient_funds_is_a_venue_error_with_binance_message_and_no_secret():
    """Faked: HTTP transport; the POST answers Binance's −2010 body (ccxt maps it to
    ``InsufficientFunds``). Not retried."""
    venue, fake = make()
    fake.script = {"POST /api/v3/order": [(400, {"code": -2010, "msg": "Account has insufficient balance for requested action."})]}
    with pytest.raises(VenueError) as caught:
        venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    text = str(caught.value)
    assert "InsufficientFunds" in text and "Account has insufficient balance for requested action." in text
    assert KEY not in text and SECRET not in text
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert len(fake.calls("POST", "/api/v3/order")) == 1


def test_key_and_secret_are_scrubbed_from_errors_and_ccxt_debug_logs(caplog):
    """Faked: HTTP transport; Binance's error body echoes the request (as a misbehaving proxy or
    gateway might: the API-key header and the secret), and a transient failure's ccxt message
    carries the signed URL. ccxt's own DEBUG log line carries the X-MBX-APIKEY header."""
    venue, fake = make(max_retries=2)
    venue.instrument_rules("BTC/USDT")
    echo = f"Signature for this request is not valid. headers={{'X-MBX-APIKEY': '{KEY}'}} secret={SECRET}"
    fake.script = {"GET /api/v3/order": [(400, {"code": -1022, "msg": echo})]}
    with caplog.at_level(logging.DEBUG, logger="ccxt"):
        with pytest.raises(VenueError) as caught:
            venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    text = str(caught.value)
    assert "AuthenticationError" in text and "Signature for this request is not valid" in text
    assert KEY not in text and SECRET not in text
    ccxt_lines = [r.getMessage() for r in caplog.records if r.name.startswith("ccxt")]
    assert any("X-MBX-APIKEY" in line for line in ccxt_lines)
    assert not any(KEY in line or SECRET in line for line in caplog.messages + ccxt_lines)

    fake.script = {"GET /api/v3/order": [requests.exceptions.ConnectionError("reset")] * 2}
    with pytest.raises(VenueUnavailable) as caught:
        venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    assert "/api/v3/order?" in str(caught.value) and "signature=***" in str(caught.value)


# ------------------------------------------------------------------------------------------------ spot bracket
def test_spot_bracket_is_entry_then_one_oco_sized_to_what_can_be_sold():
    """Faked: HTTP transport. Entry 0.001 BTC fills at 43000 with 0.000001 BTC commission, so 0.000999
    BTC is free and the OCO sells 0.00099 (truncated to the 0.00001 lot). The fixture's BTCUSDT
    allows no STOP_LOSS type, so the stop leg is STOP_LOSS_LIMIT: trigger 42000, limit 42000 ×
    0.995 = 41790. Re-running the bracket sends nothing new."""
    venue, fake = make()
    entry = spot_entry()
    sl, tp = legs("BTC/USDT", Side.SELL, 0.001, 42000.0, 45000.0, entry.client_order_id)
    placed = venue.create_bracket(entry, sl, tp, placed_at=T0, position_side="long")
    assert [o.status for o in placed] == [OrderStatus.FILLED, OrderStatus.ACCEPTED, OrderStatus.ACCEPTED]
    assert [o.client_order_id for o in placed] == [entry.client_order_id, sl.client_order_id, tp.client_order_id]
    (oco,) = fake.calls("POST", "/api/v3/orderList/oco")
    assert signed(oco) and fake.log.index(oco) > fake.log.index(fake.calls("POST", "/api/v3/order")[0])
    p = oco["params"]
    assert p["listClientOrderId"].startswith("oco-") and len(p["listClientOrderId"]) == 32
    assert {k: v for k, v in p.items() if k not in ("timestamp", "signature", "recvWindow", "listClientOrderId")} == {
        "symbol": "BTCUSDT", "side": "SELL", "quantity": "0.00099", "newOrderRespType": "FULL",
        "aboveType": "LIMIT_MAKER", "abovePrice": "45000", "aboveClientOrderId": tp.client_order_id,
        "belowType": "STOP_LOSS_LIMIT", "belowStopPrice": "42000", "belowPrice": "41790", "belowTimeInForce": "GTC",
        "belowClientOrderId": sl.client_order_id}
    assert placed[1].request.quantity == placed[2].request.quantity == 0.00099
    assert not [c for c in fake.calls("POST", "/api/v3/order") if c["params"]["type"] != "MARKET"]  # no separate legs

    again(venue).create_bracket(entry, sl, tp, placed_at=T0, position_side="long")
    assert len(fake.calls("POST", "/api/v3/order")) == 1 and len(fake.calls("POST", "/api/v3/orderList/oco")) == 1


def test_spot_limit_entry_is_ioc_and_an_unfilled_entry_gets_no_legs():
    """Faked: HTTP transport; Binance expires the IOC entry unfilled."""
    venue, fake = make()
    fake.spot_expire_limit = True
    entry = OrderRequest(
        client_order_id="tp-bbbbbbbbbbbbbbbbbbbbbbbb-en", instrument="BTC/USDT", side=Side.BUY, type=OrderType.LIMIT,
        quantity=0.001, price=43100.0, role=OrderRole.ENTRY)
    sl, tp = legs("BTC/USDT", Side.SELL, 0.001, 42000.0, 45000.0, entry.client_order_id)
    placed = venue.create_bracket(entry, sl, tp, placed_at=T0, position_side="long")
    post = fake.calls("POST", "/api/v3/order")[0]["params"]
    assert post["type"] == "LIMIT" and post["timeInForce"] == "IOC" and post["price"] == "43100"
    assert [o.status for o in placed] == [OrderStatus.EXPIRED, OrderStatus.CANCELED, OrderStatus.CANCELED]
    assert placed[0].filled_quantity == 0 and "0 of 0.001 filled" in placed[0].reason
    assert all("not placed" in o.reason for o in placed[1:])
    assert not fake.calls("POST", "/api/v3/orderList/oco")


def test_spot_leg_through_create_order_is_refused():
    """Faked: HTTP transport. Two separate spot sell legs cannot both rest: the OCO is the only way."""
    venue, _ = make()
    sl, _tp = legs("BTC/USDT", Side.SELL, 0.001, 42000.0, 45000.0, "tp-aaaaaaaaaaaaaaaaaaaaaaaa-en")
    with pytest.raises(VenueError, match="create_bracket"):
        venue.create_order(sl, placed_at=T0, position_side="long")


def test_spot_cancel_of_an_oco_leg_cancels_the_list():
    """Faked: HTTP transport (DELETE /api/v3/order on one leg cancels its order list)."""
    venue, fake = make()
    entry = spot_entry()
    sl, tp = legs("BTC/USDT", Side.SELL, 0.001, 42000.0, 45000.0, entry.client_order_id)
    venue.create_bracket(entry, sl, tp, placed_at=T0, position_side="long")
    assert {o.client_order_id for o in venue.fetch_open_orders("BTC/USDT")} == {sl.client_order_id, tp.client_order_id}
    cancelled = venue.cancel_order(sl.client_order_id)
    (delete,) = fake.calls("DELETE", "/api/v3/order")
    assert delete["params"]["origClientOrderId"] == sl.client_order_id and signed(delete)
    assert cancelled.status is OrderStatus.CANCELED and venue.fetch_order(tp.client_order_id).status is OrderStatus.CANCELED
    assert venue.cancel_order(entry.client_order_id).status is OrderStatus.FILLED  # filled stays filled
    with pytest.raises(VenueError, match="unknown order"):
        venue.cancel_order("tp-cccccccccccccccccccccccc-en", instrument="BTC/USDT")


def test_spot_positions_and_balance():
    """Faked: HTTP transport; the ticker is the recorded BTCUSDT 24hr answer (last 73369.84). Account:
    1000 USDT free + 10 locked, 0.002 BTC, 0.00000900 BTC-sized LTC dust ignored (no LTC ticker is
    asked for). Entry price: the two latest buys covering 0.002 BTC (0.0015 @ 70000, 0.0005 @ 72000)
    average to 70500."""
    venue, fake = make()
    fake.balances = {"USDT": ["1000.00000000", "10.00000000"], "BTC": ["0.00200000", "0.00000000"],
                     "LTC": ["0.00000900", "0.00000000"]}
    fake.my_trades["BTCUSDT"] = [
        {"symbol": "BTCUSDT", "id": 1, "orderId": 11, "orderListId": -1, "price": "60000.00", "qty": "0.00100000",
         "quoteQty": "60.0", "commission": "0", "commissionAsset": "BNB", "time": 1710000000000, "isBuyer": True, "isMaker": False, "isBestMatch": True},
        {"symbol": "BTCUSDT", "id": 2, "orderId": 12, "orderListId": -1, "price": "70000.00", "qty": "0.00150000",
         "quoteQty": "105.0", "commission": "0", "commissionAsset": "BNB", "time": 1710100000000, "isBuyer": True, "isMaker": False, "isBestMatch": True},
        {"symbol": "BTCUSDT", "id": 3, "orderId": 13, "orderListId": -1, "price": "72000.00", "qty": "0.00050000",
         "quoteQty": "36.0", "commission": "0", "commissionAsset": "BNB", "time": 1710200000000, "isBuyer": True, "isMaker": False, "isBestMatch": True}]
    (pos,) = venue.fetch_positions()
    assert pos.instrument == "BTC/USDT" and pos.side is PositionSide.LONG and pos.quantity == 0.002
    assert pos.mark_price == 73369.84 and pos.entry_price == pytest.approx(70500.0)
    assert pos.opened_at == datetime.fromtimestamp(1710100000, tz=timezone.utc) and pos.margin_mode is None
    bal = venue.fetch_balance()
    assert bal.cash == 1010.0 and bal.reserved == 10.0 and bal.free == 1000.0
    assert bal.equity == pytest.approx(1010.0 + 0.002 * 73369.84)
    assert bal.unrealized_pnl == pytest.approx(0.002 * (73369.84 - 70500.0)) and bal.fees_paid == 0.0
    assert venue.futures_terms("BTC/USDT") is None


# ------------------------------------------------------------------------------------------------ futures
def futures_bracket(venue: CcxtVenue):
    entry = OrderRequest(client_order_id="tp-dddddddddddddddddddddddd-en", instrument="BTC/USDT:USDT", side=Side.BUY,
                         type=OrderType.MARKET, quantity=0.0125, role=OrderRole.ENTRY)
    sl, tp = legs("BTC/USDT:USDT", Side.SELL, 0.0125, 66000.0, 70000.0, entry.client_order_id)
    return entry, sl, tp, venue.create_bracket(entry, sl, tp, placed_at=T0, position_side="long", leverage=5)


def test_futures_bracket_sets_margin_and_leverage_then_algo_reduce_only_legs():
    """Faked: HTTP transport. Binance answers −4059 (already one-way) and −4046 (margin type already
    isolated), both not errors. The 0.0125 entry is sent as 0.012 (lot 0.001) and fills 0.012; the
    legs are STOP_MARKET / TAKE_PROFIT_MARKET on the Algo Service (POST /fapi/v1/algoOrder,
    algoType CONDITIONAL, clientAlgoId, triggerPrice, reduceOnly) for 0.012 each."""
    venue, fake = make("binanceusdm")
    entry, sl, tp, placed = futures_bracket(venue)
    paths = [(c["method"], c["path"]) for c in fake.log if c["path"] != "/fapi/v1/exchangeInfo"]
    assert paths == [("GET", "/fapi/v1/order"), ("POST", "/fapi/v1/positionSide/dual"), ("POST", "/fapi/v1/marginType"),
                     ("POST", "/fapi/v1/leverage"), ("POST", "/fapi/v1/order"),
                     ("GET", "/fapi/v1/algoOrder"), ("POST", "/fapi/v1/algoOrder"),
                     ("GET", "/fapi/v1/algoOrder"), ("POST", "/fapi/v1/algoOrder")]
    assert fake.calls("POST", "/fapi/v1/positionSide/dual")[0]["params"]["dualSidePosition"] == "false"
    assert fake.calls("POST", "/fapi/v1/marginType")[0]["params"]["marginType"] == "ISOLATED"
    lev = fake.calls("POST", "/fapi/v1/leverage")[0]
    assert lev["params"]["leverage"] == "5" and lev["params"]["symbol"] == "BTCUSDT" and signed(lev)
    post = fake.calls("POST", "/fapi/v1/order")[0]["params"]
    assert post["newClientOrderId"] == entry.client_order_id and post["type"] == "MARKET" and post["quantity"] == "0.012"
    assert "reduceOnly" not in post and "positionSide" not in post  # one-way: BOTH is Binance's default
    stop, take = (c["params"] for c in fake.calls("POST", "/fapi/v1/algoOrder"))
    for leg, cid, kind, trigger in ((stop, sl.client_order_id, "STOP_MARKET", "66000"),
                                    (take, tp.client_order_id, "TAKE_PROFIT_MARKET", "70000")):
        assert leg["clientAlgoId"] == cid and "newClientOrderId" not in leg
        assert leg["algoType"] == "CONDITIONAL" and leg["type"] == kind and leg["triggerPrice"] == trigger
        assert leg["reduceOnly"] == "true" and leg["side"] == "SELL" and leg["quantity"] == "0.012"
        assert "stopPrice" not in leg and "closePosition" not in leg
    assert all(signed(c) for c in fake.calls("POST", "/fapi/v1/algoOrder"))
    lookups = fake.calls("GET", "/fapi/v1/algoOrder")
    assert [c["params"]["clientAlgoId"] for c in lookups] == [sl.client_order_id, tp.client_order_id]
    assert [o.status for o in placed] == [OrderStatus.FILLED, OrderStatus.ACCEPTED, OrderStatus.ACCEPTED]
    assert placed[0].filled_quantity == 0.012 and placed[0].average_price == 67450.0
    assert placed[1].request.quantity == placed[2].request.quantity == 0.012

    n = len(fake.log)
    again(venue).create_bracket(entry, sl, tp, placed_at=T0, position_side="long", leverage=5)
    assert {c["method"] for c in fake.log[n:]} == {"GET"}  # the re-run only looks up: no leverage, no orders


def test_futures_conditional_orders_are_fetched_and_cancelled_on_the_algo_service():
    """Faked: HTTP transport. ``{'trigger': True}`` look-ups: GET /fapi/v1/algoOrder?clientAlgoId=…,
    DELETE /fapi/v1/algoOrder, GET /fapi/v1/openAlgoOrders."""
    venue, fake = make("binanceusdm")
    entry, sl, tp, _ = futures_bracket(venue)
    got = again(venue).fetch_order(sl.client_order_id, instrument="BTC/USDT:USDT")  # fresh process: regular, then algo
    assert got.request.role is OrderRole.STOP_LOSS and got.request.trigger_price == 66000.0 and got.status is OrderStatus.ACCEPTED
    assert [c["path"] for c in fake.log[-2:]] == ["/fapi/v1/order", "/fapi/v1/algoOrder"]
    opened = venue.fetch_open_orders("BTC/USDT:USDT")
    assert [o.client_order_id for o in opened] == [sl.client_order_id, tp.client_order_id]
    assert fake.calls("GET", "/fapi/v1/openAlgoOrders") and fake.calls("GET", "/fapi/v1/openOrders")
    cancelled = venue.cancel_order(tp.client_order_id)
    (delete,) = fake.calls("DELETE", "/fapi/v1/algoOrder")
    assert delete["params"]["clientAlgoId"] == tp.client_order_id and signed(delete)
    assert cancelled.status is OrderStatus.CANCELED and fake.algo[tp.client_order_id]["algoStatus"] == "CANCELED"


def test_futures_positions_balance_and_terms_from_recorded_answers():
    """Faked: HTTP transport; positionRisk, account and userTrades are the recorded Binance answers.
    Worked values: 0.009 BTC long, entry 67445.9, mark 67582.2, liquidation 64846.78939917, cross;
    leverage = notional 608.2398 ÷ initial margin 7.60299749 = 80; wallet 31.022612 USDT, nothing
    locked, equity 31.022612. Funding 0.0001 per interval, next at 2024-07-28 16:00 UTC, brackets
    up to 125×."""
    venue, fake = make("binanceusdm")
    (pos,) = venue.fetch_positions()
    assert (pos.instrument, pos.side, pos.quantity) == ("BTC/USDT:USDT", PositionSide.LONG, 0.009)
    assert (pos.entry_price, pos.mark_price, pos.liquidation_price) == (67445.9, 67582.2, 64846.78939917)
    assert pos.margin_mode == "cross" and pos.leverage == pytest.approx(80.0, rel=1e-5) and pos.margin == 7.60299749
    assert pos.opened_at == datetime.fromtimestamp(1722161166.529, tz=timezone.utc)
    bal = venue.fetch_balance()
    assert (bal.cash, bal.reserved, bal.equity, bal.unrealized_pnl) == (31.022612, 0.0, 31.022612, 0.0)
    terms = venue.futures_terms("BTC/USDT:USDT")
    assert terms.funding_rate == 0.0001 and terms.mark_price == 67582.2 and terms.max_leverage == 125.0
    assert terms.next_funding_time == datetime(2024, 7, 28, 16, tzinfo=timezone.utc) and terms.margin_mode == "isolated"
    assert fake.calls("GET", "/fapi/v1/premiumIndex")[0]["params"]["symbol"] == "BTCUSDT"


def test_fetch_my_trades_maps_fills_with_the_venue_trade_id():
    """Faked: HTTP transport; userTrades is the recorded USDⓈ-M answer (trade 272536245 of order
    3524852987: buy 0.010 @ 36567.10, commission 0.14626840 USDT at 2023-11-14T14:40:36.419Z); the
    order look-up by id answers an order with that id."""
    venue, fake = make("binanceusdm", instruments=["BTC/USDT:USDT"])
    fake.orders["tp-eeeeeeeeeeeeeeeeeeeeeeee-en"] = {"orderId": 3524852987, "symbol": "BTCUSDT", "status": "FILLED",
                                                     "clientOrderId": "tp-eeeeeeeeeeeeeeeeeeeeeeee-en", "price": "0",
                                                     "avgPrice": "36567.10", "origQty": "0.010", "executedQty": "0.010",
                                                     "cumQuote": "365.671", "timeInForce": "GTC", "type": "MARKET",
                                                     "reduceOnly": False, "side": "BUY", "positionSide": "BOTH",
                                                     "updateTime": 1699972836419}
    (fill,) = venue.fetch_my_trades()
    assert fill.fill_id == "272536245" and fill.client_order_id == "tp-eeeeeeeeeeeeeeeeeeeeeeee-en"
    assert (fill.side, fill.quantity, fill.price, fill.fee) == (Side.BUY, 0.01, 36567.1, 0.1462684)
    assert fill.time == datetime.fromtimestamp(1699972836.419, tz=timezone.utc) and fill.instrument == "BTC/USDT:USDT"
    assert fake.calls("GET", "/fapi/v1/order")[0]["params"]["orderId"] == "3524852987"
    venue._now_ms = lambda: 1699972836419 + 10 * 24 * 3600 * 1000  # "now": 10 days later
    assert venue.fetch_my_trades(since=fill.time) == []
    windows = [c["params"] for c in fake.calls("GET", "/fapi/v1/userTrades")[1:]]  # ≤ 7-day windows from since + 1 ms
    assert [(int(w["startTime"]), int(w["endTime"])) for w in windows] == [
        (1699972836420, 1699972836420 + 7 * 86400000 - 1), (1699972836420 + 7 * 86400000, 1699972836419 + 10 * 86400000)]


@pytest.mark.parametrize("raw,executed,expected", [
    ("NEW", "0.00000000", OrderStatus.ACCEPTED), ("PARTIALLY_FILLED", "0.04000000", OrderStatus.PARTIALLY_FILLED),
    ("FILLED", "0.10000000", OrderStatus.FILLED), ("CANCELED", "0.00000000", OrderStatus.CANCELED),
    ("EXPIRED", "0.04000000", OrderStatus.EXPIRED), ("EXPIRED_IN_MATCH", "0.00000000", OrderStatus.EXPIRED),
    ("REJECTED", "0.00000000", OrderStatus.REJECTED)])
def test_binance_order_status_maps_to_the_domain(raw, executed, expected):
    """Faked: HTTP transport; the order look-up answers the recorded spot order (0.1 LTC) with its
    status and executedQty replaced. An open order with a fill is PARTIALLY_FILLED; an expired one
    keeps what filled (0.04 of 0.1) and says so in ``reason``."""
    venue, fake = make()
    order = dict(recorded("fetchOrder", "Fetch spot closed order"), status=raw, executedQty=executed)
    fake.orders[order["clientOrderId"]] = order
    got = venue.fetch_order(order["clientOrderId"], instrument="LTC/USDT")
    assert got.status is expected and got.venue_order_id == "3397148653" and got.request.side is Side.SELL
    assert got.filled_quantity == float(executed)
    if expected is OrderStatus.EXPIRED:
        assert got.reason == f"expired ({raw}, GTC) with {float(executed):g} of 0.1 filled"
