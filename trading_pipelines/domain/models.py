"""Domain models: the nouns of a trading decision.

Pure data (pydantic v2, frozen). No Dagster, no I/O. Units are stated per field:
prices are in the instrument's quote currency (USDT for Binance pairs, USD for US equities),
quantities in base quantity (coins or shares), times are timezone-aware UTC ``datetime``s,
percentages are *percent* (1.0 = 1 %) where a name ends in ``_pct`` and fractions elsewhere.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Mode(str, enum.Enum):
    """A strategy trades either spot or futures; the two never share a code path that matters."""

    SPOT = "spot"
    FUTURES = "futures"


class Side(str, enum.Enum):
    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> "Side":
        return Side.SELL if self is Side.BUY else Side.BUY


class PositionSide(str, enum.Enum):
    LONG = "long"
    SHORT = "short"

    @property
    def entry_side(self) -> Side:
        return Side.BUY if self is PositionSide.LONG else Side.SELL

    @property
    def exit_side(self) -> Side:
        return self.entry_side.opposite


class SpotAction(str, enum.Enum):
    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"


class FuturesAction(str, enum.Enum):
    LONG = "long"
    SHORT = "short"
    CLOSE = "close"
    HOLD = "hold"


class InstrumentSpec(Frozen):
    """Exchange trading rules for one instrument.

    ``lot_step``/``min_qty`` in base quantity, ``tick_size``/``min_notional`` in quote currency,
    ``maintenance_margin_rate`` a fraction (futures only).
    """

    symbol: str
    asset_class: Literal["crypto", "equity"]
    market: Mode
    lot_step: float = Field(gt=0)
    min_qty: float = Field(gt=0)
    tick_size: float = Field(gt=0)
    min_notional: float = Field(ge=0)
    calendar: str | None = None
    maintenance_margin_rate: float = Field(default=0.0, ge=0, lt=1)


class Bar(Frozen):
    """One OHLCV bar. ``open_time`` is the UTC bar open; the bar closes at ``open_time + timeframe``."""

    open_time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


class Signal(Frozen):
    """What a signal provider (rules or LLM) recommends for one instrument and window.

    ``action`` is a :class:`SpotAction` value in spot mode and a :class:`FuturesAction` value in
    futures mode. ``entry``/``stop``/``take_profit`` are optional quote-currency prices suggested
    by the provider; the planner computes its own technical stop and target and never uses them,
    but refuses an entry whose stop or target is implausible (see
    :func:`~trading_pipelines.domain.stops.answer_levels_problem`).
    ``no_trade_reason`` is set when the provider failed (bad answer, refusal, error): the signal
    is then a recorded ``hold`` and can never become an order.
    """

    strategy: str
    instrument: str
    window_end: datetime
    mode: Mode
    action: str
    confidence: float = Field(ge=0, le=1)
    entry: float | None = None
    stop: float | None = None
    take_profit: float | None = None
    thesis: str
    provider: str
    model: str
    prompt_hash: str
    no_trade_reason: str | None = None

    @model_validator(mode="after")
    def _action_fits_mode(self) -> "Signal":
        allowed = {a.value for a in (SpotAction if self.mode is Mode.SPOT else FuturesAction)}
        if self.action not in allowed:
            raise ValueError(f"action {self.action!r} is not a {self.mode.value} action (allowed: {sorted(allowed)})")
        return self


class IntentKind(str, enum.Enum):
    ENTRY = "entry"
    EXIT = "exit"
    NONE = "none"  # a recorded no-trade (hold, or a failure turned into data)


class IntentStatus(str, enum.Enum):
    """Intent lifecycle. Transitions are enforced by :mod:`trading_pipelines.domain.intents`.

    SUBMITTED: the orders are at the venue, the entry (or exit) not yet filled. MONITORING: the
    entry filled, the position is open with its stop-loss and take-profit resting. CLOSED: the
    position is closed (its realized P&L in the reason), or an exit filled. SENT: delivered to a
    fire-and-forget venue (a webhook), which reports nothing back. UNPROTECTED: the position is open
    and no stop rests for its whole quantity, and the strategy chose ``execution.protection: flag``
    (page a human) over flattening it. Once an intent's orders exist its status is derived from
    its legs (:func:`trading_pipelines.domain.orders.derive_intent_status`)."""

    PENDING = "PENDING"
    NO_TRADE = "NO_TRADE"
    VALIDATED = "VALIDATED"
    REJECTED = "REJECTED"
    AWAITING_CONFIRMATION = "AWAITING_CONFIRMATION"
    DRY_RUN = "DRY_RUN"
    SUBMITTED = "SUBMITTED"
    MONITORING = "MONITORING"
    UNPROTECTED = "UNPROTECTED"
    CLOSED = "CLOSED"
    SENT = "SENT"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


class TradeIntent(Frozen):
    """A planned trade, before guards (PLAN step output).

    ``quantity`` is base quantity already rounded down to the lot step; ``entry``/``stop``/
    ``take_profit`` are quote-currency prices; ``risk_amount`` = quantity × |entry − stop| in quote
    currency; ``notional`` = quantity × entry; ``margin`` = notional / leverage (futures; equals
    notional in spot). ``intent_id`` is deterministic in (strategy, instrument, window_end), so a
    re-run plans the same intent and derives the same client order ids.
    """

    intent_id: str
    strategy: str
    instrument: str
    window_end: datetime
    mode: Mode
    kind: IntentKind
    side: Side | None = None
    position_side: PositionSide | None = None
    quantity: float = 0.0
    entry: float | None = None
    stop: float | None = None
    take_profit: float | None = None
    leverage: float = 1.0
    margin_mode: Literal["isolated", "cross"] | None = None
    liquidation_price: float | None = None
    risk_amount: float = 0.0
    notional: float = 0.0
    margin: float = 0.0
    equity: float = 0.0
    status: IntentStatus = IntentStatus.PENDING
    reason: str = ""


class GuardResult(Frozen):
    """One guard's verdict on one intent. ``passed`` False rejects the intent; ``message`` says why."""

    guard: str
    passed: bool
    message: str


class OrderType(str, enum.Enum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"  # stop-market: becomes a market order when the trigger price trades


class OrderRole(str, enum.Enum):
    ENTRY = "entry"
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    EXIT = "exit"
    LIQUIDATION = "liquidation"  # venue-initiated close of an isolated futures position


class OrderStatus(str, enum.Enum):
    """The state of one order leg (entry, stop-loss, take-profit, exit), as NautilusTrader's
    ``OrderStatus``: INITIALIZED → SUBMITTED → ACCEPTED → PARTIALLY_FILLED → FILLED | CANCELED |
    EXPIRED | REJECTED, plus UNKNOWN (sent, no answer yet: never re-sent, only looked up). The
    transitions and the fold of venue reports live in :mod:`trading_pipelines.domain.orders`.

    A venue reports ACCEPTED (resting, or held by the venue: an IBKR ``Inactive`` order, its
    reason on :attr:`Order.reason`), PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED (an IOC entry that
    did not fill, or filled only ``filled_quantity``) or REJECTED. DRY_RUN and SENT never reach a
    venue's book: DRY_RUN is recorded and never sent; SENT is delivered to a fire-and-forget venue
    (a webhook: a 2xx), which reports nothing back."""

    INITIALIZED = "INITIALIZED"
    SUBMITTED = "SUBMITTED"
    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"
    DRY_RUN = "DRY_RUN"
    SENT = "SENT"

    @classmethod
    def _missing_(cls, value):
        # values written before migration 0008 (paper venue state, old ledgers)
        return {"NEW": cls.ACCEPTED, "CANCELLED": cls.CANCELED}.get(value)

    @property
    def working(self) -> bool:
        """At the venue and able to fill (or possibly so: SUBMITTED, UNKNOWN)."""
        return self in (OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.UNKNOWN)

    @property
    def terminal(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED,
                        OrderStatus.DRY_RUN, OrderStatus.SENT)


class OrderRequest(Frozen):
    """An order as sent to a venue. ``client_order_id`` is the idempotency key (see ``ids``)."""

    client_order_id: str
    instrument: str
    side: Side
    type: OrderType
    quantity: float = Field(gt=0)
    price: float | None = None  # limit price
    trigger_price: float | None = None  # stop trigger
    role: OrderRole
    reduce_only: bool = False
    parent_client_order_id: str | None = None
    oco_group: str | None = None

    @field_validator("quantity")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("quantity must be finite")
        return v


class Fill(Frozen):
    """An execution: ``quantity`` base units at ``price`` (quote), ``fee`` in quote currency.
    ``fill_id`` is the venue's trade id (unique per venue account)."""

    fill_id: str = ""
    client_order_id: str
    instrument: str
    side: Side
    quantity: float
    price: float
    fee: float
    time: datetime


class Order(Frozen):
    """A venue's view of an order."""

    client_order_id: str
    venue_order_id: str | None
    request: OrderRequest
    status: OrderStatus
    placed_at: datetime
    filled_quantity: float = 0.0
    average_price: float | None = None
    reason: str = ""  # the venue's words for a rejection, an expiry or a hold (IBKR ``Inactive``)


class Position(Frozen):
    """An open position as the venue reports it. ``quantity`` base units (always positive);
    prices and ``margin`` in quote currency; ``liquidation_price`` (futures) as the venue computes
    it, None when unknown or spot; ``margin_mode`` isolated|cross (futures), None for spot."""

    instrument: str
    side: PositionSide
    quantity: float
    entry_price: float
    mark_price: float
    leverage: float = 1.0
    margin: float = 0.0
    opened_at: datetime
    liquidation_price: float | None = None
    margin_mode: Literal["isolated", "cross"] | None = None

    @property
    def unrealized_pnl(self) -> float:
        sign = 1.0 if self.side is PositionSide.LONG else -1.0
        return sign * (self.mark_price - self.entry_price) * self.quantity


class PortfolioSnapshot(Frozen):
    """Account state at ``as_of``. Money in quote currency.

    ``equity`` = cash + Σ(position value): spot positions at mark × quantity; futures positions
    contribute margin + unrealized P&L (their margin is not part of ``cash``).
    """

    strategy: str
    as_of: datetime
    cash: float
    equity: float
    realized_pnl: float
    unrealized_pnl: float
    positions: tuple[Position, ...] = ()
