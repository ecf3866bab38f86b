"""Partitions of a strategy's assets: its time windows (UTC).

A window key is the window's *start* (``%Y-%m-%d-%H:%M`` for 1h/4h, ``%Y-%m-%d`` for 1d); the
window ends one bar later, and the review of a window sees only bars that closed at or before
that end. Instruments are not a partition dimension (see :mod:`trading_pipelines.assets.review`
for why): every step loops over the strategy's instruments inside the run.
"""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from trading_pipelines.config import StrategySpec

_FMT = {"1h": "%Y-%m-%d-%H:%M", "4h": "%Y-%m-%d-%H:%M", "1d": "%Y-%m-%d"}
_CRON = {"1h": "0 * * * *", "4h": "0 */4 * * *", "1d": "0 0 * * *"}
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def window_partitions(spec: StrategySpec) -> dg.TimeWindowPartitionsDefinition:
    end = spec.data.windows_end
    return dg.TimeWindowPartitionsDefinition(
        start=spec.data.windows_start.strftime(_FMT[spec.timeframe]),
        end=end.strftime(_FMT[spec.timeframe]) if end else None,
        fmt=_FMT[spec.timeframe],
        cron_schedule=_CRON[spec.timeframe],
        timezone="UTC",
    )


def window_end(spec: StrategySpec, window_key: str) -> datetime:
    """UTC end of the window whose partition key is ``window_key``."""
    start = datetime.strptime(window_key, _FMT[spec.timeframe]).replace(tzinfo=timezone.utc)
    return start + spec.bar_duration


def window_key(spec: StrategySpec, end: datetime) -> str:
    return (end - spec.bar_duration).astimezone(timezone.utc).strftime(_FMT[spec.timeframe])


def window_key_of_start(spec: StrategySpec, start: datetime) -> str:
    return start.astimezone(timezone.utc).strftime(_FMT[spec.timeframe])


def range_tags(first_key: str, last_key: str) -> dict[str, str]:
    """Run tags that make one run cover the windows ``first_key`` … ``last_key`` (inclusive)."""
    return {RANGE_START_TAG: first_key, RANGE_END_TAG: last_key}
