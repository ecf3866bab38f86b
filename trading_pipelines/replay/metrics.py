"""The replay scorecard's inputs and statistics: equity points, trades and signal outcomes, the
Wilson interval, the one-bar hit rate, maximum drawdown and equal-weight buy-and-hold. Pure
functions, no Dagster, no database, no file I/O.

Units (each function's docstring repeats the ones it needs): money in the book's quote currency;
``_pct`` fields in percent (``2.5`` means 2.5 %); fractions (``hit_rate``, ``ci95``) in ``0..1``;
times UTC (a naive ``datetime`` is taken to be UTC already; an aware one is converted to UTC).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: Two-sided 95 % standard-normal quantile, ``scipy.stats.norm.ppf(0.975)``.
Z95 = 1.959963984540054

#: Actions that predict the price goes up over the next bar.
UP_ACTIONS = frozenset({"buy", "long"})
#: Actions that predict the price goes down over the next bar (``close`` exits a position, read as
#: a call that the price will not rise).
DOWN_ACTIONS = frozenset({"sell", "short", "close"})
#: The horizon over which a signal is scored (see :func:`hit_rate`).
HIT_HORIZON = "1 bar"


@dataclass(frozen=True)
class EquityPoint:
    """The book's marked-to-market equity at the end of one replay window.

    ``as_of`` is UTC; ``equity`` is in quote currency (cash plus positions at that window's close).
    """

    as_of: datetime
    equity: float


@dataclass(frozen=True)
class Trade:
    """One round trip (or a still-open position when ``closed_at``/``exit_price`` are ``None``).

    ``side`` is ``"long"`` or ``"short"``; times are UTC; prices and ``realized_pnl`` are in quote
    currency; ``quantity`` is in base units of ``instrument``.
    """

    instrument: str
    side: str
    opened_at: datetime
    closed_at: datetime | None
    entry_price: float
    exit_price: float | None
    quantity: float
    realized_pnl: float
    exit_reason: str | None


@dataclass(frozen=True)
class SignalOutcome:
    """A signal and what the market did next.

    ``action`` is one of ``buy|sell|long|short|close|hold``. ``window_end`` is UTC.
    ``close_at_signal`` is the close (quote currency) of the bar the signal was made on;
    ``next_close`` is the close of the *next* bar, ``None`` at the end of data.
    """

    instrument: str
    window_end: datetime
    action: str
    close_at_signal: float | None
    next_close: float | None


@dataclass(frozen=True)
class HitStats:
    """Counts behind a hit rate.

    ``directional``: directional signals that could be scored; ``hits``: of those, how many were
    right; ``rate``: ``hits / directional`` as a fraction in ``0..1``, ``None`` when
    ``directional == 0``; ``ci95``: the Wilson 95 % interval, fractions, ``(0.0, 1.0)`` when
    ``directional == 0``.
    """

    directional: int
    hits: int
    rate: float | None
    ci95: tuple[float, float]


# --------------------------------------------------------------------------------------------
# helpers


def _finite(x: Any) -> float | None:
    """``float(x)`` if finite, else ``None`` (JSON cannot carry NaN/inf with ``allow_nan=False``)."""
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _utc(dt: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else _utc(dt).isoformat()


def _direction(action: str) -> int:
    """+1 for an up call, -1 for a down call, 0 for hold / no-trade / anything else."""
    a = action.strip().lower()
    if a in UP_ACTIONS:
        return 1
    if a in DOWN_ACTIONS:
        return -1
    return 0


# --------------------------------------------------------------------------------------------
# statistics


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``hits / n``, as fractions in ``0..1``.

    Source: E. B. Wilson (1927), "Probable inference, the law of succession, and statistical
    inference", JASA 22(158):209-212; the same interval as
    ``statsmodels.stats.proportion.proportion_confint(hits, n, alpha=0.05, method="wilson")``
    for the default ``z`` (the 97.5 % standard-normal quantile, i.e. a two-sided 95 % interval).
    With ``p = hits / n``::

        centre = (p + z**2 / (2 n)) / (1 + z**2 / n)
        half   = z / (1 + z**2 / n) * sqrt(p (1 - p) / n + z**2 / (4 n**2))
        (low, high) = (centre - half, centre + half)

    Returns ``(0.0, 1.0)`` when ``n == 0`` (nothing is known). Results are clamped to ``[0, 1]``
    to absorb floating-point error at ``hits == 0`` or ``hits == n``.
    """
    if n < 0 or hits < 0 or hits > n:
        raise ValueError(f"need 0 <= hits <= n, got hits={hits}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = hits / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def hit_rate(outcomes: Iterable[SignalOutcome]) -> HitStats:
    """Directional hit rate of signals over a **one-bar horizon** (``HIT_HORIZON == "1 bar"``).

    Directional signals: ``buy``/``long`` call *up*; ``sell``/``short``/``close`` call *down*.
    ``hold`` (and no-trade, or any other action) is not directional and is excluded.
    A directional signal is a *hit* when the **next bar's** close moved its way:
    ``next_close > close_at_signal`` for up, ``next_close < close_at_signal`` for down; an
    unchanged close counts as a *miss*. Signals that cannot be scored (``close_at_signal`` or
    ``next_close`` is ``None``, e.g. the last bar of the data) are excluded from both counts.

    Returns :class:`HitStats`; ``rate`` is a fraction (``None`` with no scorable directional
    signals) and ``ci95`` its :func:`wilson_interval`.
    """
    n = 0
    hits = 0
    for o in outcomes:
        d = _direction(o.action)
        if d == 0 or o.close_at_signal is None or o.next_close is None:
            continue
        before, after = float(o.close_at_signal), float(o.next_close)
        if not (math.isfinite(before) and math.isfinite(after)):
            continue
        n += 1
        if (d > 0 and after > before) or (d < 0 and after < before):
            hits += 1
    return HitStats(
        directional=n,
        hits=hits,
        rate=(hits / n) if n else None,
        ci95=wilson_interval(hits, n),
    )


def max_drawdown_pct(points: Sequence[EquityPoint]) -> float:
    """Largest peak-to-trough fall of equity, in **percent of the running peak** (a positive number).

    ``max over t of (peak_t - equity_t) / peak_t * 100`` where ``peak_t`` is the highest equity
    (quote currency) seen at or before ``t``, in the order given (callers pass points in time
    order). The standard definition (e.g. Magdon-Ismail & Atiya, "Maximum drawdown", Risk 2004).
    Returns ``0.0`` for no points or when equity never falls below a previous peak. Points where
    the running peak is not positive are skipped (a percent of a non-positive peak is undefined).
    """
    peak = -math.inf
    worst = 0.0
    for p in points:
        e = float(p.equity)
        if not math.isfinite(e):
            continue
        peak = max(peak, e)
        if peak > 0:
            worst = max(worst, (peak - e) / peak * 100.0)
    return worst


def _instrument_return_pct(first: float, last: float) -> float | None:
    first, last = float(first), float(last)
    if not (math.isfinite(first) and math.isfinite(last)) or first <= 0:
        return None
    return (last / first - 1.0) * 100.0


def buy_and_hold_pct(first_close: Mapping[str, float], last_close: Mapping[str, float]) -> float:
    """Equal-weight buy-and-hold return of the instruments, in **percent**, no fees or slippage.

    Starting capital is split equally across the instruments in ``first_close``, each bought at its
    first close and valued at its last close (both in quote currency), so the portfolio return is
    the arithmetic mean of the simple returns::

        mean over i of (last_close[i] / first_close[i] - 1) * 100

    Raises ``ValueError`` if there are no instruments, an instrument has no last close, or a first
    close is not a positive finite number.
    """
    if not first_close:
        raise ValueError("buy_and_hold_pct needs at least one instrument")
    returns = []
    for inst in sorted(first_close):
        if inst not in last_close:
            raise ValueError(f"no last close for {inst!r}")
        r = _instrument_return_pct(first_close[inst], last_close[inst])
        if r is None:
            raise ValueError(
                f"bad closes for {inst!r}: first={first_close[inst]!r}, last={last_close[inst]!r}"
            )
        returns.append(r)
    return sum(returns) / len(returns)
