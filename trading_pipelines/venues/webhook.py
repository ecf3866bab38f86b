"""The webhook venue: every order (or a whole bracket) is POSTed, signed, as JSON to one URL.

A webhook is fire-and-forget: the receiver (a broker bridge, an alerting bot, a human desk) takes
the order and reports nothing back. So a delivered order has status :attr:`OrderStatus.SENT`
and this venue knows no fills, positions or cash of its own.

**The request.** ``POST <url>`` with

* body: JSON, serialized deterministically (sorted keys, compact separators ``,`` ``:``, ASCII,
  no NaN) so the signature is over exact bytes (:func:`canonical_json`). One order::

      {"account", "client_order_id", "instrument", "side", "type", "quantity", "price",
       "trigger_price", "role", "reduce_only", "parent_client_order_id", "oco_group",
       "position_side", "leverage", "margin_mode", "placed_at"}

  ``quantity`` in base units (coins, shares); ``price`` (limit) and ``trigger_price`` (stop) in
  the instrument's quote currency, ``null`` when not set; ``side`` buy|sell, ``type``
  market|limit|stop, ``role`` entry|stop_loss|take_profit|exit; ``position_side`` long|short;
  ``placed_at`` ISO 8601 UTC (``2024-05-01T12:00:00+00:00``). A bracket
  (:meth:`WebhookVenue.create_bracket`) is ONE POST: the entry's fields at the top level plus
  ``legs``: ``[stop_loss, take_profit]``, each with the per-order fields (``client_order_id``
  … ``oco_group``).
* headers: ``Content-Type: application/json``, ``Idempotency-Key: <client order id>`` (the
  entry's for a bracket), ``X-Timestamp: <unix seconds, UTC>``, ``X-Signature: sha256=<hex>``
  where hex = HMAC-SHA256(secret, ``f"{timestamp}."`` + body bytes) (:func:`sign`). A receiver
  checks it with :func:`verify` and refuses timestamps more than 5 minutes off (replays).

**The answer.** Any 2xx means delivered; the response JSON's ``id`` (if any) becomes the order's
``venue_order_id``, and for a bracket ``legs: [{"client_order_id", "id"}, …]`` (if any) the legs'.
A 409 means "I already have this Idempotency-Key" and also counts as delivered (its ``id`` is the
original order's). Connection errors, timeouts, 408, 429 and 5xx are retried with tenacity
(exponential backoff with full jitter, or the receiver's ``Retry-After`` seconds when it sends
one); a retry re-sends the same bytes under the same Idempotency-Key with a fresh timestamp and
signature. Any other status raises :class:`OrderRejected` (``code`` = the HTTP status) at once
with the status and the body. Retries exhausted raise :class:`OrderStateUnknown` (it may have
been delivered); a ``Retry-After`` longer than ``retry_after_max_s`` or a request that cannot be
sent at all (proxy, protocol) raises :class:`VenueUnavailable` (not delivered).

**Exactly once** rests on the receiver deduplicating on Idempotency-Key: a POST whose answer was
lost (timeout, crash before the ledger write) is sent again under the same key, and the receiver
answers the duplicate with the original order. This process also remembers what it sent
(:meth:`WebhookVenue.fetch_order`), but only in memory: after a restart it knows nothing.

**The secret** (from the constructor; the deployment reads it from an environment variable) never
appears in a log line, an exception or a returned object: every text read back from the receiver
is scrubbed of it before it goes anywhere, and URLs are logged as ``scheme://host:port`` only
(webhook paths often carry tokens).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, quote_plus

import httpx2 as httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential
from tenacity.wait import wait_base

from trading_pipelines.domain.models import Fill, Order, OrderRequest, OrderStatus, Position
from trading_pipelines.venues.protocol import Balance, OrderRejected, OrderStateUnknown, Venue, VenueError, VenueUnavailable

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_PREFIX = "sha256="
REDACTED = "[redacted]"

_RETRY_STATUSES = frozenset({408, 429})
_ERROR_BODY_CHARS = 500


# ---------------------------------------------------------------------------- signing


def canonical_json(obj: Any) -> bytes:
    """The exact bytes that are sent and signed: JSON with sorted keys, no spaces, ASCII only
    (non-ASCII as ``\\uXXXX``), NaN/Infinity refused."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Lower-case hex HMAC-SHA256 keyed with ``secret`` (UTF-8) over ``f"{timestamp}."`` followed
    by ``body``, the exact request bytes. ``timestamp`` is the ``X-Timestamp`` header: unix
    seconds (UTC) as a decimal string. The header carries it as ``sha256=<hex>``."""
    return hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float, tolerance_s: float = 300) -> bool:
    """A receiver's check: ``signature`` (``sha256=<hex>`` or bare hex) is :func:`sign` of
    (``timestamp``, ``body``) under ``secret``, and ``timestamp`` (unix seconds) is within
    ``tolerance_s`` seconds of ``now`` (unix seconds) either way, so a captured request cannot
    be replayed later. Constant-time comparison."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if not math.isfinite(now) or abs(now - ts) > tolerance_s:
        return False
    given = signature[len(SIGNATURE_PREFIX):] if signature.startswith(SIGNATURE_PREFIX) else signature
    try:
        expected = sign(secret, timestamp, body)
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("ascii", "replace"))


# ---------------------------------------------------------------------------- retry plumbing


class _Retryable(Exception):
    """One attempt failed in a way worth retrying. ``reason`` is already scrubbed of the secret."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class _RetryAfterOrBackoff(wait_base):
    """Wait what the receiver's ``Retry-After`` asked for, else the jittered exponential backoff."""

    def __init__(self, backoff: wait_base):
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        return retry_after if retry_after is not None else self.backoff(retry_state)


def _retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds, or an HTTP-date; None if absent/garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _iso_utc(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: placed_at must be timezone-aware UTC")
    return t.astimezone(timezone.utc).isoformat()


# ---------------------------------------------------------------------------- the venue


class WebhookVenue(Venue):
    """Orders POSTed, signed and idempotent, to ``url`` for ``account`` (see the module doc).

    ``secret``: the HMAC key (None sends unsigned requests, which a receiver should refuse; a
    warning is logged). ``equity``: the sizing equity in quote currency: a webhook reports nothing
    back, so :meth:`fetch_balance` answers this configured figure. ``timeout_s``: per attempt
    (connect, read, write). ``max_retries``: retries after the first attempt (so at most
    ``max_retries + 1`` POSTs per order); backoff is full-jitter exponential from
    ``retry_initial_wait_s`` up to ``retry_max_wait_s`` seconds, or ``Retry-After`` when the
    receiver sends one (a ``Retry-After`` over ``retry_after_max_s`` gives up instead of
    stalling a run). ``client``: an ``httpx2.Client`` to use (tests, proxies); otherwise one is
    made and :meth:`close` closes it.

    Calls are serialized per venue (a lock is held across the POST and its retries), so two
    threads placing the same client order id cannot both send it.
    """

    name = "webhook"
    reports_positions = False  # nothing comes back: the account step counts what the ledger SENT (account.view.book_positions)
    simulated = False

    def __init__(self, *, url: str, account: str, secret: str | None, equity: float, timeout_s: float = 10.0,
                 max_retries: int = 3, client: httpx.Client | None = None, retry_initial_wait_s: float = 0.5,
                 retry_max_wait_s: float = 30.0, retry_after_max_s: float = 60.0):
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            parsed = None  # the message would quote the URL, which may carry a token
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("webhook url must be an absolute http(s) URL")
        if secret is not None and not secret:
            raise ValueError("webhook secret is empty (pass None to send unsigned requests)")
        if not (math.isfinite(equity) and equity >= 0):
            raise ValueError(f"equity must be a finite amount >= 0 (quote currency), not {equity!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, not {timeout_s!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {max_retries!r}")
        self.url = url
        self.account = account
        self.equity = float(equity)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_initial_wait_s = retry_initial_wait_s
        self.retry_max_wait_s = retry_max_wait_s
        self.retry_after_max_s = retry_after_max_s
        self.__secret = secret
        self._where = f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")
        self._own_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._sent: dict[str, Order] = {}
        self._brackets: dict[str, list[Order]] = {}
        self._lock = threading.RLock()
        if secret is None:
            log.warning("webhook venue %s (%s): no secret configured, requests are sent unsigned", account, self._where)

    def __repr__(self) -> str:
        return f"WebhookVenue(account={self.account!r}, url={self._where}/…, signed={self.__secret is not None})"

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the HTTP client if this venue made it."""
        if self._own_client:
            self._client.close()

    def __enter__(self) -> "WebhookVenue":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ scrubbing
    def _scrub(self, text: str) -> str:
        """``text`` with every form of the secret (raw, JSON-escaped, URL-encoded) replaced."""
        s = self.__secret
        if not s:
            return text
        for form in sorted({s, json.dumps(s)[1:-1], quote(s, safe=""), quote_plus(s)}, key=len, reverse=True):
            text = text.replace(form, REDACTED)
        return text

    def _body_text(self, response: httpx.Response) -> str:
        # scrub the whole body before truncating: a cut could leave a prefix of the secret behind
        text = self._scrub(response.content.decode("utf-8", "replace"))
        return text if len(text) <= _ERROR_BODY_CHARS else text[:_ERROR_BODY_CHARS] + "…"

    # ------------------------------------------------------------------ bodies
    @staticmethod
    def _order_fields(r: OrderRequest) -> dict[str, Any]:
        return {"client_order_id": r.client_order_id, "instrument": r.instrument, "side": r.side.value,
                "type": r.type.value, "quantity": r.quantity, "price": r.price, "trigger_price": r.trigger_price,
                "role": r.role.value, "reduce_only": r.reduce_only, "parent_client_order_id": r.parent_client_order_id,
                "oco_group": r.oco_group}

    def order_body(self, request: OrderRequest, *, placed_at: datetime, position_side: str, leverage: float = 1.0,
                   margin_mode: str | None = None, legs: tuple[OrderRequest, ...] = ()) -> bytes:
        """The exact bytes POSTed (and signed) for ``request`` (with bracket ``legs`` if given)."""
        body: dict[str, Any] = {"account": self.account, **self._order_fields(request), "position_side": position_side,
                                "leverage": leverage, "margin_mode": margin_mode, "placed_at": _iso_utc(placed_at)}
        if legs:
            body["legs"] = [self._order_fields(leg) for leg in legs]
        try:
            return canonical_json(body)
        except ValueError as e:  # NaN/inf price
            raise VenueError(f"order {request.client_order_id}: not serializable as JSON: {e}") from None

    # ------------------------------------------------------------------ sending
    def _headers(self, key: str, body: bytes) -> dict[str, str]:
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key, TIMESTAMP_HEADER: ts}
        if self.__secret is not None:
            headers[SIGNATURE_HEADER] = SIGNATURE_PREFIX + sign(self.__secret, ts, body)
        return headers

    def _post_once(self, key: str, body: bytes) -> tuple[int, Any]:
        """One attempt (fresh timestamp and signature over the same bytes). Returns (status, JSON
        or None) when delivered; raises :class:`_Retryable` or :class:`VenueError`."""
        try:
            response = self._client.post(self.url, content=body, headers=self._headers(key, body),
                                         timeout=self.timeout_s)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as e:
            raise _Retryable(self._scrub(f"{type(e).__name__}: {e}")) from None
        except httpx.HTTPError as e:  # unsupported protocol, proxy, too many redirects: not transient
            raise VenueUnavailable(f"webhook {self._where}: {key}: {self._scrub(f'{type(e).__name__}: {e}')}") from None
        status = response.status_code
        if 200 <= status < 300 or status == 409:
            try:
                data = response.json() if response.content else None
            except ValueError:
                data = None
            return status, data
        if status in _RETRY_STATUSES or status >= 500:
            retry_after = _retry_after_seconds(response.headers.get("Retry-After"), time.time())
            reason = f"HTTP {status}: {self._body_text(response)}"
            if retry_after is not None and retry_after > self.retry_after_max_s:
                raise VenueUnavailable(f"webhook {self._where}: {key}: {reason} (Retry-After {retry_after:g} s is more than "
                                 f"the {self.retry_after_max_s:g} s this venue waits; not delivered)")
            raise _Retryable(reason, status=status, retry_after=retry_after)
        raise OrderRejected(f"webhook {self._where}: {key} refused with HTTP {status}: {self._body_text(response)}", status)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("webhook %s: %s attempt %d failed (%s); retrying in %.2f s", self._where,
                    state.kwargs.get("key", "?"), state.attempt_number, getattr(exc, "reason", "?"), wait)

    def _deliver(self, key: str, body: bytes) -> tuple[int, Any]:
        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=_RetryAfterOrBackoff(wait_random_exponential(multiplier=self.retry_initial_wait_s,
                                                              max=self.retry_max_wait_s)),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            status, data = retrying(self._post_once, key=key, body=body)
        except _Retryable as e:
            raise OrderStateUnknown(f"webhook {self._where}: {key} not confirmed after {self.max_retries + 1} attempts: "
                                    f"{e.reason} (it may have been delivered; re-sending under the same "
                                    f"Idempotency-Key is safe)", key) from None
        log.info("webhook %s: %s delivered (HTTP %d%s)", self._where, key, status,
                 ", receiver already had it" if status == 409 else "")
        return status, data

    @staticmethod
    def _ids(data: Any) -> tuple[str | None, dict[str, str]]:
        """(``id``, {leg client order id: leg ``id``}) from a response JSON, when present."""
        if not isinstance(data, dict):
            return None, {}
        oid = data.get("id")
        legs: dict[str, str] = {}
        for leg in data.get("legs") or []:
            if isinstance(leg, dict) and leg.get("client_order_id") is not None and leg.get("id") is not None:
                legs[str(leg["client_order_id"])] = str(leg["id"])
        return (str(oid) if oid is not None else None), legs

    @staticmethod
    def _sent_order(request: OrderRequest, venue_order_id: str | None, placed_at: datetime) -> Order:
        return Order(client_order_id=request.client_order_id, venue_order_id=venue_order_id, request=request,
                     status=OrderStatus.SENT, placed_at=placed_at)

    # ------------------------------------------------------------------ verbs
    def create_order(self, request: OrderRequest, *, placed_at: datetime, position_side: str, leverage: float = 1.0,
                     reserve: float = 0.0) -> Order:
        """POST one order (see the module doc); returns it with status SENT once a 2xx (or 409)
        came back. Idempotent: a client order id this process already delivered is returned
        without a second POST, and a re-send after a restart carries the same Idempotency-Key.
        ``reserve`` is ignored (the venue holds no cash)."""
        with self._lock:
            known = self._sent.get(request.client_order_id)
            if known is not None:
                return known
            body = self.order_body(request, placed_at=placed_at, position_side=position_side, leverage=leverage)
            _, data = self._deliver(request.client_order_id, body)
            oid, _ = self._ids(data)
            order = self._sent_order(request, oid, placed_at)
            self._sent[request.client_order_id] = order
            return order

    def create_bracket(self, entry: OrderRequest, stop_loss: OrderRequest, take_profit: OrderRequest, *,
                       placed_at: datetime, position_side: str, leverage: float = 1.0, reserve: float = 0.0,
                       margin_mode: str | None = None) -> list[Order]:
        """ONE POST for the entry and its legs (``legs``: [stop_loss, take_profit]) under the
        entry's client order id; returns [entry, stop_loss, take_profit], all SENT. Idempotent on
        the entry's client order id, as :meth:`create_order`."""
        with self._lock:
            known = self._brackets.get(entry.client_order_id)
            if known is not None:
                return list(known)
            body = self.order_body(entry, placed_at=placed_at, position_side=position_side, leverage=leverage,
                                   margin_mode=margin_mode, legs=(stop_loss, take_profit))
            _, data = self._deliver(entry.client_order_id, body)
            oid, leg_ids = self._ids(data)
            orders = [self._sent_order(entry, oid, placed_at)] + [
                self._sent_order(leg, leg_ids.get(leg.client_order_id), placed_at) for leg in (stop_loss, take_profit)]
            for o in orders:
                self._sent[o.client_order_id] = o
            self._brackets[entry.client_order_id] = orders
            return list(orders)

    def fetch_order(self, client_order_id: str, instrument: str | None = None) -> Order | None:
        """The order this process delivered under ``client_order_id`` (entry or bracket leg), else
        None. Limit: kept in memory only, so after a restart this is None for everything; a
        re-send is then safe because the receiver deduplicates on Idempotency-Key."""
        with self._lock:
            return self._sent.get(client_order_id)

    def lookup_order(self, client_order_id: str, instrument: str | None = None,
                     since: datetime | None = None) -> Order | None:
        """As :meth:`fetch_order`: the order this process delivered, else None — which for a
        webhook means "not confirmed here", not "absent at the receiver"; re-sending it is safe
        because the receiver deduplicates on Idempotency-Key (a 409 counts as delivered)."""
        return self.fetch_order(client_order_id, instrument)

    def cancel_order(self, client_order_id: str, instrument: str | None = None) -> Order:
        raise VenueError(f"a webhook venue cannot cancel: {client_order_id} was handed to the receiver, which reports "
                         "nothing back; cancel it at the receiver")

    def fetch_open_orders(self, instrument: str | None = None) -> list[Order]:
        """Always empty: the receiver reports no order state."""
        return []

    def fetch_positions(self) -> list[Position]:
        """Always empty: the receiver reports no positions."""
        return []

    def fetch_balance(self) -> Balance:
        """The configured sizing ``equity`` (quote currency) as cash and equity, nothing reserved,
        no P&L: a webhook reports nothing back, so sizing uses the configured equity."""
        return Balance(cash=self.equity, reserved=0.0, equity=self.equity, realized_pnl=0.0, unrealized_pnl=0.0,
                       fees_paid=0.0)

    def fetch_my_trades(self, since: datetime | None = None) -> list[Fill]:
        """Always empty: the receiver reports no fills."""
        return []


__all__ = ["WebhookVenue", "canonical_json", "sign", "verify", "SIGNATURE_HEADER", "TIMESTAMP_HEADER",
           "IDEMPOTENCY_HEADER"]
