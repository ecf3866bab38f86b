"""The code location: the shipped strategies from ``defs/strategies/*/defs.yaml`` (one
StrategyComponent each), users' strategies from the folders in ``TRADING_STRATEGIES_PATH`` (a
broken file there is logged and skipped, never fatal to the others), the shared resources, the
position monitor and the intent lifecycle's launchpad jobs (:mod:`trading_pipelines.intent_jobs`).
This module only assembles."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg

from trading_pipelines.components import build_strategy_defs
from trading_pipelines.config import STRATEGIES_DIR, load_strategies_report
from trading_pipelines.intent_jobs import build_intent_jobs
from trading_pipelines.resources.dagster_resources import default_resources
from trading_pipelines.sensors.position_monitor import build_position_monitor

log = logging.getLogger(__name__)


@dg.definitions
def defs() -> dg.Definitions:
    shipped = dg.load_from_defs_folder(path_within_project=Path(__file__).resolve().parent)
    specs, errors = load_strategies_report()
    for path, message in errors.items():
        log.error("skipped strategy file %s: %s", path, message)
    users = [build_strategy_defs(spec) for spec in specs.values() if not _shipped(spec.name)]
    monitor_job, monitor_sensor = build_position_monitor(list(specs.values()))
    # in process: a strategy run's two steps (analysis, account) share one process (DESIGN.md: a
    # subprocess per step costs ~1 s); UI backfills use the code location's executor
    # the launchpad jobs of the intent lifecycle (plan_intent / execute_intent / cancel_intent), one set for all strategies
    intent_jobs = build_intent_jobs(list(specs.values()))
    shared = dg.Definitions(resources=default_resources(), jobs=[monitor_job, *intent_jobs], sensors=[monitor_sensor],
                            executor=dg.in_process_executor)
    return dg.Definitions.merge(shipped, *users, shared)


def _shipped(name: str) -> bool:
    return (STRATEGIES_DIR / name / "defs.yaml").exists()
