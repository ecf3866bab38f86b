"""The code location: strategies from ``defs/strategies/*/defs.yaml`` (one StrategyComponent each),
the shared resources and the position monitor. This module only assembles."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from trading_pipelines.config import load_strategies
from trading_pipelines.resources.dagster_resources import default_resources
from trading_pipelines.sensors.position_monitor import build_position_monitor


@dg.definitions
def defs() -> dg.Definitions:
    strategies = dg.load_from_defs_folder(path_within_project=Path(__file__).resolve().parent)
    monitor_job, monitor_sensor = build_position_monitor(list(load_strategies().values()))
    # in process: a strategy run's two steps (analysis, account) share one process (DESIGN.md: a
    # subprocess per step costs ~1 s); UI backfills use the code location's executor
    shared = dg.Definitions(resources=default_resources(), jobs=[monitor_job], sensors=[monitor_sensor],
                            executor=dg.in_process_executor)
    return dg.Definitions.merge(strategies, shared)
