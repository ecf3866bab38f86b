"""The ccxt venue's error mapping, exactly-once placement after a lost answer, partial fills and
``create_protection``, against real ccxt ``binance`` / ``binanceusdm`` objects whose HTTP session
is :class:`test_venue_ccxt.FakeBinance` (everything above the transport is ccxt's own: request
building, signing, ``handle_errors``, parsing). Waits are recorded, not slept."""

from __future__ import annotations

import pytest
import requests
from test_venue_ccxt import KEY, NOW_MS, SECRET, T0, again, legs, make, spot_entry

from trading_pipelines.domain.models import OrderRequest, OrderRole, OrderStatus, OrderType, Side
from trading_pipelines.venues.protocol import OrderRejected, OrderStateUnknown, VenueError, VenueUnavailable

CID = "tp-aaaaaaaaaaaaaaaaaaaaaaaa-en"


def recording(venue):
    waits: list[float] = []
    venue.sleep = waits.append
    return waits


def not_found():
    return (400, {"code": -2013, "msg": "Order does not exist."})


# ------------------------------------------------------------------------------------ refused for good
def test_insufficient_balance_is_order_rejected_with_binance_code_and_no_secret():
    """Binance −2010 "Account has insufficient balance for requested action." (ccxt
    ``InsufficientFunds``): :class:`OrderRejected` with code −2010, one POST, no retry."""
    venue, fake = make()
    fake.script = {"POST /api/v3/order": [(400, {"code": -2010, "msg": "Account has insufficient balance for requested action."})]}
    with pytest.raises(OrderRejected) as caught:
        venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    assert caught.value.code == -2010 and "Account has insufficient balance" in str(caught.value)
    assert KEY not in str(caught.value) and SECRET not in str(caught.value)
    assert caught.value.__context__ is None and len(fake.calls("POST", "/api/v3/order")) == 1


@pytest.mark.parametrize("exchange_id,path,body", [
    ("binance", "/api/v3/order", {"code": -1013, "msg": "Filter failure: NOTIONAL"}),
    ("binance", "/api/v3/order", {"code": -2010, "msg": "Order would immediately match and take."}),
    ("binanceusdm", "/fapi/v1/order", {"code": -2022, "msg": "ReduceOnly Order is rejected."}),
    ("binanceusdm", "/fapi/v1/order", {"code": -4164, "msg": "Order's notional must be no smaller than 5 (unless you choose reduce only)."}),
])
def test_filters_min_notional_and_reduce_only_refusals_are_order_rejected(exchange_id, path, body):
    venue, fake = make(exchange_id)
    symbol = "BTC/USDT" if exchange_id == "binance" else "BTC/USDT:USDT"
    r = OrderRequest(client_order_id="tp-ffffffffffffffffffffffff-ex", instrument=symbol, side=Side.SELL,
                     type=OrderType.MARKET, quantity=0.001, role=OrderRole.EXIT, reduce_only=True)
    if exchange_id == "binance":
        r = spot_entry()
    fake.script = {f"POST {path}": [(400, body)]}
    with pytest.raises(OrderRejected) as caught:
        venue.create_order(r, placed_at=T0, position_side="long")
    assert caught.value.code == body["code"] and body["msg"] in str(caught.value)
    assert len(fake.calls("POST", path)) == 1


def test_a_refusal_of_a_read_is_not_an_order_rejection():
    """−1022 on a look-up (authentication) stays a plain :class:`VenueError`."""
    venue, fake = make()
    fake.script = {"GET /api/v3/order": [(400, {"code": -1022, "msg": "Signature for this request is not valid."})]}
    with pytest.raises(VenueError) as caught:
        venue.fetch_order(CID, instrument="BTC/USDT")
    assert type(caught.value) is VenueError and "AuthenticationError" in str(caught.value)


# ------------------------------------------------------------------------------------ clock, rate limits
def test_clock_skew_resyncs_the_clock_then_sends_again():
    """−1021 "Timestamp for this request is outside of the recvWindow." (ccxt ``InvalidNonce``):
    the venue reads Binance's time (``load_time_difference`` → GET /api/v3/time), keeps
    ``adjustForTimeDifference`` on and sends again, now stamped with Binance's clock."""
    venue, fake = make()
    fake.script = {"POST /api/v3/order": [(400, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."})]}
    order = venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    first, second = fake.calls("POST", "/api/v3/order")
    (resync,) = fake.calls("GET", "/api/v3/time")
    assert fake.log.index(first) < fake.log.index(resync) < fake.log.index(second)
    assert venue.exchange.options["adjustForTimeDifference"] is True
    assert abs(int(second["params"]["timestamp"]) - NOW_MS) < 10_000  # Binance's clock, not this machine's
    assert order.status is OrderStatus.FILLED


def test_rate_limit_waits_what_retry_after_says():
    """HTTP 429 with ``Retry-After: 7`` (ccxt ``DDoSProtection``; the header read from
    ``exchange.last_response_headers``): the venue waits 7 s, not its jittered backoff, then sends
    again (Binance refused the first POST before acting on it)."""
    venue, fake = make()
    waits = recording(venue)
    fake.script = {"POST /api/v3/order": [(429, {"code": -1003, "msg": "Too many requests; current limit of IP is 6000 request weight per 1 MINUTE."},
                                           {"Retry-After": "7"})],
                   "GET /api/v3/order": [(429, {"code": -1003, "msg": "Too much request weight used."}, {"Retry-After": "3"})]}
    order = venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    assert waits == [3.0, 7.0] and order.status is OrderStatus.FILLED
    assert len(fake.calls("POST", "/api/v3/order")) == 2


def test_an_ip_ban_longer_than_the_wait_bound_is_venue_unavailable_naming_the_ban():
    """HTTP 418 (IP banned) with ``Retry-After: 600`` and ``rate_limit_max_wait_s`` 30: no wait, no
    second POST; :class:`VenueUnavailable` says how long the ban lasts."""
    venue, fake = make(rate_limit_max_wait_s=30)
    waits = recording(venue)
    fake.script = {"POST /api/v3/order": [(418, {"code": -1003, "msg": f"Way too much request weight used; IP banned until {NOW_MS + 600_000}."},
                                           {"Retry-After": "600"})]}
    with pytest.raises(VenueUnavailable, match=r"banned for 600 s \(until ") as caught:
        venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    assert not isinstance(caught.value, OrderStateUnknown)
    assert waits == [] and len(fake.calls("POST", "/api/v3/order")) == 1


# ------------------------------------------------------------------------------------ lost answers
def test_a_lost_answer_and_a_look_up_that_misses_it_do_not_post_again():
    """The POST is accepted but its answer is lost (read timeout); the next ``origClientOrderId``
    look-up misses the just-accepted order (−2013). ``allOrders`` from just before the POST lists
    it: it is returned and never POSTed again."""
    venue, fake = make()
    fake.script = {"POST /api/v3/order": ["lost"], "GET /api/v3/order": [None, not_found()]}
    order = venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    assert order.status is OrderStatus.FILLED and order.venue_order_id == "1001"
    assert len(fake.calls("POST", "/api/v3/order")) == 1
    (listing,) = fake.calls("GET", "/api/v3/allOrders")
    assert listing["params"]["symbol"] == "BTCUSDT" and int(listing["params"]["startTime"]) <= NOW_MS


def test_a_lost_answer_for_an_order_binance_definitely_lacks_is_posted_once_more():
    """The connection drops before Binance got the POST: the look-ups answer "no such order" and
    "not in allOrders", so one more POST is allowed."""
    venue, fake = make()
    fake.script = {"POST /api/v3/order": [requests.exceptions.ConnectionError("connection reset")]}
    order = venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    assert order.status is OrderStatus.FILLED
    assert len(fake.calls("POST", "/api/v3/order")) == 2 and len(fake.calls("GET", "/api/v3/allOrders")) == 1


def test_a_lost_answer_with_no_look_up_answering_is_order_state_unknown():
    """POST lost, then Binance stops answering: :class:`OrderStateUnknown` naming the client
    order id, after ``lookup_attempts`` rounds, and still one POST. Once Binance answers again,
    :meth:`lookup_order` finds the order."""
    venue, fake = make(lookup_attempts=3)
    waits = recording(venue)
    fake.script = {"POST /api/v3/order": ["lost"],
                   "GET /api/v3/order": [None] + [requests.exceptions.ReadTimeout("timed out")] * 3}
    with pytest.raises(OrderStateUnknown) as caught:
        venue.create_order(spot_entry(), placed_at=T0, position_side="long")
    assert caught.value.client_order_id == CID and "never send it again" in str(caught.value)
    assert len(fake.calls("POST", "/api/v3/order")) == 1 and len(waits) == 2
    found = again(venue).lookup_order(CID, instrument="BTC/USDT", since=T0)
    assert found.status is OrderStatus.FILLED and found.filled_quantity == 0.001


def test_lookup_order_is_none_only_when_definitely_absent():
    venue, fake = make(lookup_attempts=2)
    recording(venue)
    assert venue.lookup_order(CID, instrument="BTC/USDT", since=T0) is None
    assert fake.calls("GET", "/api/v3/order") and fake.calls("GET", "/api/v3/allOrders")
    fake.script = {"GET /api/v3/allOrders": [requests.exceptions.ReadTimeout("timed out")] * 2}
    with pytest.raises(VenueUnavailable):  # the id look-up missed but the list did not answer: unknown, not None
        venue.lookup_order(CID, instrument="BTC/USDT", since=T0)
    fake.script = {"GET /api/v3/order": [requests.exceptions.ReadTimeout("timed out")] * 4}  # max_retries 4
    with pytest.raises(VenueUnavailable):
        venue.fetch_order(CID, instrument="BTC/USDT")


def test_a_lost_algo_leg_answer_is_found_through_all_algo_orders():
    """USDⓈ-M: the stop-loss's POST /fapi/v1/algoOrder answer is lost and the ``clientAlgoId``
    look-up misses it; ``allAlgoOrders`` (``{'trigger': True}``) lists it: one algo POST per leg."""
    venue, fake = make("binanceusdm")
    entry = OrderRequest(client_order_id="tp-dddddddddddddddddddddddd-en", instrument="BTC/USDT:USDT", side=Side.BUY,
                         type=OrderType.MARKET, quantity=0.012, role=OrderRole.ENTRY)
    sl, tp = legs("BTC/USDT:USDT", Side.SELL, 0.012, 66000.0, 70000.0, entry.client_order_id)
    fake.script = {"POST /fapi/v1/algoOrder": ["lost"], "GET /fapi/v1/algoOrder": [None, not_found()]}
    placed = venue.create_bracket(entry, sl, tp, placed_at=T0, position_side="long", leverage=5)
    assert [o.status for o in placed] == [OrderStatus.FILLED, OrderStatus.ACCEPTED, OrderStatus.ACCEPTED]
    assert [c["params"]["clientAlgoId"] for c in fake.calls("POST", "/fapi/v1/algoOrder")] == [sl.client_order_id, tp.client_order_id]
    assert fake.calls("GET", "/fapi/v1/allAlgoOrders")


# ------------------------------------------------------------------------------------ partial fills
def test_a_spot_ioc_that_fills_part_then_expires_gets_legs_for_what_filled():
    """A LIMIT IOC buy of 1.0 BTC at 43100 fills 0.3 and the rest EXPIRES (commission in BNB, so
    all 0.3 BTC is free): the entry is EXPIRED with filled 0.3 (not CANCELED), and the OCO sells
    0.3."""
    venue, fake = make()
    fake.spot_fill_ratio, fake.commission_asset = 0.3, "BNB"
    entry = OrderRequest(client_order_id="tp-bbbbbbbbbbbbbbbbbbbbbbbb-en", instrument="BTC/USDT", side=Side.BUY,
                         type=OrderType.LIMIT, quantity=1.0, price=43100.0, role=OrderRole.ENTRY)
    sl, tp = legs("BTC/USDT", Side.SELL, 1.0, 42000.0, 45000.0, entry.client_order_id)
    placed = venue.create_bracket(entry, sl, tp, placed_at=T0, position_side="long")
    assert placed[0].status is OrderStatus.EXPIRED and placed[0].filled_quantity == 0.3
    assert placed[0].average_price == 43000.0 and "0.3 of 1 filled" in placed[0].reason
    assert [o.status for o in placed[1:]] == [OrderStatus.ACCEPTED, OrderStatus.ACCEPTED]
    (oco,) = fake.calls("POST", "/api/v3/orderList/oco")
    assert oco["params"]["quantity"] == "0.3" and placed[1].request.quantity == placed[2].request.quantity == 0.3


def test_a_leg_refused_after_the_entry_filled_is_reported_on_the_leg():
    """The entry fills, then Binance refuses the OCO (−2010): create_bracket does not raise (the
    fill would be lost); both legs come back REJECTED with Binance's words."""
    venue, fake = make()
    entry = spot_entry()
    sl, tp = legs("BTC/USDT", Side.SELL, 0.001, 42000.0, 45000.0, entry.client_order_id)
    fake.script = {"POST /api/v3/orderList/oco": [(400, {"code": -2010, "msg": "Account has insufficient balance for requested action."})]}
    placed = venue.create_bracket(entry, sl, tp, placed_at=T0, position_side="long")
    assert [o.status for o in placed] == [OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.REJECTED]
    assert all("insufficient balance" in o.reason for o in placed[1:])


# ------------------------------------------------------------------------------------ protection
def sl_tp(qty=0.002, cid="tp-cccccccccccccccccccccccc-en", instrument="BTC/USDT"):
    return legs(instrument, Side.SELL, qty, 42000.0, 45000.0, cid)


def test_spot_protection_lone_stop_then_oco_replacing_it():
    """An open 0.002 BTC position: first only a stop (take_profit None) → one STOP_LOSS_LIMIT
    order; a re-run places nothing. Then stop + take-profit: the lone resting stop is cancelled and
    both go on as one OCO list under the same ids (Binance's ids are unique among open orders)."""
    venue, fake = make()
    sl, tp = sl_tp()
    (got,) = venue.create_protection(sl, None, placed_at=T0, position_side="long")
    (post,) = fake.calls("POST", "/api/v3/order")
    assert post["params"]["type"] == "STOP_LOSS_LIMIT" and post["params"]["newClientOrderId"] == sl.client_order_id
    assert post["params"]["stopPrice"] == "42000" and post["params"]["quantity"] == "0.002"
    assert got.status is OrderStatus.ACCEPTED and got.request.role is OrderRole.STOP_LOSS
    again(venue).create_protection(sl, None, placed_at=T0, position_side="long")
    assert len(fake.calls("POST", "/api/v3/order")) == 1

    placed = again(venue).create_protection(sl, tp, placed_at=T0, position_side="long")
    (delete,) = fake.calls("DELETE", "/api/v3/order")
    (oco,) = fake.calls("POST", "/api/v3/orderList/oco")
    assert delete["params"]["origClientOrderId"] == sl.client_order_id and fake.log.index(delete) < fake.log.index(oco)
    assert oco["params"]["belowClientOrderId"] == sl.client_order_id and oco["params"]["aboveClientOrderId"] == tp.client_order_id
    assert [o.status for o in placed] == [OrderStatus.ACCEPTED, OrderStatus.ACCEPTED]
    again(venue).create_protection(sl, tp, placed_at=T0, position_side="long")
    assert len(fake.calls("POST", "/api/v3/orderList/oco")) == 1  # idempotent


def test_spot_protection_does_not_place_the_sibling_of_a_filled_leg():
    venue, fake = make()
    sl, tp = sl_tp()
    venue.create_protection(sl, None, placed_at=T0, position_side="long")
    fake.orders[sl.client_order_id].update(status="FILLED", executedQty="0.002")
    stop, take = venue.create_protection(sl, tp, placed_at=T0, position_side="long")
    assert stop.status is OrderStatus.FILLED and take.status is OrderStatus.CANCELED
    assert sl.client_order_id in take.reason and not fake.calls("POST", "/api/v3/orderList/oco")


def test_futures_protection_is_two_reduce_only_algo_orders_visible_and_cancellable_from_a_fresh_process():
    """USDⓈ-M: two reduce-only conditional orders on the Algo Service (``clientAlgoId``), each
    idempotent. A fresh process sees them in fetch_open_orders with their role, reduce_only and
    client order id, and cancels the orphan take-profit by ``clientAlgoId`` with ``{'trigger': True}``."""
    venue, fake = make("binanceusdm")
    sl, tp = sl_tp(qty=0.009, instrument="BTC/USDT:USDT")
    placed = venue.create_protection(sl, tp, placed_at=T0, position_side="long", leverage=5)
    stop, take = (c["params"] for c in fake.calls("POST", "/fapi/v1/algoOrder"))
    assert (stop["type"], stop["reduceOnly"], stop["clientAlgoId"], stop["quantity"]) == ("STOP_MARKET", "true", sl.client_order_id, "0.009")
    assert (take["type"], take["reduceOnly"], take["clientAlgoId"]) == ("TAKE_PROFIT_MARKET", "true", tp.client_order_id)
    assert not fake.calls("POST", "/fapi/v1/leverage") and [o.status for o in placed] == [OrderStatus.ACCEPTED] * 2
    venue.create_protection(sl, tp, placed_at=T0, position_side="long", leverage=5)
    assert len(fake.calls("POST", "/fapi/v1/algoOrder")) == 2

    fresh = again(venue)
    opened = fresh.fetch_open_orders("BTC/USDT:USDT")
    assert [(o.client_order_id, o.request.role, o.request.reduce_only) for o in opened] == [
        (sl.client_order_id, OrderRole.STOP_LOSS, True), (tp.client_order_id, OrderRole.TAKE_PROFIT, True)]
    fake.algo[sl.client_order_id]["algoStatus"] = "TRIGGERED"  # the stop fired: the take-profit is an orphan
    cancelled = again(venue).cancel_order(tp.client_order_id, instrument="BTC/USDT:USDT")
    (delete,) = fake.calls("DELETE", "/fapi/v1/algoOrder")
    assert delete["params"]["clientAlgoId"] == tp.client_order_id and cancelled.status is OrderStatus.CANCELED
