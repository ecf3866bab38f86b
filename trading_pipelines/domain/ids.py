"""Deterministic identifiers: the idempotency keys of the pipeline.

An intent id is a hash of (strategy, instrument, window end), so re-running a window plans the
same intent; client order ids derive from the intent id and the order's role, so a retried or
re-run step can never place a second order at the venue: the venue (or the paper venue) refuses
a client order id it has already seen and the executor reads the existing order back instead.

Binance limits ``newClientOrderId`` to 36 characters of ``[.A-Z:/a-z0-9_-]``; the ids here are
30 characters of ``[a-z0-9-]``, valid for Binance, IBKR (``orderRef``) and webhooks alike.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from trading_pipelines.domain.models import OrderRole

_ROLE_CODE = {OrderRole.ENTRY: "en", OrderRole.STOP_LOSS: "sl", OrderRole.TAKE_PROFIT: "tp", OrderRole.EXIT: "ex",
              OrderRole.LIQUIDATION: "lq"}


def _utc_iso(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: window ends must be timezone-aware UTC")
    return t.astimezone(timezone.utc).isoformat()


def intent_id(strategy: str, instrument: str, window_end: datetime, book: str = "live") -> str:
    """``"it-" + 24 hex`` from sha256 of ``strategy|instrument|window_end(ISO, UTC)`` on the live
    book, and of ``…|book`` on any other book (a replay's intents never collide with live ones)."""
    raw = f"{strategy}|{instrument}|{_utc_iso(window_end)}" + ("" if book == "live" else f"|{book}")
    raw = raw.encode()
    return "it-" + hashlib.sha256(raw).hexdigest()[:24]


def client_order_id(intent: str, role: OrderRole) -> str:
    """``"tp-" + 24 hex of the intent + "-" + role code`` (e.g. ``tp-1f…-sl``), 30 characters."""
    if not intent.startswith("it-") or len(intent) != 27:
        raise ValueError(f"not an intent id: {intent!r}")
    return f"tp-{intent[3:]}-{_ROLE_CODE[role]}"
