"""IB's orders ↔ the domain for :mod:`trading_pipelines.venues.ibkr`: the status mapping (see
that module's doc), client order ids (``orderRef``; ``ib-<permId>`` for manual orders) and the
small conversions of ib_async fields. Pure: no connection, no venue state."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

from trading_pipelines.domain.models import OrderRole, OrderStatus, OrderType
from trading_pipelines.venues.protocol import VenueError

_STATUS = {
    "PendingSubmit": OrderStatus.ACCEPTED,
    "ApiPending": OrderStatus.ACCEPTED,
    "PreSubmitted": OrderStatus.ACCEPTED,
    "Submitted": OrderStatus.ACCEPTED,
    "PendingCancel": OrderStatus.ACCEPTED,
    "ApiUpdate": OrderStatus.ACCEPTED,
    "ValidationError": OrderStatus.ACCEPTED,  # ib_async counts it as active: the order may still work
    "Filled": OrderStatus.FILLED,
    "Cancelled": OrderStatus.CANCELED,
    "ApiCancelled": OrderStatus.CANCELED,
    "Inactive": OrderStatus.ACCEPTED,  # held by IB (see status_of)
}
_DONE = frozenset({"Filled", "Cancelled", "ApiCancelled"})  # Inactive is held, not done: it can be cancelled

# this pipeline's client order ids (trading_pipelines.domain.ids.client_order_id)
_CID = re.compile(r"^tp-[0-9a-f]{24}-(en|sl|tp|ex|lq)$")
_ROLE_BY_CODE = {"en": OrderRole.ENTRY, "sl": OrderRole.STOP_LOSS, "tp": OrderRole.TAKE_PROFIT, "ex": OrderRole.EXIT,
                 "lq": OrderRole.LIQUIDATION}
_MANUAL_PREFIX = "ib-"

_CONNECT_ERRORS = (ConnectionError, OSError, TimeoutError)  # ConnectionRefusedError is both; asyncio.TimeoutError is TimeoutError
_UNSET_DOUBLE = 1.7976931348623157e308  # ib_async.util.UNSET_DOUBLE (sys.float_info.max)


def _ib_async():
    import ib_async

    return ib_async


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _price(v: Any) -> float | None:
    """A price field of an ib_async Order, or None when unset (UNSET_DOUBLE, None, NaN, 0 for aux)."""
    if v is None:
        return None
    v = float(v)
    if not math.isfinite(v) or v >= _UNSET_DOUBLE:
        return None
    return v


def _shares(quantity: float, what: str) -> float:
    """``quantity`` as whole shares (IB equities trade in whole shares here)."""
    whole = round(quantity)
    if abs(quantity - whole) > 1e-9 or whole <= 0:
        raise VenueError(f"{what}: IBKR orders here are whole shares, not {quantity}")
    return float(whole)


def _instrument(contract) -> str:
    return contract.symbol if contract.secType in ("STK", "") else (contract.localSymbol or contract.symbol)


def _manual_cid(order) -> str:
    return f"{_MANUAL_PREFIX}{order.permId}" if order.permId else f"{_MANUAL_PREFIX}order-{order.clientId}-{order.orderId}"


def _cid_of(order) -> str:
    return order.orderRef or _manual_cid(order)


def _ours(cid: str) -> bool:
    return bool(_CID.match(cid or ""))


def _order_type(ib_type: str) -> OrderType:
    t = (ib_type or "").upper()
    if t.startswith("STP") or t.startswith("TRAIL"):
        return OrderType.STOP
    if "LMT" in t or t in ("LOC", "REL"):
        return OrderType.LIMIT
    return OrderType.MARKET


_REJECTED_CODES = frozenset({201})  # "Order rejected - reason: …": the order ends Inactive


def status_of(trade, filled: float, quantity: float) -> tuple[OrderStatus, str]:
    """(status, reason) of an ib_async Trade (see the module doc of ``ibkr``)."""
    st = trade.orderStatus
    status = _STATUS.get(st.status, OrderStatus.ACCEPTED)
    errors = [e for e in (trade.log or []) if getattr(e, "errorCode", 0) or getattr(e, "message", "")]
    last = errors[-1] if errors else None
    said = f"IB {last.errorCode}: {last.message}" if last is not None and last.errorCode else (last.message if last else "")
    if st.status == "Inactive":
        if last is not None and last.errorCode in _REJECTED_CODES:
            return OrderStatus.REJECTED, f"rejected by IB ({said})"
        why = "; ".join(w for w in (getattr(st, "whyHeld", "") or "", said) if w)
        return OrderStatus.ACCEPTED, f"held by IB (Inactive){': ' + why if why else ': outside trading hours, margin or locate'}"
    if status is OrderStatus.ACCEPTED and filled > 0:
        return OrderStatus.PARTIALLY_FILLED, ""
    if status is OrderStatus.CANCELED:
        return status, (f"cancelled after {filled:g} of {quantity:g} shares filled" if filled > 0 else said)
    return status, ""


__all__ = ["status_of"]
