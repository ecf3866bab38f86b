"""Indicator frames, point in time: computed once per *chunk* of :data:`CHUNK_BARS` bars (aligned
on the UTC epoch) over a warm-up of ``2 × lookback_bars``, then sliced per window, so a single
tick and a year-long backfill see the same frame for a window, bit for bit, and no window sees a
bar that closed after its end (see DESIGN.md, "Replay and live"). Freshness: a window trades only
on the bar that closes at its end."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from trading_pipelines.domain.indicators import compute_indicators
from trading_pipelines.runtime import Runtime

CHUNK_BARS = 512
"""Indicator chunk length in bars (see the module doc)."""


def _chunk_start(t: pd.Timestamp, bar: timedelta) -> pd.Timestamp:
    step = pd.Timedelta(bar) * CHUNK_BARS
    epoch = pd.Timestamp(0, tz="UTC")
    return epoch + ((t - epoch) // step) * step


def indicator_chunks(rt: Runtime, instrument: str, window_ends: list[datetime]) -> dict[pd.Timestamp, pd.DataFrame]:
    """Indicator frames per chunk that the windows fall in (see the module doc). Raises
    :class:`MarketDataError` for bad data and ``ValueError`` when too few bars exist."""
    bar = rt.spec.bar_duration
    lookback = rt.spec.template.lookback_bars
    out: dict[pd.Timestamp, pd.DataFrame] = {}
    for end in sorted(window_ends):
        # the chunk holds windows whose newest bar opens inside it
        start = _chunk_start(pd.Timestamp(end - bar), bar)
        if start in out:
            continue
        chunk_end = (start + pd.Timedelta(bar) * CHUNK_BARS).to_pydatetime()
        last_needed = max(e for e in window_ends if _chunk_start(pd.Timestamp(e - bar), bar) == start)
        history = rt.market.bars(instrument, rt.spec.timeframe, end=min(chunk_end, last_needed),
                                 limit=int((min(chunk_end, last_needed) - start.to_pydatetime()) / bar) + 2 * lookback)
        warm = history[history.index >= start - pd.Timedelta(bar) * (2 * lookback)]
        out[start] = compute_indicators(warm, rt.spec.template.indicators)
    return out


def store_chunks(rt: Runtime, instrument: str, chunks: dict[pd.Timestamp, pd.DataFrame]) -> dict[pd.Timestamp, str]:
    """Write each indicator chunk (OHLCV + indicators) to the frame store, if there is one."""
    if rt.frames is None:
        return {}
    return {start: rt.frames.put(rt.spec.name, "indicator_frames", instrument, start, frame) for start, frame in chunks.items()}


def freshness(rt: Runtime, bars: pd.DataFrame, window_end: datetime) -> str | None:
    """Why a window must not trade on ``bars``, or None: its newest bar must be the bar that
    closes at the window end."""
    bar = rt.spec.bar_duration
    if bars.empty:
        return f"stale data: no bar closed at or before {window_end.isoformat()}"
    newest_close = bars.index[-1].to_pydatetime() + bar
    if newest_close != window_end:
        missing = int((window_end - newest_close) / bar)
        return (f"stale data: newest bar closed at {newest_close.isoformat()}, {missing} bar"
                f"{'s' if missing != 1 else ''} missing before the window end {window_end.isoformat()}")
    return None


def slice_window(rt: Runtime, chunk: pd.DataFrame, window_end: datetime) -> pd.DataFrame:
    """The point-in-time frame of a window: the last ``lookback_bars`` rows that closed by its end."""
    stop = chunk.index.searchsorted(pd.Timestamp(window_end - rt.spec.bar_duration), side="right")
    return chunk.iloc[max(0, stop - rt.spec.template.lookback_bars):stop]



def indicator_frame(rt: Runtime, instrument: str, window_end: datetime) -> pd.DataFrame:
    """The window's indicator frame, exactly as :func:`analyze` computes it (chunked, sliced)."""
    chunks = indicator_chunks(rt, instrument, [window_end])
    return slice_window(rt, next(iter(chunks.values())), window_end)



__all__ = ["CHUNK_BARS", "freshness", "indicator_chunks", "indicator_frame", "slice_window", "store_chunks"]
