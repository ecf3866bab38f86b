"""The chart of a window: title, overlays, rendering (in a process pool or in process) and the
chart store. A chart failure is the instrument's error only when its provider reads charts."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from trading_pipelines.runtime import Runtime
from trading_pipelines.stores.chart_render import render_chart
from trading_pipelines.stores.charts import ChartRef, chart_key

if TYPE_CHECKING:
    from trading_pipelines.analysis.analyze import Analysis


def chart_overlays(rt: Runtime) -> list[str]:
    ind = rt.spec.template.indicators
    return [f"ema_{w}" for w in ind.ema] + [f"sma_{w}" for w in ind.sma] + ["bb_upper", "bb_lower"]


def chart_title(rt: Runtime, instrument: str, window_end: datetime) -> str:
    return f"{instrument} {rt.spec.timeframe} → {window_end:%Y-%m-%d %H:%M}Z"



def _render(render, jobs, todo: list[Analysis]) -> list[bytes | None]:
    try:
        return render(jobs) if render else [render_chart(*j) for j in jobs]
    except Exception as e:  # noqa: BLE001 - a failed chart is this instrument's error, not the run's
        for a in todo:
            a.chart_error = f"chart failed: {type(e).__name__}: {e}"
        return [None] * len(jobs)


def _store_charts(rt: Runtime, instrument: str, todo: list[Analysis], pngs: list[bytes | None], reads_chart: bool) -> None:
    """Put rendered charts in the chart store. A chart that failed (or could not be stored) is a
    no-trade when the provider reads charts; for a provider that never sees them (rules) the
    failure is recorded on the analysis (``chart_error``, flagged by ``signal_usable``)."""
    for a, png in zip(todo, pngs):
        if png is not None:
            try:
                a.chart = rt.charts.put(chart_key(rt.spec.name, instrument, a.window_end), png)
                a._png = png  # type: ignore[attr-defined]
            except Exception as e:  # noqa: BLE001
                a.chart_error = f"chart store failed: {type(e).__name__}: {e}"
        if a.chart_error and reads_chart:
            a.error = a.error or a.chart_error



def make_chart(rt: Runtime, instrument: str, window_end: datetime, frame: pd.DataFrame) -> tuple[ChartRef, bytes]:
    png = render_chart(frame, title=chart_title(rt, instrument, window_end), overlays=chart_overlays(rt),
                       bars=rt.spec.template.chart_bars)
    return rt.charts.put(chart_key(rt.spec.name, instrument, window_end), png), png



__all__ = ["chart_overlays", "chart_title", "make_chart"]
