"""What an analyst is told about the book's account: pure data, no I/O.

Built by :func:`trading_pipelines.analysis.analyze.account_context` from the book's venue (the venue is
the source of truth: cash, positions, open orders, and for futures the funding rate, leverage
limit and margin mode it reports). Units: money and prices in the quote currency, quantities in
base units, rates as fractions (``funding_rate`` 0.0001 = 0.01 % per funding interval), times UTC.

``source``:

* ``"venue"`` — read from the book's venue when the window was analysed (the live book: the
  schedule's tick analyses the window that just closed, before the account step acts on it).
* ``"replay"`` — a replay book's analysis runs before its account walk (so that a replay's calls
  can run concurrently), so its balances and positions at each window are not known to the
  analyst. The prompt says so; the planner sizes on the book's equity and the guards check
  funds and positions at the account step, as always.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PositionView(_Frozen):
    """One open position as the venue reports it. ``side`` long|short; ``unrealized_pnl`` at the
    mark price; ``liquidation_price`` None when the venue gives none (spot)."""

    instrument: str
    side: str
    quantity: float
    entry_price: float
    mark_price: float
    unrealized_pnl: float
    leverage: float = 1.0
    margin: float = 0.0
    liquidation_price: float | None = None
    margin_mode: str | None = None


class OrderView(_Frozen):
    """One resting order. ``role`` entry|stop_loss|take_profit|exit; ``price`` (limit) and
    ``trigger_price`` (stop) in quote currency."""

    instrument: str
    side: str
    type: str
    role: str
    quantity: float
    price: float | None = None
    trigger_price: float | None = None


class AccountContext(_Frozen):
    """The book's account as one analyst prompt shows it (see the module doc)."""

    source: Literal["venue", "replay"]
    venue: str
    cash: float | None = None
    free_cash: float | None = None
    equity: float | None = None
    positions: tuple[PositionView, ...] = ()
    open_orders: tuple[OrderView, ...] = ()
    # futures only
    funding_rate: float | None = None
    next_funding_time: str | None = None
    venue_max_leverage: float | None = None
    leverage: float | None = None
    max_leverage: float | None = None
    margin_mode: str | None = None

    def position(self, instrument: str) -> PositionView | None:
        return next((p for p in self.positions if p.instrument == instrument), None)


__all__ = ["AccountContext", "OrderView", "PositionView"]
