"""Indicator frames, point in time: computed once per *chunk* of :data:`CHUNK_BARS` bars (aligned
on the UTC epoch) over a warm-up of ``2 × lookback_bars``, then sliced per window, so a single
tick and a year-long backfill see the same frame for a window, bit for bit, and no window sees a
bar that closed after its end (see DESIGN.md, "Replay and live"). Freshness: a window trades only
on the bar that closes at its end.

A window depends only on the bars it can see:

* **warming up** — a window with fewer than :func:`warmup_bars` bars of history (the first windows
  of a data set, e.g. an equity from its IPO) is a no-trade ``warming up: N of M bars``; the
  windows after it trade as soon as they have the history, whatever chunk they fall in;
* **bad rows** (see :class:`~trading_pipelines.stores.market_data.BadRowsError`) — a window whose
  ``lookback_bars`` include a bad row (or whose newest bar is one) is a no-trade ``bad data: <file>:
  line <n> …: <reason>``. A window whose bars all closed before the bad row trades exactly as if the
  row were fine (indicators are causal); a window after it trades on the history that starts after
  the bad row (its indicators warm up again, a ``warming up … after <file>: line <n> …`` no-trade
  until they have).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd

from trading_pipelines.domain.indicators import compute_indicators, required_bars
from trading_pipelines.runtime import Runtime
from trading_pipelines.stores.market_data import BadRow, BadRowsError, MarketDataError

CHUNK_BARS = 512
"""Indicator chunk length in bars (see the module doc)."""


@dataclass
class Chunk:
    """The indicator frame of one chunk of an instrument's windows.

    ``frame``: OHLCV + indicator columns (see :func:`~trading_pipelines.domain.indicators.compute_indicators`)
    of the chunk's history, oldest first; when bad rows cut the history, each piece between them is
    computed on its own and the pieces are concatenated. ``None`` when no bar could be used.
    ``problems``: window end → why that window must not trade on its bars (``"bad data: …"``,
    ``"warming up: …"``); the other windows of the chunk slice ``frame`` (:func:`slice_window`)."""

    frame: pd.DataFrame | None
    problems: dict[datetime, str] = field(default_factory=dict)

    def copy(self) -> Chunk:
        return Chunk(None if self.frame is None else self.frame.copy(), dict(self.problems))


def warmup_bars(spec) -> int:
    """Bars of history a window needs before it may trade: enough for every indicator to be
    defined on its newest bar (:func:`~trading_pipelines.domain.indicators.required_bars`), and at
    least ``min(lookback_bars, 30)``."""
    return max(required_bars(spec.template.indicators), min(spec.template.lookback_bars, 30))


def _warm_bars(spec) -> int:
    """Warm-up of a chunk, in bar durations before its start: ``2 × lookback_bars`` (twice the
    indicators' need when that is longer)."""
    return 2 * max(spec.template.lookback_bars, warmup_bars(spec))


def _chunk_start(t: pd.Timestamp, bar: timedelta) -> pd.Timestamp:
    step = pd.Timedelta(bar) * CHUNK_BARS
    epoch = pd.Timestamp(0, tz="UTC")
    return epoch + ((t - epoch) // step) * step


def indicator_chunks(rt: Runtime, instrument: str, window_ends: list[datetime]) -> dict[pd.Timestamp, Chunk]:
    """The :class:`Chunk` of each chunk the windows fall in, keyed by chunk start (UTC), with the
    reason of every window of it that must not trade (see the module doc). Data that cannot be read
    at all (a missing file, a wrong header) makes every window of the chunk ``bad data: …``."""
    bar = rt.spec.bar_duration
    warm = _warm_bars(rt.spec)
    by_chunk: dict[pd.Timestamp, list[datetime]] = {}
    for end in sorted(set(window_ends)):
        # the chunk holds windows whose newest bar opens inside it
        by_chunk.setdefault(_chunk_start(pd.Timestamp(end - bar), bar), []).append(end)
    out: dict[pd.Timestamp, Chunk] = {}
    for start, ends in by_chunk.items():
        stop = min((start + pd.Timedelta(bar) * CHUNK_BARS).to_pydatetime(), ends[-1])
        since = start - pd.Timedelta(bar) * warm
        try:
            history = rt.market.bars(instrument, rt.spec.timeframe, end=stop,
                                     limit=int((stop - start.to_pydatetime()) / bar) + warm)
        except BadRowsError as e:
            out[start] = _cut_chunk(rt, instrument, since, ends, e.rows)
            continue
        except MarketDataError as e:
            out[start] = Chunk(None, {end: f"bad data: {e}" for end in ends})
            continue
        frame, problems = _piece(rt, history[history.index >= since], ends)
        out[start] = Chunk(frame, problems)
    return out


def _piece(rt: Runtime, history: pd.DataFrame, ends: list[datetime],
           after: BadRow | None = None) -> tuple[pd.DataFrame | None, dict[datetime, str]]:
    """Indicators over ``history`` (bars with no bad row among them) and the windows of ``ends``
    that have too little of it (``after``: the bad row the history starts after)."""
    spec = rt.spec
    need = warmup_bars(spec)
    frame = compute_indicators(history, spec.template.indicators) if len(history) >= required_bars(spec.template.indicators) else None
    problems: dict[datetime, str] = {}
    for end in ends:
        n = int(history.index.searchsorted(pd.Timestamp(end - spec.bar_duration), side="right"))
        if n >= need:
            continue
        if after is not None:
            problems[end] = f"warming up: {n} of {need} bars after the bad row {after.message}"
        elif n == 0:
            problems[end] = f"warming up: 0 of {need} bars (no bar closed by {end.isoformat()})"
        else:
            problems[end] = f"warming up: {n} of {need} bars (the first opens {history.index[0].isoformat()})"
    return frame, problems


def _cut_chunk(rt: Runtime, instrument: str, since: pd.Timestamp, ends: list[datetime], bad: tuple[BadRow, ...]) -> Chunk:
    """A chunk whose history contains bad rows: a window whose lookback sees one is ``bad data``;
    the others are grouped by the bad row they follow and computed on the bars after it."""
    spec = rt.spec
    problems: dict[datetime, str] = {}
    pieces: dict[pd.Timestamp, tuple[list[datetime], BadRow | None]] = {}
    for end in ends:
        try:
            rt.market.bars(instrument, spec.timeframe, end=end, limit=spec.template.lookback_bars)
        except MarketDataError as e:
            problems[end] = f"bad data: {e}"
            continue
        newest = pd.Timestamp(end - spec.bar_duration).as_unit("ns").value
        before = [r for r in bad if r.last_ns < newest]  # all of them before the lookback (it is clean)
        after = max(before, key=lambda r: r.last_ns, default=None)
        first = since
        if after is not None:
            # bars are on a whole-second grid: the first one that can open after the bad row
            cut = pd.Timestamp(after.last_ns + 1, tz="UTC").ceil("s")
            if cut > since:
                first = cut
            else:
                after = None
        pieces.setdefault(first, ([], after))[0].append(end)
    frames = []
    for first, (group, after) in sorted(pieces.items()):
        try:
            history = rt.market.bars_between(instrument, spec.timeframe, first, group[-1])
        except MarketDataError as e:
            problems.update({end: f"bad data: {e}" for end in group})
            continue
        frame, why = _piece(rt, history, group, after)
        problems.update(why)
        if frame is not None:
            frames.append(frame)
    return Chunk(pd.concat(frames) if frames else None, problems)


def store_chunks(rt: Runtime, instrument: str, chunks: dict[pd.Timestamp, Chunk]) -> dict[pd.Timestamp, str]:
    """Write each indicator chunk's frame (OHLCV + indicators) to the frame store, if there is one."""
    if rt.frames is None:
        return {}
    return {start: rt.frames.put(rt.spec.name, "indicator_frames", instrument, start, chunk.frame)
            for start, chunk in chunks.items() if chunk.frame is not None}


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
    """The window's indicator frame, exactly as :func:`analyze` computes it (chunked, sliced).
    Raises :class:`MarketDataError` with the window's reason when it must not trade on its bars
    (bad data, warming up)."""
    chunk = next(iter(indicator_chunks(rt, instrument, [window_end]).values()))
    problem = chunk.problems.get(window_end)
    if problem:
        raise MarketDataError(problem.removeprefix("bad data: "))
    return slice_window(rt, chunk.frame, window_end)


__all__ = ["CHUNK_BARS", "Chunk", "freshness", "indicator_chunks", "indicator_frame", "slice_window", "store_chunks",
           "warmup_bars"]
