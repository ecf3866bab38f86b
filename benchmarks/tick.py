"""One schedule tick of a 50-instrument strategy, through `dagster dev` as a user runs it: the
daemon's scheduler evaluates the schedule, the queued run coordinator dequeues the run, the
default run launcher starts it in a subprocess, and the run reviews all 50 instruments (analysis,
then the live book). Measured: from the tick's scheduled time to the last snapshot in the ledger.

    .venv/bin/python benchmarks/tick.py

The 50 instruments are catalogue aliases (TRADING_INSTRUMENTS_PATH) that all replay the shipped
BTC/USDT 4h candles; the strategy is a user strategy (TRADING_STRATEGIES_PATH) whose schedule runs
every minute and starts RUNNING. Target (issue "Replay and live in one graph"): ≤ 30 s wall.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from user_data import alias_catalogue, user_strategy

REPO = Path(__file__).resolve().parents[1]
NAME = "bench_tick_50"
N = 50


def _setup(root: Path) -> dict[str, str]:
    catalogue, symbols = alias_catalogue(root, "T", N)
    strategies = user_strategy(root, NAME, symbols, "benchmark: 50 aliases of BTC/USDT 4h",
                               venue={"starting_cash": 5_000_000}, risk={"max_open_positions": 100},
                               schedule={"cron": "* * * * *", "default_running": True})
    home = root / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"},
        "run_launcher": {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"},
        "telemetry": {"enabled": False}}))
    return {"DAGSTER_HOME": str(home), "TRADING_STRATEGIES_PATH": str(strategies), "TRADING_INSTRUMENTS_PATH": str(catalogue), "TRADING_CHART_DIR": str(home / "charts"),
            "TRADING_LEDGER_URL": f"sqlite:///{home / 'ledger.sqlite'}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _snapshots(ledger: Path) -> list[str]:
    if not ledger.exists():
        return []
    try:
        with sqlite3.connect(ledger, timeout=5) as c:
            return [r[0] for r in c.execute("select created_at from portfolio_snapshots where strategy = ?", (NAME,))]
    except sqlite3.OperationalError:
        return []


def _signals(ledger: Path) -> int:
    try:
        with sqlite3.connect(ledger, timeout=5) as c:
            return c.execute("select count(*) from signals where strategy = ?", (NAME,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="bench_tick_"))
    env = {**os.environ, **_setup(root)}
    print(f"loadavg before: {Path('/proc/loadavg').read_text().strip()}  cores: {os.cpu_count()}")
    port = _free_port()
    dev = subprocess.Popen([str(REPO / ".venv/bin/dagster"), "dev", "-w", str(REPO / "workspace.yaml"), "-p", str(port)],
                           cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ledger = Path(env["DAGSTER_HOME"]) / "ledger.sqlite"
    try:
        deadline = time.monotonic() + 240
        while not _snapshots(ledger):
            if time.monotonic() > deadline:
                print("no snapshot within 4 minutes: the tick did not run")
                return 1
            if dev.poll() is not None:
                print("dagster dev exited")
                return 1
            time.sleep(0.2)
        done = datetime.now(timezone.utc)
        os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs(limit=10)
            ticked = [r for r in runs if r.tags.get("dagster/schedule_name")]
            tick = datetime.fromisoformat(ticked[-1].tags[".dagster/scheduled_execution_time"]).astimezone(timezone.utc)
            stats = instance.get_run_stats(ticked[-1].run_id)
        wall = (done - tick).total_seconds()
        print(f"the run itself: {stats.end_time - stats.start_time:.1f} s (start → end); daemon latency and run start-up are the rest")
        print(f"one tick of {N} instruments: {_signals(ledger)} signals, {len(_snapshots(ledger))} snapshot(s) in "
              f"{len(ticked)} run(s) of the schedule; tick {tick:%H:%M:%S} → last snapshot {done:%H:%M:%S} = {wall:.1f} s wall")
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
    print(f"loadavg after: {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
