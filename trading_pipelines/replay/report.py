"""A trading strategy's replay scorecard: pure functions, no Dagster, no database, no file I/O.

Units used throughout (each function's docstring repeats the ones it needs):

* **Money** (equity, prices, ``realized_pnl``, ``fees``, ``net_pnl``, ``starting_cash``) is in the book's *quote
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
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from trading_pipelines.replay.chart import equity_chart_png, report_chart_png
from trading_pipelines.replay.markdown import report_markdown
from trading_pipelines.replay.metrics import (
    DOWN_ACTIONS,
    HIT_HORIZON,
    HIT_RATE_COUNTS,
    MARKET_CLOSED_PREFIX,
    REPORT_KEYS,
    TRADABLE_COUNTS,
    UP_ACTIONS,
    Z95,
    EquityPoint,
    HitStats,
    SignalOutcome,
    Trade,
    _finite,
    _instrument_return_pct,
    _iso,
    buy_and_hold_curve,
    buy_and_hold_pct,
    hit_rate,
    intent_could_trade,
    is_market_closed,
    max_drawdown_pct,
    net_pnl,
    planned_risk,
    r_multiple,
    tradable_hit_rate,
    wilson_interval,
)

__all__ = [
    "DOWN_ACTIONS",
    "EquityPoint",
    "HIT_HORIZON",
    "HIT_RATE_COUNTS",
    "HitStats",
    "MARKET_CLOSED_PREFIX",
    "REPORT_KEYS",
    "SignalOutcome",
    "TRADABLE_COUNTS",
    "Trade",
    "UP_ACTIONS",
    "Z95",
    "build_report",
    "buy_and_hold_curve",
    "buy_and_hold_pct",
    "equity_chart_png",
    "hit_rate",
    "intent_could_trade",
    "is_market_closed",
    "max_drawdown_pct",
    "net_pnl",
    "planned_risk",
    "r_multiple",
    "report_chart_png",
    "report_markdown",
    "tradable_hit_rate",
    "wilson_interval",
]


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
        "fees": _finite(t.fees or 0.0),
        "net_pnl": net_pnl(t),
        "stop": _finite(t.stop),
        "planned_risk": planned_risk(t),
        "r_multiple": r_multiple(t),
    }


def _sum(values: list[float | None]) -> float | None:
    """The sum, or ``None`` if any term is ``None`` (a partial total would mislead)."""
    if any(v is None for v in values):
        return None
    return _finite(sum(values))  # type: ignore[arg-type]


def _hit_fields(stats: HitStats) -> dict[str, Any]:
    return {"directional": stats.directional, "hits": stats.hits, "hit_rate": _finite(stats.rate),
            "hit_rate_ci95": [stats.ci95[0], stats.ci95[1]]}


def _tradable_fields(stats: HitStats | None) -> dict[str, Any]:
    if stats is None:
        return {"tradable_directional": None, "tradable_hits": None, "tradable_hit_rate": None,
                "tradable_hit_rate_ci95": None}
    return {"tradable_directional": stats.directional, "tradable_hits": stats.hits,
            "tradable_hit_rate": _finite(stats.rate), "tradable_hit_rate_ci95": [stats.ci95[0], stats.ci95[1]]}


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
    elapsed_s: float | None,
    closes: Mapping[str, Mapping[datetime, float]] | None = None,
    market_closed: int = 0,
) -> dict[str, Any]:
    """The replay scorecard as a JSON-able dict with exactly the keys in :data:`REPORT_KEYS`.

    * ``windows``: ``len(points)`` (one equity point per replayed window).
    * ``instruments``: ``sorted(first_close)``.
    * ``signals``: ``signal_counts`` (counts by action) plus ``no_trade`` (signals with a no-trade
      reason, **not** counting market-closed windows); ``market_closed``: the signals whose
      no-trade reason starts with ``"market closed"`` (:func:`is_market_closed`, exchange
      holidays), counted apart by the caller.
    * ``trades``: number of trades, closed and open; ``trade_list``: per trade ``instrument``,
      ``side``, ``opened_at``/``closed_at`` (UTC ISO, ``closed_at`` ``None`` while open),
      ``entry_price``/``exit_price``, ``quantity`` (base units), ``realized_pnl`` (**before fees**),
      ``fees``, ``net_pnl`` (``realized_pnl − fees``), ``stop`` (planned at entry),
      ``planned_risk`` (``|entry − stop| × quantity``), ``r_multiple`` (``net_pnl / planned_risk``,
      closed trades only), ``exit_reason``; money in quote currency.
    * ``realized_pnl`` / ``fees`` / ``net_pnl``: the trades' totals (quote currency); the equity
      change ``final equity − starting_cash`` equals ``net_pnl`` plus the open positions'
      unrealized P&L.
    * ``return_pct``: ``(final equity / starting_cash - 1) * 100``, percent; final equity is the
      last point's equity (``starting_cash`` when there are no points, giving 0.0).
    * ``buy_and_hold_pct``: :func:`buy_and_hold_pct`, percent (``None`` if not computable).
    * ``max_drawdown_pct``: :func:`max_drawdown_pct`, percent of peak.
    * ``hit_rate`` / ``hit_rate_ci95``: :func:`hit_rate` and its Wilson 95 % interval, fractions;
      ``hit_rate`` is ``None`` with no scorable directional signals. ``hit_horizon`` is ``"1 bar"``;
      ``hit_rate_counts`` says what is counted (:data:`HIT_RATE_COUNTS`); ``directional`` and
      ``hits`` are the counts.
    * ``tradable_hit_rate`` / ``tradable_hit_rate_ci95`` / ``tradable_directional`` /
      ``tradable_hits``: the same over the signals that could trade (:func:`tradable_hit_rate`,
      :data:`TRADABLE_COUNTS` in ``tradable_counts``); all four ``None`` when no outcome's
      ``could_trade`` is known.
    * ``per_instrument``: for each instrument in ``first_close``, ``trades`` or ``outcomes``
      (sorted): ``signals`` (all outcomes, any action), ``directional``, ``hits``, ``hit_rate``,
      ``hit_rate_ci95``, the four ``tradable_*`` fields, ``trades``, ``realized_pnl`` (before fees),
      ``fees``, ``net_pnl`` (sums, quote currency) and ``buy_and_hold_pct`` (that instrument alone,
      percent, ``None`` without both closes).
    * ``equity_curve``: ``[[iso_utc, equity], ...]``; ``buy_and_hold_curve``: the same times,
      :func:`buy_and_hold_curve` of ``closes`` (instrument → {bar close time → close}) from
      ``starting_cash``; ``[]`` when ``closes`` is not given.
    * ``elapsed_s``: wall seconds of the replay (``None`` when not given); ``windows_per_s``:
      ``windows / elapsed_s``, ``None`` when ``elapsed_s`` is not positive.

    Nothing is rounded. Non-finite floats become ``None``. Raises ``ValueError`` when
    ``starting_cash`` is not a positive finite number.
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

    signals: dict[str, int] = {str(k): int(v) for k, v in signal_counts.items()}
    signals["no_trade"] = int(no_trade)

    names = sorted(set(first_close) | {t.instrument for t in trades} | {o.instrument for o in outcomes})
    per_instrument: dict[str, dict[str, Any]] = {}
    outcome_counts = Counter(o.instrument for o in outcomes)
    trade_dicts = [_trade_dict(t) for t in trades]
    for name in names:
        mine_o = [o for o in outcomes if o.instrument == name]
        mine = [d for d in trade_dicts if d["instrument"] == name]
        inst_bh = (
            _instrument_return_pct(first_close[name], last_close[name])
            if name in first_close and name in last_close
            else None
        )
        per_instrument[name] = {
            "signals": outcome_counts.get(name, 0),
            **_hit_fields(hit_rate(mine_o)),
            **_tradable_fields(tradable_hit_rate(mine_o)),
            "trades": len(mine),
            "realized_pnl": _sum([d["realized_pnl"] for d in mine]),
            "fees": _sum([d["fees"] for d in mine]),
            "net_pnl": _sum([d["net_pnl"] for d in mine]),
            "buy_and_hold_pct": _finite(inst_bh),
        }

    elapsed = _finite(elapsed_s)
    windows_per_s = _finite(windows / elapsed) if elapsed is not None and elapsed > 0 else None
    overall = _hit_fields(hit_rate(outcomes))
    bh_curve = buy_and_hold_curve(points, closes, first_close, starting_cash) if closes else []

    report = {
        "strategy": strategy,
        "book": book,
        "windows": windows,
        "instruments": sorted(first_close),
        "signals": signals,
        "market_closed": int(market_closed),
        "trades": len(trades),
        "trade_list": trade_dicts,
        "realized_pnl": _sum([d["realized_pnl"] for d in trade_dicts]),
        "fees": _sum([d["fees"] for d in trade_dicts]),
        "net_pnl": _sum([d["net_pnl"] for d in trade_dicts]),
        "return_pct": return_pct,
        "buy_and_hold_pct": bh,
        "max_drawdown_pct": _finite(max_drawdown_pct(points)),
        "hit_rate": overall["hit_rate"],
        "hit_rate_ci95": overall["hit_rate_ci95"],
        "hit_horizon": HIT_HORIZON,
        "hit_rate_counts": HIT_RATE_COUNTS,
        "directional": overall["directional"],
        "hits": overall["hits"],
        **_tradable_fields(tradable_hit_rate(outcomes)),
        "tradable_counts": TRADABLE_COUNTS,
        "per_instrument": per_instrument,
        "equity_curve": [[_iso(p.as_of), _finite(p.equity)] for p in points],
        "buy_and_hold_curve": [[_iso(t), _finite(e)] for t, e in bh_curve],
        "elapsed_s": elapsed,
        "windows_per_s": windows_per_s,
    }
    report = {k: report[k] for k in REPORT_KEYS}
    assert tuple(report) == REPORT_KEYS and len(report) == len(REPORT_KEYS)
    return report
