"""Throughput of one review, step by step, on the embedded defaults (real candles, SQLite).

    .venv/bin/python benchmarks/review_throughput.py [--windows 10]

Prints the median wall time of each step (bars, indicators, chart render + store, rules signal,
plan, validate, execute, snapshot) over the last N windows of spot_4h_majors × its instruments,
and of a whole in-process Dagster run of one partition. Targets (2-core machine): a full
partition run under 2 s, chart rendering under 250 ms. Nothing here is asserted in the test
suite: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=10)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tp-bench-"))
    os.environ.update(DAGSTER_HOME=str(tmp), TRADING_LEDGER_URL=f"sqlite:///{tmp / 'ledger.sqlite'}",
                      TRADING_CHART_DIR=str(tmp / "charts"))
    import dagster as dg

    from trading_pipelines import services
    from trading_pipelines.assets.partitions import INSTRUMENT_DIM, WINDOW_DIM, window_end, window_partitions
    from trading_pipelines.config import load_strategies
    from trading_pipelines.definitions import defs as build
    from trading_pipelines.ledger.repo import Lineage
    from trading_pipelines.resources.dagster_resources import default_resources

    spec = load_strategies()["spot_4h_majors"]
    rt = default_resources()["trading"].runtime(spec)
    keys = window_partitions(spec).get_partition_keys()[-args.windows:]
    t: dict[str, list[float]] = {}

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        out = fn(*a)
        t.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
        return out

    for w in keys:
        end = window_end(spec, w)
        for inst in spec.instruments:
            lin = Lineage(spec.name, inst, f"{inst}|{w}", "bench")
            bars = timed("bars", services.load_bars, rt, inst, end)
            frame = timed("indicators", services.indicator_frame, rt, bars)
            ref, png = timed("chart", services.make_chart, rt, inst, end, frame)
            res = timed("signal", services.generate_signal, rt, lin, end, frame, ref, png)
            intent = timed("plan", services.plan, rt, lin, res.signal, frame)
            checked, _ = timed("validate", services.validate, rt, lin, intent)
            timed("execute", services.execute, rt, lin, checked)
            timed("snapshot", services.snapshot, rt, lin, end)
    print(f"steps over {len(keys)} windows × {len(spec.instruments)} instruments (median ms):")
    for name, v in t.items():
        print(f"  {name:<11}{statistics.median(v):8.1f}")

    home2 = tmp / "home2"
    home2.mkdir()
    (home2 / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ.update(DAGSTER_HOME=str(home2), TRADING_LEDGER_URL=f"sqlite:///{home2 / 'ledger.sqlite'}")
    defs = build()
    instance = dg.DagsterInstance.local_temp(str(home2))
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    defs.resolve_job_def(f"universe_{spec.name}").execute_in_process(instance=instance, run_config=quiet)
    job = defs.resolve_job_def(f"review_{spec.name}")
    runs = []
    for w in keys[:5]:
        t0 = time.perf_counter()
        job.execute_in_process(instance=instance, run_config=quiet,
                               partition_key=dg.MultiPartitionKey({INSTRUMENT_DIM: spec.instruments[0], WINDOW_DIM: w}))
        runs.append(time.perf_counter() - t0)
    print(f"in-process Dagster run of one partition (8 assets): median {statistics.median(runs):.2f} s over {len(runs)} runs")


if __name__ == "__main__":
    main()
