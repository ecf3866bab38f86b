"""Point in time: the signal for window T is the same whether the data source holds bars up to T
or far beyond, and whether T is analysed alone (a tick) or inside a range (a backfill: indicators
computed once per 512-bar chunk, then sliced). Real candles, real indicators, real chart
rendering, the rules provider, a SQLite ledger (analysis records its signals)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from trading_pipelines.analysis import analyze as analysis
from trading_pipelines.analysis import frames
from trading_pipelines.assets.partitions import window_end, window_partitions
from trading_pipelines.config import DEFAULT_DATA_DIR, instrument_data_file, load_strategies
from trading_pipelines.ledger.db import get_engine
from trading_pipelines.llm.providers import build_provider
from trading_pipelines.runtime import Runtime
from trading_pipelines.analysis.frames import indicator_frame
from trading_pipelines.analysis.charting import make_chart
from trading_pipelines.venues.factory import make_paper_venue
from trading_pipelines.stores.charts import LocalChartStore
from trading_pipelines.stores.market_data import CsvReplaySource, MarketDataSource

CASES = [
    ("spot_4h_majors", "BTC/USDT", "2025-10-10-20:00"),   # the flash-crash bar closes at the window end
    ("spot_4h_majors", "SOL/USDT", "2026-02-27-00:00"),
    ("futures_1h_btc_eth", "ETH/USDT:USDT", "2026-03-15-13:00"),
    ("equities_1d_spy_aapl", "SPY", "2017-06-02"),
]


class _Watched(MarketDataSource):
    """A source that remembers the newest bar close it ever handed out."""

    def __init__(self, inner: MarketDataSource, bar: timedelta):
        self.inner, self.bar, self.newest = inner, bar, None

    def _seen(self, df: pd.DataFrame) -> pd.DataFrame:
        if len(df):
            close = df.index[-1].to_pydatetime() + self.bar
            self.newest = close if self.newest is None else max(self.newest, close)
        return df

    def bars(self, symbol, timeframe, end, limit):
        return self._seen(self.inner.bars(symbol, timeframe, end, limit))

    def bars_between(self, symbol, timeframe, start, end):
        return self._seen(self.inner.bars_between(symbol, timeframe, start, end))

    def last_closed_bar_end(self, symbol, timeframe):
        return self.inner.last_closed_bar_end(symbol, timeframe)


def _runtime(spec, source, tmp_path) -> Runtime:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return Runtime(spec=spec, engine=get_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}"), market=source,
                   charts=LocalChartStore(tmp_path / "charts"),
                   provider=build_provider(spec.template.signal_provider, spec.prompt_template),
                   venue=make_paper_venue(spec, source, get_engine(f"sqlite:///{tmp_path / 'venue.sqlite'}")))


def _signal(rt, instrument, end):
    """The per-step path: frame, chart, provider (no ledger)."""
    from trading_pipelines.domain.indicators import indicator_summary
    from trading_pipelines.llm.requests import SignalRequest

    frame = indicator_frame(rt, instrument, end)
    ref, png = make_chart(rt, instrument, end, frame)
    req = SignalRequest(strategy=rt.spec.name, instrument=instrument, window_end=end, mode=rt.spec.mode,
                        timeframe=rt.spec.timeframe, summary=indicator_summary(frame), chart_png=png, chart_key=ref.key,
                        recent_bars=[])
    return frame, ref, rt.provider.generate(req)


def _truncated(spec, instrument, end, tmp_path):
    fname = instrument_data_file(instrument, spec.timeframe)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    lines = (DEFAULT_DATA_DIR / fname).read_text().splitlines(keepends=True)
    bar = spec.bar_duration
    kept = [lines[0]] + [ln for ln in lines[1:] if datetime.fromisoformat(ln.split(",")[0].replace("Z", "+00:00")) + bar <= end]
    assert len(kept) < len(lines) - 10, "the full file must hold bars beyond T for this test to mean anything"
    (truncated / fname).write_text("".join(kept))
    return CsvReplaySource(truncated)


def _around(spec, wkey, before, after):
    keys = window_partitions(spec).get_partition_keys()
    i = keys.index(wkey)
    return [window_end(spec, k) for k in keys[max(0, i - before):i + after + 1]]


@pytest.mark.parametrize("strategy,instrument,wkey", CASES)
def test_signal_for_window_t_ignores_later_bars(tmp_path, strategy, instrument, wkey):
    spec = load_strategies()[strategy]
    end = window_end(spec, wkey)
    bar = spec.bar_duration
    truncated = _truncated(spec, instrument, end, tmp_path)
    full = CsvReplaySource(DEFAULT_DATA_DIR)
    assert full.last_closed_bar_end(instrument, spec.timeframe) > end + 10 * bar

    # the per-step path
    frame_t, ref_t, sig_t = _signal(_runtime(spec, truncated, tmp_path / "a"), instrument, end)
    frame_f, ref_f, sig_f = _signal(_runtime(spec, full, tmp_path / "b"), instrument, end)
    assert len(frame_f) == spec.template.lookback_bars
    assert frame_t.equals(frame_f)          # bars and every indicator, bit for bit
    assert frame_f.index[-1] + bar == end   # the last bar used closes exactly at the window end
    assert ref_t.sha256 == ref_f.sha256     # same chart, byte for byte
    assert sig_t.signal == sig_f.signal     # same action, confidence, thesis, prompt hash
    assert sig_t.prompt == sig_f.prompt

    # the pipeline's path: T alone on data that ends at T, vs T inside a range that runs past it on
    # the full data (its chunk's indicators are computed up to the range's newest window)
    [a_t] = analysis.analyze(_runtime(spec, truncated, tmp_path / "c"), instrument, [end], "run-t")
    ends = _around(spec, wkey, before=3, after=6)
    assert max(ends) > end
    out = analysis.analyze(_runtime(spec, full, tmp_path / "d"), instrument, ends, "run-f")
    [a_f] = [a for a in out if a.window_end == end]
    assert a_t.error is None and a_f.error is None
    assert a_t.bars.equals(a_f.bars) and a_t.frame.equals(a_f.frame)
    assert a_f.frame.equals(frame_f)        # the per-step helper is the pipeline's frame
    assert a_f.bars.index[-1] + bar == end
    assert a_t.chart.sha256 == a_f.chart.sha256 == ref_f.sha256
    assert a_t.signal == a_f.signal
    assert a_t.result.prompt == a_f.result.prompt
    # the per-step request carries no recent bars (so another prompt hash): the same decision
    assert (a_f.signal.action, a_f.signal.confidence, a_f.signal.thesis) == (
        sig_f.signal.action, sig_f.signal.confidence, sig_f.signal.thesis)

    # a watched source: analysing T alone never hands out a bar that closes after T
    watched = _Watched(full, bar)
    [a_w] = analysis.analyze(_runtime(spec, watched, tmp_path / "e"), instrument, [end], "run-w")
    assert watched.newest == end
    assert a_w.frame.equals(a_f.frame) and a_w.signal == a_f.signal


def _chunk_boundary_window(spec) -> str:
    """A window key whose newest bar opens exactly at a chunk start (UTC-epoch aligned), inside the
    strategy's windows, with windows on both sides."""
    step = spec.bar_duration * frames.CHUNK_BARS
    keys = window_partitions(spec).get_partition_keys()
    epoch = datetime(1970, 1, 1, tzinfo=window_end(spec, keys[0]).tzinfo)
    for k in keys[200:-20]:
        opened = window_end(spec, k) - spec.bar_duration
        if (opened - epoch) % step == timedelta(0):
            return k
    raise AssertionError("no chunk boundary inside the windows")


@pytest.mark.parametrize("strategy,instrument", [("spot_4h_majors", "ETH/USDT"), ("futures_1h_btc_eth", "BTC/USDT:USDT")])
def test_single_window_and_range_analysis_produce_identical_frames(tmp_path, strategy, instrument):
    """analysis.analyze over [T] and over a range containing T (one that crosses a chunk boundary)
    give T the same frame, bit for bit, and the same signal."""
    spec = load_strategies()[strategy]
    source = CsvReplaySource(DEFAULT_DATA_DIR)
    boundary = _chunk_boundary_window(spec)
    ends = _around(spec, boundary, before=12, after=12)
    rng = analysis.analyze(_runtime(spec, source, tmp_path / "range"), instrument, ends, "run-range", charts=False)
    assert [a.window_end for a in rng] == ends
    # the range spans two chunks: the last window of the first one and the first of the next
    chunks = frames.indicator_chunks(_runtime(spec, source, tmp_path / "chunks"), instrument, ends)
    assert len(chunks) == 2
    b = ends.index(window_end(spec, boundary))
    picks = sorted({0, b - 1, b, b + 1, len(ends) - 1})
    for i in picks:
        a = rng[i]
        [one] = analysis.analyze(_runtime(spec, source, tmp_path / f"one{i}"), instrument, [a.window_end], f"run-{i}",
                                 charts=False)
        assert a.error is None and one.error is None, (a.error, one.error)
        assert len(one.frame) == spec.template.lookback_bars
        assert one.frame.index[-1] + spec.bar_duration == a.window_end
        assert one.frame.equals(a.frame), a.window_end
        assert one.bars.equals(a.bars)
        assert one.signal == a.signal
        # and the per-window helper agrees with both
        assert indicator_frame(_runtime(spec, source, tmp_path / "h"), instrument, a.window_end).equals(a.frame)
    # neighbouring windows really differ (the comparison is not vacuous)
    assert not rng[b - 1].frame.equals(rng[b].frame)
