"""The replay scorecard's inputs and statistics: equity points, trades and signal outcomes, the
Wilson interval, the one-bar hit rate (of every directional call, and of the signals that could
trade), maximum drawdown, equal-weight buy-and-hold (its return and its equity curve), and the
rules that sort a ledger's intents and no-trade reasons for the scorecard. Pure functions, no
Dagster, no database, no file I/O.

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
#: What ``hit_rate`` counts, word for word in the report (``hit_rate_counts``) and its markdown.
HIT_RATE_COUNTS = (
    "directional signals: buy/long calls up and sell/short/close calls down, each scored against the "
    f"close {HIT_HORIZON} later (a hit when it moved the call's way; unchanged is a miss); hold, no-trade "
    "and market-closed windows, and a signal on the last bar of the data, are not counted"
)
#: What ``tradable_hit_rate`` counts (``tradable_counts`` in the report).
TRADABLE_COUNTS = (
    "signals that could trade: the directional signals whose intent on this book was an entry or an exit "
    "that the guards passed; a spot sell or close with nothing held, or a call below the strategy's minimum "
    "confidence, plans no order, and an entry a guard refused (a position already held, the balance, the "
    "risk cap, market hours) could not trade"
)
#: A no-trade reason starting with this is an exchange holiday (see :func:`is_market_closed`).
MARKET_CLOSED_PREFIX = "market closed"

#: The keys of :func:`~trading_pipelines.replay.report.build_report`'s dict, in order. Callers may
#: add keys after it returns (``failed_instruments``); the markdown renders those too.
REPORT_KEYS = (
    "strategy",
    "book",
    "windows",
    "instruments",
    "signals",
    "market_closed",
    "trades",
    "trade_list",
    "realized_pnl",
    "fees",
    "net_pnl",
    "return_pct",
    "buy_and_hold_pct",
    "max_drawdown_pct",
    "hit_rate",
    "hit_rate_ci95",
    "hit_horizon",
    "hit_rate_counts",
    "directional",
    "hits",
    "tradable_hit_rate",
    "tradable_hit_rate_ci95",
    "tradable_directional",
    "tradable_hits",
    "tradable_counts",
    "per_instrument",
    "equity_curve",
    "buy_and_hold_curve",
    "elapsed_s",
    "windows_per_s",
)


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

    ``side`` is ``"long"`` or ``"short"``; times are UTC; prices, ``realized_pnl`` and ``fees`` are
    in quote currency; ``quantity`` is in base units of ``instrument``. ``realized_pnl`` is
    **before fees** (the ledger's ``positions.realized_pnl``: ``±(exit − entry) × quantity`` of the
    exits so far); ``fees`` are those of its entry and exit fills so far (``positions.fees``), so
    the P&L net of fees is ``realized_pnl − fees``. ``stop``: the stop-loss price planned at entry
    (the entry intent's ``stop``), ``None`` when not known; it gives the trade's R multiple.
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
    fees: float = 0.0
    stop: float | None = None


@dataclass(frozen=True)
class SignalOutcome:
    """A signal and what the market did next.

    ``action`` is one of ``buy|sell|long|short|close|hold``. ``window_end`` is UTC.
    ``close_at_signal`` is the close (quote currency) of the bar the signal was made on;
    ``next_close`` is the close of the *next* bar, ``None`` at the end of data.
    ``could_trade``: whether the signal could become an order on the book (see
    :func:`intent_could_trade` and :data:`TRADABLE_COUNTS`); ``None`` when not known.
    """

    instrument: str
    window_end: datetime
    action: str
    close_at_signal: float | None
    next_close: float | None
    could_trade: bool | None = None


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


def intent_could_trade(kind: str | None, status: str | None) -> bool:
    """Whether a signal whose intent on the book has ``kind`` and ``status`` (the ledger's
    ``intents.kind``, ``intents.status``; ``None`` for both when no intent is on record) could
    trade (:data:`TRADABLE_COUNTS`): an ``entry`` or ``exit`` intent not ``REJECTED`` by the guards.

    A spot sell or a close with nothing held, or a call below the strategy's minimum confidence, is
    planned as no order (kind ``none``), so it is not a signal that could trade; neither is an entry
    a guard refused (a position already held, the balance, the risk cap, market hours). An entry
    that passed and then never filled (``CANCELLED``) could trade.
    """
    return (kind or "").lower() in ("entry", "exit") and (status or "").upper() != "REJECTED"


def is_market_closed(reason: str | None) -> bool:
    """Whether a no-trade reason is an exchange holiday: it starts with :data:`MARKET_CLOSED_PREFIX`
    (``"market closed"``). Such windows are counted apart from the no-trades."""
    return bool(reason) and reason.startswith(MARKET_CLOSED_PREFIX)


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


def tradable_hit_rate(outcomes: Iterable[SignalOutcome]) -> HitStats | None:
    """:func:`hit_rate` of the outcomes whose ``could_trade`` is ``True`` (:data:`TRADABLE_COUNTS`).

    ``None`` when no outcome says whether it could trade (every ``could_trade`` is ``None``): the
    caller did not pass the intents, and a rate of the unknown is not reported as a number.
    """
    outcomes = list(outcomes)
    if all(o.could_trade is None for o in outcomes):
        return None
    return hit_rate(o for o in outcomes if o.could_trade is True)


def planned_risk(trade: Trade) -> float | None:
    """The risk planned at entry, quote currency: ``|entry_price − stop| × quantity``.

    ``None`` without a stop, or when the product is not a positive finite number.
    """
    stop = _finite(trade.stop)
    entry, qty = _finite(trade.entry_price), _finite(trade.quantity)
    if stop is None or entry is None or qty is None:
        return None
    risk = abs(entry - stop) * abs(qty)
    return risk if math.isfinite(risk) and risk > 0 else None


def net_pnl(trade: Trade) -> float | None:
    """The trade's P&L net of fees, quote currency: ``realized_pnl − fees`` (``None`` if not finite).

    For a still-open trade this is what its exits so far realized less the fees paid so far (the
    entry's at least); its unrealized P&L is not included."""
    return _finite(float(trade.realized_pnl) - float(trade.fees or 0.0))


def r_multiple(trade: Trade) -> float | None:
    """``net_pnl / planned_risk`` of a closed trade (dimensionless: +2.0 made twice the risk at the
    stop, −1.0 lost it). ``None`` for an open trade (``closed_at`` is ``None``) or without a
    :func:`planned_risk`."""
    if trade.closed_at is None:
        return None
    risk, net = planned_risk(trade), net_pnl(trade)
    if risk is None or net is None:
        return None
    return _finite(net / risk)


def buy_and_hold_curve(
    points: Sequence[EquityPoint],
    closes: Mapping[str, Mapping[datetime, float]],
    first_close: Mapping[str, float],
    starting_cash: float,
) -> list[tuple[datetime, float]]:
    """Equal-weight buy-and-hold equity at each of ``points``' times, from ``starting_cash``.

    ``starting_cash`` (quote currency) is split equally over the instruments of ``first_close`` that
    have a positive finite first close and an entry in ``closes``; each is bought at its
    ``first_close`` and valued at its latest close at or before the point's time (a bar missing at
    that time, e.g. an exchange holiday, carries the previous close forward; before any close the
    purchase price). ``closes``: instrument → {bar close time (UTC) → close}. No fees, no
    slippage. The value at time ``t`` is::

        starting_cash × mean over i of (close_i(t) / first_close[i])

    so at the last point it is ``starting_cash × (1 + buy_and_hold_pct / 100)`` when the last
    closes agree. Returns ``[(utc time, equity), ...]`` in the points' order, ``[]`` without points
    or usable instruments. Non-finite closes are skipped.
    """
    import bisect

    basis: dict[str, float] = {}
    series: dict[str, tuple[list[datetime], list[float]]] = {}
    for inst in sorted(first_close):
        b = _finite(first_close[inst])
        if b is None or b <= 0 or inst not in closes:
            continue
        kept = sorted((_utc(t), f) for t, c in closes[inst].items() if (f := _finite(c)) is not None)
        basis[inst] = b
        series[inst] = ([t for t, _ in kept], [c for _, c in kept])
    if not basis or not points:
        return []
    out = []
    for p in points:
        t = _utc(p.as_of)
        ratios = []
        for inst, b in basis.items():
            times, values = series[inst]
            k = bisect.bisect_right(times, t)
            ratios.append((values[k - 1] if k else b) / b)
        out.append((t, float(starting_cash) * sum(ratios) / len(ratios)))
    return out
