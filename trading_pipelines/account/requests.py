"""The orders an intent becomes (pure): an entry's bracket, an exit's reduce-only market order, and
the protective legs of an open position. Client order ids derive from the intent id and the role
(:mod:`trading_pipelines.domain.ids`); a leg placed again for another quantity takes the next
generation of its id (``…-sl`` → ``…-sl1`` → ``…-sl2``), so no id is ever reused for two orders."""

from __future__ import annotations

from trading_pipelines.domain.costs import DEFAULT_MAX_ENTRY_SLIPPAGE_PCT, protective_limit
from trading_pipelines.domain.ids import client_order_id
from trading_pipelines.domain.models import IntentKind, OrderRequest, OrderRole, OrderType, Position, TradeIntent


def order_requests(intent: TradeIntent, max_entry_slippage_pct: float | None = None,
                   tick_size: float | None = None) -> list[OrderRequest]:
    """The bracket of an entry intent: a protective-limit entry (a LIMIT priced at
    :func:`~trading_pipelines.domain.costs.protective_limit` of the planned entry, the last close,
    ``max_entry_slippage_pct`` percent beyond it on the ``tick_size`` grid; immediate-or-cancel at
    the next open: the paper venue expires it when the bar opens beyond the limit) plus a reduce-only
    stop-loss (stop-market) and take-profit (limit), one-cancels-other, live once the entry fills.
    ``max_entry_slippage_pct`` None: the planner's default (0.5 %). Raises ``ValueError`` for
    anything but an entry (an exit's size is the venue's position, see :func:`exit_request`)."""
    if intent.kind is not IntentKind.ENTRY:
        raise ValueError(f"intent {intent.intent_id} is not an entry")
    entry_cid = client_order_id(intent.intent_id, OrderRole.ENTRY)
    slip = DEFAULT_MAX_ENTRY_SLIPPAGE_PCT if max_entry_slippage_pct is None else max_entry_slippage_pct
    limit = protective_limit(intent.side, intent.entry, slip, tick_size)
    stop, target = protective_requests(intent, intent.quantity, 0)
    entry = OrderRequest(client_order_id=entry_cid, instrument=intent.instrument, side=intent.side, type=OrderType.LIMIT,
                         quantity=intent.quantity, price=limit, role=OrderRole.ENTRY)
    return [entry, stop.model_copy(update={"parent_client_order_id": entry_cid, "oco_group": entry_cid}),
            target.model_copy(update={"parent_client_order_id": entry_cid, "oco_group": entry_cid})]


def leg_id(intent_id: str, role: OrderRole, generation: int = 0) -> str:
    """The client order id of ``role``'s leg of ``intent_id``, generation ``generation`` (0: the
    bracket's own; 1, 2 …: placed again for a new quantity). At most 32 characters."""
    cid = client_order_id(intent_id, role)
    return cid if generation == 0 else f"{cid}{generation}"


def generation_of(cid: str) -> int:
    tail = cid.rsplit("-", 1)[-1]
    digits = tail[2:]
    return int(digits) if digits.isdigit() else 0


def protective_requests(intent: TradeIntent, quantity: float, generation: int) -> tuple[OrderRequest, OrderRequest]:
    """The reduce-only stop-loss (stop-market at the intent's stop) and take-profit (limit at its
    target) for ``quantity`` base units of the intent's position, generation ``generation``."""
    exit_side = intent.side.opposite
    stop = OrderRequest(client_order_id=leg_id(intent.intent_id, OrderRole.STOP_LOSS, generation),
                        instrument=intent.instrument, side=exit_side, type=OrderType.STOP, quantity=quantity,
                        trigger_price=intent.stop, role=OrderRole.STOP_LOSS, reduce_only=True)
    target = OrderRequest(client_order_id=leg_id(intent.intent_id, OrderRole.TAKE_PROFIT, generation),
                          instrument=intent.instrument, side=exit_side, type=OrderType.LIMIT, quantity=quantity,
                          price=intent.take_profit, role=OrderRole.TAKE_PROFIT, reduce_only=True)
    return stop, target


def exit_order(intent_id: str, pos: Position, generation: int = 0) -> OrderRequest:
    """The reduce-only market order that closes ``pos`` whole (an exit intent, or a flatten)."""
    return OrderRequest(client_order_id=leg_id(intent_id, OrderRole.EXIT, generation), instrument=pos.instrument,
                        side=pos.side.exit_side, type=OrderType.MARKET, quantity=pos.quantity, role=OrderRole.EXIT,
                        reduce_only=True)


__all__ = ["exit_order", "generation_of", "leg_id", "order_requests", "protective_requests"]
