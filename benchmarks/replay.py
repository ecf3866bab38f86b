"""Replay throughput: one instrument (BTC/USDT, 4h), every window the shipped data allows, rules
signals, through the real path (`trading-pipelines replay`'s in-process Dagster run: analysis and
account steps, ledger, paper exchange, chart store), once with a chart rendered and stored for
every window and once with charts off.

    .venv/bin/python benchmarks/replay.py [--windows N]

Prints windows/s for both, and for the charted run the chart-rendering floor (charts ÷ cores ×
median render time, measured in this process on the same frames) and wall ÷ floor.
Targets on the 2-core machines (issue "Replay and live in one graph"): ≥ 20 windows/s with
charts, ≥ 100 windows/s without, wall ÷ floor ≤ 1.5.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from user_data import user_strategy

REPO = Path(__file__).resolve().parents[1]
NAME = "bench_replay_btc_4h"


def _strategy_folder(root: Path) -> Path:
    return user_strategy(root, NAME, ["BTC/USDT"], "benchmark: BTC/USDT 4h, every window of the sample",
                         data={"windows_start": "2025-03-26T00:00:00Z"})  # 150 bars after the sample's first bar


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--windows", type=int, default=0, help="latest N windows (default: all)")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_replay_"))
    os.environ["TRADING_STRATEGIES_PATH"] = str(_strategy_folder(root))
    print(f"loadavg before: {Path('/proc/loadavg').read_text().strip()}  cores: {os.cpu_count()}")
    results = {}
    for charts in (False, True):
        home = root / ("charts" if charts else "nocharts")
        home.mkdir()
        os.environ["DAGSTER_HOME"] = str(home)
        os.environ.pop("TRADING_LEDGER_URL", None)
        os.environ["TRADING_CHART_DIR"] = str(home / "charts")
        from trading_pipelines import cli
        from trading_pipelines.assets.partitions import window_partitions
        from trading_pipelines.config import load_strategies

        cli.ensure_dagster_home()
        spec = load_strategies()[NAME]
        keys = window_partitions(spec).get_partition_keys()
        keys = keys[-args.windows:] if args.windows else keys
        t0 = time.perf_counter()
        result = cli._replay(spec, keys, ["BTC/USDT"], charts=charts)
        wall = time.perf_counter() - t0
        assert result.success, "the replay run failed"
        results[charts] = (len(keys), wall)
        print(f"charts {'on ' if charts else 'off'}: {len(keys)} windows in {wall:.1f} s = {len(keys) / wall:.1f} windows/s")
    # the floor, measured here on the same frames
    from trading_pipelines.analysis import charting
    from trading_pipelines.analysis import frames
    from trading_pipelines.stores.chart_render import render_chart
    from trading_pipelines.resources.dagster_resources import default_resources

    rt = default_resources()["trading"].runtime(spec)
    from trading_pipelines.assets.partitions import window_end

    sample = [window_end(spec, k) for k in keys[:: max(1, len(keys) // 40)]][:40]
    frames = [frames.indicator_frame(rt, "BTC/USDT", e) for e in sample]
    times = []
    for e, f in zip(sample, frames):
        t = time.perf_counter()
        render_chart(f, charting.chart_title(rt, "BTC/USDT", e), charting.chart_overlays(rt), spec.template.chart_bars)
        times.append(time.perf_counter() - t)
    median = statistics.median(times[3:])
    n, wall = results[True]
    floor = n / (os.cpu_count() or 1) * median
    print(f"chart median render {median * 1000:.1f} ms; floor {n} charts / {os.cpu_count()} cores × median = {floor:.1f} s; "
          f"wall / floor = {wall / floor:.2f}")
    print(f"loadavg after: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    sys.exit(main())
