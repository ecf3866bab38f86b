"""Dagster's own storage on a real PostgreSQL server, configured by deploy/dagster.yaml itself
(only the local log/artifact folders moved to a temp dir; the connection from DAGSTER_POSTGRES_*).
A run materialized in-process writes its events through psycopg2 (no psycopg3 `NOTIFY $1` trap)."""

import os
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from dagster._core.instance.config import dagster_instance_config

pytestmark = pytest.mark.postgres



@dg.asset
def trivial_asset() -> int:
    return 42


@dg.asset(pool="llm")
def pooled_asset(trivial_asset: int) -> int:
    return trivial_asset + 1


@pytest.fixture()
def dagster_home(dagster_home_on_postgres) -> Path:
    return dagster_home_on_postgres


def test_deploy_yaml_passes_instance_schema_validation(dagster_home):
    config, custom_class = dagster_instance_config(str(dagster_home))
    assert custom_class is None
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_instance_settings_from_deploy_yaml(dagster_home):
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert instance.run_storage.postgres_url.startswith("postgresql+psycopg2://")
        assert instance.event_log_storage.postgres_url.startswith("postgresql+psycopg2://")
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert isinstance(instance.run_launcher, dg.DefaultRunLauncher)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 8
        # one run at a time per strategy: a run covers every instrument of a strategy over its
        # windows (no instrument partition dimension any more), so the limit must key on a tag
        # every run of a strategy's jobs carries, one value per strategy
        (limit,) = queue.tag_concurrency_limits
        assert limit["key"] == "strategy", limit
        assert limit["value"] == {"applyLimitPerUniqueValue": True} and limit["limit"] == 1
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 2
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 3600
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure


def test_materialize_in_process_on_postgres(dagster_home, postgres_server):
    with dg.DagsterInstance.get() as instance:  # from DAGSTER_HOME
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = dg.materialize([trivial_asset, pooled_asset], instance=instance)
        assert result.success
        run_id = result.run_id
        run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        mat = instance.get_latest_materialization_event(dg.AssetKey("pooled_asset"))
        assert mat is not None and mat.run_id == run_id
        # the "llm" pool got its default limit (2) from concurrency.pools, stored in Postgres
        assert instance.event_log_storage.get_concurrency_info("llm").slot_count == 2

    conn = psycopg2.connect(postgres_server.dsn(os.environ["DAGSTER_POSTGRES_DB"]))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
            assert cur.fetchone() == ("SUCCESS",)
            cur.execute("SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = %s "
                        "AND dagster_event_type IS NOT NULL GROUP BY 1", (run_id,))
            events = dict(cur.fetchall())
    finally:
        conn.close()
    # run-level events keep their legacy PIPELINE_* names in the table
    assert events.get("RUN_SUCCESS", events.get("PIPELINE_SUCCESS")) == 1, events
    assert events["ASSET_MATERIALIZATION"] == 2 and events["STEP_SUCCESS"] == 2
    assert not {"RUN_FAILURE", "PIPELINE_FAILURE", "STEP_FAILURE"} & set(events)


def test_run_concurrency_limit_binds_every_strategy_run(dagster_home):
    """The per-unique-value limit of deploy/dagster.yaml holds only if each run of a strategy
    (review job, replay job, schedule tick) carries its key with the strategy's name."""
    from trading_pipelines.definitions import defs as build

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        (limit,) = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    defs = build()
    for name in ("spot_4h_majors", "futures_1h_btc_eth"):
        for job_name in (f"review_{name}", f"replay_{name}"):
            assert defs.resolve_job_def(job_name).tags.get(limit["key"]) == name, (job_name, limit)
        schedule = defs.resolve_schedule_def(f"review_{name}_schedule")
        ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 1, 0, 5, tzinfo=timezone.utc),
                                        repository_def=defs.get_repository_def())
        (request,) = schedule.evaluate_tick(ctx).run_requests
        assert {**defs.resolve_job_def(f"review_{name}").tags, **request.tags}.get(limit["key"]) == name
