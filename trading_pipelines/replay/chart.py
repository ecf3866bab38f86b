"""The replay report's chart: equity over time and its drawdown, as PNG bytes."""

from __future__ import annotations

import io
import math
from datetime import UTC

from trading_pipelines.replay.metrics import EquityPoint, _utc

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

