"""Point in time: the signal for window T is the same whether the data source holds bars up to T
or far beyond. Real candles, real indicators, real chart rendering, the rules provider."""

from __future__ import annotations


import pytest

from trading_pipelines.assets.partitions import window_end
from trading_pipelines.config import DEFAULT_DATA_DIR, instrument_data_file, load_strategies
from trading_pipelines.resources.charts import LocalChartStore
from trading_pipelines.resources.market_data import CsvReplaySource
from trading_pipelines.resources.signals import build_provider
from trading_pipelines.services import Runtime, indicator_frame, load_bars, make_chart, make_paper_venue


def _signal(spec, source, tmp_path, instrument, wkey):
    rt = Runtime(spec=spec, engine=None, market=source, charts=LocalChartStore(tmp_path / "charts"),
                 provider=build_provider(spec.template.signal_provider, spec.prompt_template), venue=make_paper_venue(spec, source))
    end = window_end(spec, wkey)
    bars = load_bars(rt, instrument, end)
    frame = indicator_frame(rt, bars)
    ref, png = make_chart(rt, instrument, end, frame)
    from trading_pipelines.domain.indicators import indicator_summary
    from trading_pipelines.resources.signals import SignalRequest

    req = SignalRequest(strategy=spec.name, instrument=instrument, window_end=end, mode=spec.mode, timeframe=spec.timeframe,
                        summary=indicator_summary(frame), chart_png=png, chart_key=ref.key, recent_bars=[])
    return bars, ref, rt.provider.generate(req)


@pytest.mark.parametrize("strategy,instrument,wkey", [
    ("spot_4h_majors", "BTC/USDT", "2025-10-10-20:00"),   # the flash-crash bar closes at the window end
    ("spot_4h_majors", "SOL/USDT", "2026-02-27-00:00"),
    ("futures_1h_btc_eth", "ETH/USDT:USDT", "2026-03-15-13:00"),
    ("equities_1d_spy_aapl", "SPY", "2017-06-02"),
])
def test_signal_for_window_t_ignores_later_bars(tmp_path, strategy, instrument, wkey):
    spec = load_strategies()[strategy]
    end = window_end(spec, wkey)
    fname = instrument_data_file(instrument, spec.timeframe)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    lines = (DEFAULT_DATA_DIR / fname).read_text().splitlines(keepends=True)
    bar = spec.bar_duration
    from datetime import datetime

    kept = [lines[0]] + [ln for ln in lines[1:] if datetime.fromisoformat(ln.split(",")[0].replace("Z", "+00:00")) + bar <= end]
    assert len(kept) < len(lines) - 10, "the full file must hold bars beyond T for this test to mean anything"
    (truncated / fname).write_text("".join(kept))

    bars_t, ref_t, sig_t = _signal(spec, CsvReplaySource(truncated), tmp_path / "a", instrument, wkey)
    bars_f, ref_f, sig_f = _signal(spec, CsvReplaySource(DEFAULT_DATA_DIR), tmp_path / "b", instrument, wkey)
    assert bars_t.equals(bars_f)
    assert bars_f.index[-1] + bar == end  # the last bar used closes exactly at the window end
    assert ref_t.sha256 == ref_f.sha256   # same chart, byte for byte
    assert sig_t.signal == sig_f.signal   # same action, confidence, thesis, prompt hash
    assert sig_t.prompt == sig_f.prompt
