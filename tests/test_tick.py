"""The run tags a tick or a backfill carries, through Dagster's own execution on real data: which
book a run trades, which instruments it covers, charts on/off, and the live book refusing a window
it has moved past."""

from __future__ import annotations

import dagster as dg
import pytest
from sqlalchemy import select

from trading_pipelines import runtime
from trading_pipelines.assets.partitions import range_tags, window_end
from trading_pipelines.assets.review import BOOK_TAG, CHARTS_TAG, INSTRUMENTS_TAG
from trading_pipelines.config import load_strategies
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope

SPOT = "spot_4h_majors"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture()
def env(embedded_home):
    tmp_path = embedded_home
    from trading_pipelines.definitions import defs

    d = defs()
    return (d.resolve_job_def(f"review_{SPOT}"), dg.DagsterInstance.local_temp(str(tmp_path)),
            get_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}"), load_strategies()[SPOT])


def _checks(res) -> dict[str, bool]:
    return {e.event_specific_data.asset_check_key.name: e.event_specific_data.passed
            for e in res.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def _meta(instance, run_id, step, partition):
    recs = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey([SPOT, step]), asset_partitions=[partition]), limit=20).records
    [rec] = [r for r in recs if r.run_id == run_id]
    return rec.asset_materialization.metadata


def test_live_book_refuses_a_window_it_has_moved_past(env):
    job, instance, engine, spec = env
    later = job.execute_in_process(instance=instance, partition_key="2026-02-27-04:00", run_config=QUIET,
                                   tags={BOOK_TAG: "live"})
    assert later.success and _checks(later)["reviewed_in_time"] is True
    late = job.execute_in_process(instance=instance, partition_key="2026-02-27-00:00", run_config=QUIET,
                                  tags={BOOK_TAG: "live"})
    assert late.success  # a late window is a recorded no-trade, not a failed run
    assert _checks(late)["reviewed_in_time"] is False
    end = window_end(spec, "2026-02-27-00:00")
    with session_scope(engine) as s:
        intents = s.execute(select(m.IntentRow).where(m.IntentRow.window_end == end)).scalars().all()
        snaps = s.execute(select(m.SnapshotRow)).scalars().all()
    assert len(intents) == 3
    # ETH and SOL had buy signals in that window (see test_end_to_end): the late review plans nothing
    assert all(i.status == "NO_TRADE" and "late review" in i.reason for i in intents)
    assert [x.partition_key for x in snaps] == ["2026-02-27-04:00"]  # no snapshot pretends to be of the past window
    assert _meta(instance, late.run_id, "portfolio_snapshots", "2026-02-27-00:00")["point_in_time"].value is False


def test_a_ui_backfill_trades_a_replay_book(env):
    """A run tagged dagster/backfill (what a UI backfill carries) and no trading/book: a replay book."""
    job, instance, engine, spec = env
    windows = ["2026-02-27-00:00", "2026-02-27-04:00"]
    res = job.execute_in_process(instance=instance, run_config=QUIET,
                                 tags={**range_tags(*windows), "dagster/backfill": "abcdefgh"})
    assert res.success
    book = runtime.replay_book_id(spec, list(spec.instruments), window_end(spec, windows[0]), window_end(spec, windows[1]))
    with session_scope(engine) as s:
        assert {i.book for i in s.execute(select(m.IntentRow)).scalars()} == {book}
        assert [x.book for x in s.execute(select(m.SnapshotRow)).scalars()] == [book, book]
        assert s.get(m.BookRow, ("live", SPOT)) is None  # the live book was never touched
        assert s.get(m.BookRow, (book, SPOT)).kind == "replay"
    assert _meta(instance, res.run_id, "portfolio_snapshots", windows[0])["book"].value == book


def test_instruments_tag_picks_a_subset_and_refuses_unknown_ones(env):
    job, instance, engine, spec = env
    res = job.execute_in_process(instance=instance, partition_key="2026-02-27-00:00", run_config=QUIET,
                                 tags={INSTRUMENTS_TAG: "SOL/USDT", BOOK_TAG: "live", CHARTS_TAG: "off"})
    assert res.success
    with session_scope(engine) as s:
        assert [x.instrument for x in s.execute(select(m.SignalRow)).scalars()] == ["SOL/USDT"]
        [intent] = s.execute(select(m.IntentRow)).scalars().all()
        assert s.execute(select(m.SignalRow)).scalar_one().chart_key is None  # charts off
    assert intent.instrument == "SOL/USDT" and intent.status == "SUBMITTED"  # the rules still trade without a chart
    assert _meta(instance, res.run_id, "chart_images", "2026-02-27-00:00")["charts"].value == 0
    assert _checks(res)["signal_usable"] is True
    bad = job.execute_in_process(instance=instance, partition_key="2026-02-27-04:00", run_config=QUIET,
                                 tags={INSTRUMENTS_TAG: "SOL/USDT,DOGE/USDT"}, raise_on_error=False)
    assert not bad.success
    failure = next(e for e in bad.all_events if e.event_type_value == "STEP_FAILURE")
    assert "DOGE/USDT" in str(failure.event_specific_data.error)


def test_unknown_book_kind_fails_the_run(env):
    job, instance, _, _ = env
    res = job.execute_in_process(instance=instance, partition_key="2026-02-27-00:00", run_config=QUIET,
                                 tags={BOOK_TAG: "paper"}, raise_on_error=False)
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    assert "expected live or replay" in str(failure.event_specific_data.error)
