"""The intent state machine. Every status change goes through :func:`transition`.

PENDING ─► VALIDATED ─► SUBMITTED ─► MONITORING ─► CLOSED      (entry filled; position closed)
   │          │  │          │            ▲  │
   │          │  │          │            │  ▼
   │          │  │          ├──────► UNPROTECTED ─► CLOSED    (no stop could rest; protection: flag)
   │          │  │          ├──────► CLOSED                     (an exit filled)
   │          │  │          ├──────► SENT                       (a webhook took it: not monitored)
   │          │  │          └──────► CANCELLED / FAILED
   │          │  ├─► AWAITING_CONFIRMATION ─► SUBMITTED / CANCELLED / DRY_RUN
   │          │  └─► DRY_RUN / FAILED
   │          └─► CANCELLED
   ├─► REJECTED
   └─► NO_TRADE
"""

from __future__ import annotations

from trading_pipelines.domain.models import IntentStatus as S

ALLOWED: dict[S, frozenset[S]] = {
    S.PENDING: frozenset({S.VALIDATED, S.REJECTED, S.NO_TRADE}),
    S.VALIDATED: frozenset({S.SUBMITTED, S.AWAITING_CONFIRMATION, S.DRY_RUN, S.CANCELLED, S.FAILED}),
    S.AWAITING_CONFIRMATION: frozenset({S.SUBMITTED, S.CANCELLED, S.DRY_RUN}),
    S.SUBMITTED: frozenset({S.MONITORING, S.UNPROTECTED, S.CLOSED, S.SENT, S.CANCELLED, S.FAILED}),
    S.MONITORING: frozenset({S.CLOSED, S.UNPROTECTED}),
    S.UNPROTECTED: frozenset({S.MONITORING, S.CLOSED}),
    S.REJECTED: frozenset(),
    S.NO_TRADE: frozenset(),
    S.DRY_RUN: frozenset(),
    S.CLOSED: frozenset(),
    S.SENT: frozenset(),
    S.CANCELLED: frozenset(),
    S.FAILED: frozenset(),
}


class InvalidTransition(ValueError):
    pass


def transition(current: S, new: S) -> S:
    """Return ``new`` if ``current → new`` is allowed, else raise :class:`InvalidTransition`.
    A transition to the same status is a no-op (idempotent re-runs)."""
    if new == current:
        return new
    if new not in ALLOWED[current]:
        raise InvalidTransition(f"intent cannot go from {current.value} to {new.value}")
    return new


def is_terminal(status: S) -> bool:
    return not ALLOWED[status]
