"""ccxt order dicts ↔ the domain: status mapping, requests read back from the venue, and the
Binance requests built from an :class:`OrderRequest` (ccxt ``create_order`` arguments and the
spot OCO order list). Pure functions: no network, no venue state.

**Status** (ccxt unified ``status`` → :class:`OrderStatus`): ``open`` → ACCEPTED, or
PARTIALLY_FILLED when ``filled`` > 0; ``closed`` → FILLED; ``canceled``/``canceling`` → CANCELED;
``expired`` → EXPIRED (Binance EXPIRED / EXPIRED_IN_MATCH; a spot IOC that EXPIRED with
``executedQty`` > 0 is a partial fill, and ``filled_quantity`` keeps it); ``rejected`` → REJECTED.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from trading_pipelines.domain.models import Mode, OrderRequest, OrderRole, OrderStatus, OrderType, Side
from trading_pipelines.venues.protocol import VenueError

STATUS = {"open": OrderStatus.ACCEPTED, "closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELED,
          "canceling": OrderStatus.CANCELED, "expired": OrderStatus.EXPIRED, "rejected": OrderStatus.REJECTED}

SPOT_STOP_LIMIT_SLIPPAGE = 0.005
"""When a spot symbol does not allow ``STOP_LOSS`` (market on trigger; see its exchangeInfo
``orderTypes``) the stop leg is a ``STOP_LOSS_LIMIT`` whose limit sits this fraction beyond the
trigger (sell: trigger × (1 − 0.005)), so a fast move still fills."""


def utc_ms(ms: int | float | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc) if ms else None


def num(v: Any, default: float = 0.0) -> float:
    try:
        return default if v is None else float(v)
    except (TypeError, ValueError):
        return default


def order_status(o: dict) -> OrderStatus:
    status = STATUS.get(o.get("status") or "open", OrderStatus.ACCEPTED)
    if status is OrderStatus.ACCEPTED and num(o.get("filled")) > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


def order_reason(o: dict, status: OrderStatus) -> str:
    """The venue's words on why an order ended as it did (Binance reports no reason field for
    most orders: an expiry is described from its time in force and fill)."""
    info = o.get("info") or {}
    said = next((str(info[k]) for k in ("rejectReason", "expireReason", "cancelReason", "msg") if info.get(k)
                 and str(info[k]).upper() not in ("NONE", "")), "")
    if said:
        return said
    if status is OrderStatus.EXPIRED:
        tif = o.get("timeInForce") or info.get("timeInForce") or ""
        return (f"expired ({info.get('status') or 'EXPIRED'}{', ' + tif if tif else ''}) with "
                f"{num(o.get('filled')):g} of {num(o.get('amount')):g} filled")
    if status is OrderStatus.REJECTED:
        return f"rejected by the venue ({info.get('status') or 'REJECTED'})"
    if o.get("_algo") and status is OrderStatus.FILLED:
        actual = info.get("actualOrderId")
        return f"triggered ({info.get('algoStatus')}){': order ' + str(actual) if actual else ''}"
    return ""


def infer_request(o: dict, mode: Mode, exchange_id: str) -> OrderRequest:
    """An :class:`OrderRequest` read back from a ccxt order this process did not place (after a
    restart): role from the order's type and reduce-only flag (Algo Service orders: their
    ``orderType``), every non-entry reduce-only."""
    info = o.get("info") or {}
    raw = str(info.get("type") or info.get("orderType") or o.get("type") or "").lower()
    trigger = o.get("triggerPrice") or num(info.get("stopPrice") or info.get("triggerPrice")) or None
    reduce = bool(o.get("reduceOnly")) or str(info.get("reduceOnly")).lower() == "true"
    in_list = str(info.get("orderListId", "-1")) not in ("-1", "None")
    if "take_profit" in raw or (raw == "limit_maker" and in_list):
        role, otype, price, trig = OrderRole.TAKE_PROFIT, OrderType.LIMIT, o.get("price") or trigger, None
        if mode is Mode.FUTURES or "take_profit" in raw:
            price = trigger or o.get("price")
    elif "stop" in raw:
        role, otype, price, trig = OrderRole.STOP_LOSS, OrderType.STOP, None, trigger
    else:
        role = OrderRole.EXIT if reduce else OrderRole.ENTRY
        otype = OrderType.LIMIT if raw == "limit" else OrderType.MARKET
        price, trig = (o.get("price") or None) if otype is OrderType.LIMIT else None, None
    qty = num(o.get("amount")) or num(o.get("filled"))
    if qty <= 0:
        raise VenueError(f"{exchange_id}: order {o.get('clientOrderId')} has no quantity")
    return OrderRequest(client_order_id=o["clientOrderId"], instrument=o["symbol"], side=Side(o["side"]), type=otype,
                        quantity=qty, price=price, trigger_price=trig, role=role,
                        reduce_only=reduce or role is not OrderRole.ENTRY)


def order_args(r: OrderRequest, mode: Mode, order_types: list[str]) -> tuple[str, float | None, dict]:
    """(ccxt type, price, params) for one request. Entries/exits: market, or limit + price as
    IOC (fill now or expire). Stop-loss: ``stopLossPrice`` (futures STOP_MARKET on the Algo
    Service; spot STOP_LOSS, or STOP_LOSS_LIMIT when the symbol's ``order_types`` lack
    STOP_LOSS). Take-profit: futures ``takeProfitPrice`` (TAKE_PROFIT_MARKET), spot a limit."""
    params: dict[str, Any] = {"clientOrderId": r.client_order_id}
    futures = mode is Mode.FUTURES
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
        if futures or "STOP_LOSS" in order_types:
            return "market", None, {**params, "stopLossPrice": trigger}  # STOP_MARKET / spot STOP_LOSS
        limit = trigger * (1 - SPOT_STOP_LIMIT_SLIPPAGE if r.side is Side.SELL else 1 + SPOT_STOP_LIMIT_SLIPPAGE)
        return "limit", limit, {**params, "stopLossPrice": trigger}  # spot STOP_LOSS_LIMIT
    if r.role is OrderRole.TAKE_PROFIT:
        target = r.trigger_price if r.trigger_price is not None else r.price
        if target is None:
            raise VenueError(f"{r.client_order_id}: a take-profit needs a price")
        if futures:
            return "market", None, {**params, "takeProfitPrice": target}  # TAKE_PROFIT_MARKET (algo)
        return "limit", target, params  # spot: a resting limit sell at the target
    raise VenueError(f"{r.client_order_id}: role {r.role.value} cannot be placed")


def oco_request(ex, market: dict, stop_loss: OrderRequest, take_profit: OrderRequest, order_types: list[str],
                list_id: str) -> dict:
    """``POST /api/v3/orderList/oco`` parameters. Sell OCO: above = take-profit ``LIMIT_MAKER`` at
    its price, below = stop-loss ``STOP_LOSS`` (or ``STOP_LOSS_LIMIT``) at its trigger; a buy OCO
    mirrors it. ``ex`` formats prices and the amount to the symbol's precision."""
    if stop_loss.side is not take_profit.side:
        raise VenueError("OCO legs must be on the same side")
    symbol = stop_loss.instrument
    sl_type, sl_price, _ = order_args(stop_loss, Mode.SPOT, order_types)
    stop_leg = {"Type": "STOP_LOSS" if sl_type == "market" else "STOP_LOSS_LIMIT",
                "StopPrice": ex.price_to_precision(symbol, stop_loss.trigger_price),
                "ClientOrderId": stop_loss.client_order_id}
    if sl_type == "limit":
        stop_leg |= {"Price": ex.price_to_precision(symbol, sl_price), "TimeInForce": "GTC"}
    tp_leg = {"Type": "LIMIT_MAKER", "Price": ex.price_to_precision(symbol, take_profit.price or take_profit.trigger_price),
              "ClientOrderId": take_profit.client_order_id}
    above, below = (tp_leg, stop_leg) if stop_loss.side is Side.SELL else (stop_leg, tp_leg)
    return {"symbol": market["id"], "side": stop_loss.side.value.upper(),
            "quantity": ex.amount_to_precision(symbol, stop_loss.quantity), "listClientOrderId": list_id,
            "newOrderRespType": "FULL",
            **{"above" + k: v for k, v in above.items()}, **{"below" + k: v for k, v in below.items()}}


__all__ = ["SPOT_STOP_LIMIT_SLIPPAGE", "STATUS", "infer_request", "num", "oco_request", "order_args", "order_reason",
           "order_status", "utc_ms"]
