"""Candlestick charts (matplotlib Agg, mplfinance's "yahoo" colours).

* :func:`render_chart` draws the last N bars of an indicator frame to a small, deterministic PNG.
* :func:`render_charts` renders many :class:`ChartJob` s in worker processes, in order.
* :func:`thumbnail_markdown` embeds a downscaled copy as a markdown data-URI image (Dagster metadata).

Where the PNGs are stored: :mod:`trading_pipelines.stores.charts`.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import mplfinance as mpf  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, ScalarFormatter  # noqa: E402
from PIL import Image  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_OVERLAY_PREFIXES = ("ema_", "sma_", "bb_")
_OVERLAY_COLORS = ("tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:olive", "tab:cyan")
_BOLLINGER_COLOR = "tab:gray"


_OHLCV = ("open", "high", "low", "close", "volume")
_STYLE = mpf.make_mpf_style(base_mpf_style="yahoo")  # mplfinance's "yahoo" colours, drawn with matplotlib
_MC = _STYLE["marketcolors"]
_UP, _DOWN = np.array(to_rgba(_MC["candle"]["up"])), np.array(to_rgba(_MC["candle"]["down"]))
_WICK = _MC["wick"]["up"]
_VOL_UP, _VOL_DOWN = np.array(to_rgba(_MC["volume"]["up"])), np.array(to_rgba(_MC["volume"]["down"]))
_FACE, _GRID = _STYLE["facecolor"], _STYLE["gridcolor"]
_TEXT = "#101010"
_DPI = 80
_FIGSIZE = (8.0, 5.0)  # inches → 640×400 px at 80 dpi
_BODY_WIDTH = 0.7  # candle body width in bar spacings
_X_TICKS = 5
_PNG_KWARGS = {"compress_level": 3}  # zlib level 3: ~2 ms less than the default 6 for ~3% more bytes


def default_overlays(frame: pd.DataFrame) -> list[str]:
    """The EMA/SMA/Bollinger columns (``ema_*``, ``sma_*``, ``bb_*``) present in ``frame``."""
    return [c for c in frame.columns if str(c).startswith(_OVERLAY_PREFIXES)]


@dataclass(frozen=True, eq=False)
class ChartJob:
    """One chart to draw: only the drawn rows, as numpy arrays (small to pickle to a worker).

    Build it with :meth:`from_frame`, which validates like :func:`render_chart` and keeps the last
    ``bars`` rows of the OHLCV and overlay columns. ``times``: bar open times as naive UTC
    ``datetime64[ns]``; ``ohlcv``: float64 of shape (rows, 5) (open, high, low, close, volume);
    ``overlays``: the names of the lines drawn (all-NaN ones already dropped) with their values
    in ``overlay_values``, float64 of shape (len(overlays), rows).
    """

    title: str
    times: np.ndarray
    ohlcv: np.ndarray
    overlays: tuple[str, ...] = ()
    overlay_values: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.times)
        k = 0 if self.overlay_values is None else len(self.overlay_values)
        if (n < 2 or np.shape(self.ohlcv) != (n, 5) or k != len(self.overlays)
                or (k and np.shape(self.overlay_values) != (k, n))):
            raise ValueError(f"ChartJob({self.title!r}): need >= 2 times, ohlcv of shape (rows, 5) and "
                             f"overlay_values of shape (len(overlays), rows); use ChartJob.from_frame")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, title: str, overlays: list[str] | None = None, bars: int = 90) -> ChartJob:
        """The job :func:`render_chart` (same arguments) draws. Raises its ValueErrors."""
        missing = [c for c in _OHLCV if c not in frame.columns]
        if missing:
            raise ValueError(f"render_chart({title!r}): frame lacks columns {missing}")
        if not isinstance(frame.index, pd.DatetimeIndex):
            raise ValueError(f"render_chart({title!r}): frame index must be a DatetimeIndex of bar open times")
        if bars < 2 or len(frame) < 2:
            raise ValueError(f"render_chart({title!r}): need at least 2 bars (bars={bars}, rows={len(frame)})")
        overlays = default_overlays(frame) if overlays is None else list(overlays)
        unknown = [c for c in overlays if c not in frame.columns]
        if unknown:
            raise ValueError(f"render_chart({title!r}): overlay columns {unknown} not in frame")

        data = frame.iloc[-bars:]
        index = data.index.tz_convert("UTC").tz_localize(None) if data.index.tz is not None else data.index
        ohlcv = np.column_stack([data[c].to_numpy(dtype="float64", na_value=np.nan) for c in _OHLCV])
        names, values = [], []
        for col in overlays:
            series = data[col].to_numpy(dtype="float64", na_value=np.nan)
            if not np.isnan(series).all():
                names.append(str(col))
                values.append(series)
        return cls(
            title=str(title),
            times=np.asarray(index.to_numpy(dtype="datetime64[ns]")).copy(),
            ohlcv=np.ascontiguousarray(ohlcv),
            overlays=tuple(names),
            overlay_values=np.vstack(values) if values else None,
        )


class _Layer(Artist):
    """A full-figure RGBA image (bottom row first) copied to the canvas as is (no resampling)."""

    def __init__(self) -> None:
        super().__init__()
        self.set_zorder(-10)
        self.pixels: np.ndarray | None = None

    def draw(self, renderer) -> None:
        if self.pixels is not None:
            gc = renderer.new_gc()
            renderer.draw_image(gc, 0, 0, self.pixels)
            gc.restore()
        self.stale = False


class _Chart:
    """One reusable figure (not pyplot-managed): artists are created once and updated per chart.

    What does not change between charts of the same overlay set (white background, axis labels,
    legend) is drawn once into a cached RGBA layer and blitted as a figure image; only the candles,
    volume, lines, ticks and title are drawn per chart. Fixed layout, in figure fractions of
    640×400 px: legend strip under the title, price panel, volume panel, y labels on the right.
    """

    _LEFT, _WIDTH = 0.03, 0.84
    _PRICE = (0.335, 0.515)  # bottom, height
    _VOLUME = (0.115, 0.205)
    _STATIC_CACHE = 8  # layers of 1 MB; a replay uses one or two overlay sets

    def __init__(self) -> None:
        self.fig = fig = Figure(figsize=_FIGSIZE, dpi=_DPI, facecolor="white")
        FigureCanvasAgg(fig)
        fig.patch.set_visible(False)  # the static layer paints the background
        self.static = sfig = Figure(figsize=_FIGSIZE, dpi=_DPI, facecolor="white")
        FigureCanvasAgg(sfig)
        self._static_layers: dict[tuple, np.ndarray] = {}
        self.background = fig.add_artist(_Layer())

        left, width = self._LEFT, self._WIDTH
        self.ax = ax = fig.add_axes((left, self._PRICE[0], width, self._PRICE[1]))
        self.vax = vax = fig.add_axes((left, self._VOLUME[0], width, self._VOLUME[1]))
        for a in (ax, vax):
            a.set_facecolor(_FACE)
            a.grid(True, color=_GRID, linewidth=0.6)
            a.set_axisbelow(True)
            a.yaxis.tick_right()
            a.tick_params(labelsize=8, colors=_TEXT, length=3)
            for spine in a.spines.values():
                spine.set_color("#c0c0c0")
            for axis in (a.xaxis, a.yaxis):  # no labels: fixed positions skip measuring the tick labels
                axis.set_label_coords(0.0, 0.0)
        ax.tick_params(axis="x", labelbottom=False)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
        vax.yaxis.set_major_locator(MaxNLocator(nbins=3, min_n_ticks=2))
        vax.yaxis.set_major_formatter(FuncFormatter(_volume_label))
        self.title = fig.text(0.5, 0.955, "", ha="center", va="center", fontsize=12, weight="bold", color=_TEXT)

        label = {"fontsize": 9, "color": _TEXT, "ha": "center", "va": "center"}
        sfig.text(0.975, self._PRICE[0] + self._PRICE[1] / 2, "price", rotation=90, **label)
        sfig.text(0.975, self._VOLUME[0] + self._VOLUME[1] / 2, "volume", rotation=90, **label)
        sfig.text(left + width / 2, 0.035, "UTC", **label)
        self.static_legend = None

        self.wicks = LineCollection([], colors=_WICK, linewidths=0.8, zorder=2)
        self.bodies = PolyCollection([], linewidths=0.5, zorder=3)
        self.volume = PolyCollection([], linewidths=0.0, alpha=0.9, zorder=2)
        ax.add_collection(self.wicks, autolim=False)
        ax.add_collection(self.bodies, autolim=False)
        vax.add_collection(self.volume, autolim=False)
        self.lines: list[Line2D] = []

    def _static_layer(self, styles: tuple[tuple[str, str, str], ...]) -> np.ndarray:
        """Background + axis labels + legend of ``styles`` ((name, colour, linestyle) per line), as
        a 400×640×4 uint8 array, bottom row first (LRU-cached)."""
        layer = self._static_layers.pop(styles, None)
        if layer is None:
            if self.static_legend is not None:
                self.static_legend.remove()
                self.static_legend = None
            if styles:
                handles = [Line2D([], [], color=color, linestyle=ls, linewidth=0.8, label=name) for name, color, ls in styles]
                self.static_legend = self.static.legend(
                    handles=handles, loc="lower left", bbox_to_anchor=(self._LEFT, self._PRICE[0] + self._PRICE[1]),
                    bbox_transform=self.static.transFigure, borderaxespad=0.3, borderpad=0.2, fontsize=7,
                    frameon=False, ncols=min(6, len(handles)), handlelength=1.6, columnspacing=1.2,
                )
            self.static.canvas.draw()
            layer = np.ascontiguousarray(np.asarray(self.static.canvas.buffer_rgba(), dtype=np.uint8)[::-1])
            if len(self._static_layers) >= self._STATIC_CACHE:
                self._static_layers.pop(next(iter(self._static_layers)))
        self._static_layers[styles] = layer  # most recently used last
        return layer

    def _line(self, i: int) -> Line2D:
        while len(self.lines) <= i:
            line = Line2D([], [], linewidth=0.8, zorder=4)
            self.ax.add_line(line)
            self.lines.append(line)
        return self.lines[i]

    def render(self, job: ChartJob) -> bytes:
        n = len(job.times)
        o, h, l, c, v = job.ohlcv.T
        x = np.arange(n, dtype="float64")
        half = _BODY_WIDTH / 2

        lo_b, hi_b = np.minimum(o, c), np.maximum(o, c)
        bodies = np.empty((n, 4, 2))
        bodies[:, :, 0] = np.column_stack([x - half, x - half, x + half, x + half])
        bodies[:, :, 1] = np.column_stack([lo_b, hi_b, hi_b, lo_b])
        body_colors = np.where((c >= o)[:, None], _UP, _DOWN)
        self.bodies.set_verts(bodies)
        self.bodies.set_facecolor(body_colors)
        self.bodies.set_edgecolor(body_colors)
        wicks = np.empty((n, 2, 2))
        wicks[:, :, 0] = x[:, None]
        wicks[:, 0, 1], wicks[:, 1, 1] = l, h
        self.wicks.set_segments(wicks)

        prev = np.concatenate(([o[0]], c[:-1]))  # volume coloured by close vs previous close (mplfinance)
        vols = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
        vbars = np.zeros((n, 4, 2))
        vbars[:, :, 0] = bodies[:, :, 0]
        vbars[:, 1:3, 1] = vols[:, None]
        self.volume.set_verts(vbars)
        self.volume.set_facecolor(np.where((c >= prev)[:, None], _VOL_UP, _VOL_DOWN))

        colors = itertools.cycle(_OVERLAY_COLORS)
        values = job.overlay_values if job.overlay_values is not None else np.empty((0, n))
        styles = []
        for i, (name, ys) in enumerate(zip(job.overlays, values)):
            is_bb = name.startswith("bb_")
            style = (name, _BOLLINGER_COLOR if is_bb else next(colors), "--" if is_bb else "-")
            line = self._line(i)
            line.set_data(x, ys)
            line.set_color(style[1])
            line.set_linestyle(style[2])
            line.set_visible(True)
            styles.append(style)
        for line in self.lines[len(styles):]:
            line.set_visible(False)
        self.background.pixels = self._static_layer(tuple(styles))

        lows, highs = np.concatenate([l, *values]), np.concatenate([h, *values])
        lows, highs = lows[np.isfinite(lows)], highs[np.isfinite(highs)]
        ymin = float(lows.min()) if len(lows) else 0.0
        ymax = float(highs.max()) if len(highs) else max(1.0, ymin + 1.0)
        pad = (ymax - ymin) * 0.04 or abs(ymax) * 0.01 or 1.0
        self.ax.set_ylim(ymin - pad, ymax + pad)
        vmax = float(vols.max())
        self.vax.set_ylim(0.0, vmax * 1.08 if vmax > 0 else 1.0)
        xlim = (-0.5 - half, n - 0.5 + half)
        self.ax.set_xlim(xlim)
        self.vax.set_xlim(xlim)

        times = pd.DatetimeIndex(job.times)
        daily = bool((times == times.normalize()).all())
        step = -(-n // _X_TICKS)
        ticks = np.arange(step // 2, n, step)
        self.ax.set_xticks(ticks)
        self.vax.set_xticks(ticks, list(times[ticks].strftime("%d %b %y" if daily else "%d %b %H:%M")))
        self.title.set_text(job.title)

        canvas = self.fig.canvas
        canvas.draw()
        # Encoded by PIL directly (what savefig(metadata={"Software": None}) does, minus the alpha
        # channel): RGB, no text/time chunks, so the bytes depend only on the pixels.
        image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG", dpi=(_DPI, _DPI), **_PNG_KWARGS)
        return buf.getvalue()


def _volume_label(value: float, _pos=None) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


_chart: _Chart | None = None  # this process's figure, built on first use
_chart_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None  # render_charts' worker processes, built on first use
_pool_size = 0
_pool_lock = threading.Lock()


def _reset_after_fork() -> None:
    """A forked child gets neither the parent's figure (a lock might be held mid-render) nor its pool."""
    global _chart, _chart_lock, _pool, _pool_size, _pool_lock
    _chart, _chart_lock = None, threading.Lock()
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


# Charts are drawn under matplotlib's default rcParams, whatever the caller set globally: worker
# processes start from the defaults, and the same input must give the same bytes everywhere.
_RC_DEFAULTS = {k: v for k, v in matplotlib.rcParamsDefault.items() if k not in ("backend", "backend_fallback", "interactive")}


def _rc_defaults():
    """``nullcontext()`` when the global rcParams are the defaults (a ~30 µs check), else an
    ``rc_context`` restoring them for the render (~3 ms; briefly global, like any rc_context)."""
    rc = matplotlib.rcParams
    if all(dict.get(rc, k) == v for k, v in _RC_DEFAULTS.items()):
        return contextlib.nullcontext()
    return matplotlib.rc_context(_RC_DEFAULTS)


def _render_job(job: ChartJob) -> bytes:
    global _chart
    with _chart_lock, _rc_defaults():
        if _chart is None:
            _chart = _Chart()
        return _chart.render(job)


def _render_batch(jobs: list[ChartJob]) -> list[bytes]:
    return [_render_job(job) for job in jobs]


def _warm_worker() -> None:
    global _chart
    with _chart_lock, _rc_defaults():
        if _chart is None:
            _chart = _Chart()


def _get_pool(size: int) -> ProcessPoolExecutor:
    """The module's pool of ``size`` workers; a pool of another size is shut down and replaced."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False)  # work already submitted by other threads still completes
            # forkserver: workers are not forked from this (possibly multi-threaded) process
            _pool = ProcessPoolExecutor(max_workers=size, mp_context=multiprocessing.get_context("forkserver"),
                                        initializer=_warm_worker)
            _pool_size = size
        return _pool


def shutdown_chart_pool() -> None:
    """Stop :func:`render_charts`' worker processes (they are started again when needed)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=True, cancel_futures=True)
        _pool, _pool_size = None, 0


def render_charts(jobs: list[ChartJob], workers: int | None = None) -> list[bytes]:
    """PNG bytes of each job, in job order, byte-identical to :func:`render_chart` on the same input.

    Renders in a module-level :class:`~concurrent.futures.ProcessPoolExecutor` ('forkserver'
    workers, created on first use and reused; ``min(workers or os.cpu_count(), len(jobs))``
    processes), jobs sent in a few batches per worker. One job, or ``workers == 1``, renders in
    this process. The first call pays for starting the workers (about 1-2 s). If a worker dies
    the pool is discarded (the next call starts a new one) and the error is raised.
    Build jobs with :meth:`ChartJob.from_frame` (which validates and keeps only the drawn rows).
    """
    global _pool, _pool_size
    jobs = list(jobs)
    if workers is not None and workers < 1:
        raise ValueError(f"render_charts: workers must be >= 1, got {workers}")
    size = min(workers or os.cpu_count() or 1, len(jobs))
    if size <= 1:
        return [_render_job(job) for job in jobs]
    # ~4 batches per worker: few round trips, and a slow batch does not leave a worker idle long
    per = max(1, -(-len(jobs) // (size * 4)))
    batches = [jobs[i : i + per] for i in range(0, len(jobs), per)]
    pool = _get_pool(size)
    try:
        results = list(pool.map(_render_batch, batches))
    except BrokenProcessPool:
        with _pool_lock:
            if _pool is pool:
                _pool, _pool_size = None, 0
        raise
    return [png for batch in results for png in batch]


def render_chart(frame: pd.DataFrame, title: str, overlays: list[str] | None = None, bars: int = 90) -> bytes:
    """PNG bytes of a candlestick chart of the last ``bars`` rows of ``frame``, with a volume panel.

    ``frame``: OHLCV columns (quote currency / base volume) on a DatetimeIndex of bar open times
    (UTC; the axis is labelled in UTC). ``overlays``: columns drawn as lines over the candles;
    ``None`` draws every EMA/SMA/Bollinger column present (:func:`default_overlays`); columns that
    are entirely NaN in the drawn rows are skipped. Figure 8×5 in at 80 dpi, fixed layout
    (exactly 640×400 px, about 40-50 KB), legend above the price panel. Drawn on one reusable
    figure per process (guarded by a lock; about 30-40 ms a chart on one core).
    Deterministic: the same frame and arguments give the same bytes (no timestamp or software
    version in the PNG). Raises ValueError for missing OHLCV/overlay columns, a non-datetime
    index, ``bars`` < 2 or fewer than 2 rows.
    """
    return _render_job(ChartJob.from_frame(frame, title, overlays, bars))


def thumbnail_markdown(png: bytes, max_width: int = 320, alt: str = "chart") -> str:
    """``![alt](data:image/png;base64,...)`` of ``png`` scaled down to at most ``max_width`` px wide
    (aspect kept; never scaled up) and reduced to a 64-colour palette, typically 10-20 KB.
    Raises ValueError if ``png`` is not a PNG or ``max_width`` < 16."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("thumbnail_markdown: input is not a PNG (bad signature)")
    if max_width < 16:
        raise ValueError(f"thumbnail_markdown: max_width must be >= 16, got {max_width}")
    with Image.open(io.BytesIO(png)) as img:
        img = img.convert("RGB")
        if img.width > max_width:
            img = img.resize((max_width, max(1, round(img.height * max_width / img.width))), Image.Resampling.LANCZOS)
        img = img.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        out = io.BytesIO()
        img.save(out, format="PNG", optimize=True)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(out.getvalue()).decode('ascii')})"
