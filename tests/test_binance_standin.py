"""The Binance stand-in (tests/binance_standin.py) answers the real ccxt clients: ``ccxt.binance``
(spot) and ``ccxt.binanceusdm`` (USDⓈ-M) with every ``urls['api']`` entry pointed at it. Nothing is
faked on the client side: ccxt builds, signs, sends over HTTP, maps errors and parses."""

from __future__ import annotations

import uuid

import ccxt
import pytest
from binance_standin import StandIn, account_id, ccxt_exchange

OPTIONS = {"fetchCurrencies": False, "fetchMargins": False, "warnOnFetchOpenOrdersWithoutSymbol": False}


@pytest.fixture(scope="module")
def standin():
    s = StandIn()
    try:
        s.control("price", symbol="BTCUSDT", price=68000)
        yield s
    finally:
        s.stop()


def client(standin, exchange_id: str):
    key = f"standin-test-{uuid.uuid4().hex}"
    types = ["spot"] if exchange_id == "binance" else ["linear"]
    ex = ccxt_exchange(exchange_id, standin.url, key, "test-secret", options={**OPTIONS, "fetchMarkets": {"types": types}})
    return ex, account_id(key)


def test_spot_markets_limit_ioc_fetch_by_client_id_and_oco(standin):
    ex, acct = client(standin, "binance")
    markets = ex.load_markets()
    assert markets["BTC/USDT"]["precision"]["amount"] == 0.00001 and markets["BTC/USDT"]["limits"]["cost"]["min"] == 5
    o = ex.create_order("BTC/USDT", "limit", "buy", 0.01, 68500, {"clientOrderId": "t1-en", "timeInForce": "IOC"})
    assert (o["status"], o["filled"], o["average"], o["clientOrderId"]) == ("closed", 0.01, 68000.0, "t1-en")
    found = ex.fetch_order(None, "BTC/USDT", {"clientOrderId": "t1-en"})
    assert found["id"] == o["id"] and found["status"] == "closed"
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(None, "BTC/USDT", {"clientOrderId": "never-sent"})
    bal = ex.fetch_balance()
    assert bal["BTC"]["total"] == pytest.approx(0.00999)  # 0.1 % commission in BTC
    r = ex.private_post_orderlist_oco({"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.00999", "listClientOrderId": "t1-oco",
                                       "aboveType": "LIMIT_MAKER", "abovePrice": "70000", "aboveClientOrderId": "t1-tp",
                                       "belowType": "STOP_LOSS", "belowStopPrice": "67000", "belowClientOrderId": "t1-sl"})
    assert r["listOrderStatus"] == "EXECUTING"
    assert sorted(o["clientOrderId"] for o in ex.fetch_open_orders("BTC/USDT")) == ["t1-sl", "t1-tp"]
    assert ex.fetch_balance()["BTC"]["used"] == pytest.approx(0.00999)
    standin.control("price", symbol="BTCUSDT", price=66900, account=acct)  # the stop triggers: OCO
    status = {o["clientOrderId"]: o["status"] for o in ex.fetch_orders("BTC/USDT", since=0)}
    assert status == {"t1-en": "closed", "t1-sl": "closed", "t1-tp": "expired"}
    assert ex.fetch_balance()["BTC"]["total"] == 0
    assert len(ex.fetch_my_trades("BTC/USDT")) == 2
    standin.control("price", symbol="BTCUSDT", price=68000, account=acct)
    with pytest.raises(ccxt.OrderNotFound):  # -2011 Unknown order sent.
        ex.cancel_order(None, "BTC/USDT", {"clientOrderId": "t1-sl"})
    posts = standin.posts(acct)
    assert [(p["path"], p["status"]) for p in posts] == [("/api/v3/order", 200), ("/api/v3/orderList/oco", 200),
                                                         ("/api/v3/order", 400)]
    assert all("signature" not in p["params"] and "timestamp" not in p["params"] for p in posts)
    assert "standin-test" not in (standin.acct_dir(acct) / "posts.jsonl").read_text()  # the API key is never recorded


def test_spot_partial_fill_ends_expired_and_insufficient_balance(standin):
    ex, acct = client(standin, "binance")
    standin.control("partial", account=acct, fraction=0.4)
    o = ex.create_order("BTC/USDT", "limit", "buy", 0.01, 68500, {"clientOrderId": "t2-en", "timeInForce": "IOC"})
    assert (o["status"], o["filled"]) == ("expired", 0.004)
    with pytest.raises(ccxt.InsufficientFunds, match="insufficient balance"):  # -2010
        ex.create_order("BTC/USDT", "limit", "buy", 1.0, 68500, {"clientOrderId": "t2-big", "timeInForce": "IOC"})
    [last] = standin.posts(acct)[-1:]
    assert (last["status"], last["code"]) == (400, -2010)


def test_spot_duplicate_client_id_only_while_open(standin):
    """Binance: client order ids are unique among open orders only; a reused id of a FILLED order
    makes a second order."""
    ex, acct = client(standin, "binance")
    ex.create_order("BTC/USDT", "limit", "buy", 0.001, 68500, {"clientOrderId": "t3-en", "timeInForce": "IOC"})
    ex.create_order("BTC/USDT", "limit", "buy", 0.001, 68500, {"clientOrderId": "t3-en", "timeInForce": "IOC"})
    assert len(ex.fetch_orders("BTC/USDT", since=0)) == 2
    ex.create_order("BTC/USDT", "limit", "buy", 0.001, 60000, {"clientOrderId": "t3-rest"})  # GTC, rests
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, 60000, {"clientOrderId": "t3-rest"})


def test_injected_clock_skew_and_rate_limit(standin):
    ex, acct = client(standin, "binance")
    standin.control("inject", account=acct, kind="-1021")
    with pytest.raises(ccxt.InvalidNonce):
        ex.fetch_balance()
    standin.control("inject", account=acct, kind="429")
    with pytest.raises(ccxt.DDoSProtection):
        ex.fetch_balance()
    assert ex.fetch_balance()["USDT"]["total"] == 10000


def test_usdm_markets_entry_algo_stops_and_no_oco(standin):
    f, acct = client(standin, "binanceusdm")
    f.load_markets()
    assert f.markets["BTC/USDT:USDT"]["precision"]["amount"] == 0.001
    with pytest.raises(ccxt.MarginModeAlreadySet):  # -4046 on a second identical set
        f.set_margin_mode("isolated", "BTC/USDT:USDT")
        f.set_margin_mode("isolated", "BTC/USDT:USDT")
    f.set_leverage(3, "BTC/USDT:USDT")
    o = f.create_order("BTC/USDT:USDT", "limit", "buy", 0.05, 68100, {"clientOrderId": "f1-en", "timeInForce": "IOC"})
    assert (o["status"], o["filled"]) == ("closed", 0.05)
    sl = f.create_order("BTC/USDT:USDT", "market", "sell", 0.05, None, {"clientOrderId": "f1-sl", "stopLossPrice": 67000,
                                                                       "reduceOnly": True})
    f.create_order("BTC/USDT:USDT", "market", "sell", 0.05, None, {"clientOrderId": "f1-tp", "takeProfitPrice": 70000,
                                                                  "reduceOnly": True})
    assert sl["clientOrderId"] == "f1-sl"
    got = f.fetch_order(None, "BTC/USDT:USDT", {"clientOrderId": "f1-sl", "trigger": True})
    assert (got["status"], got["triggerPrice"], got["reduceOnly"]) == ("open", 67000.0, True)
    with pytest.raises(ccxt.OrderNotFound):  # not in the regular book
        f.fetch_order(None, "BTC/USDT:USDT", {"clientOrderId": "f1-sl"})
    assert sorted(o["clientOrderId"] for o in f.fetch_open_orders("BTC/USDT:USDT", None, None, {"trigger": True})) == \
        ["f1-sl", "f1-tp"]
    [pos] = f.fetch_positions(["BTC/USDT:USDT"])
    assert (pos["side"], pos["contracts"], pos["entryPrice"]) == ("long", 0.05, 68000.0)
    standin.control("price", symbol="BTCUSDT", price=66500, account=acct)  # the stop triggers
    assert f.fetch_positions(["BTC/USDT:USDT"]) == []
    # not one-cancels-other: the take-profit keeps resting with no position behind it
    assert [o["clientOrderId"] for o in f.fetch_open_orders("BTC/USDT:USDT", None, None, {"trigger": True})] == ["f1-tp"]
    f.cancel_order(None, "BTC/USDT:USDT", {"clientOrderId": "f1-tp", "trigger": True})
    assert f.fetch_open_orders("BTC/USDT:USDT", None, None, {"trigger": True}) == []
    with pytest.raises(ccxt.ExchangeError, match="-4120"):  # conditional types only on the Algo Service
        f.fapiPrivatePostOrder({"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET", "quantity": "0.05",
                                "stopPrice": "60000"})
    standin.control("price", symbol="BTCUSDT", price=68000, account=acct)
    assert f.fetch_funding_rate("BTC/USDT:USDT")["fundingRate"] == 0.0001
    assert f.fetch_leverage_tiers(["BTC/USDT:USDT"])["BTC/USDT:USDT"][0]["maxLeverage"] == 125
    assert len(f.fetch_my_trades("BTC/USDT:USDT")) == 2
    assert f.fetch_balance()["USDT"]["total"] < 10000  # the stop's loss and the commissions
