"""Chart rendering on the real BTC/USDT 4h sample data, thumbnails, and the local chart store."""

from __future__ import annotations

import base64
import hashlib
import io
import pickle
import threading
from datetime import datetime, timedelta, timezone

import matplotlib
import matplotlib.pyplot as plt
import pytest
from PIL import Image

from trading_pipelines.config import IndicatorConfig
from trading_pipelines.domain.indicators import compute_indicators
from trading_pipelines.stores.chart_render import (
    PNG_SIGNATURE,
    ChartJob,
    default_overlays,
    render_chart,
    render_charts,
    shutdown_chart_pool,
    thumbnail_markdown,
)
from trading_pipelines.stores.charts import ChartRef, LocalChartStore, chart_key
from trading_pipelines.stores.market_data import CsvReplaySource

WINDOW_END = datetime(2025, 10, 11, tzinfo=timezone.utc)


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the PNG IHDR chunk."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


@pytest.fixture(scope="module")
def frame():
    bars = CsvReplaySource().bars("BTC/USDT", "4h", end=WINDOW_END, limit=150)
    return compute_indicators(bars, IndicatorConfig())


@pytest.fixture(scope="module")
def png(frame) -> bytes:
    return render_chart(frame, "BTC/USDT 4h")


def test_render_real_btc_chart_is_a_small_png(png):
    assert png[:8] == PNG_SIGNATURE
    assert 15_000 < len(png) < 80_000
    width, height = png_size(png)
    assert (width, height) == (640, 400)  # 8x5 in at 80 dpi, fixed layout (no trimming)
    assert b"Software" not in png and b"matplotlib" not in png.lower()
    assert plt.get_fignums() == []  # the figure was closed


def test_render_is_deterministic(frame, png):
    again = render_chart(frame.copy(), "BTC/USDT 4h")
    assert hashlib.sha256(again).hexdigest() == hashlib.sha256(png).hexdigest()
    assert render_chart(frame, "BTC/USDT 4h", overlays=[]) != png  # overlays do change the picture


def test_render_is_deterministic_across_other_charts_and_rc_settings(frame, png):
    """The figure is reused per process: what was drawn before (other overlays, fewer bars, a
    different title) or the caller's global rcParams must not leak into the next chart."""
    render_chart(frame, "other", overlays=["ema_20"], bars=30)
    render_chart(frame.iloc[:-40], "BTC/USDT 4h", overlays=[])
    assert render_chart(frame, "BTC/USDT 4h") == png
    with matplotlib.rc_context({"font.size": 20, "lines.linewidth": 5, "axes.grid": False}):
        assert render_chart(frame, "BTC/USDT 4h") == png


def test_png_opens_in_pil_with_the_expected_size_and_no_text_chunks(png):
    with Image.open(io.BytesIO(png)) as img:
        img.load()
        assert img.format == "PNG" and img.size == (640, 400) and img.mode == "RGB"
        assert img.text == {}  # no Software / timestamp / other text chunks
        # the candles are drawn: the yahoo up/down colours are present
        colors = {rgb for _, rgb in img.getcolors(maxcolors=640 * 400)}
        assert (0x00, 0xB0, 0x60) in colors and (0xFE, 0x30, 0x32) in colors
    assert b"tIME" not in png and b"tEXt" not in png and b"iTXt" not in png


def test_render_chart_is_thread_safe(frame, png):
    results: list[bytes] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(render_chart(frame, "BTC/USDT 4h"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [png] * 4


@pytest.fixture(scope="module")
def jobs_and_pngs(frame):
    """Five different windows (titles, overlays, bar counts) and their render_chart bytes."""
    specs = [
        (frame, "BTC/USDT 4h", None, 90),
        (frame.iloc[:-1], "BTC/USDT 4h -1", None, 90),
        (frame.iloc[:-2], "no overlays", [], 90),
        (frame.iloc[:-3], "two lines", ["ema_20", "sma_100"], 60),
        (frame.iloc[:-4], "short", None, 20),
    ]
    jobs = [ChartJob.from_frame(f, title, overlays, bars) for f, title, overlays, bars in specs]
    pngs = [render_chart(f, title, overlays, bars) for f, title, overlays, bars in specs]
    assert len(set(pngs)) == len(pngs)
    return jobs, pngs


def test_render_charts_in_processes_matches_render_chart_in_order(jobs_and_pngs):
    jobs, pngs = jobs_and_pngs
    try:
        assert render_charts(jobs, workers=2) == pngs
        assert render_charts(jobs[::-1], workers=2) == pngs[::-1]  # the pool is reused; order kept
    finally:
        shutdown_chart_pool()


def test_render_charts_in_process_for_one_job_or_one_worker(jobs_and_pngs):
    jobs, pngs = jobs_and_pngs
    assert render_charts([jobs[3]]) == [pngs[3]]
    assert render_charts(jobs, workers=1) == pngs
    assert render_charts([]) == []
    with pytest.raises(ValueError, match="workers must be >= 1"):
        render_charts(jobs, workers=0)


def test_chart_job_keeps_only_the_drawn_rows_and_validates(frame):
    job = ChartJob.from_frame(frame, "BTC/USDT 4h", bars=90)
    assert job.ohlcv.shape == (90, 5) and len(job.times) == 90
    assert job.overlays == tuple(default_overlays(frame)) and job.overlay_values.shape == (6, 90)
    assert len(pickle.dumps(job)) < 12_000  # a small payload for a worker process
    assert ChartJob.from_frame(frame, "x", overlays=[]).overlay_values is None
    with pytest.raises(ValueError, match=r"overlay columns \['ema_200'\] not in frame"):
        ChartJob.from_frame(frame, "BTC", overlays=["ema_200"])
    with pytest.raises(ValueError, match="need at least 2 bars"):
        ChartJob.from_frame(frame, "BTC", bars=1)
    with pytest.raises(ValueError, match="DatetimeIndex"):
        ChartJob.from_frame(frame.reset_index(drop=True), "BTC")
    with pytest.raises(ValueError, match="shape"):
        ChartJob("bad", job.times, job.ohlcv[:, :4])


def test_default_overlays_are_the_moving_averages_and_bands(frame):
    assert default_overlays(frame) == ["bb_upper", "bb_middle", "bb_lower", "ema_20", "ema_50", "sma_100"]


def test_render_rejects_unknown_overlays_and_missing_columns(frame):
    with pytest.raises(ValueError, match=r"overlay columns \['ema_200'\] not in frame"):
        render_chart(frame, "BTC", overlays=["ema_200"])
    with pytest.raises(ValueError, match=r"lacks columns \['volume'\]"):
        render_chart(frame.drop(columns="volume"), "BTC")


def test_thumbnail_is_a_small_data_uri(png):
    md = thumbnail_markdown(png, max_width=320)
    prefix = "![chart](data:image/png;base64,"
    assert md.startswith(prefix) and md.endswith(")")
    thumb = base64.b64decode(md[len(prefix) : -1])
    assert thumb[:8] == PNG_SIGNATURE
    width, height = png_size(thumb)
    full_w, full_h = png_size(png)
    assert width == 320 and height == round(full_h * 320 / full_w)
    assert len(md) < 25_000
    with pytest.raises(ValueError, match="not a PNG"):
        thumbnail_markdown(b"GIF89a....")


def test_chart_key_sanitizes_instrument_and_formats_utc():
    assert chart_key("btc_swing", "BTC/USDT", WINDOW_END) == "btc_swing/BTC-USDT/20251011T0000Z.png"
    cest = timezone(timedelta(hours=2))
    assert chart_key("perp", "BTC/USDT:USDT", datetime(2025, 10, 11, 6, 30, tzinfo=cest)) == "perp/BTC-USDT_USDT/20251011T0430Z.png"
    with pytest.raises(ValueError, match="timezone-aware"):
        chart_key("btc_swing", "BTC/USDT", datetime(2025, 10, 11))
    with pytest.raises(ValueError, match="instrument"):
        chart_key("btc_swing", "BTC USDT", WINDOW_END)


def test_local_store_round_trip_is_byte_identical(tmp_path, png):
    store = LocalChartStore(tmp_path)
    key = chart_key("btc_swing", "BTC/USDT", WINDOW_END)
    assert not store.exists(key) and store.url(key) is None

    ref = store.put(key, png)
    path = tmp_path / "btc_swing" / "BTC-USDT" / "20251011T0000Z.png"
    assert ref == ChartRef(key=key, sha256=hashlib.sha256(png).hexdigest(), size=len(png), uri=path.resolve().as_uri())
    assert store.get(key) == png and path.read_bytes() == png
    assert store.exists(key) and store.url(key) == ref.uri
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_local_store_put_is_idempotent(tmp_path, png):
    store = LocalChartStore(tmp_path)
    key = "s/BTC-USDT/20251011T0000Z.png"
    first = store.put(key, png)
    mtime = store.path(key).stat().st_mtime_ns
    assert store.put(key, png) == first
    assert store.path(key).stat().st_mtime_ns == mtime  # not rewritten
    other = store.put(key, png + b"\x00")  # different bytes replace the old ones
    assert other.sha256 != first.sha256 and other.size == first.size + 1 and store.get(key) == png + b"\x00"


def test_local_store_missing_and_unsafe_keys(tmp_path):
    store = LocalChartStore(tmp_path)
    with pytest.raises(KeyError, match="nope.png"):
        store.get("s/nope.png")
    for bad in ("../escape.png", "/abs.png", "a//b.png", "a/b c.png"):
        with pytest.raises(ValueError, match="invalid chart key"):
            store.put(bad, b"x")
