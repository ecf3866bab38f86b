"""The order state machine of one leg, and what an intent's legs say about the intent.

Each leg of an intent — entry, stop-loss, take-profit, exit — has its own state, as
NautilusTrader's orders do (``nautilus_trader.model.enums.OrderStatus`` and its
``OrderStatus`` transition table)::

    INITIALIZED ─► SUBMITTED ─► ACCEPTED ─► PARTIALLY_FILLED ─► FILLED
         │             │           │               │
         │             │           └───────────────┴─► CANCELED | EXPIRED
         │             ├─► REJECTED
         │             └─► UNKNOWN  (sent, no answer: never re-sent, only looked up)
         └─► DRY_RUN | SENT (webhook: delivered, nothing comes back)

    UNKNOWN ─► ACCEPTED | PARTIALLY_FILLED | FILLED | CANCELED | EXPIRED | REJECTED   (found)
    UNKNOWN ─► INITIALIZED                                    (the venue says: definitely absent)
    SUBMITTED ─► SENT                                 (a fire-and-forget venue took it: a webhook's 2xx)

Every venue report is an event folded into the leg by :func:`apply_report`, in this one place:
filled quantities never go down, a terminal leg never changes, and a report the table does not
allow is ignored (a stale read) rather than trusted. An intent's status once its orders exist is
derived from its legs by :func:`derive_intent_status`, never set beside them. Pure: no I/O.

Units: quantities in base units, prices in quote currency, fees in quote currency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from trading_pipelines.domain.models import IntentKind, IntentStatus, Order, OrderRole, OrderStatus

S = OrderStatus

ALLOWED: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.INITIALIZED: frozenset({S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED,
                              S.REJECTED, S.UNKNOWN, S.DRY_RUN, S.SENT}),
    S.SUBMITTED: frozenset({S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED, S.UNKNOWN,
                            S.SENT}),
    S.UNKNOWN: frozenset({S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED, S.INITIALIZED}),
    S.ACCEPTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED}),
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.EXPIRED: frozenset(),
    S.REJECTED: frozenset(),
    S.DRY_RUN: frozenset(),
    S.SENT: frozenset(),
}
"""Which leg state may follow which (a venue's INITIALIZED → FILLED skips states it never
reported: a market order's answer is its fill)."""

EXIT_ROLES = (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT, OrderRole.EXIT, OrderRole.LIQUIDATION)
QTY_EPS = 1e-12


@dataclass(frozen=True)
class Leg:
    """One leg as the ledger knows it. ``quantity``: what the leg asks for (base units);
    ``filled_quantity`` what traded of it; ``average_price`` the quote-currency average of its
    fills; ``reason`` the venue's last word on it (a rejection, expiry, hold)."""

    client_order_id: str
    role: OrderRole
    quantity: float
    status: OrderStatus = S.INITIALIZED
    filled_quantity: float = 0.0
    average_price: float | None = None
    reason: str = ""

    @property
    def working(self) -> bool:
        return self.status.working

    @property
    def remaining(self) -> float:
        return max(0.0, self.quantity - self.filled_quantity)


def can_transition(current: OrderStatus, new: OrderStatus) -> bool:
    return new == current or new in ALLOWED[current]


def apply_report(leg: Leg, report: Order | None, *, answered: bool = True) -> Leg:
    """Fold one venue report into ``leg``.

    * ``report`` an :class:`Order`: the venue holds it. Its status is taken when the table allows
      it; its filled quantity and average price when they grow (a fill is never undone). A
      CANCELED or EXPIRED report keeps what filled (a partly filled IOC entry). A report the table
      refuses (ACCEPTED after FILLED: a stale read) leaves the leg as it was.
    * ``report`` None with ``answered``: the venue definitely does not hold it. A leg that was sent
      (SUBMITTED, UNKNOWN) goes back to INITIALIZED — it may be placed; an ACCEPTED leg the venue
      forgot is CANCELED (a venue purges cancelled orders: Binance after 3/90 days).
    * ``answered`` False: no answer (a timeout). A SUBMITTED leg becomes UNKNOWN; others stay.
    """
    if not answered:
        return replace(leg, status=S.UNKNOWN) if leg.status in (S.SUBMITTED, S.UNKNOWN) else leg
    if report is None:
        if leg.status in (S.SUBMITTED, S.UNKNOWN):
            return replace(leg, status=S.INITIALIZED, reason="not at the venue: never placed")
        if leg.status in (S.ACCEPTED, S.PARTIALLY_FILLED):
            terminal = S.FILLED if leg.filled_quantity >= leg.quantity - QTY_EPS else S.CANCELED
            return replace(leg, status=terminal, reason="no longer known to the venue")
        return leg
    if leg.status.terminal:
        return leg
    filled = max(leg.filled_quantity, report.filled_quantity)
    status = report.status
    if status is S.ACCEPTED and filled > QTY_EPS:
        status = S.PARTIALLY_FILLED
    if not can_transition(leg.status, status):
        return leg
    avg = report.average_price if report.filled_quantity >= leg.filled_quantity and report.average_price else leg.average_price
    # the venue's quantity is the leg's (Binance sizes spot legs to the base asset left after its fee)
    return replace(leg, status=status, filled_quantity=filled, average_price=avg, quantity=report.request.quantity,
                   reason=report.reason or leg.reason)


def entry_filled(legs: list[Leg]) -> float:
    """Base quantity the intent's entry legs bought (long) or sold (short)."""
    return sum(g.filled_quantity for g in legs if g.role is OrderRole.ENTRY)


def exit_filled(legs: list[Leg]) -> float:
    """Base quantity the intent's reduce-only legs (stop-loss, take-profit, exit, liquidation) traded."""
    return sum(g.filled_quantity for g in legs if g.role in EXIT_ROLES)


def open_quantity(legs: list[Leg]) -> float:
    """The position the intent's legs leave open: entry fills less exit fills (never negative)."""
    return max(0.0, entry_filled(legs) - exit_filled(legs))


def derive_intent_status(kind: IntentKind, legs: list[Leg], *, venue_flat: bool = False) -> tuple[IntentStatus, str]:
    """The status of an intent whose orders exist, from its legs alone, with the reason.

    Entry intents: no fill and the entry still working (INITIALIZED, SUBMITTED, UNKNOWN,
    ACCEPTED) → SUBMITTED; REJECTED → FAILED with the venue's reason; CANCELED or EXPIRED with no
    fill → CANCELLED; any fill → MONITORING while a quantity is open, CLOSED once the exit legs
    traded the whole filled quantity — or once the venue reports no position on the instrument
    (``venue_flat``: closed by hand or by the venue). DRY_RUN / SENT entries → DRY_RUN / SENT.
    Exit intents: FILLED → CLOSED, REJECTED → FAILED, CANCELED/EXPIRED → CANCELLED, else SUBMITTED.
    """
    by_role = {g.role: g for g in legs}
    primary = by_role.get(OrderRole.ENTRY if kind is IntentKind.ENTRY else OrderRole.EXIT)
    if primary is None:
        return IntentStatus.SUBMITTED, "no entry leg on record"
    if primary.status is S.DRY_RUN:
        return IntentStatus.DRY_RUN, "dry run: recorded, not sent"
    if primary.status is S.SENT:
        return IntentStatus.SENT, "delivered to a venue that reports nothing back: not monitored"
    why = f" ({primary.reason})" if primary.reason else ""
    if kind is IntentKind.EXIT:
        if primary.status is S.FILLED:
            return IntentStatus.CLOSED, f"exit filled at {primary.average_price}"
        if primary.status is S.REJECTED:
            return IntentStatus.FAILED, f"venue rejected the exit{why}"
        if primary.status in (S.CANCELED, S.EXPIRED) and primary.filled_quantity <= QTY_EPS:
            return IntentStatus.CANCELLED, f"venue {primary.status.value.lower()} the exit{why}"
        return IntentStatus.SUBMITTED, f"exit {primary.status.value}"
    filled = entry_filled(legs)
    if filled <= QTY_EPS:
        if primary.status is S.REJECTED:
            return IntentStatus.FAILED, f"venue rejected the entry{why}"
        if primary.status in (S.CANCELED, S.EXPIRED):
            return IntentStatus.CANCELLED, f"venue {primary.status.value.lower()} the entry{why}"
        return IntentStatus.SUBMITTED, f"entry {primary.status.value}"
    left = open_quantity(legs)
    if left <= QTY_EPS or venue_flat:
        closer = next((g for g in legs if g.role in EXIT_ROLES and g.filled_quantity > QTY_EPS), None)
        how = (f"closed by its {closer.role.value} at {closer.average_price}" if closer is not None and left <= QTY_EPS
               else "closed at the venue (no closing fill of this intent)")
        return IntentStatus.CLOSED, f"position {how}"
    part = "" if primary.status is S.FILLED else f" (partial: {filled:g} of {primary.quantity:g})"
    return IntentStatus.MONITORING, f"entry filled at {primary.average_price}{part}: position open"


@dataclass(frozen=True)
class Protection:
    """What the protection invariant asks of an intent's open position: ``quantity`` open (base
    units); ``place`` a new reduce-only stop-loss (with the take-profit when ``take_profit``) for
    it; ``cancel`` client order ids of legs that must go first (a stop or take-profit of another
    size, legs left after the position closed, the unfilled rest of a partly filled entry);
    ``wait``: a protective leg's fate is UNKNOWN — nothing new is placed until it is looked up."""

    quantity: float
    place: bool = False
    take_profit: bool = False
    cancel: tuple[str, ...] = ()
    wait: bool = False


def _covers(remaining: float, open_qty: float, lot_step: float | None) -> bool:
    """A leg for ``remaining`` protects ``open_qty``: it is the open quantity rounded down to the lot
    step (a spot position may hold a base-asset fee's dust below one lot), and no more than it."""
    tol = max(QTY_EPS, 1e-9 * max(abs(remaining), abs(open_qty)))
    floor = open_qty
    if lot_step:
        floor = math.floor(open_qty / lot_step + 1e-9) * lot_step
    return floor - tol <= remaining <= open_qty + tol


def protection(legs: list[Leg], *, has_take_profit: bool, venue_open: float | None = None,
               lot_step: float | None = None) -> Protection:
    """The protection invariant for one entry intent (pure): an open position that belongs to an
    intent has a resting reduce-only stop for its whole open quantity.

    ``venue_open``: the position quantity the venue reports on the instrument (None: not read);
    the open quantity is the smaller of that and what the legs say (a position closed by hand or
    by another intent's exit needs no stop). ``lot_step``: a leg for the open quantity rounded
    down to it still covers it. When no working stop rests for the open quantity, or a working take-profit rests for another one, every working stop-loss and
    take-profit is cancelled and both are placed again for the open quantity (the take-profit only
    when ``has_take_profit``: the intent has one on the profit side of the fill). The working rest
    of a partly filled entry is cancelled (the position is what filled). With nothing open, every
    working exit leg is cancelled (one-cancels-other emulation), unless its entry is still working.
    A take-profit the venue cancelled while the stop rests is not placed again (the paper venue
    cancels one on the wrong side of the fill on purpose)."""
    open_qty = open_quantity(legs)
    if venue_open is not None:
        open_qty = min(open_qty, venue_open)
    entry = next((g for g in legs if g.role is OrderRole.ENTRY), None)
    filled = entry_filled(legs)
    cancel: list[str] = []
    if entry is not None and filled > QTY_EPS and entry.working and entry.status is not S.UNKNOWN:
        cancel.append(entry.client_order_id)
    protective = [g for g in legs if g.role in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT) and g.working]
    if open_qty <= QTY_EPS:
        if not (entry is not None and entry.working and filled <= QTY_EPS):  # legs waiting on a resting entry stay
            cancel += [g.client_order_id for g in protective if g.status is not S.UNKNOWN]
        return Protection(0.0, cancel=tuple(cancel))
    if any(g.status is S.UNKNOWN for g in protective):
        return Protection(open_qty, cancel=tuple(cancel), wait=True)
    stops = [g for g in protective if g.role is OrderRole.STOP_LOSS]
    targets = [g for g in protective if g.role is OrderRole.TAKE_PROFIT]
    good_stop = len(stops) == 1 and _covers(stops[0].remaining, open_qty, lot_step)
    good_targets = all(_covers(g.remaining, open_qty, lot_step) for g in targets) and len(targets) <= 1
    if good_stop and good_targets:
        return Protection(open_qty, cancel=tuple(cancel))
    cancel += [g.client_order_id for g in protective]
    return Protection(open_qty, place=True, take_profit=has_take_profit, cancel=tuple(cancel))


def realized_pnl(legs: list[Leg], *, long: bool, fees: float = 0.0) -> float:
    """Realized P&L of an intent's closed quantity in quote currency, net of ``fees``: the average
    entry price of all entry fills against each exit leg's fills (sign: long gains when exits are
    above the entry). ``closed = min(entry filled, exit filled)``. Example: 0.3 BTC bought at
    60 000, stopped at 59 000 with 3.54 USDT of fees → −300 − 3.54 = −303.54."""
    entries = [g for g in legs if g.role is OrderRole.ENTRY and g.filled_quantity > QTY_EPS and g.average_price]
    exits = [g for g in legs if g.role in EXIT_ROLES and g.filled_quantity > QTY_EPS and g.average_price]
    bought = sum(g.filled_quantity for g in entries)
    if bought <= QTY_EPS:
        return -fees
    avg_entry = sum(g.filled_quantity * g.average_price for g in entries) / bought
    sign = 1.0 if long else -1.0
    closed, pnl = 0.0, 0.0
    for g in exits:
        q = min(g.filled_quantity, bought - closed)
        if q <= QTY_EPS:
            break
        pnl += sign * (g.average_price - avg_entry) * q
        closed += q
    return pnl - fees


__all__ = ["ALLOWED", "EXIT_ROLES", "Leg", "Protection", "apply_report", "can_transition", "derive_intent_status",
           "entry_filled", "exit_filled", "open_quantity", "protection", "realized_pnl"]
