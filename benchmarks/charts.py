"""Chart rendering throughput on the real BTC/USDT 4h sample data.

    .venv/bin/python benchmarks/charts.py [--serial 200] [--parallel 400] [--workers 2]

Indicators are computed once over the shipped CSV (data/ohlcv/BINANCE_BTC-USDT_4h.csv) with the
default IndicatorConfig; window k is the frame up to bar 150 + k, drawn with its last 90 bars
and every EMA/SMA/Bollinger overlay (what a replay renders per window). Prints:

* serial: median / p90 ms per chart of ``render_chart`` (after 3 warm-up renders);
* parallel: ``render_charts`` over 2 workers (pool started and warmed by a first small call),
  charts/s, the floor ``charts / cores × median serial ms`` and the wall/floor ratio, and whether
  the parallel bytes equal the serial ones.

Target (2-core machine): >= 20 windows/s, i.e. well under 100 ms a chart. Timings depend on the
machine and its load (``/proc/loadavg`` is printed first); nothing here is asserted in the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trading_pipelines.config import IndicatorConfig  # noqa: E402
from trading_pipelines.domain.indicators import compute_indicators  # noqa: E402
from trading_pipelines.stores.chart_render import ChartJob, render_chart, render_charts, shutdown_chart_pool  # noqa: E402
from trading_pipelines.stores.market_data import CsvReplaySource  # noqa: E402

BARS = 90
FIRST = 150  # rows of the first window (enough for every indicator of its 90 drawn bars)


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serial", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(f"loadavg: {loadavg()}   cpus: {os.cpu_count()}")

    bars = CsvReplaySource().bars("BTC/USDT", "4h", end=datetime(2100, 1, 1, tzinfo=timezone.utc), limit=100_000)
    full = compute_indicators(bars, IndicatorConfig())
    count = max(args.serial, args.parallel)
    if len(full) < FIRST + count:
        raise SystemExit(f"need {FIRST + count} bars, the CSV has {len(full)}")
    windows = [full.iloc[: FIRST + k] for k in range(count)]
    titles = [f"BTC/USDT 4h → {w.index[-1]:%Y-%m-%d %H:%M}Z" for w in windows]

    for k in range(3):  # warm-up: figure, fonts, static layer
        render_chart(windows[k], titles[k], bars=BARS)
    times, serial = [], []
    for w, title in zip(windows[: args.serial], titles):
        t0 = time.perf_counter()
        serial.append(render_chart(w, title, bars=BARS))
        times.append(time.perf_counter() - t0)
    med = statistics.median(times) * 1000
    p90 = statistics.quantiles(times, n=10)[-1] * 1000
    sizes = sorted(len(p) for p in serial)
    print(f"serial   {args.serial} charts: median {med:.1f} ms, p90 {p90:.1f} ms, "
          f"{1000 / med:.1f} charts/s on one core; PNG {sizes[0] // 1000}-{sizes[-1] // 1000} KB")

    t0 = time.perf_counter()
    jobs = [ChartJob.from_frame(w, title, bars=BARS) for w, title in zip(windows[: args.parallel], titles)]
    build_ms = (time.perf_counter() - t0) * 1000 / len(jobs)
    t0 = time.perf_counter()
    render_charts(jobs[: 4 * args.workers], workers=args.workers)  # start and warm the pool
    start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    parallel = render_charts(jobs, workers=args.workers)
    wall = time.perf_counter() - t0
    floor = len(jobs) / args.workers * med / 1000
    same = parallel[: len(serial)] == serial[: len(parallel)]
    print(f"parallel {len(jobs)} charts, {args.workers} workers: {wall:.2f} s wall, {len(jobs) / wall:.1f} charts/s "
          f"(ChartJob.from_frame {build_ms:.2f} ms each, pool start {start_s:.2f} s)")
    print(f"floor {floor:.2f} s = {len(jobs)} charts / {args.workers} cores x {med:.1f} ms; wall/floor {wall / floor:.2f}")
    print(f"parallel bytes == serial bytes: {same}")
    print(f"loadavg: {loadavg()}")
    shutdown_chart_pool()
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
