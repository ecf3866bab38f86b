"""Issue 13, "The report after a UI backfill" said "elapsed 0.00 s, windows/s n/a": the
``replay_report`` asset called ``book_report`` without a duration. It now takes the run's own
timing (the Dagster run's start, ``instance.get_run_stats``).

A UI backfill of the group is one run of the strategy's asset job over a partition range on a
replay book (``dagster/backfill`` tag; here ``trading/book=replay`` with the range tags, what the
UI's single-run backfill policy gives); the run here is in-process on a temporary instance,
nothing mocked.
"""

from __future__ import annotations

import re

import dagster as dg
import pytest

from trading_pipelines.assets.partitions import range_tags
from trading_pipelines.assets.review import BOOK_TAG
from trading_pipelines.config import load_strategies

SPOT = "spot_4h_majors"
WINDOWS = ["2026-02-27-00:00", "2026-02-27-04:00", "2026-02-27-08:00"]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(tmp_path / "charts"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_the_report_of_a_range_run_has_the_runs_elapsed_time(home):
    """Three windows on a replay book in one run: the report's elapsed time is positive, at most the
    run's duration (RUN_START → RUN_SUCCESS), and windows/s is 3 / elapsed (the old code: 0.00 s, n/a)."""
    from trading_pipelines.cli.runs import _strategy_defs

    spec = load_strategies()[SPOT]
    instance = dg.DagsterInstance.local_temp(str(home))
    # the group's partitioned assets, replay_report included (what "Materialize all…" backfills)
    group = dg.AssetSelection.groups(SPOT) - dg.AssetSelection.assets(dg.AssetKey([SPOT, "symbol_universe"]))
    defs = dg.Definitions.merge(_strategy_defs(spec), dg.Definitions(jobs=[dg.define_asset_job("backfill_like", selection=group)]))
    job = defs.resolve_job_def("backfill_like")
    res = job.execute_in_process(instance=instance, run_config=QUIET,
                                 tags={**range_tags(WINDOWS[0], WINDOWS[-1]), BOOK_TAG: "replay", "trading/charts": "off"})
    assert res.success
    stats = instance.get_run_stats(res.run_id)
    run_s = stats.end_time - stats.start_time
    [mat] = [e.event_specific_data.materialization for e in res.get_asset_materialization_events()
             if e.event_specific_data.materialization.asset_key == dg.AssetKey([SPOT, "replay_report"])][-1:]
    md = mat.metadata["report"].value
    m = re.search(r"\| elapsed \| ([0-9.]+) s \|", md)
    assert m, md
    elapsed = float(m[1])
    assert 0 < elapsed <= run_s + 0.01
    per_s = re.search(r"\| windows/s \| ([0-9.]+) \|", md)
    assert per_s and abs(float(per_s[1]) - 3 / elapsed) <= 0.01 * max(1.0, 3 / elapsed), md
