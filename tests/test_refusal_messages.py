"""A refused operation reads as its message in the UI: the failure event of the run carries it as
the Failure's description and as the first line of its error, with the facts as metadata (which
the UI prints between that line and the stack), logged first as an ERROR line of its own, and it is
never retried.

Through Dagster's own execution (``execute_in_process`` on a SQLite instance): the launchpad job
``execute_intent`` refused for an unknown intent and for an intent executed twice, and a review run
refused for an instrument its strategy does not trade (the analysis step has a retry policy for
transient errors, which a refusal must not trigger). Real ledger, paper venue and candles; nothing
is mocked.
"""

from __future__ import annotations

import dagster as dg
import pytest

from trading_pipelines.assets.review import INSTRUMENTS_TAG
from trading_pipelines.config import load_strategies
from trading_pipelines.intent_jobs import EXECUTE_JOB, PLAN_JOB, build_intent_jobs, op_name
from trading_pipelines.resources.dagster_resources import default_resources

SPOT = "spot_4h_majors"
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
FAILURE_CLS = "dagster._core.definitions.events.Failure"


@pytest.fixture()
def instance(embedded_home):
    with dg.instance_for_test(temp_dir=str(embedded_home)) as inst:
        yield inst


def _cfg(job: str, config: dict) -> dict:
    return {**QUIET, "ops": {op_name(job): {"config": config}}}


def _events(instance, run_id: str) -> list:
    return [e for e in instance.all_logs(run_id)]


def _types(records) -> list[str]:
    return [r.dagster_event.event_type_value for r in records if r.dagster_event]


def _assert_reads_as(instance, run_id: str, message: str) -> dict:
    """The run's failure carries ``refused: <message>`` first; returns the failure's metadata."""
    records = _events(instance, run_id)
    types = _types(records)
    assert "STEP_UP_FOR_RETRY" not in types and "STEP_RESTARTED" not in types  # a refusal is not retried
    [step] = [r for r in records if r.dagster_event and r.dagster_event.event_type_value == "STEP_FAILURE"]
    data = step.dagster_event.step_failure_data
    assert data.user_failure_data.description == f"refused: {message}"
    assert data.error.message.splitlines()[0] == f"{FAILURE_CLS}: refused: {message}"
    assert data.error.cause is None and data.error.context is None  # raised from None: no chained traceback
    # the run's own failure event (the last red row of the run) starts with the same line
    [run_fail] = [r for r in records if r.dagster_event and r.dagster_event.event_type_value in ("RUN_FAILURE",
                                                                                                "PIPELINE_FAILURE")]
    assert run_fail.dagster_event.event_specific_data.error.message.splitlines()[0] == \
        f"{FAILURE_CLS}: refused: {message}"
    # logged before the failure, as an ERROR line holding only the message
    i = records.index(step)
    logged = [r for r in records[:i] if r.dagster_event is None and r.level >= 40]
    assert [r.user_message for r in logged][-1:] == [f"refused: {message}"]
    return {k: v.value for k, v in data.user_failure_data.metadata.items()}


def test_a_refused_launchpad_operation_fails_with_its_message_first(instance):
    jobs = dg.Definitions(jobs=build_intent_jobs(list(load_strategies().values())), resources=default_resources())
    unknown = jobs.resolve_job_def(EXECUTE_JOB).execute_in_process(
        instance=instance, raise_on_error=False, run_config=_cfg(EXECUTE_JOB, {"intent_id": "it-nope", "mode": "DRY_RUN"}))
    assert not unknown.success
    meta = _assert_reads_as(instance, unknown.run_id, "unknown intent 'it-nope'")
    assert meta == {"refused": "unknown intent 'it-nope'", "intent_id": "it-nope",
                    "inspect": "trading-pipelines intent show it-nope"}

    plan = jobs.resolve_job_def(PLAN_JOB).execute_in_process(instance=instance, run_config=_cfg(PLAN_JOB, {
        "strategy": SPOT, "instrument": "ETH/USDT", "side": "buy", "capital": 5000.0}))
    iid = plan.output_for_node(op_name(PLAN_JOB))["intent_id"]
    first = jobs.resolve_job_def(EXECUTE_JOB).execute_in_process(
        instance=instance, run_config=_cfg(EXECUTE_JOB, {"intent_id": iid, "mode": "DRY_RUN"}))
    assert first.success
    twice = jobs.resolve_job_def(EXECUTE_JOB).execute_in_process(
        instance=instance, raise_on_error=False, run_config=_cfg(EXECUTE_JOB, {"intent_id": iid, "mode": "DRY_RUN"}))
    message = f"intent {iid} is DRY_RUN: already executed, it is never executed twice"
    meta = _assert_reads_as(instance, twice.run_id, message)
    assert meta["intent_id"] == iid and meta["mode"] == "DRY_RUN" and meta["refused"] == message

    bad_plan = jobs.resolve_job_def(PLAN_JOB).execute_in_process(instance=instance, raise_on_error=False, run_config=_cfg(
        PLAN_JOB, {"strategy": SPOT, "instrument": "ETH/USDT", "side": "short"}))
    meta = _assert_reads_as(instance, bad_plan.run_id,
                            "side 'short' is not a spot side of spot_4h_majors (one of: buy, sell)")
    assert (meta["strategy"], meta["instrument"], meta["side"]) == (SPOT, "ETH/USDT", "short")


def test_a_review_run_refused_for_an_unknown_instrument_is_not_retried(instance):
    from trading_pipelines.definitions import defs

    job = defs().resolve_job_def(f"review_{SPOT}")
    res = job.execute_in_process(instance=instance, partition_key="2026-02-27-04:00", run_config=QUIET,
                                 tags={INSTRUMENTS_TAG: "SOL/USDT,DOGE/USDT"}, raise_on_error=False)
    assert not res.success
    records = _events(instance, res.run_id)
    types = _types(records)
    assert "STEP_UP_FOR_RETRY" not in types and "STEP_RESTARTED" not in types  # one attempt, not three
    [step] = [r for r in records if r.dagster_event and r.dagster_event.event_type_value == "STEP_FAILURE"]
    data = step.dagster_event.step_failure_data
    message = "spot_4h_majors does not trade ['DOGE/USDT'] (instruments: ['BTC/USDT', 'ETH/USDT', 'SOL/USDT'])"
    assert data.user_failure_data.description == message
    assert data.error.message.splitlines()[0] == f"{FAILURE_CLS}: {message}"
    assert {k: v.value for k, v in data.user_failure_data.metadata.items()} == {
        "tag": f"{INSTRUMENTS_TAG}=SOL/USDT,DOGE/USDT", "unknown": ["DOGE/USDT"],
        "instruments": ["BTC/USDT", "ETH/USDT", "SOL/USDT"]}
