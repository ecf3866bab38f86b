"""Binance's errors through ccxt, mapped once to the protocol's small set, and secret scrubbing.

ccxt raises its own exception hierarchy (``ccxt.base.errors``; ccxt ``binance.handle_errors`` maps
Binance's ``{"code", "msg"}`` bodies and HTTP 418/429 onto it). The venue sees only these kinds:

====================================================  =============  ==================================
venue answer (ccxt class)                             kind           the adapter …
====================================================  =============  ==================================
−2010 NEW_ORDER_REJECTED, "Account has insufficient   REJECTED       raises :class:`OrderRejected`
balance" (``InsufficientFunds``), −2019 margin,                      (placements only; reads: VenueError)
``InvalidOrder`` (−1013 filters, −4164 min notional,
−2022 reduce-only rejected, −1111 precision),
``OperationRejected`` (−4131 PERCENT_PRICE)
−1021 recvWindow / clock skew (``InvalidNonce``)      CLOCK          resyncs (``load_time_difference``,
                                                                     ``adjustForTimeDifference``), retries
HTTP 429 / 418 (``DDoSProtection``,                   RATE_LIMIT     waits ``Retry-After`` (bounded), retries;
``RateLimitExceeded``; −1003, −1015)                                 a longer ban → :class:`VenueUnavailable`
timeout, connection, 5xx (``RequestTimeout``,         NETWORK        reads: retried with jittered backoff;
``ExchangeNotAvailable``, other ``NetworkError``)                    a placement's answer is *lost*: looked up
duplicate client order id (−2010 "Duplicate order     DUPLICATE      looks the existing order up
sent", −4116, −20132)
anything else (authentication −1022/−2015, …)         OTHER          raises :class:`VenueError`
====================================================  =============  ==================================

A 429/418 or −1021 answer means Binance refused the request before acting on it, so resending is
safe; a timeout or 5xx does not (Binance: "the execution status is UNKNOWN and could have been a
success").
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timezone
from typing import Any, Iterable

import ccxt

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (ccxt.NetworkError, ccxt.RateLimitExceeded,
                                                 ccxt.ExchangeNotAvailable, ccxt.RequestTimeout)
"""Retried (ccxt's own hierarchy puts all four under ``NetworkError``; listed for the reader)."""

REJECTED, CLOCK, RATE_LIMIT, NETWORK, DUPLICATE, OTHER = "rejected", "clock", "rate_limit", "network", "duplicate", "other"

_DUPLICATE = ("Duplicate order sent", "-4116", "-20132", "duplicated")
_REJECT_CODES = frozenset({-2010, -2019, -2022, -1013, -1111, -1100, -1102, -1106, -1115, -1116, -1117, -4164,
                           -4003, -4131, -4005, -4024, -4061, -2027, -2028})
_REJECT_WORDS = ("Filter failure", "insufficient balance", "Margin is insufficient", "ReduceOnly Order is rejected",
                 "MIN_NOTIONAL", "NOTIONAL")
_CODE = re.compile(r'"code"\s*:\s*(-?\d+)')
_BANNED_UNTIL = re.compile(r"banned until (\d{12,})")


def binance_code(e: BaseException, last_json: Any = None) -> int | None:
    """Binance's error code: from the body ccxt quotes in the message, else from the last
    response's body (``exchange.last_http_response``: ccxt's exact-message matches quote only
    the ``msg``)."""
    m = _CODE.search(str(e))
    if m:
        return int(m.group(1))
    if isinstance(last_json, str):
        try:
            last_json = json.loads(last_json)
        except ValueError:
            return None
    if isinstance(last_json, dict) and last_json.get("code") is not None:
        try:
            return int(last_json["code"])
        except (TypeError, ValueError):
            return None
    return None


def classify(e: BaseException, code: int | None = None) -> str:
    """The kind of a ccxt error (see the module table)."""
    text = str(e)
    if any(d in text for d in _DUPLICATE):
        return DUPLICATE
    if isinstance(e, ccxt.InvalidNonce) or code == -1021 or "outside of the recvWindow" in text:
        return CLOCK
    if isinstance(e, (ccxt.DDoSProtection, ccxt.RateLimitExceeded)) or code in (-1003, -1015):
        return RATE_LIMIT
    if isinstance(e, ccxt.NetworkError):
        return NETWORK
    if isinstance(e, ccxt.OrderNotFound):
        return OTHER
    if isinstance(e, (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.OperationRejected)):
        return REJECTED
    if code in _REJECT_CODES or any(w in text for w in _REJECT_WORDS):
        return REJECTED
    return OTHER


def retry_after_s(headers: Any, message: str = "", now_ms: float | None = None) -> float | None:
    """Seconds Binance asks to wait: the ``Retry-After`` response header (seconds; ccxt keeps the
    last response's headers in ``exchange.last_response_headers``), else an IP ban's
    "banned until <epoch ms>" in the message. None when neither says."""
    value = None
    if headers is not None:
        try:
            value = headers.get("Retry-After") or headers.get("retry-after")
        except AttributeError:
            value = None
    if value is not None:
        try:
            return max(0.0, float(value))
        except (TypeError, ValueError):
            pass
    m = _BANNED_UNTIL.search(message or "")
    if m:
        now = now_ms if now_ms is not None else time.time() * 1000
        return max(0.0, (int(m.group(1)) - now) / 1000)
    return None


def ban_window(seconds: float, now: datetime | None = None) -> str:
    """``"600 s (until 2024-07-28T10:16:06Z)"``."""
    now = now or datetime.now(timezone.utc)
    until = datetime.fromtimestamp(now.timestamp() + seconds, tz=timezone.utc)
    return f"{seconds:g} s (until {until.strftime('%Y-%m-%dT%H:%M:%SZ')})"


# ---------------------------------------------------------------------------------------------- secrets
class Scrubber(logging.Filter):
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


SCRUBBER = Scrubber()


def venue_message(e: BaseException) -> str:
    """Binance's own ``msg`` when ccxt quoted the body, else ccxt's text."""
    text = str(e)
    start = text.find("{")
    if start >= 0:
        try:
            body = json.loads(text[start:])
            if isinstance(body, dict) and body.get("msg"):
                return str(body["msg"])
        except ValueError:
            pass
    return text


__all__ = ["CLOCK", "DUPLICATE", "NETWORK", "OTHER", "RATE_LIMIT", "REJECTED", "SCRUBBER", "Scrubber", "TRANSIENT_ERRORS",
           "ban_window", "binance_code", "classify", "retry_after_s", "venue_message"]
