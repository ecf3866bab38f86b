"""A trading strategy's replay scorecard: pure functions, no Dagster, no database, no file I/O.

Units used throughout (each function's docstring repeats the ones it needs):

* **Money** (equity, prices, ``realized_pnl``, ``starting_cash``) is in the book's *quote
  currency* (e.g. USD for ``BTC/USD``), never converted.
* **Percent** fields end in ``_pct`` and are percentages (``2.5`` means 2.5 %).
* **Fractions** (``hit_rate``, ``hit_rate_ci95``) are in ``0..1``.
* **Times** are UTC. A naive ``datetime`` is taken to be UTC already; an aware one is converted
  to UTC. ISO strings in the report are ``datetime.isoformat()`` of the UTC value
  (``...+00:00``).

The report dict from :func:`build_report` is JSON-able with ``allow_nan=False``: every float is
finite, and a value that cannot be computed is ``None``.
"""

from __future__ import annotations

import base64
import io
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "DOWN_ACTIONS",
    "EquityPoint",
    "HIT_HORIZON",
    "HitStats",
    "REPORT_KEYS",
    "SignalOutcome",
    "Trade",
    "UP_ACTIONS",
    "Z95",
    "build_report",
    "buy_and_hold_pct",
    "equity_chart_png",
    "hit_rate",
    "max_drawdown_pct",
    "report_markdown",
    "wilson_interval",
]

#: Two-sided 95 % standard-normal quantile, ``scipy.stats.norm.ppf(0.975)``.
Z95 = 1.959963984540054

#: Actions that predict the price goes up over the next bar.
UP_ACTIONS = frozenset({"buy", "long"})
#: Actions that predict the price goes down over the next bar (``close`` exits a position, read as
#: a call that the price will not rise).
DOWN_ACTIONS = frozenset({"sell", "short", "close"})
#: The horizon over which a signal is scored (see :func:`hit_rate`).
HIT_HORIZON = "1 bar"

#: The keys of :func:`build_report`'s dict, in order.
REPORT_KEYS = (
    "strategy",
    "book",
    "windows",
    "instruments",
    "signals",
    "trades",
    "trade_list",
    "return_pct",
    "buy_and_hold_pct",
    "max_drawdown_pct",
    "hit_rate",
    "hit_rate_ci95",
    "hit_horizon",
    "per_instrument",
    "equity_curve",
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


# --------------------------------------------------------------------------------------------
# the report


def _trade_dict(t: Trade) -> dict[str, Any]:
    return {
        "instrument": t.instrument,
        "side": t.side,
        "opened_at": _iso(t.opened_at),
        "closed_at": _iso(t.closed_at),
        "entry_price": _finite(t.entry_price),
        "exit_price": _finite(t.exit_price),
        "quantity": _finite(t.quantity),
        "realized_pnl": _finite(t.realized_pnl),
        "exit_reason": t.exit_reason,
    }


def build_report(
    *,
    strategy: str,
    book: str,
    starting_cash: float,
    points: list[EquityPoint],
    trades: list[Trade],
    outcomes: list[SignalOutcome],
    first_close: dict[str, float],
    last_close: dict[str, float],
    signal_counts: dict[str, int],
    no_trade: int,
    elapsed_s: float,
) -> dict[str, Any]:
    """The replay scorecard as a JSON-able dict with exactly the keys in :data:`REPORT_KEYS`.

    * ``windows``: ``len(points)`` (one equity point per replayed window).
    * ``instruments``: ``sorted(first_close)``.
    * ``signals``: ``signal_counts`` (counts by action) plus ``no_trade``.
    * ``trades``: number of trades, closed and open; ``trade_list``: their fields, datetimes as
      UTC ISO strings, money in quote currency.
    * ``return_pct``: ``(final equity / starting_cash - 1) * 100``, percent; final equity is the
      last point's equity (``starting_cash`` when there are no points, giving 0.0).
    * ``buy_and_hold_pct``: :func:`buy_and_hold_pct`, percent (``None`` if not computable).
    * ``max_drawdown_pct``: :func:`max_drawdown_pct`, percent of peak.
    * ``hit_rate`` / ``hit_rate_ci95``: :func:`hit_rate` and its Wilson 95 % interval, fractions;
      ``hit_rate`` is ``None`` with no scorable directional signals. ``hit_horizon`` is ``"1 bar"``.
    * ``per_instrument``: for each instrument in ``first_close``, ``trades`` or ``outcomes``
      (sorted): ``signals`` (all outcomes, any action), ``directional``, ``hits``, ``hit_rate``,
      ``hit_rate_ci95``, ``trades``, ``realized_pnl`` (sum, quote currency) and
      ``buy_and_hold_pct`` (that instrument alone, percent, ``None`` without both closes).
    * ``equity_curve``: ``[[iso_utc, equity], ...]``.
    * ``elapsed_s``: wall seconds of the replay; ``windows_per_s``: ``windows / elapsed_s``,
      ``None`` when ``elapsed_s <= 0``.

    Nothing is rounded. Non-finite floats become ``None``.
    """
    if not (math.isfinite(float(starting_cash)) and starting_cash > 0):
        raise ValueError(f"starting_cash must be a positive finite number, got {starting_cash!r}")

    windows = len(points)
    final_equity = float(points[-1].equity) if points else float(starting_cash)
    return_pct = _finite((final_equity / float(starting_cash) - 1.0) * 100.0)

    try:
        bh = _finite(buy_and_hold_pct(first_close, last_close))
    except ValueError:
        bh = None

    overall = hit_rate(outcomes)

    signals: dict[str, int] = {str(k): int(v) for k, v in signal_counts.items()}
    signals["no_trade"] = int(no_trade)

    names = sorted(set(first_close) | {t.instrument for t in trades} | {o.instrument for o in outcomes})
    per_instrument: dict[str, dict[str, Any]] = {}
    outcome_counts = Counter(o.instrument for o in outcomes)
    for name in names:
        stats = hit_rate(o for o in outcomes if o.instrument == name)
        mine = [t for t in trades if t.instrument == name]
        pnl = _finite(sum(float(t.realized_pnl) for t in mine))
        inst_bh = (
            _instrument_return_pct(first_close[name], last_close[name])
            if name in first_close and name in last_close
            else None
        )
        per_instrument[name] = {
            "signals": outcome_counts.get(name, 0),
            "directional": stats.directional,
            "hits": stats.hits,
            "hit_rate": _finite(stats.rate),
            "hit_rate_ci95": [stats.ci95[0], stats.ci95[1]],
            "trades": len(mine),
            "realized_pnl": pnl,
            "buy_and_hold_pct": _finite(inst_bh),
        }

    elapsed = _finite(elapsed_s)
    windows_per_s = _finite(windows / elapsed) if elapsed is not None and elapsed > 0 else None

    report = {
        "strategy": strategy,
        "book": book,
        "windows": windows,
        "instruments": sorted(first_close),
        "signals": signals,
        "trades": len(trades),
        "trade_list": [_trade_dict(t) for t in trades],
        "return_pct": return_pct,
        "buy_and_hold_pct": bh,
        "max_drawdown_pct": _finite(max_drawdown_pct(points)),
        "hit_rate": _finite(overall.rate),
        "hit_rate_ci95": [overall.ci95[0], overall.ci95[1]],
        "hit_horizon": HIT_HORIZON,
        "per_instrument": per_instrument,
        "equity_curve": [[_iso(p.as_of), _finite(p.equity)] for p in points],
        "elapsed_s": elapsed,
        "windows_per_s": windows_per_s,
    }
    assert tuple(report) == REPORT_KEYS
    return report


# --------------------------------------------------------------------------------------------
# chart and markdown

_CHART_W_IN, _CHART_H_IN, _CHART_DPI = 8.0, 4.5, 100  # 800 x 450 px


def equity_chart_png(points: list[EquityPoint], title: str) -> bytes:
    """PNG bytes (800 x 450 px) of equity over time and its drawdown.

    Top panel: equity in quote currency. Bottom panel: drawdown from the running peak in percent
    (``(equity / peak - 1) * 100``, so ``<= 0``), drawn as a filled area. The x axis shows UTC
    dates. Rendered with ``matplotlib.figure.Figure`` + ``FigureCanvasAgg`` (no pyplot, no global
    state); ``savefig(metadata={"Software": None})`` keeps the bytes identical across calls.
    With no points, both panels are empty and say "no data".
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_CHART_W_IN, _CHART_H_IN), dpi=_CHART_DPI)
    FigureCanvasAgg(fig)
    ax_eq, ax_dd = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    fig.suptitle(title, fontsize=11)

    pts = [p for p in points if math.isfinite(float(p.equity))]
    if pts:
        times = [_utc(p.as_of) for p in pts]
        equity = [float(p.equity) for p in pts]
        dd = []
        peak = -math.inf
        for e in equity:
            peak = max(peak, e)
            dd.append((e / peak - 1.0) * 100.0 if peak > 0 else 0.0)
        ax_eq.plot(times, equity, color="tab:blue", linewidth=1.2)
        ax_dd.fill_between(times, dd, 0.0, color="tab:red", alpha=0.35, linewidth=0)
        ax_dd.plot(times, dd, color="tab:red", linewidth=0.8)
        locator = AutoDateLocator(tz=UTC)
        ax_dd.xaxis.set_major_locator(locator)
        ax_dd.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))
        low = min(dd)
        ax_dd.set_ylim(low * 1.1 if low < 0 else -1.0, 0.0)
    else:
        for ax in (ax_eq, ax_dd):
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)

    ax_eq.set_ylabel("equity (quote ccy)")
    ax_eq.grid(True, alpha=0.3)
    ax_dd.set_ylabel("drawdown %")
    ax_dd.set_xlabel("time (UTC)")
    ax_dd.grid(True, alpha=0.3)
    fig.subplots_adjust(left=0.11, right=0.97, top=0.91, bottom=0.12, hspace=0.08)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_CHART_DPI, metadata={"Software": None})
    return buf.getvalue()


def _fmt(x: Any, spec: str = ".2f", suffix: str = "") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:{spec}}{suffix}"
    return f"{x}{suffix}"


def _fmt_ci(ci: Sequence[float] | None) -> str:
    if not ci:
        return "n/a"
    return f"[{ci[0] * 100:.1f}%, {ci[1] * 100:.1f}%]"


def _fmt_rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def _png_data_uri(png: bytes, max_width: int = 600) -> str:
    """Downscale (keeping aspect) to at most ``max_width`` px wide with PIL; base64 data URI."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im.load()
        if im.width > max_width:
            height = max(1, round(im.height * max_width / im.width))
            im = im.resize((max_width, height), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        im.save(out, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def report_markdown(report: dict[str, Any], png: bytes | None) -> str:
    """A compact markdown summary of a :func:`build_report` dict.

    A headline table (returns and drawdown in percent, hit rate in percent with its Wilson 95 %
    interval, one-bar horizon), a per-instrument table (realized P&L in quote currency), and, when
    ``png`` is given, the chart inline as a base64 ``data:image/png`` URI downscaled with PIL to at
    most 600 px wide.
    """
    sig = report.get("signals", {})
    sig_text = ", ".join(f"{k} {v}" for k, v in sig.items()) or "none"
    lines = [
        f"## Replay: {report.get('strategy')} / {report.get('book')}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| windows | {report.get('windows')} |",
        f"| instruments | {', '.join(report.get('instruments', [])) or 'none'} |",
        f"| signals | {sig_text} |",
        f"| trades | {report.get('trades')} |",
        f"| return | {_fmt(report.get('return_pct'), '.2f', '%')} |",
        f"| buy and hold (equal weight) | {_fmt(report.get('buy_and_hold_pct'), '.2f', '%')} |",
        f"| max drawdown | {_fmt(report.get('max_drawdown_pct'), '.2f', '%')} |",
        f"| hit rate ({report.get('hit_horizon')}) | {_fmt_rate(report.get('hit_rate'))} "
        f"(95% CI {_fmt_ci(report.get('hit_rate_ci95'))}) |",
        f"| elapsed | {_fmt(report.get('elapsed_s'), '.2f', ' s')} |",
        f"| windows/s | {_fmt(report.get('windows_per_s'), '.2f')} |",
        "",
    ]
    per = report.get("per_instrument") or {}
    if per:
        lines += [
            "| instrument | signals | directional | hits | hit rate | 95% CI | trades | realized P&L | buy and hold |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for name, row in per.items():
            lines.append(
                f"| {name} | {row['signals']} | {row['directional']} | {row['hits']} | "
                f"{_fmt_rate(row['hit_rate'])} | {_fmt_ci(row['hit_rate_ci95'])} | {row['trades']} | "
                f"{_fmt(row['realized_pnl'], '.2f')} | {_fmt(row['buy_and_hold_pct'], '.2f', '%')} |"
            )
        lines.append("")
    if png:
        lines += [f"![equity and drawdown]({_png_data_uri(png)})", ""]
    return "\n".join(lines)
