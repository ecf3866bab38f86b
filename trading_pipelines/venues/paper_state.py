"""The paper exchange's live state per account, as it is kept in memory for a call or a unit of
work and saved as JSON on its ``paper_accounts`` row (resting orders, positions, per-instrument
clocks); orders that left the book and fills are appended to ``paper_orders`` / ``paper_fills``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from trading_pipelines.domain.models import Order, OrderRequest, OrderRole, OrderStatus, OrderType, Position, PositionSide, Side
from trading_pipelines.ledger.models import PaperFillRow


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _dt(v: str | None) -> datetime | None:
    return datetime.fromisoformat(v) if v else None


@dataclass
class _Order:
    client_order_id: str
    venue_order_id: str
    instrument: str
    side: str
    type: str
    role: str
    quantity: float
    placed_at: datetime
    price: float | None = None
    trigger_price: float | None = None
    reduce_only: bool = False
    parent_client_order_id: str | None = None
    oco_group: str | None = None
    position_side: str | None = None
    leverage: float = 1.0
    reserved: float = 0.0
    status: str = OrderStatus.ACCEPTED.value
    filled_at: datetime | None = None
    fill_price: float | None = None
    armed: bool = False  # a bracket leg goes live once its entry fills (a leg with no parent: at once)

    def to_json(self) -> dict:
        d = asdict(self)
        d["placed_at"], d["filled_at"] = _iso(self.placed_at), _iso(self.filled_at)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "_Order":
        d = dict(d)
        d["placed_at"], d["filled_at"] = _dt(d["placed_at"]), _dt(d.get("filled_at"))
        d["status"] = OrderStatus(d.get("status", OrderStatus.ACCEPTED.value)).value  # NEW/CANCELLED before 0008
        return cls(**d)

    def domain(self) -> Order:
        req = OrderRequest(client_order_id=self.client_order_id, instrument=self.instrument, side=Side(self.side),
                           type=OrderType(self.type), quantity=self.quantity, price=self.price,
                           trigger_price=self.trigger_price, role=OrderRole(self.role), reduce_only=self.reduce_only,
                           parent_client_order_id=self.parent_client_order_id, oco_group=self.oco_group)
        return Order(client_order_id=self.client_order_id, venue_order_id=self.venue_order_id, request=req,
                     status=OrderStatus(self.status), placed_at=self.placed_at,
                     filled_quantity=self.quantity if self.status == OrderStatus.FILLED.value else 0.0,
                     average_price=self.fill_price)


@dataclass
class _Position:
    instrument: str
    side: str
    quantity: float
    entry_price: float
    leverage: float
    margin: float
    mark_price: float
    opened_at: datetime
    entry_client_order_id: str

    def to_json(self) -> dict:
        d = asdict(self)
        d["opened_at"] = _iso(self.opened_at)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "_Position":
        return cls(**{**d, "opened_at": _dt(d["opened_at"])})

    def domain(self) -> Position:
        return Position(instrument=self.instrument, side=PositionSide(self.side), quantity=self.quantity,
                        entry_price=self.entry_price, mark_price=self.mark_price, leverage=self.leverage,
                        margin=self.margin, opened_at=self.opened_at)


@dataclass
class _Book:
    """One account's live state, in memory for the length of a call or a unit of work."""

    cash: float
    realized_pnl: float
    fees_paid: float
    orders: dict[str, _Order] = field(default_factory=dict)       # resting (NEW) orders, in placement order
    positions: dict[str, _Position] = field(default_factory=dict)
    clocks: dict[str, datetime] = field(default_factory=dict)
    done: list[_Order] = field(default_factory=list)                # left the book since the last save
    new_fills: list[PaperFillRow] = field(default_factory=list)
    rev: int = 0

    def state_json(self) -> dict:
        return {"orders": [o.to_json() for o in self.orders.values()],
                "positions": [p.to_json() for p in self.positions.values()],
                "clocks": {k: _iso(v) for k, v in self.clocks.items()}}


__all__ = ["_Book", "_Order", "_Position"]
