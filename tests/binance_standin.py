"""A stand-in Binance (spot ``/api/v3`` and USDⓈ-M ``/fapi``) as a separate process, for the
crash-injection harness (tests/test_crash_harness.py) and tests/test_binance_standin.py.

    python tests/binance_standin.py --port P --state DIR

A stdlib ``ThreadingHTTPServer`` on 127.0.0.1 answering what ccxt 4.5's ``binance`` and
``binanceusdm`` really request (paths and parameter names read in ccxt/binance.py), with a tiny
matching engine. It is the venue, so it is never killed by the harness; the *client* is.

Accounts: one per API key (the ``X-MBX-APIKEY`` header). The key itself is never stored or logged:
an account is named by :func:`account_id` (the first 16 hex digits of its SHA-256), and lives in
``DIR/acct-<id>/``: ``state.json`` (orders, balances, positions; rewritten with fsync after every
change, so it survives anything that happens to a client) and ``posts.jsonl`` (every POST and
DELETE: path, params without ``signature``/``timestamp``/``recvWindow``, time, HTTP status and
Binance code, appended with fsync *before* the answer is written). A fresh API key is a fresh
account: each kill point of the harness uses its own.

Market data: exchangeInfo is built from the ``info`` (raw exchangeInfo symbol entries) of ccxt's
static markets fixture, tests/fixtures/ccxt/markets_binance.json (a verbatim copy of ccxt/ccxt
``ts/src/test/static/markets/binance.json``, commit 0dca8ac0…; see /work/shared/fixtures/ccxt/README.md).
Prices (mark = last) are set per symbol through ``POST /_control/price``; moving a price runs the
matching engine over every account (resting limits, spot OCO legs, USDⓈ-M algo orders).

Matching (documented Binance behaviour, simplified):
* spot ``LIMIT`` IOC buy fills at min(limit, price) when price ≤ limit, else EXPIRED; ``MARKET`` at
  price. ``/_control/partial`` makes the next fill take only a fraction: an IOC then ends EXPIRED
  with ``executedQty`` > 0. Commission 0.1 % in the received asset. The quote (buy) or base (sell)
  balance must cover the order: else HTTP 400 ``-2010 Account has insufficient balance for
  requested action.``. A client order id is refused (−2010 ``Duplicate order sent.``) only while an
  order with it is open — as on Binance, ids of FILLED/EXPIRED orders can be reused, so a second
  POST after a lost answer makes a second order.
* spot OCO (``POST /api/v3/orderList/oco``, ``above*``/``below*``): both legs rest, the quantity is
  locked once; when one leg fills the other is EXPIRED (one-cancels-other); cancelling one leg
  cancels the list.
* USDⓈ-M: one-way positions (``positionAmt`` signed, ``entryPrice`` averaged, realised P&L into the
  wallet, commission 0.05 %). Conditional types on ``/fapi/v1/order`` are refused with −4120 (the
  Algo Service took them over on 2025-12-09). Algo orders (``POST /fapi/v1/algoOrder``) trigger on
  the mark price and then fill as a reduce-only MARKET order; they are NOT one-cancels-other: when
  one triggers, its sibling keeps resting (real Binance behaviour; the client must cancel it).
  A reduce-only order with no position to reduce is rejected (−2022).

Controls (no key needed; ``account`` is :func:`account_id` of the key):
* ``POST /_control/price`` ``{"symbol": "BTCUSDT", "price": 68000}`` (optional ``account``: match only it)
* ``POST /_control/partial`` ``{"account": A, "fraction": 0.4}`` — the next fill fills only that fraction
* ``POST /_control/balance`` ``{"account": A, "asset": "USDT", "free": 10000}`` (spot) /
  ``{"account": A, "wallet": 10000}`` (futures USDT wallet)
* ``POST /_control/inject`` ``{"account": A, "kind": "-1021"|"429", "count": 1, "path": optional}``
* ``POST /_control/hold`` ``{"account": A, "nth": k, "seconds": S, "path": optional}`` — after
  *accepting* the k-th order POST from now on (``/api/v3/order``, ``/api/v3/orderList/oco``,
  ``/fapi/v1/order``, ``/fapi/v1/algoOrder``; or only ``path``), record it, write the marker file
  ``DIR/acct-<A>/accepted-<k>`` and hold the HTTP answer for S seconds: the harness SIGKILLs the
  client while it waits.
* ``POST /_control/clock`` ``{"now_ms": T}`` — the server's clock reads T plus the time elapsed since
  (orders, trades, serverTime); default the real clock.
* ``GET /_control/state?account=A`` — the account's state; ``GET /_control/health``.

Signatures are not checked (any value is accepted).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ccxt"
SPOT_FEE, FUT_FEE = 0.001, 0.0005
SECRET_PARAMS = {"signature", "timestamp", "recvWindow", "apiKey", "secret"}
ORDER_POSTS = ("/api/v3/order", "/api/v3/orderList/oco", "/fapi/v1/order", "/fapi/v1/algoOrder")
OPEN = ("NEW", "PARTIALLY_FILLED")


def account_id(api_key: str) -> str:
    """The name of the stand-in account of ``api_key`` (never the key itself)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


class BinanceError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400, headers: dict | None = None):
        super().__init__(msg)
        self.code, self.msg, self.status, self.headers = code, msg, status, headers or {}


def not_found():
    return BinanceError(-2013, "Order does not exist.")


def unknown_cancel():
    return BinanceError(-2011, "Unknown order sent.")


def fmt(x: float, d: int = 8) -> str:
    return f"{x:.{d}f}"


def _fsync_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- markets
def load_markets_fixture() -> tuple[list[dict], list[dict]]:
    markets = json.loads((FIXTURES / "markets_binance.json").read_text())
    spot = [m["info"] for m in markets.values() if m.get("spot") and m.get("info")]
    linear = [m["info"] for m in markets.values() if m.get("linear") and m.get("swap") and m.get("info")]
    return spot, linear


def _filters(info: dict) -> dict:
    return {f["filterType"]: f for f in info.get("filters", [])}


# ---------------------------------------------------------------------------------------------- engine
class Exchange:
    """All accounts, prices and the matching engine. One lock: the server is small, not fast."""

    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.spot_info, self.fut_info = load_markets_fixture()
        self.spot_symbols = {i["symbol"]: i for i in self.spot_info}
        self.fut_symbols = {i["symbol"]: i for i in self.fut_info}
        self.accounts: dict[str, dict] = {}
        gpath = self.dir / "global.json"
        self.g = json.loads(gpath.read_text()) if gpath.exists() else {"prices": {}, "clock": None}

    # ------------------------------------------------------------------ persistence
    def now_ms(self) -> int:
        c = self.g.get("clock")
        if c:
            return int(c["now_ms"] + (time.time() * 1000 - c["set_at"]))
        return int(time.time() * 1000)

    def save_global(self) -> None:
        _fsync_write(self.dir / "global.json", json.dumps(self.g))

    def acct_dir(self, acct: str) -> Path:
        d = self.dir / f"acct-{acct}"
        d.mkdir(exist_ok=True)
        return d

    def account(self, acct: str) -> dict:
        a = self.accounts.get(acct)
        if a is None:
            p = self.acct_dir(acct) / "state.json"
            if p.exists():
                a = json.loads(p.read_text())
            else:
                a = {"next_id": 1000, "spot": {"balances": {"USDT": [10000.0, 0.0]}, "orders": [], "lists": [], "trades": []},
                     "fut": {"wallet": 10000.0, "positions": {}, "orders": [], "algo": [], "trades": [], "leverage": {},
                             "margin_type": {}, "dual": False},
                     "partial": None, "inject": [], "hold": None, "order_posts": 0}
            self.accounts[acct] = a
        return a

    def save(self, acct: str) -> None:
        _fsync_write(self.acct_dir(acct) / "state.json", json.dumps(self.accounts[acct]))

    def record_post(self, acct: str, method: str, path: str, params: dict, status: int, body) -> None:
        code = body.get("code") if isinstance(body, dict) and status >= 400 else None
        rec = {"t": self.now_ms(), "wall": time.time(), "method": method, "path": path,
               "params": {k: v for k, v in params.items() if k not in SECRET_PARAMS}, "status": status, "code": code}
        if status < 400 and isinstance(body, dict):
            rec["result"] = {k: body.get(k) for k in ("orderId", "algoId", "orderListId", "status", "algoStatus",
                                                      "executedQty") if k in body}
        with open(self.acct_dir(acct) / "posts.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _id(self, a: dict) -> int:
        a["next_id"] += 1
        return a["next_id"]

    def price(self, symbol: str) -> float:
        p = self.g["prices"].get(symbol)
        if p is None:
            raise BinanceError(-1121, "Invalid symbol.") if symbol not in self.spot_symbols and symbol not in \
                self.fut_symbols else BinanceError(-1013, f"stand-in: no price set for {symbol} (POST /_control/price)")
        return float(p)

    def _fill_fraction(self, a: dict) -> float:
        f = a.get("partial")
        a["partial"] = None
        return 1.0 if f is None else float(f)

    # ------------------------------------------------------------------ spot
    def _spot_info(self, symbol: str) -> dict:
        info = self.spot_symbols.get(symbol)
        if info is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return info

    def _bal(self, a: dict, asset: str) -> list:
        return a["spot"]["balances"].setdefault(asset, [0.0, 0.0])

    def _spot_order(self, a: dict, p: dict, symbol: str, otype: str, list_id: int = -1, cid: str | None = None,
                    price: str | None = None, stop: str | None = None, tif: str | None = None) -> dict:
        now = self.now_ms()
        return {"symbol": symbol, "orderId": self._id(a), "orderListId": list_id,
                "clientOrderId": cid or p.get("newClientOrderId") or f"standin-{a['next_id']}",
                "price": price or p.get("price") or "0.00000000", "origQty": p["quantity"], "executedQty": "0.00000000",
                "cummulativeQuoteQty": "0.00000000", "status": "NEW", "timeInForce": tif or p.get("timeInForce") or "GTC",
                "type": otype, "side": p["side"].upper(), "stopPrice": stop or p.get("stopPrice") or "0.00000000",
                "icebergQty": "0.00000000", "time": now, "updateTime": now, "isWorking": otype not in (
                    "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"), "workingTime": now,
                "origQuoteOrderQty": "0.00000000", "selfTradePreventionMode": "EXPIRE_MAKER", "transactTime": now}

    def _spot_fill(self, a: dict, o: dict, qty: float, px: float, *, locked: bool) -> list[dict]:
        """Fill ``qty`` of spot order ``o`` at ``px``: balances, commission, a trade."""
        info = self._spot_info(o["symbol"])
        base, quote = info["baseAsset"], info["quoteAsset"]
        b, q = self._bal(a, base), self._bal(a, quote)
        notional = qty * px
        if o["side"] == "BUY":
            fee, fee_asset = qty * SPOT_FEE, base
            if locked:
                q[1] = max(0.0, q[1] - notional)
            else:
                q[0] -= notional
            b[0] += qty - fee
        else:
            fee, fee_asset = notional * SPOT_FEE, quote
            if locked:
                b[1] = max(0.0, b[1] - qty)
            else:
                b[0] -= qty
            q[0] += notional - fee
        o["executedQty"] = fmt(float(o["executedQty"]) + qty)
        o["cummulativeQuoteQty"] = fmt(float(o["cummulativeQuoteQty"]) + notional)
        o["updateTime"] = self.now_ms()
        o["status"] = "FILLED" if float(o["executedQty"]) >= float(o["origQty"]) - 1e-12 else "PARTIALLY_FILLED"
        tid = self._id(a)
        a["spot"]["trades"].append({"symbol": o["symbol"], "id": tid, "orderId": o["orderId"], "orderListId": o["orderListId"],
                                    "price": fmt(px), "qty": fmt(qty), "quoteQty": fmt(notional), "commission": fmt(fee),
                                    "commissionAsset": fee_asset, "time": self.now_ms(), "isBuyer": o["side"] == "BUY",
                                    "isMaker": False, "isBestMatch": True})
        return [{"price": fmt(px), "qty": fmt(qty), "commission": fmt(fee), "commissionAsset": fee_asset, "tradeId": tid}]

    def _spot_open_by_cid(self, a: dict, cid: str) -> dict | None:
        return next((o for o in a["spot"]["orders"] if o["clientOrderId"] == cid and o["status"] in OPEN), None)

    def spot_new_order(self, a: dict, p: dict) -> dict:
        symbol = p["symbol"]
        info = self._spot_info(symbol)
        otype, side = p["type"].upper(), p["side"].upper()
        cid = p.get("newClientOrderId")
        if cid and self._spot_open_by_cid(a, cid):
            raise BinanceError(-2010, "Duplicate order sent.")
        px = self.price(symbol)
        if "quantity" not in p:
            if "quoteOrderQty" in p and otype == "MARKET":
                p = {**p, "quantity": fmt(float(p["quoteOrderQty"]) / px)}
            else:
                raise BinanceError(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        qty = float(p["quantity"])
        base, quote = info["baseAsset"], info["quoteAsset"]
        limit = float(p["price"]) if p.get("price") else None
        need_quote = qty * (limit if limit is not None else px)
        if side == "BUY" and self._bal(a, quote)[0] + 1e-9 < need_quote:
            raise BinanceError(-2010, "Account has insufficient balance for requested action.")
        if side == "SELL" and self._bal(a, base)[0] + 1e-12 < qty:
            raise BinanceError(-2010, "Account has insufficient balance for requested action.")
        o = self._spot_order(a, p, symbol, otype)
        a["spot"]["orders"].append(o)
        fills: list[dict] = []
        marketable = otype == "MARKET" or (otype == "LIMIT" and limit is not None and (
            (side == "BUY" and px <= limit) or (side == "SELL" and px >= limit)))
        tif = o["timeInForce"]
        if otype in ("MARKET", "LIMIT") and marketable:
            fill_px = px if otype == "MARKET" else (min(limit, px) if side == "BUY" else max(limit, px))
            fq = float(self._quantize(qty * self._fill_fraction(a), info))
            if fq > 0:
                fills = self._spot_fill(a, o, fq, fill_px, locked=False)
            if o["status"] != "FILLED":
                if otype == "MARKET" or tif in ("IOC", "FOK"):
                    o["status"] = "EXPIRED"
                else:
                    self._lock_spot(a, o, float(o["origQty"]) - float(o["executedQty"]))
        elif otype == "LIMIT" and tif in ("IOC", "FOK"):
            o["status"] = "EXPIRED"
        elif otype == "LIMIT_MAKER" and marketable:
            a["spot"]["orders"].remove(o)
            raise BinanceError(-2010, "Order would immediately match and take.")
        else:  # resting: LIMIT GTC, LIMIT_MAKER, STOP_LOSS(_LIMIT), TAKE_PROFIT(_LIMIT)
            self._lock_spot(a, o, qty)
        return {**o, "fills": fills}

    @staticmethod
    def _quantize(qty: float, info: dict) -> str:
        step = float(_filters(info).get("LOT_SIZE", {}).get("stepSize") or 0) or 1e-8
        n = int(qty / step + 1e-9)
        decimals = max(0, len(f"{step:.8f}".rstrip("0").split(".")[1]) if "." in f"{step:.8f}".rstrip("0") else 0)
        return f"{n * step:.{decimals}f}"

    def _lock_spot(self, a: dict, o: dict, qty: float) -> None:
        info = self._spot_info(o["symbol"])
        if o["side"] == "BUY":
            q = self._bal(a, info["quoteAsset"])
            amt = qty * float(o["price"] or 0)
            q[0] -= amt
            q[1] += amt
        else:
            b = self._bal(a, info["baseAsset"])
            b[0] -= qty
            b[1] += qty

    def _unlock_spot(self, a: dict, o: dict) -> None:
        info = self._spot_info(o["symbol"])
        rest = float(o["origQty"]) - float(o["executedQty"])
        if o["side"] == "BUY":
            q = self._bal(a, info["quoteAsset"])
            amt = rest * float(o["price"] or 0)
            q[1] -= amt
            q[0] += amt
        else:
            b = self._bal(a, info["baseAsset"])
            b[1] -= rest
            b[0] += rest

    def spot_oco(self, a: dict, p: dict) -> dict:
        symbol, side = p["symbol"], p["side"].upper()
        info = self._spot_info(symbol)
        qty = float(p["quantity"])
        for leg in ("above", "below"):
            if p.get(leg + "ClientOrderId") and self._spot_open_by_cid(a, p[leg + "ClientOrderId"]):
                raise BinanceError(-2010, "Duplicate order sent.")
        if p.get("listClientOrderId") and any(x["listClientOrderId"] == p["listClientOrderId"] and x["listOrderStatus"] ==
                                              "EXECUTING" for x in a["spot"]["lists"]):
            raise BinanceError(-2010, "Duplicate order sent.")
        if side == "SELL" and self._bal(a, info["baseAsset"])[0] + 1e-12 < qty:
            raise BinanceError(-2010, "Account has insufficient balance for requested action.")
        if side == "BUY" and self._bal(a, info["quoteAsset"])[0] + 1e-9 < qty * float(p.get("abovePrice") or p.get("belowPrice") or 0):
            raise BinanceError(-2010, "Account has insufficient balance for requested action.")
        list_id = self._id(a)
        legs = []
        for leg in ("above", "below"):
            o = self._spot_order(a, {**p, "price": None, "stopPrice": None, "timeInForce": None}, symbol, p[leg + "Type"].upper(),
                                 list_id=list_id, cid=p.get(leg + "ClientOrderId"), price=p.get(leg + "Price"),
                                 stop=p.get(leg + "StopPrice"), tif=p.get(leg + "TimeInForce"))
            legs.append(o)
        a["spot"]["orders"].extend(legs)
        # one quantity locked for the list (sell: base; buy: quote at the higher price)
        if side == "SELL":
            b = self._bal(a, info["baseAsset"])
            b[0] -= qty
            b[1] += qty
        lst = {"orderListId": list_id, "contingencyType": "OCO", "listStatusType": "EXEC_STARTED",
               "listOrderStatus": "EXECUTING", "listClientOrderId": p.get("listClientOrderId") or f"list-{list_id}",
               "transactionTime": self.now_ms(), "symbol": symbol,
               "orders": [{"symbol": symbol, "orderId": o["orderId"], "clientOrderId": o["clientOrderId"]} for o in legs]}
        a["spot"]["lists"].append(lst)
        self._match_spot(a, symbol)
        return {**lst, "orderReports": legs}

    def _spot_find(self, a: dict, p: dict) -> dict:
        cid, oid = p.get("origClientOrderId"), p.get("orderId")
        cands = [o for o in a["spot"]["orders"] if o["symbol"] == p.get("symbol") and (
            (cid is not None and o["clientOrderId"] == cid) or (oid is not None and str(o["orderId"]) == str(oid)))]
        if not cands:
            raise not_found()
        return cands[-1]  # the newest order under a reused client order id, as Binance answers

    def spot_cancel(self, a: dict, p: dict) -> dict:
        try:
            o = self._spot_find(a, p)
        except BinanceError:
            raise unknown_cancel() from None
        if o["status"] not in OPEN:
            raise unknown_cancel()
        if o["orderListId"] != -1:
            siblings = [x for x in a["spot"]["orders"] if x["orderListId"] == o["orderListId"] and x["status"] in OPEN]
            self._end_list(a, o["orderListId"], "CANCELED", unlock=True)
            return {**o, "status": "CANCELED", "siblings": [s["clientOrderId"] for s in siblings]}
        self._unlock_spot(a, o)
        o["status"] = "CANCELED"
        o["updateTime"] = self.now_ms()
        return o

    def _end_list(self, a: dict, list_id: int, status: str, unlock: bool) -> None:
        lst = next(x for x in a["spot"]["lists"] if x["orderListId"] == list_id)
        legs = [x for x in a["spot"]["orders"] if x["orderListId"] == list_id]
        open_legs = [x for x in legs if x["status"] in OPEN]
        if unlock and open_legs:  # the list's one locked quantity
            info = self._spot_info(legs[0]["symbol"])
            rest = float(legs[0]["origQty"]) - sum(float(x["executedQty"]) for x in legs)
            if legs[0]["side"] == "SELL":
                b = self._bal(a, info["baseAsset"])
                b[1] -= rest
                b[0] += rest
        for x in open_legs:
            x["status"] = status
            x["updateTime"] = self.now_ms()
        lst["listOrderStatus"], lst["listStatusType"] = "ALL_DONE", "ALL_DONE"

    def _match_spot(self, a: dict, symbol: str) -> None:
        try:
            px = self.price(symbol)
        except BinanceError:
            return
        for o in list(a["spot"]["orders"]):
            if o["symbol"] != symbol or o["status"] not in OPEN:
                continue
            t, side = o["type"], o["side"]
            stop, limit = float(o["stopPrice"] or 0), float(o["price"] or 0)
            fill_px = None
            if t in ("LIMIT", "LIMIT_MAKER"):
                if side == "SELL" and px >= limit:
                    fill_px = max(limit, px) if t == "LIMIT" else limit
                elif side == "BUY" and px <= limit:
                    fill_px = min(limit, px) if t == "LIMIT" else limit
            elif t in ("STOP_LOSS", "STOP_LOSS_LIMIT"):
                hit = px <= stop if side == "SELL" else px >= stop
                if hit:
                    if t == "STOP_LOSS" or (side == "SELL" and px >= limit) or (side == "BUY" and px <= limit):
                        fill_px = px
                    else:  # triggered, rests as a limit
                        o["type"], o["isWorking"] = "LIMIT", True
            elif t in ("TAKE_PROFIT", "TAKE_PROFIT_LIMIT"):
                hit = px >= stop if side == "SELL" else px <= stop
                if hit:
                    fill_px = px
            if fill_px is None:
                continue
            if o["orderListId"] != -1:
                # the list's quantity is locked once: fill this leg against it, expire the others
                rest = float(o["origQty"]) - float(o["executedQty"])
                self._spot_fill(a, o, rest, fill_px, locked=True)
                for x in a["spot"]["orders"]:
                    if x["orderListId"] == o["orderListId"] and x is not o and x["status"] in OPEN:
                        x["status"], x["updateTime"] = "EXPIRED", self.now_ms()
                lst = next(x for x in a["spot"]["lists"] if x["orderListId"] == o["orderListId"])
                lst["listOrderStatus"], lst["listStatusType"] = "ALL_DONE", "ALL_DONE"
            else:
                rest = float(o["origQty"]) - float(o["executedQty"])
                self._spot_fill(a, o, rest, fill_px, locked=True)

    def spot_account(self, a: dict) -> dict:
        return {"makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
                "commissionRates": {"maker": "0.00100000", "taker": "0.00100000", "buyer": "0.00000000", "seller": "0.00000000"},
                "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
                "requireSelfTradePrevention": False, "preventSor": False, "updateTime": self.now_ms(), "accountType": "SPOT",
                "balances": [{"asset": k, "free": fmt(max(v[0], 0.0)), "locked": fmt(max(v[1], 0.0))}
                             for k, v in sorted(a["spot"]["balances"].items())],
                "permissions": ["SPOT"], "uid": 354937868}

    # ------------------------------------------------------------------ futures
    def _fut_info(self, symbol: str) -> dict:
        info = self.fut_symbols.get(symbol)
        if info is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return info

    def _pos(self, a: dict, symbol: str) -> dict:
        return a["fut"]["positions"].setdefault(symbol, {"amt": 0.0, "entry": 0.0, "update": 0, "realized": 0.0})

    def _lev(self, a: dict, symbol: str) -> int:
        return int(a["fut"]["leverage"].get(symbol, 20))

    def _fut_used_margin(self, a: dict) -> float:
        used = 0.0
        for sym, pos in a["fut"]["positions"].items():
            if pos["amt"]:
                used += abs(pos["amt"]) * pos["entry"] / self._lev(a, sym)
        return used

    def _fut_available(self, a: dict) -> float:
        return a["fut"]["wallet"] + self._fut_unrealized(a) - self._fut_used_margin(a)

    def _fut_unrealized(self, a: dict) -> float:
        u = 0.0
        for sym, pos in a["fut"]["positions"].items():
            if pos["amt"]:
                try:
                    u += pos["amt"] * (self.price(sym) - pos["entry"])
                except BinanceError:
                    pass
        return u

    def _fut_fill(self, a: dict, o: dict, qty: float, px: float) -> None:
        pos = self._pos(a, o["symbol"])
        signed = qty if o["side"] == "BUY" else -qty
        old = pos["amt"]
        if old == 0 or (old > 0) == (signed > 0):  # open / add
            new = old + signed
            pos["entry"] = (abs(old) * pos["entry"] + qty * px) / abs(new)
            pos["amt"] = new
            realized = 0.0
        else:  # reduce / close (one-way: flip not allowed here beyond the position for reduce-only)
            close = min(qty, abs(old))
            realized = close * (px - pos["entry"]) * (1 if old > 0 else -1)
            rest = qty - close
            pos["amt"] = old + (close if old < 0 else -close)
            if abs(pos["amt"]) < 1e-12:
                pos["amt"], pos["entry"] = 0.0, 0.0
            if rest > 1e-12:
                pos["amt"] = rest if signed > 0 else -rest
                pos["entry"] = px
        fee = qty * px * FUT_FEE
        a["fut"]["wallet"] += realized - fee
        pos["realized"] += realized
        pos["amt"] = round(pos["amt"], 10)
        pos["update"] = self.now_ms()
        executed = float(o["executedQty"]) + qty
        cum = float(o["cumQuote"]) + qty * px
        o["executedQty"], o["cumQuote"] = fmt(executed, 3), fmt(cum, 5)
        o["avgPrice"] = fmt(cum / executed, 5) if executed else "0"
        o["status"] = "FILLED" if executed >= float(o["origQty"]) - 1e-12 else "PARTIALLY_FILLED"
        o["updateTime"] = self.now_ms()
        a["fut"]["trades"].append({"symbol": o["symbol"], "id": self._id(a), "orderId": o["orderId"], "side": o["side"],
                                   "price": fmt(px, 2), "qty": fmt(qty, 3), "realizedPnl": fmt(realized), "quoteQty": fmt(qty * px),
                                   "commission": fmt(fee), "commissionAsset": "USDT", "time": self.now_ms(),
                                   "positionSide": "BOTH", "buyer": o["side"] == "BUY", "maker": False, "marginAsset": "USDT"})

    def _fut_order(self, a: dict, p: dict, otype: str, cid: str | None = None) -> dict:
        now = self.now_ms()
        return {"orderId": self._id(a), "symbol": p["symbol"], "status": "NEW",
                "clientOrderId": cid or p.get("newClientOrderId") or f"standin-{a['next_id']}",
                "price": p.get("price") or "0.00", "avgPrice": "0.00", "origQty": p["quantity"], "executedQty": "0.000",
                "cumQty": "0.000", "cumQuote": "0.00000", "timeInForce": p.get("timeInForce") or "GTC", "type": otype,
                "reduceOnly": str(p.get("reduceOnly")).lower() == "true", "closePosition": False, "side": p["side"].upper(),
                "positionSide": "BOTH", "stopPrice": "0.00", "workingType": "CONTRACT_PRICE", "priceProtect": False,
                "origType": otype, "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0,
                "time": now, "updateTime": now}

    def fut_new_order(self, a: dict, p: dict, cid: str | None = None) -> dict:
        symbol = p["symbol"]
        self._fut_info(symbol)
        otype, side = p["type"].upper(), p["side"].upper()
        if otype not in ("MARKET", "LIMIT"):
            raise BinanceError(-4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.")
        cid = cid or p.get("newClientOrderId")
        if cid and any(o["clientOrderId"] == cid and o["status"] in OPEN for o in a["fut"]["orders"]):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        px = self.price(symbol)
        qty = float(p["quantity"])
        reduce = str(p.get("reduceOnly")).lower() == "true"
        pos = self._pos(a, symbol)
        if reduce:
            closing = (pos["amt"] > 0 and side == "SELL") or (pos["amt"] < 0 and side == "BUY")
            if not closing:
                raise BinanceError(-2022, "ReduceOnly Order is rejected.")
            qty = min(qty, abs(pos["amt"]))
        else:
            adds = pos["amt"] == 0 or (pos["amt"] > 0) == (side == "BUY")
            if adds and qty * px / self._lev(a, symbol) > self._fut_available(a) + 1e-9:
                raise BinanceError(-2019, "Margin is insufficient.")
        o = self._fut_order(a, p, otype, cid)
        a["fut"]["orders"].append(o)
        limit = float(p["price"]) if p.get("price") else None
        marketable = otype == "MARKET" or (side == "BUY" and px <= limit) or (side == "SELL" and px >= limit)
        if marketable:
            fill_px = px if otype == "MARKET" else (min(limit, px) if side == "BUY" else max(limit, px))
            info = self._fut_info(symbol)
            fq = float(self._quantize(qty * self._fill_fraction(a), info))
            if fq > 0:
                self._fut_fill(a, o, fq, fill_px)
            if o["status"] != "FILLED" and (otype == "MARKET" or o["timeInForce"] in ("IOC", "FOK")):
                o["status"] = "EXPIRED"
        elif o["timeInForce"] in ("IOC", "FOK"):
            o["status"] = "EXPIRED"
        return o

    def fut_algo(self, a: dict, p: dict) -> dict:
        symbol = p["symbol"]
        self._fut_info(symbol)
        cid = p.get("clientAlgoId") or f"standin-algo-{a['next_id'] + 1}"
        if any(o["clientAlgoId"] == cid and o["algoStatus"] == "NEW" for o in a["fut"]["algo"]):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        otype = p["type"].upper()
        if otype not in ("STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"):
            raise BinanceError(-1116, "Invalid orderType.")
        now = self.now_ms()
        o = {"algoId": self._id(a), "clientAlgoId": cid, "algoType": p.get("algoType", "CONDITIONAL"), "orderType": otype,
             "symbol": symbol, "side": p["side"].upper(), "positionSide": "BOTH", "timeInForce": p.get("timeInForce", "GTC"),
             "quantity": p.get("quantity", "0"), "algoStatus": "NEW", "triggerPrice": p.get("triggerPrice", "0"),
             "price": p.get("price", "0.00"), "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_MAKER",
             "workingType": p.get("workingType", "CONTRACT_PRICE"), "priceMatch": "NONE",
             "closePosition": str(p.get("closePosition")).lower() == "true", "priceProtect": False,
             "reduceOnly": str(p.get("reduceOnly")).lower() == "true", "createTime": now, "updateTime": now,
             "triggerTime": 0, "goodTillDate": 0, "actualOrderId": ""}
        a["fut"]["algo"].append(o)
        self._match_fut(a, symbol)
        return o

    def _match_fut(self, a: dict, symbol: str) -> None:
        try:
            px = self.price(symbol)
        except BinanceError:
            return
        for o in list(a["fut"]["algo"]):
            if o["symbol"] != symbol or o["algoStatus"] != "NEW":
                continue
            trig, side, t = float(o["triggerPrice"]), o["side"], o["orderType"]
            if t in ("STOP_MARKET", "STOP"):
                hit = px <= trig if side == "SELL" else px >= trig
            elif t in ("TAKE_PROFIT_MARKET", "TAKE_PROFIT"):
                hit = px >= trig if side == "SELL" else px <= trig
            else:
                hit = False
            if not hit:
                continue
            o["algoStatus"], o["triggerTime"], o["updateTime"] = "FINISHED", self.now_ms(), self.now_ms()
            pos = self._pos(a, symbol)
            qty = abs(pos["amt"]) if o["closePosition"] else float(o["quantity"])
            try:  # the triggered order: reduce-only MARKET (rejected with no position behind it)
                child = self.fut_new_order(a, {"symbol": symbol, "side": side, "type": "MARKET", "quantity": fmt(qty, 3),
                                               "reduceOnly": "true" if o["reduceOnly"] or o["closePosition"] else "false"},
                                           cid=f"{o['clientAlgoId'][:28]}-trg")
                o["actualOrderId"] = str(child["orderId"])
            except BinanceError:
                o["algoStatus"] = "REJECTED"
            # NOT one-cancels-other: the sibling keeps resting (Binance's Algo Service)
        for o in list(a["fut"]["orders"]):
            if o["symbol"] != symbol or o["status"] not in OPEN or o["type"] != "LIMIT":
                continue
            limit = float(o["price"])
            if (o["side"] == "BUY" and px <= limit) or (o["side"] == "SELL" and px >= limit):
                self._fut_fill(a, o, float(o["origQty"]) - float(o["executedQty"]), limit)

    def _fut_find(self, a: dict, p: dict) -> dict:
        cid, oid = p.get("origClientOrderId"), p.get("orderId")
        c = [o for o in a["fut"]["orders"] if o["symbol"] == p.get("symbol") and (
            (cid is not None and o["clientOrderId"] == cid) or (oid is not None and str(o["orderId"]) == str(oid)))]
        if not c:
            raise not_found()
        return c[-1]

    def _algo_find(self, a: dict, p: dict) -> dict:
        cid, aid = p.get("clientAlgoId"), p.get("algoId")
        c = [o for o in a["fut"]["algo"] if (cid is not None and o["clientAlgoId"] == cid) or
             (aid is not None and str(o["algoId"]) == str(aid))]
        if not c:
            raise not_found()
        return c[-1]

    def position_risk(self, a: dict, symbol: str | None, v3: bool) -> list[dict]:
        out = []
        for sym, pos in sorted(a["fut"]["positions"].items()):
            if (symbol and sym != symbol) or (v3 and not pos["amt"]):
                continue
            try:
                mark = self.price(sym)
            except BinanceError:
                mark = pos["entry"]
            amt, lev = pos["amt"], self._lev(a, sym)
            notional = amt * mark
            im = abs(amt) * pos["entry"] / lev
            iso = a["fut"]["margin_type"].get(sym, "isolated") == "isolated"
            liq = (pos["entry"] * (1 - 1 / lev) if amt > 0 else pos["entry"] * (1 + 1 / lev)) if amt else 0.0
            row = {"symbol": sym, "positionSide": "BOTH", "positionAmt": fmt(amt, 3), "entryPrice": fmt(pos["entry"], 8),
                   "breakEvenPrice": fmt(pos["entry"], 8), "markPrice": fmt(mark, 8),
                   "unRealizedProfit": fmt(amt * (mark - pos["entry"]), 8), "liquidationPrice": fmt(liq, 8),
                   "isolatedMargin": fmt(im if iso else 0.0, 8), "notional": fmt(notional, 8), "marginAsset": "USDT",
                   "isolatedWallet": fmt(im if iso else 0.0, 8), "initialMargin": fmt(im, 8), "maintMargin": fmt(abs(notional) * 0.004, 8),
                   "positionInitialMargin": fmt(im, 8), "openOrderInitialMargin": "0", "adl": 0, "bidNotional": "0",
                   "askNotional": "0", "updateTime": pos["update"]}
            if not v3:
                row |= {"leverage": str(lev), "marginType": "isolated" if iso else "cross", "isAutoAddMargin": "false",
                        "maxNotionalValue": "5000000"}
            out.append(row)
        return out

    def fut_account(self, a: dict) -> dict:
        wallet, unreal, used = a["fut"]["wallet"], self._fut_unrealized(a), self._fut_used_margin(a)
        avail = wallet + unreal - used
        asset = {"asset": "USDT", "walletBalance": fmt(wallet), "unrealizedProfit": fmt(unreal),
                 "marginBalance": fmt(wallet + unreal), "maintMargin": "0.00000000", "initialMargin": fmt(used),
                 "positionInitialMargin": fmt(used), "openOrderInitialMargin": "0.00000000", "crossWalletBalance": fmt(wallet),
                 "crossUnPnl": fmt(unreal), "availableBalance": fmt(avail), "maxWithdrawAmount": fmt(avail),
                 "updateTime": self.now_ms()}
        return {"totalInitialMargin": fmt(used), "totalMaintMargin": "0.00000000", "totalWalletBalance": fmt(wallet),
                "totalUnrealizedProfit": fmt(unreal), "totalMarginBalance": fmt(wallet + unreal),
                "totalPositionInitialMargin": fmt(used), "totalOpenOrderInitialMargin": "0.00000000",
                "totalCrossWalletBalance": fmt(wallet), "totalCrossUnPnl": fmt(unreal), "availableBalance": fmt(avail),
                "maxWithdrawAmount": fmt(avail), "assets": [asset],
                "positions": [{"symbol": r["symbol"], "positionSide": "BOTH", "positionAmt": r["positionAmt"],
                               "unrealizedProfit": r["unRealizedProfit"], "isolatedMargin": r["isolatedMargin"],
                               "notional": r["notional"], "isolatedWallet": r["isolatedWallet"],
                               "initialMargin": r["initialMargin"], "maintMargin": r["maintMargin"],
                               "updateTime": r["updateTime"]} for r in self.position_risk(a, None, True)]}

    # ------------------------------------------------------------------ controls
    def set_price(self, symbol: str, price: float, only: str | None = None) -> None:
        self.g["prices"][symbol] = float(price)
        self.save_global()
        accts = [only] if only else [p.name[5:] for p in self.dir.glob("acct-*") if p.is_dir()]
        for acct in accts:
            a = self.account(acct)
            if symbol in self.spot_symbols:
                self._match_spot(a, symbol)
            if symbol in self.fut_symbols:
                self._match_fut(a, symbol)
            self.save(acct)


# ---------------------------------------------------------------------------------------------- HTTP
def _bool(v) -> bool:
    return str(v).lower() == "true"


class Handler(BaseHTTPRequestHandler):
    server_version = "BinanceStandin/1.0"
    protocol_version = "HTTP/1.1"
    ex: Exchange  # set on the class by serve()

    def log_message(self, fmt_, *args):  # quiet; never log the request line (it carries signatures)
        pass

    # ------------------------------------------------------------------ plumbing
    def _params(self) -> tuple[str, dict]:
        parts = urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode() if n else ""
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if body:
            if body.lstrip().startswith("{"):
                params |= {k: (str(v) if not isinstance(v, str) else v) for k, v in json.loads(body).items()}
            else:
                params |= dict(parse_qsl(body, keep_blank_values=True))
        return parts.path, params

    def _send(self, status: int, body, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed while we held its answer

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PUT(self):
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        path, p = self._params()
        ex = self.ex
        if path.startswith("/_control/"):
            try:
                status, body = self._control(method, path, p)
            except Exception as e:  # noqa: BLE001 - a bad control call is the test's bug: say so
                status, body = 400, {"error": repr(e)}
            self._send(status, body)
            return
        key = self.headers.get("X-MBX-APIKEY")
        acct = account_id(key) if key else None
        hold = None
        with ex.lock:
            status, body, headers = 200, None, {}
            try:
                route = getattr(self, "h_" + method + path.replace("/", "_"), None)
                if route is None:
                    raise BinanceError(-1000, f"stand-in: no route {method} {path}", status=404)
                public = getattr(route, "public", False)
                if not public and acct is None:
                    raise BinanceError(-2014, "API-key format invalid.", status=401)
                a = ex.account(acct) if acct else None
                if a is not None:
                    self._injected(a, path)
                body = route(a, p)
            except BinanceError as e:
                status, body, headers = e.status, {"code": e.code, "msg": e.msg}, e.headers
            except KeyError as e:
                status, body = 400, {"code": -1102, "msg": f"Mandatory parameter {e.args[0]!r} was not sent, was empty/null, or malformed."}
            if acct is not None and method in ("POST", "DELETE", "PUT"):
                a = ex.account(acct)
                if status == 200 and method == "POST" and path in ORDER_POSTS:
                    a["order_posts"] += 1
                    h = a.get("hold")
                    if h and (not h.get("path") or h["path"] == path):
                        h["seen"] += 1
                        if h["seen"] == h["nth"]:
                            hold, a["hold"] = h, None
                ex.save(acct)
                ex.record_post(acct, method, path, p, status, body)
                if hold is not None:
                    marker = ex.acct_dir(acct) / f"accepted-{hold['nth']}"
                    marker.write_text(json.dumps({"path": path, "t": time.time()}))
        if hold is not None:
            time.sleep(float(hold["seconds"]))
        self._send(status, body, headers)

    def _injected(self, a: dict, path: str) -> None:
        for inj in list(a["inject"]):
            if inj.get("path") and inj["path"] != path:
                continue
            inj["count"] -= 1
            if inj["count"] <= 0:
                a["inject"].remove(inj)
            if inj["kind"] == "-1021":
                raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
            if inj["kind"] == "429":
                raise BinanceError(-1003, "Too many requests; current limit of IP is 6000 requests per minute.",
                                   status=429, headers={"Retry-After": str(inj.get("retry_after", 1))})

    def _control(self, method: str, path: str, p: dict):
        ex = self.ex
        with ex.lock:
            if path == "/_control/health":
                return 200, {"ok": True, "pid": os.getpid()}
            if path == "/_control/price":
                ex.set_price(p["symbol"], float(p["price"]), p.get("account"))
                return 200, {"ok": True}
            if path == "/_control/clock":
                ex.g["clock"] = {"now_ms": int(p["now_ms"]), "set_at": time.time() * 1000}
                ex.save_global()
                return 200, {"ok": True, "now_ms": ex.now_ms()}
            acct = p["account"]
            a = ex.account(acct)
            if path == "/_control/state":
                return 200, a
            if path == "/_control/partial":
                a["partial"] = float(p["fraction"])
            elif path == "/_control/balance":
                if "asset" in p:
                    ex._bal(a, p["asset"])[0] = float(p["free"])
                if "wallet" in p:
                    a["fut"]["wallet"] = float(p["wallet"])
            elif path == "/_control/inject":
                a["inject"].append({"kind": str(p["kind"]), "count": int(p.get("count", 1)), "path": p.get("path"),
                                    "retry_after": int(p.get("retry_after", 1))})
            elif path == "/_control/hold":
                a["hold"] = {"nth": int(p["nth"]), "seconds": float(p.get("seconds", 30)), "path": p.get("path"), "seen": 0}
            else:
                return 404, {"error": f"no control {path}"}
            ex.save(acct)
            return 200, {"ok": True}

    # ------------------------------------------------------------------ public
    def _ticker(self, sym: str, fut: bool) -> dict:
        px = self.ex.price(sym)
        now = self.ex.now_ms()
        t = {"symbol": sym, "priceChange": "0", "priceChangePercent": "0", "weightedAvgPrice": fmt(px), "lastPrice": fmt(px),
             "lastQty": "0.1", "openPrice": fmt(px), "highPrice": fmt(px), "lowPrice": fmt(px), "volume": "1000",
             "quoteVolume": fmt(1000 * px), "openTime": now - 86_400_000, "closeTime": now, "firstId": 1, "lastId": 2, "count": 2}
        if not fut:
            t |= {"prevClosePrice": fmt(px), "bidPrice": fmt(px), "bidQty": "1", "askPrice": fmt(px), "askQty": "1"}
        return t

    def h_GET_api_v3_ping(self, a, p):
        return {}

    def h_GET_api_v3_time(self, a, p):
        return {"serverTime": self.ex.now_ms()}

    def h_GET_api_v3_exchangeInfo(self, a, p):
        return {"timezone": "UTC", "serverTime": self.ex.now_ms(), "rateLimits": [], "exchangeFilters": [],
                "symbols": self.ex.spot_info}

    def h_GET_api_v3_ticker_24hr(self, a, p):
        if p.get("symbol"):
            return self._ticker(p["symbol"], False)
        return [self._ticker(s, False) for s in self.ex.spot_symbols if s in self.ex.g["prices"]]

    def h_GET_api_v3_ticker_price(self, a, p):
        if p.get("symbol"):
            return {"symbol": p["symbol"], "price": fmt(self.ex.price(p["symbol"]))}
        return [{"symbol": s, "price": fmt(v)} for s, v in self.ex.g["prices"].items() if s in self.ex.spot_symbols]

    def h_GET_fapi_v1_ping(self, a, p):
        return {}

    def h_GET_fapi_v1_time(self, a, p):
        return {"serverTime": self.ex.now_ms()}

    def h_GET_fapi_v1_exchangeInfo(self, a, p):
        return {"timezone": "UTC", "serverTime": self.ex.now_ms(), "futuresType": "U_MARGINED", "rateLimits": [],
                "exchangeFilters": [], "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
                "symbols": self.ex.fut_info}

    def h_GET_fapi_v1_ticker_24hr(self, a, p):
        if p.get("symbol"):
            return self._ticker(p["symbol"], True)
        return [self._ticker(s, True) for s in self.ex.fut_symbols if s in self.ex.g["prices"]]

    def h_GET_fapi_v1_ticker_price(self, a, p):
        return {"symbol": p["symbol"], "price": fmt(self.ex.price(p["symbol"])), "time": self.ex.now_ms()}

    def h_GET_fapi_v1_premiumIndex(self, a, p):
        def row(s):
            px = self.ex.price(s)
            nxt = (self.ex.now_ms() // 28_800_000 + 1) * 28_800_000
            return {"symbol": s, "markPrice": fmt(px), "indexPrice": fmt(px), "estimatedSettlePrice": fmt(px),
                    "lastFundingRate": "0.00010000", "interestRate": "0.00010000", "nextFundingTime": nxt,
                    "time": self.ex.now_ms()}
        if p.get("symbol"):
            return row(p["symbol"])
        return [row(s) for s in self.ex.fut_symbols if s in self.ex.g["prices"]]

    for _n in ("h_GET_api_v3_ping", "h_GET_api_v3_time", "h_GET_api_v3_exchangeInfo", "h_GET_api_v3_ticker_24hr",
               "h_GET_api_v3_ticker_price", "h_GET_fapi_v1_ping", "h_GET_fapi_v1_time", "h_GET_fapi_v1_exchangeInfo",
               "h_GET_fapi_v1_ticker_24hr", "h_GET_fapi_v1_ticker_price", "h_GET_fapi_v1_premiumIndex"):
        locals()[_n].public = True
    del _n

    # ------------------------------------------------------------------ spot private
    def h_POST_api_v3_order(self, a, p):
        return self.ex.spot_new_order(a, p)

    def h_GET_api_v3_order(self, a, p):
        return self.ex._spot_find(a, p)

    def h_DELETE_api_v3_order(self, a, p):
        o = self.ex.spot_cancel(a, p)
        return {k: v for k, v in o.items() if k != "siblings"}

    def h_GET_api_v3_openOrders(self, a, p):
        return [o for o in a["spot"]["orders"] if o["status"] in OPEN and p.get("symbol") in (None, o["symbol"])]

    def h_GET_api_v3_allOrders(self, a, p):
        out = [o for o in a["spot"]["orders"] if o["symbol"] == p["symbol"]
               and int(p.get("startTime", 0)) <= o["time"] <= int(p.get("endTime", 2**62))
               and o["orderId"] >= int(p.get("orderId", 0))]
        return out[: int(p.get("limit", 500))]

    def h_POST_api_v3_orderList_oco(self, a, p):
        return self.ex.spot_oco(a, p)

    def h_GET_api_v3_openOrderList(self, a, p):
        return [x for x in a["spot"]["lists"] if x["listOrderStatus"] == "EXECUTING"]

    def h_GET_api_v3_orderList(self, a, p):
        for x in a["spot"]["lists"]:
            if str(x["orderListId"]) == p.get("orderListId") or x["listClientOrderId"] == p.get("origClientOrderId"):
                return x
        raise not_found()

    def h_DELETE_api_v3_orderList(self, a, p):
        for x in a["spot"]["lists"]:
            if (str(x["orderListId"]) == p.get("orderListId") or x["listClientOrderId"] == p.get("listClientOrderId")) \
                    and x["listOrderStatus"] == "EXECUTING":
                self.ex._end_list(a, x["orderListId"], "CANCELED", unlock=True)
                return x
        raise unknown_cancel()

    def h_GET_sapi_v1_margin_allPairs(self, a, p):  # ccxt's fetchMarkets asks unless options.fetchMargins is False
        return []

    h_GET_sapi_v1_margin_isolated_allPairs = h_GET_sapi_v1_margin_allPairs

    def h_GET_api_v3_account(self, a, p):
        return self.ex.spot_account(a)

    def h_GET_api_v3_myTrades(self, a, p):
        out = [t for t in a["spot"]["trades"] if t["symbol"] == p["symbol"]
               and int(p.get("startTime", 0)) <= t["time"] <= int(p.get("endTime", 2**62))
               and t["id"] >= int(p.get("fromId", 0)) and (not p.get("orderId") or str(t["orderId"]) == p["orderId"])]
        return out[-int(p.get("limit", 500)):] if "startTime" not in p and "fromId" not in p else out[: int(p.get("limit", 500))]

    # ------------------------------------------------------------------ futures private
    def h_POST_fapi_v1_order(self, a, p):
        return self.ex.fut_new_order(a, p)

    def h_GET_fapi_v1_order(self, a, p):
        return self.ex._fut_find(a, p)

    def h_DELETE_fapi_v1_order(self, a, p):
        try:
            o = self.ex._fut_find(a, p)
        except BinanceError:
            raise unknown_cancel() from None
        if o["status"] not in OPEN:
            raise unknown_cancel()
        o["status"], o["updateTime"] = "CANCELED", self.ex.now_ms()
        return o

    def h_GET_fapi_v1_openOrders(self, a, p):
        return [o for o in a["fut"]["orders"] if o["status"] in OPEN and p.get("symbol") in (None, o["symbol"])]

    def h_GET_fapi_v1_allOrders(self, a, p):
        out = [o for o in a["fut"]["orders"] if o["symbol"] == p["symbol"]
               and int(p.get("startTime", 0)) <= o["time"] <= int(p.get("endTime", 2**62))]
        return out[: int(p.get("limit", 500))]

    def h_POST_fapi_v1_algoOrder(self, a, p):
        return self.ex.fut_algo(a, p)

    def h_GET_fapi_v1_algoOrder(self, a, p):
        return self.ex._algo_find(a, p)

    def h_DELETE_fapi_v1_algoOrder(self, a, p):
        try:
            o = self.ex._algo_find(a, p)
        except BinanceError:
            raise unknown_cancel() from None
        if o["algoStatus"] != "NEW":
            raise unknown_cancel()
        o["algoStatus"], o["updateTime"] = "CANCELED", self.ex.now_ms()
        return {"algoId": o["algoId"], "clientAlgoId": o["clientAlgoId"], "code": "200", "msg": "success"}

    def h_GET_fapi_v1_openAlgoOrders(self, a, p):
        return [o for o in a["fut"]["algo"] if o["algoStatus"] == "NEW" and p.get("symbol") in (None, o["symbol"])]

    def h_GET_fapi_v1_allAlgoOrders(self, a, p):
        return [o for o in a["fut"]["algo"] if o["symbol"] == p["symbol"]
                and int(p.get("startTime", 0)) <= o["createTime"] <= int(p.get("endTime", 2**62))][: int(p.get("limit", 500))]

    def h_GET_fapi_v2_positionRisk(self, a, p):
        return self.ex.position_risk(a, p.get("symbol"), False)

    def h_GET_fapi_v3_positionRisk(self, a, p):
        return self.ex.position_risk(a, p.get("symbol"), True)

    def h_GET_fapi_v2_account(self, a, p):
        return self.ex.fut_account(a)

    def h_GET_fapi_v3_account(self, a, p):
        return self.ex.fut_account(a)

    def h_GET_fapi_v2_balance(self, a, p):
        acc = self.ex.fut_account(a)["assets"][0]
        return [{"accountAlias": "SgsR", "asset": "USDT", "balance": acc["walletBalance"],
                 "crossWalletBalance": acc["crossWalletBalance"], "crossUnPnl": acc["crossUnPnl"],
                 "availableBalance": acc["availableBalance"], "maxWithdrawAmount": acc["maxWithdrawAmount"],
                 "marginAvailable": True, "updateTime": acc["updateTime"]}]

    h_GET_fapi_v3_balance = h_GET_fapi_v2_balance

    def h_GET_fapi_v1_userTrades(self, a, p):
        out = [t for t in a["fut"]["trades"] if t["symbol"] == p["symbol"]
               and int(p.get("startTime", 0)) <= t["time"] <= int(p.get("endTime", 2**62))]
        return out[: int(p.get("limit", 500))]

    def h_POST_fapi_v1_leverage(self, a, p):
        lev = int(p["leverage"])
        if not 1 <= lev <= 125:
            raise BinanceError(-4028, "Leverage is not valid.")
        a["fut"]["leverage"][p["symbol"]] = lev
        return {"leverage": lev, "maxNotionalValue": "50000000", "symbol": p["symbol"]}

    def h_POST_fapi_v1_marginType(self, a, p):
        want = p["marginType"].lower().replace("crossed", "cross")
        if a["fut"]["margin_type"].get(p["symbol"], "cross") == want:
            raise BinanceError(-4046, "No need to change margin type.")
        a["fut"]["margin_type"][p["symbol"]] = want
        return {"code": 200, "msg": "success"}

    def h_POST_fapi_v1_positionSide_dual(self, a, p):
        want = _bool(p["dualSidePosition"])
        if a["fut"]["dual"] == want:
            raise BinanceError(-4059, "No need to change position side.")
        a["fut"]["dual"] = want
        return {"code": 200, "msg": "success"}

    def h_GET_fapi_v1_positionSide_dual(self, a, p):
        return {"dualSidePosition": a["fut"]["dual"]}

    def h_GET_fapi_v1_leverageBracket(self, a, p):
        syms = [p["symbol"]] if p.get("symbol") else list(self.ex.fut_symbols)
        return [{"symbol": s, "notionalCoef": 1.0, "brackets": [
            {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0.0},
            {"bracket": 2, "initialLeverage": 100, "notionalCap": 250000, "notionalFloor": 50000, "maintMarginRatio": 0.005,
             "cum": 50.0}]} for s in syms]

    def h_GET_fapi_v1_symbolConfig(self, a, p):
        return [{"symbol": s, "marginType": a["fut"]["margin_type"].get(s, "cross").upper().replace("CROSS", "CROSSED"),
                 "isAutoAddMargin": False, "leverage": self._lev_of(a, s), "maxNotionalValue": "5000000"}
                for s in ([p["symbol"]] if p.get("symbol") else self.ex.fut_symbols)]

    def _lev_of(self, a, s):
        return int(a["fut"]["leverage"].get(s, 20))


def serve(port: int, state_dir: Path) -> ThreadingHTTPServer:
    Handler.ex = Exchange(state_dir)
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True
    return httpd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--state", required=True, type=Path)
    args = ap.parse_args(argv)
    httpd = serve(args.port, args.state)
    print(f"binance stand-in on http://127.0.0.1:{args.port} state {args.state}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------------------------------------- client side helpers
def ccxt_exchange(exchange_id: str, base_url: str, api_key: str, secret: str, **config):
    """A real ccxt ``binance``/``binanceusdm`` with every ``urls['api']`` entry (each key of its
    ``describe()['urls']['api']``) pointed at the stand-in, same path: ``https://fapi.binance.com/fapi/v1``
    → ``{base_url}/fapi/v1``."""
    import ccxt

    exchange = getattr(ccxt, exchange_id)({"apiKey": api_key, "secret": secret, **config})
    api = exchange.describe()["urls"]["api"]
    exchange.urls["api"] = {k: base_url.rstrip("/") + urlsplit(v).path for k, v in api.items() if isinstance(v, str)}
    return exchange


class StandIn:
    """The stand-in as a child process (tests/servers.py plumbing: own process group, free port,
    killed with the test process). ``control(name, **params)`` calls ``/_control/<name>``."""

    def __init__(self, state_dir: Path | None = None, timeout: float = 15.0):
        import tempfile
        import urllib.request

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import servers

        tmp = Path(tempfile.mkdtemp(prefix="binance-standin-"))
        self.state_dir = Path(state_dir) if state_dir else tmp / "state"
        self.port = servers.free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = servers._Server(tmpdir=tmp, log_path=tmp / "standin.log")
        self._server._spawn([sys.executable, str(Path(__file__).resolve()), "--port", str(self.port),
                             "--state", str(self.state_dir)], env=os.environ.copy())
        deadline = time.monotonic() + timeout
        while True:
            self._server._check_alive("binance stand-in")
            try:
                with urllib.request.urlopen(self.url + "/_control/health", timeout=1) as r:
                    self.pid = json.loads(r.read())["pid"]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise servers.ServerStartError(f"binance stand-in not up after {timeout}s")
                time.sleep(0.05)

    def control(self, name: str, **params):
        import urllib.error
        import urllib.request

        req = urllib.request.Request(f"{self.url}/_control/{name}", data=json.dumps(params).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"/_control/{name} {params}: {e.code} {e.read()[:500]!r}") from None

    def state(self, account: str) -> dict:
        return self.control("state", account=account)

    def posts(self, account: str) -> list[dict]:
        p = self.state_dir / f"acct-{account}" / "posts.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def acct_dir(self, account: str) -> Path:
        return self.state_dir / f"acct-{account}"

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
