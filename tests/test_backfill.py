"""A UI backfill trades: the Dagster UI's own GraphQL mutation (``launchPartitionBackfill``, with
``assetSelection`` + ``partitionNames`` as the browser sends it) launches a backfill of 40 windows
× 3 instruments of ``spot_4h_majors``, and the backfill daemon's own iteration
(``execute_backfill_iteration``) runs it, exactly as ``dagster dev`` would; only the run launcher
is Dagster's synchronous in-memory one, so the test needs no daemon process.

Real components: the CSV candles, ``ta`` indicators, charts in a local folder, the rules provider,
the paper exchange and the SQLite ledger. Asserted: one run, windows planned in time order on a
replay book (no "late review"), trades with fills, a replay report with equity, drawdown and hit
rate; the same backfill again gives the same trades and equity with no new rows; and the CLI's
``replay`` of the same range on a fresh deployment gives the same trades and equity.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.dagster_run import RunsFilter
from dagster._core.storage.tags import BACKFILL_ID_TAG
from dagster._core.test_utils import create_test_daemon_workspace_context, instance_for_test
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION
from dagster_graphql.test.utils import execute_dagster_graphql
from sqlalchemy import func, select

from trading_pipelines.assets.partitions import window_end, window_partitions
from trading_pipelines.config import load_strategies
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.runtime import replay_book_id
from ui_backfill_driver import ui_backfill_params  # the UI's request, defined once

REPO = Path(__file__).resolve().parents[1]
SPOT = "spot_4h_majors"
STEPS = ("ohlcv_bars", "indicator_frames", "chart_images", "signals", "trade_intents", "validated_intents", "orders",
         "portfolio_snapshots", "replay_report")


def _env(monkeypatch, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("DAGSTER_HOME", str(root))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{root / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(root / "charts"))
    monkeypatch.delenv("TRADING_VENUE_URL", raising=False)
    return root


def _launch_and_run(wpc, instance, keys: list[str]) -> str:
    # the request the UI sends for the group and a custom range (assetSelection + partitionNames;
    # see tests/ui_backfill_driver.py; both hash orders of that request: tests/test_ui_backfill.py)
    result = execute_dagster_graphql(wpc.create_request_context(), LAUNCH_PARTITION_BACKFILL_MUTATION,
                                     variables={"backfillParams": ui_backfill_params(keys)})
    launched = result.data["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    log = logging.getLogger("test_backfill")
    deadline = time.monotonic() + 600
    while instance.get_backfill(backfill_id).status is BulkActionStatus.REQUESTED:
        assert time.monotonic() < deadline, "backfill did not finish in 10 minutes"
        list(execute_backfill_iteration(wpc, log))
    assert instance.get_backfill(backfill_id).status is BulkActionStatus.COMPLETED_SUCCESS
    return backfill_id


def _book_state(engine, book: str) -> dict:
    with session_scope(engine) as s:
        def count(model):
            return s.execute(select(func.count()).select_from(model).where(model.strategy == SPOT)).scalar_one()
        fills = sorted((f.client_order_id, f.price, f.quantity, f.time.isoformat())
                       for f in s.execute(select(m.FillRow).where(m.FillRow.book == book)).scalars())
        intents = s.execute(select(m.IntentRow).where(m.IntentRow.book == book).order_by(m.IntentRow.window_end)).scalars().all()
        snaps = s.execute(select(m.SnapshotRow).where(m.SnapshotRow.book == book).order_by(m.SnapshotRow.as_of)).scalars().all()
        return {"fills": fills, "statuses": [(i.instrument, i.window_end.isoformat(), i.status, i.reason) for i in intents],
                "equity": [round(x.equity, 6) for x in snaps],
                "rows": {t.__tablename__: count(t) for t in (m.SignalRow, m.IntentRow, m.OrderRow, m.FillRow,
                                                              m.PositionRow, m.SnapshotRow)}}


@pytest.fixture(scope="module")
def spec():
    return load_strategies()[SPOT]


@pytest.fixture(scope="module")
def window_keys(spec):
    return window_partitions(spec).get_partition_keys()[-40:]


def test_a_ui_backfill_trades_in_time_order_on_a_replay_book_and_rerunning_it_changes_nothing(
        tmp_path, monkeypatch, spec, window_keys):
    root = _env(monkeypatch, tmp_path / "ui")
    book = replay_book_id(spec, list(spec.instruments), window_end(spec, window_keys[0]), window_end(spec, window_keys[-1]))
    overrides = {"run_launcher": {"module": "dagster._core.launcher.sync_in_memory_run_launcher", "class": "SyncInMemoryRunLauncher"},
                 "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}}
    with instance_for_test(overrides=overrides, temp_dir=str(root)) as instance:
        target = ModuleTarget(module_name="trading_pipelines.definitions", attribute="defs", working_directory=str(REPO),
                              location_name="trading_pipelines")
        with create_test_daemon_workspace_context(target, instance) as wpc:
            first = _launch_and_run(wpc, instance, window_keys)
            runs = instance.get_runs(RunsFilter(tags={BACKFILL_ID_TAG: first}))
            # one run for all 10 assets × 40 windows: BackfillPolicy.single_run on one partitions definition
            assert len(runs) == 1 and runs[0].status is dg.DagsterRunStatus.SUCCESS
            assert {k.path[1] for k in runs[0].asset_selection} == {"symbol_universe", *STEPS}
            engine = get_engine(f"sqlite:///{root / 'ledger.sqlite'}")
            state = _book_state(engine, book)
            assert len(state["statuses"]) == 40 * 3
            assert not [x for x in state["statuses"] if "late review" in x[3]]
            assert len(state["equity"]) == 40
            assert state["fills"], "the backfill traded nothing"
            assert {x[2] for x in state["statuses"]} >= {"NO_TRADE", "MONITORING"} or \
                {x[2] for x in state["statuses"]} >= {"NO_TRADE", "CLOSED"}
            with session_scope(engine) as s:
                live = s.execute(select(func.count()).select_from(m.IntentRow).where(m.IntentRow.book == "live")).scalar_one()
            assert live == 0  # the live book is never touched by a backfill
            report = instance.get_latest_materialization_event(dg.AssetKey([SPOT, "replay_report"]))
            meta = report.asset_materialization.metadata
            assert meta["book"].value == book
            assert {"return_pct", "max_drawdown_pct", "hit_rate", "hit_rate_ci95"} <= set(meta)
            assert "data:image/png;base64," in meta["report"].value  # the equity and drawdown chart, inline

            second = _launch_and_run(wpc, instance, window_keys)
            assert second != first
            assert _book_state(engine, book) == state  # same trades and equity, no duplicate rows
    pytest.ui_state = state  # handed to the CLI comparison below


def test_the_cli_replay_of_the_same_range_gives_the_same_trades_and_equity(tmp_path, monkeypatch, spec, window_keys):
    state = getattr(pytest, "ui_state", None)
    if state is None:
        pytest.skip("needs the UI backfill test's result")
    root = _env(monkeypatch, tmp_path / "cli")
    out = subprocess.run([sys.executable, "-m", "trading_pipelines.cli", "replay", SPOT, "--start", _iso(window_keys[0]),
                          "--end", _iso(window_keys[-1]), "--json"], capture_output=True, text=True, cwd=str(REPO), timeout=600,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    book = replay_book_id(spec, list(spec.instruments), window_end(spec, window_keys[0]), window_end(spec, window_keys[-1]))
    assert report["book"] == book and report["windows"] == 40
    cli_state = _book_state(get_engine(f"sqlite:///{root / 'ledger.sqlite'}"), book)
    assert cli_state["fills"] == state["fills"]
    assert cli_state["equity"] == state["equity"]
    assert report["trades"] == len({f[0][:-3] for f in state["fills"] if f[0].endswith("-en")})
    assert report["equity_curve"][-1][1] == pytest.approx(state["equity"][-1])


def _iso(window_key: str) -> str:
    """``2026-02-25-08:00`` → ``2026-02-25T08:00Z``."""
    return window_key[:10] + "T" + window_key[11:] + "Z"
