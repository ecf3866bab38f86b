"""The replay report's chart: equity over time beside equal-weight buy-and-hold, and the
strategy's drawdown, as PNG bytes."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from trading_pipelines.replay.metrics import EquityPoint, _utc

_CHART_W_IN, _CHART_H_IN, _CHART_DPI = 8.0, 4.5, 100  # 800 x 450 px
STRATEGY_LABEL = "strategy"
BUY_AND_HOLD_LABEL = "buy and hold (equal weight)"


def _equity_figure(points: list[EquityPoint], title: str,
                   buy_and_hold: Sequence[tuple[datetime, float]] | None = None):
    """The ``matplotlib.figure.Figure`` behind :func:`equity_chart_png` (axes: equity, drawdown)."""
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
        ax_eq.plot(times, equity, color="tab:blue", linewidth=1.2, label=STRATEGY_LABEL)
        bh = [(_utc(t), float(e)) for t, e in (buy_and_hold or ()) if e is not None and math.isfinite(float(e))]
        if bh:
            ax_eq.plot([t for t, _ in bh], [e for _, e in bh], color="tab:orange", linewidth=1.0,
                       label=BUY_AND_HOLD_LABEL)
            ax_eq.legend(loc="best", fontsize=8, framealpha=0.85)
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
    return fig


def equity_chart_png(points: list[EquityPoint], title: str,
                     buy_and_hold: Sequence[tuple[datetime, float]] | None = None) -> bytes:
    """PNG bytes (800 x 450 px) of equity over time, buy-and-hold beside it, and the drawdown.

    Top panel: the strategy's equity in quote currency (blue, labelled "strategy") and, when
    ``buy_and_hold`` is given (``[(utc time, equity), ...]``, e.g. the report's
    ``buy_and_hold_curve``: equal weight, same start), that line (orange, labelled "buy and hold
    (equal weight)"). Bottom panel: the strategy's drawdown from its running peak in percent
    (``(equity / peak - 1) * 100``, so ``<= 0``), drawn as a filled area. The x axis shows UTC
    dates. Rendered with ``matplotlib.figure.Figure`` + ``FigureCanvasAgg`` (no pyplot, no global
    state); ``savefig(metadata={"Software": None})`` keeps the bytes identical across calls.
    With no points, both panels are empty and say "no data".
    """
    fig = _equity_figure(points, title, buy_and_hold)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_CHART_DPI, metadata={"Software": None})
    return buf.getvalue()


def report_chart_png(report: dict[str, Any], title: str) -> bytes:
    """:func:`equity_chart_png` of a :func:`~trading_pipelines.replay.report.build_report` dict:
    its ``equity_curve`` and (when present) ``buy_and_hold_curve``, both ``[[iso_utc, equity], ...]``.
    Raises ``KeyError`` without ``equity_curve``."""
    def parse(curve):
        return [(datetime.fromisoformat(t), e) for t, e in curve if e is not None]

    points = [EquityPoint(t, e) for t, e in parse(report["equity_curve"])]
    return equity_chart_png(points, title, buy_and_hold=parse(report.get("buy_and_hold_curve") or []))
