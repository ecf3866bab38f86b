"""The venue protocol: what the account steps may ask of a venue, in ccxt's unified vocabulary.

A venue is the source of truth for cash, positions and orders. It owns its own state and its
own storage: no method takes the ledger's database session, so a real exchange (Binance through
ccxt, IBKR through ib_async, a webhook) can implement the same verbs. The ledger is reconciled
from what the venue *reports* (:meth:`Venue.fetch_order`, :meth:`Venue.fetch_my_trades`,
:meth:`Venue.fetch_positions`), never by reading the venue's tables.

Verbs (ccxt names; units: quantities in base units, prices and money in quote currency, times UTC):

* :meth:`Venue.create_order` — place an order under a client order id (ccxt:
  ``create_order(..., {'clientOrderId': cid})``). Idempotent: a client order id the venue has
  already seen returns the existing order, never a second one.
* :meth:`Venue.fetch_order` — the order with that client order id, or ``None`` (ccxt:
  ``fetch_order(None, symbol, {'clientOrderId': cid})``).
* :meth:`Venue.cancel_order`, :meth:`Venue.fetch_open_orders`, :meth:`Venue.fetch_positions`,
  :meth:`Venue.fetch_balance`, :meth:`Venue.fetch_my_trades`.

Simulated venues (:class:`SimulatedVenue`) also *advance* over new bars, which is when their
resting orders fill, and have a clock that only moves forward.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Iterator

from trading_pipelines.domain.models import Fill, Order, OrderRequest, Position


class VenueError(RuntimeError):
    """The venue refused a request (unknown order, nothing to exit, …). The message says why."""


class BarsUnreadable(VenueError):
    """A simulated venue cannot read an instrument's bars (bad market data, e.g. a bad CSV row in
    the span it must fill over). The message names the source, line and reason."""


# The errors the execution engine understands. Each adapter maps its venue's errors to these once
# (ccxt's exception classes and Binance's codes in ``ccxt_venue``, IB's error codes in ``ibkr``);
# clock skew (Binance −1021) and rate limits (429/418 with ``Retry-After``) are handled inside the
# adapter (resync, wait, retry) and surface only as :class:`VenueUnavailable` when they persist.


class OrderRejected(VenueError):
    """The venue refused this order for good: insufficient funds (Binance −2010), an invalid order
    (filters, min notional, a reduce-only order with nothing to reduce). Final: the leg is REJECTED,
    the intent FAILED with ``message``, and the window goes on. ``code``: the venue's error code
    when it gives one."""

    def __init__(self, message: str, code: str | int | None = None):
        super().__init__(message)
        self.code = code


class VenueUnavailable(VenueError):
    """The venue did not answer after the adapter's retries (network, timeout, 5xx, a persistent
    rate limit or clock skew). For a read: nothing is known, try again later."""


class OrderStateUnknown(VenueUnavailable):
    """An order placement was sent and no answer came back: the order may or may not exist at the
    venue. The leg is UNKNOWN; it is never sent again, only looked up (:meth:`Venue.lookup_order`)
    until the venue answers found or definitely not found. ``client_order_id``: the leg's id."""

    def __init__(self, message: str, client_order_id: str):
        super().__init__(message)
        self.client_order_id = client_order_id


@dataclass(frozen=True)
class Balance:
    """The account's money in quote currency.

    ``cash``: spot, quote currency held; futures, wallet collateral not locked as position margin.
    ``reserved``: cash held back for resting entry orders. ``free`` = cash − reserved.
    ``equity``: cash + position value (spot: mark × quantity; futures: margin + unrealized P&L).
    """

    cash: float
    reserved: float
    equity: float
    realized_pnl: float
    unrealized_pnl: float
    fees_paid: float

    @property
    def free(self) -> float:
        return self.cash - self.reserved


@dataclass(frozen=True)
class FuturesTerms:
    """What a futures venue says about trading one perpetual now (for the futures analyst's prompt
    and the executor). ``funding_rate`` a fraction per funding interval (0.0001 = 0.01 %), None when
    the venue has none (a simulation); ``max_leverage`` the venue's limit for this symbol;
    ``margin_mode`` isolated|cross as set on the account; ``mark_price`` quote currency."""

    instrument: str
    mark_price: float | None
    funding_rate: float | None
    next_funding_time: datetime | None
    max_leverage: float | None
    margin_mode: str | None


@dataclass(frozen=True)
class VenueEvent:
    """Something the venue did while advancing: a fill (entry, stop-loss, take-profit, exit,
    liquidation) or a rejection of a resting entry."""

    kind: str
    instrument: str
    client_order_id: str
    role: str
    price: float
    quantity: float
    time: datetime
    realized_pnl: float | None = None
    reason: str = ""  # why, for an expiry, a rejection or a cancel the venue decided


class Venue(ABC):
    """An exchange account (one per strategy and book). See the module doc for the verbs."""

    name: str = "venue"
    simulated: bool = False

    @abstractmethod
    def create_order(self, request: OrderRequest, *, placed_at: datetime, position_side: str, leverage: float = 1.0,
                     reserve: float = 0.0) -> Order:
        """Place ``request`` (idempotent on its client order id). ``position_side`` long|short
        (one-way mode); ``reserve``: quote currency to hold back while an entry rests."""

    @abstractmethod
    def fetch_order(self, client_order_id: str, instrument: str | None = None) -> Order | None:
        """The order with this client order id, or None if the venue never saw it. ``instrument``:
        the symbol when the caller knows it (venues that look orders up per symbol — Binance —
        need it after a restart; the others ignore it)."""

    @abstractmethod
    def cancel_order(self, client_order_id: str) -> Order:
        """Cancel a resting order (and, for an entry, its bracket legs). Filled orders stay
        filled. Raises :class:`VenueError` for an unknown order."""

    @abstractmethod
    def fetch_open_orders(self, instrument: str | None = None) -> list[Order]:
        """Resting orders, oldest first."""

    @abstractmethod
    def fetch_positions(self) -> list[Position]:
        """Open positions, marked at the venue's last price."""

    @abstractmethod
    def fetch_balance(self) -> Balance:
        """Cash, reservations, equity and P&L (quote currency)."""

    @abstractmethod
    def fetch_my_trades(self, since: datetime | None = None) -> list[Fill]:
        """Fills with ``time`` strictly after ``since`` (all when None), oldest first."""

    def create_bracket(self, entry: OrderRequest, stop_loss: OrderRequest, take_profit: OrderRequest, *,
                       placed_at: datetime, position_side: str, leverage: float = 1.0, reserve: float = 0.0,
                       margin_mode: str | None = None) -> list[Order]:
        """Place an entry with its reduce-only stop-loss and take-profit (one-cancels-other), each
        idempotent on its client order id; returns [entry, stop_loss, take_profit] as the venue
        reports them. Venues with a native bracket (IBKR ``bracketOrder``, Binance spot OCO, a
        webhook's single POST) override this; the default places the three in order."""
        first = self.create_order(entry, placed_at=placed_at, position_side=position_side, leverage=leverage,
                                  reserve=reserve)
        return [first] + [self.create_order(r, placed_at=placed_at, position_side=position_side, leverage=leverage)
                          for r in (stop_loss, take_profit)]

    def lookup_order(self, client_order_id: str, instrument: str | None = None,
                     since: datetime | None = None) -> Order | None:
        """Look an order up after a lost answer: the order, or None only when the venue says it
        definitely does not hold it (Binance: ``origClientOrderId`` misses *and* ``allOrders``
        from ``since`` does not list it). Raises :class:`VenueUnavailable` when the venue does not
        answer. The default is :meth:`fetch_order` (venues whose look-up is authoritative)."""
        return self.fetch_order(client_order_id, instrument=instrument)

    def create_protection(self, stop_loss: OrderRequest, take_profit: OrderRequest | None, *, placed_at: datetime,
                          position_side: str, leverage: float = 1.0) -> list[Order]:
        """Place the reduce-only exit legs of an *open* position (the entry already filled): a
        stop-loss for the open quantity and, when given, a take-profit, one-cancels-other where the
        venue has it (Binance spot: one OCO list; IBKR: one OCA group). Each leg is idempotent on
        its client order id. Returns the legs as the venue reports them. The default places them
        one after the other."""
        legs = [stop_loss] + ([take_profit] if take_profit is not None else [])
        return [self.create_order(r, placed_at=placed_at, position_side=position_side, leverage=leverage) for r in legs]

    def futures_terms(self, instrument: str) -> FuturesTerms | None:
        """Funding rate, leverage limit and margin mode of a perpetual (None: spot, or unknown)."""
        return None

    @contextmanager
    def unit_of_work(self) -> Iterator["Venue"]:
        """Group several calls (a simulated venue keeps its state in memory until the block ends
        and saves it once). Real venues: a no-op."""
        yield self


class SimulatedVenue(Venue):
    """A venue that fills orders against bars it is told about."""

    simulated = True

    @abstractmethod
    def clock(self) -> datetime | None:
        """The latest bar close processed on any instrument (None before the first)."""

    @abstractmethod
    def advance(self, instruments: Iterable[str], as_of: datetime) -> list[VenueEvent]:
        """Process every bar that closed after the clock and at or before ``as_of`` on each of
        ``instruments`` and on every instrument holding a position or a resting order (so
        account-wide figures are those of ``as_of``). The clock never moves backwards."""


__all__ = ["Balance", "FuturesTerms", "OrderRejected", "OrderStateUnknown", "SimulatedVenue", "Venue", "VenueError",
           "VenueEvent", "VenueUnavailable"]
