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

The parts: :mod:`~trading_pipelines.replay.metrics` (the input records and the statistics),
:mod:`~trading_pipelines.replay.chart` (the PNG), :mod:`~trading_pipelines.replay.markdown` (the
markdown summary); this module assembles the report and re-exports every public name.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from trading_pipelines.replay.chart import equity_chart_png
from trading_pipelines.replay.markdown import report_markdown
from trading_pipelines.replay.metrics import (
    DOWN_ACTIONS,
    HIT_HORIZON,
    UP_ACTIONS,
    Z95,
    EquityPoint,
    HitStats,
    SignalOutcome,
    Trade,
    _finite,
    _instrument_return_pct,
    _iso,
    buy_and_hold_pct,
    hit_rate,
    max_drawdown_pct,
    wilson_interval,
)

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
