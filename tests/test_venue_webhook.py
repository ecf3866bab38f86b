"""The webhook venue against a real local HTTP receiver (tests/webhook_receiver.py): signing,
the body, retries, error scrubbing and exactly-once delivery across a crash. No httpx mocks:
every request crosses a real socket to a stdlib server that checks the HMAC itself."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
from datetime import datetime, timezone

import httpx2
import pytest

from trading_pipelines.domain.models import OrderRequest, OrderRole, OrderStatus, OrderType, Side
from trading_pipelines.venues.protocol import Balance, OrderRejected, OrderStateUnknown, VenueError, VenueUnavailable
from trading_pipelines.venues.webhook import WebhookVenue, canonical_json, sign, verify
from webhook_receiver import Scripted, WebhookReceiver

SECRET = "whsec_test_0123456789"
PLACED_AT = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
_INTENT = "tp-1f2e3d4c5b6a79881726354a"
ENTRY_CID, SL_CID, TP_CID = f"{_INTENT}-en", f"{_INTENT}-sl", f"{_INTENT}-tp"

# Worked bracket: long 0.015 BTC at a 60 000 USDT limit, stop 58 800, target 63 600.
# Risk = 0.015 × (60 000 − 58 800) = 18 USDT; reward = 0.015 × (63 600 − 60 000) = 54 USDT (3 R);
# notional = 0.015 × 60 000 = 900 USDT.
ENTRY = OrderRequest(client_order_id=ENTRY_CID, instrument="BTC/USDT", side=Side.BUY, type=OrderType.LIMIT,
                     quantity=0.015, price=60_000.0, role=OrderRole.ENTRY)
STOP = OrderRequest(client_order_id=SL_CID, instrument="BTC/USDT", side=Side.SELL, type=OrderType.STOP,
                    quantity=0.015, trigger_price=58_800.0, role=OrderRole.STOP_LOSS, reduce_only=True,
                    parent_client_order_id=ENTRY_CID, oco_group=ENTRY_CID)
TARGET = OrderRequest(client_order_id=TP_CID, instrument="BTC/USDT", side=Side.SELL, type=OrderType.LIMIT,
                      quantity=0.015, price=63_600.0, role=OrderRole.TAKE_PROFIT, reduce_only=True,
                      parent_client_order_id=ENTRY_CID, oco_group=ENTRY_CID)
FAST = dict(retry_initial_wait_s=0.01, retry_max_wait_s=0.05)


_OPEN: list = []  # venues and clients a test made, closed after it


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _OPEN:
        _OPEN.pop().close()


@pytest.fixture
def receiver():
    with WebhookReceiver(SECRET) as rx:
        yield rx


def venue(rx: WebhookReceiver, **kw) -> WebhookVenue:
    args = dict(url=rx.url, account="acct-1", secret=SECRET, equity=10_000.0, timeout_s=2.0, **FAST)
    args.update(kw)
    v = WebhookVenue(**args)
    _OPEN.append(v)
    return v


def client(**kw) -> httpx2.Client:
    c = httpx2.Client(**kw)
    _OPEN.append(c)
    return c


def bracket(v: WebhookVenue):
    return v.create_bracket(ENTRY, STOP, TARGET, placed_at=PLACED_AT, position_side="long")


def chain(e: BaseException) -> str:
    """Every message in an exception's cause/context chain, plus reprs."""
    parts, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts += [str(e), repr(e), *map(str, e.args)]
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


# ------------------------------------------------------------------ signing


def test_sign_known_answer():
    body = b'{"account":"acct-1","client_order_id":"tp-abc-en"}'
    expected = hmac.new(SECRET.encode(), b"1714564800." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, "1714564800", body) == expected
    assert expected == "93cceac16d71ede2d66a945c9769e0154a48a97a7cf46b96429504ff91a5f8a1"


def test_verify_accepts_own_signature_and_refuses_tamper_wrong_secret_stale():
    body, ts = canonical_json({"b": 1, "a": [0.015, None]}), "1714564800"
    assert body == b'{"a":[0.015,null],"b":1}'
    sig = "sha256=" + sign(SECRET, ts, body)
    assert verify(SECRET, ts, body, sig, now=1714564800 + 10)
    assert verify(SECRET, ts, body, sig[len("sha256="):], now=1714564800)
    assert not verify(SECRET, ts, body.replace(b"1", b"2"), sig, now=1714564800)
    assert not verify("other-secret", ts, body, sig, now=1714564800)
    assert not verify(SECRET, "1714564801", body, sig, now=1714564800)  # timestamp is signed
    assert not verify(SECRET, ts, body, sig, now=1714564800 + 301)  # stale: replay refused
    assert not verify(SECRET, ts, body, sig, now=1714564800 - 301)
    assert not verify(SECRET, "soon", body, sig, now=1714564800)


# ------------------------------------------------------------------ delivery


def test_single_order_is_signed_verified_and_sent(receiver):
    v = venue(receiver)
    order = v.create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
    assert order.status is OrderStatus.SENT and order.venue_order_id == "wh-000001"
    assert order.client_order_id == ENTRY_CID and order.request == ENTRY and order.placed_at == PLACED_AT

    (req,) = receiver.requests
    assert req.status == 200 and not receiver.refused and list(receiver.orders) == [ENTRY_CID]
    h = req.headers
    assert h["content-type"] == "application/json" and h["idempotency-key"] == ENTRY_CID
    assert abs(int(h["x-timestamp"]) - time.time()) < 60
    assert h["x-signature"] == "sha256=" + hmac.new(SECRET.encode(), h["x-timestamp"].encode() + b"." + req.raw,
                                                    hashlib.sha256).hexdigest()
    assert req.raw == json.dumps(req.json, sort_keys=True, separators=(",", ":")).encode()  # canonical bytes
    assert req.json == {"account": "acct-1", "client_order_id": ENTRY_CID, "instrument": "BTC/USDT", "side": "buy",
                        "type": "limit", "quantity": 0.015, "price": 60000.0, "trigger_price": None, "role": "entry",
                        "reduce_only": False, "parent_client_order_id": None, "oco_group": None,
                        "position_side": "long", "leverage": 1.0, "margin_mode": None,
                        "placed_at": "2024-05-01T12:00:00+00:00"}

    # idempotent in-process: no second POST
    assert v.create_order(ENTRY, placed_at=PLACED_AT, position_side="long") == order
    assert len(receiver.requests) == 1
    # no monitoring
    assert v.fetch_order(ENTRY_CID) == order and v.fetch_order("tp-unknown") is None
    assert v.fetch_open_orders() == [] and v.fetch_positions() == [] and v.fetch_my_trades() == []
    assert v.fetch_balance() == Balance(cash=10_000.0, reserved=0.0, equity=10_000.0, realized_pnl=0.0,
                                        unrealized_pnl=0.0, fees_paid=0.0)
    with pytest.raises(VenueError, match="a webhook venue cannot cancel"):
        v.cancel_order(ENTRY_CID)
    assert SECRET not in repr(v) and SECRET not in order.model_dump_json()


def test_bracket_is_one_post_with_three_legs(receiver):
    orders = bracket(venue(receiver, account="acct-7"))
    (req,) = receiver.requests
    assert req.headers["idempotency-key"] == ENTRY_CID
    b = req.json
    # entry at the top level
    assert (b["account"], b["client_order_id"], b["side"], b["type"], b["role"]) == (
        "acct-7", ENTRY_CID, "buy", "limit", "entry")
    assert (b["quantity"], b["price"], b["trigger_price"], b["reduce_only"]) == (0.015, 60000.0, None, False)
    sl, tp = b["legs"]
    assert sl == {"client_order_id": SL_CID, "instrument": "BTC/USDT", "side": "sell", "type": "stop",
                  "quantity": 0.015, "price": None, "trigger_price": 58800.0, "role": "stop_loss",
                  "reduce_only": True, "parent_client_order_id": ENTRY_CID, "oco_group": ENTRY_CID}
    assert tp == {"client_order_id": TP_CID, "instrument": "BTC/USDT", "side": "sell", "type": "limit",
                  "quantity": 0.015, "price": 63600.0, "trigger_price": None, "role": "take_profit",
                  "reduce_only": True, "parent_client_order_id": ENTRY_CID, "oco_group": ENTRY_CID}
    # the worked numbers, recomputed from what the receiver got
    assert b["quantity"] * (b["price"] - sl["trigger_price"]) == pytest.approx(18.0)  # risk, USDT
    assert tp["quantity"] * (tp["price"] - b["price"]) == pytest.approx(54.0)  # reward, USDT (3 R)
    assert b["quantity"] * b["price"] == pytest.approx(900.0)  # notional, USDT

    assert [o.client_order_id for o in orders] == [ENTRY_CID, SL_CID, TP_CID]
    assert all(o.status is OrderStatus.SENT for o in orders)
    assert [o.venue_order_id for o in orders] == ["wh-000001", "wh-000001-1", "wh-000001-2"]
    assert list(receiver.orders) == [ENTRY_CID]


# ------------------------------------------------------------------ refusals


def test_wrong_secret_is_refused_401_nothing_recorded(receiver):
    with pytest.raises(VenueError, match="401") as e:
        venue(receiver, secret="not-the-secret").create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
    assert "not-the-secret" not in chain(e.value)
    assert len(receiver.requests) == 1 and len(receiver.refused) == 1 and receiver.orders == {}


def test_tampered_body_is_refused_401_nothing_recorded(receiver):
    def tamper(request: httpx2.Request) -> None:  # a man in the middle doubles the quantity after signing
        raw = request.read().replace(b'"quantity":0.015', b'"quantity":0.03')
        request.stream = httpx2.ByteStream(raw)
        request._content = raw
        request.headers["Content-Length"] = str(len(raw))

    v = venue(receiver, client=client(event_hooks={"request": [tamper]}))
    with pytest.raises(VenueError, match="401"):
        v.create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
    (req,) = receiver.requests
    assert b'"quantity":0.03' in req.raw and req.status == 401 and receiver.orders == {}


def test_unsigned_venue_is_refused(receiver):
    with pytest.raises(VenueError, match="401"):
        venue(receiver, secret=None).create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
    assert "x-signature" not in receiver.requests[0].headers and receiver.orders == {}


def test_400_is_not_retried(receiver):
    receiver.push_status(400, {"error": "unknown instrument BTC/USDT"})
    v = venue(receiver)
    with pytest.raises(VenueError, match=r"HTTP 400.*unknown instrument") as e:
        v.create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
    assert "not confirmed" not in str(e.value)
    assert len(receiver.requests) == 1 and v.fetch_order(ENTRY_CID) is None


def test_secret_echoed_by_receiver_is_scrubbed(receiver, caplog):
    echo = {"error": f"signature mismatch, expected key {SECRET}", "debug": json.dumps({"secret": SECRET})}
    receiver.push_status(500, echo, times=2)
    receiver.push_status(403, echo)
    v = venue(receiver, max_retries=1)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(VenueError, match="HTTP 500") as e5:
            v.create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
        with pytest.raises(VenueError, match="HTTP 403") as e4:
            v.create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
    assert len(receiver.requests) == 3  # 500, retried once, then 403 not retried
    for e in (e5, e4):
        assert SECRET not in chain(e.value) and "[redacted]" in str(e.value)
        assert "signature mismatch" in str(e.value)
    assert SECRET not in caplog.text and "retrying" in caplog.text
    assert SECRET not in repr(v)


# ------------------------------------------------------------------ retries


def test_retry_after_is_honoured(receiver):
    receiver.push_status(429, {"error": "slow down"}, headers={"Retry-After": "1"})
    v = venue(receiver)
    t0 = time.monotonic()
    order = v.create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
    elapsed = time.monotonic() - t0
    assert elapsed >= 1.0
    first, second = receiver.requests
    assert (first.status, second.status) == (429, 200) and second.at - first.at >= 1.0
    assert first.raw == second.raw  # the same bytes …
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == ENTRY_CID  # … the same key …
    assert first.headers["x-timestamp"] != second.headers["x-timestamp"]  # … a fresh timestamp and signature
    assert first.headers["x-signature"] != second.headers["x-signature"]
    assert list(receiver.orders) == [ENTRY_CID] and order.venue_order_id == "wh-000001"


def test_500_twice_then_200_gives_one_order(receiver):
    receiver.push_status(500, times=2)
    orders = bracket(venue(receiver))
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert len({r.raw for r in receiver.requests}) == 1
    assert list(receiver.orders) == [ENTRY_CID] and orders[0].venue_order_id == "wh-000001"


def test_retry_after_beyond_the_cap_gives_up(receiver):
    receiver.push_status(429, headers={"Retry-After": "120"})
    with pytest.raises(VenueError, match=r"Retry-After 120 s is more than the 60 s"):
        venue(receiver, retry_after_max_s=60).create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
    assert len(receiver.requests) == 1 and receiver.orders == {}


def test_retries_exhausted_raise(receiver):
    receiver.push_status(503, times=3)
    with pytest.raises(VenueError, match=r"not confirmed after 3 attempts: HTTP 503"):
        venue(receiver, max_retries=2).create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
    assert len(receiver.requests) == 3 and receiver.orders == {}


def test_connection_refused_is_retried_then_raises():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    v = WebhookVenue(url=f"http://127.0.0.1:{port}/orders", account="acct-1", secret=SECRET, equity=1.0,
                     max_retries=2, **FAST)
    _OPEN.append(v)
    with pytest.raises(VenueError, match=r"not confirmed after 3 attempts: ConnectError"):
        v.create_order(ENTRY, placed_at=PLACED_AT, position_side="long")


def test_timeout_after_delivery_is_resent_once_and_deduplicated(receiver):
    # the receiver records the order, then answers too late: the venue times out and re-sends
    receiver.push(Scripted(200, {"id": "late"}, delay_s=0.8, accept=True))
    order = venue(receiver, timeout_s=0.3).create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
    assert len(receiver.requests) == 2 and list(receiver.orders) == [ENTRY_CID]
    assert order.venue_order_id == "wh-000001"


# ------------------------------------------------------------------ exactly once across a crash


class Crash(Exception):
    """The process dies after the receiver answered, before the ledger write."""


@pytest.mark.parametrize("duplicate_status", [200, 409])
def test_exactly_once_after_crash(duplicate_status):
    with WebhookReceiver(SECRET, duplicate_status=duplicate_status) as rx:
        def die(response: httpx2.Response) -> None:
            raise Crash("killed after the POST was delivered")

        crashing = venue(rx, client=client(event_hooks={"response": [die]}))
        with pytest.raises(Crash):
            bracket(crashing)
        assert list(rx.orders) == [ENTRY_CID] and len(rx.requests) == 1  # delivered, not retried

        fresh = venue(rx)  # the restarted process knows nothing …
        assert fresh.fetch_order(ENTRY_CID) is None
        orders = bracket(fresh)  # … and re-sends the same bracket
        assert len(rx.requests) == 2 and rx.requests[1].status == duplicate_status
        assert rx.requests[0].raw == rx.requests[1].raw
        assert list(rx.orders) == [ENTRY_CID]  # exactly one order for the key
        assert [o.venue_order_id for o in orders] == ["wh-000001", "wh-000001-1", "wh-000001-2"]
        assert all(o.status is OrderStatus.SENT for o in orders)
        assert fresh.fetch_order(SL_CID) == orders[1]


def test_naive_placed_at_and_bad_config_are_refused(receiver):
    with pytest.raises(ValueError, match="naive"):
        venue(receiver).create_order(ENTRY, placed_at=datetime(2024, 5, 1, 12), position_side="long")
    with pytest.raises(ValueError, match="secret is empty"):
        venue(receiver, secret="")
    with pytest.raises(ValueError, match="http"):
        venue(receiver, url="ftp://example.invalid/x")
    assert receiver.requests == []


# ------------------------------------------------------------------ the protocol's errors


def test_errors_map_to_the_protocols(receiver):
    """A refusal (HTTP 422) is :class:`OrderRejected` with the status as code, not retried; a
    Retry-After beyond the cap is :class:`VenueUnavailable` (not delivered); retries exhausted are
    :class:`OrderStateUnknown` naming the client order id (it may have been delivered), and
    lookup_order then answers None (re-sending under the same Idempotency-Key is safe)."""
    receiver.push_status(422, {"error": "quantity below the minimum"})
    with pytest.raises(OrderRejected, match="HTTP 422") as rejected:
        venue(receiver).create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
    assert rejected.value.code == 422 and len(receiver.requests) == 1
    receiver.push_status(429, headers={"Retry-After": "120"})
    with pytest.raises(VenueUnavailable) as later:
        venue(receiver, retry_after_max_s=60).create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
    assert not isinstance(later.value, OrderStateUnknown)
    receiver.push_status(503, times=2)
    v = venue(receiver, max_retries=1)
    with pytest.raises(OrderStateUnknown) as unknown:
        v.create_order(ENTRY, placed_at=PLACED_AT, position_side="long")
    assert unknown.value.client_order_id == ENTRY_CID and v.lookup_order(ENTRY_CID) is None
    with pytest.raises(VenueError, match="cannot cancel"):
        v.cancel_order(ENTRY_CID, instrument="BTC/USDT")
