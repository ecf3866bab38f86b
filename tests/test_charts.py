"""Chart rendering on the real BTC/USDT 4h sample data, thumbnails, and the local chart store."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone

import matplotlib.pyplot as plt
import pytest

from trading_pipelines.config import IndicatorConfig
from trading_pipelines.domain.indicators import compute_indicators
from trading_pipelines.resources.charts import (
    PNG_SIGNATURE,
    ChartRef,
    LocalChartStore,
    chart_key,
    default_overlays,
    render_chart,
    thumbnail_markdown,
)
from trading_pipelines.resources.market_data import CsvReplaySource

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
    assert 300 < width <= 640 and 200 < height <= 400  # 8x5 in at 80 dpi, trimmed to the content
    assert b"Software" not in png and b"matplotlib" not in png.lower()
    assert plt.get_fignums() == []  # the figure was closed


def test_render_is_deterministic(frame, png):
    again = render_chart(frame.copy(), "BTC/USDT 4h")
    assert hashlib.sha256(again).hexdigest() == hashlib.sha256(png).hexdigest()
    assert render_chart(frame, "BTC/USDT 4h", overlays=[]) != png  # overlays do change the picture


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
