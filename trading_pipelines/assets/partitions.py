"""Partitions of a strategy's assets: instrument (dynamic) × time window.

Multi-partition keys read ``instrument|window`` (Dagster sorts dimensions by name). A window key
is the window's *start* (UTC); the window ends one bar later, and the review of a window sees
only bars that closed at or before that end.
"""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from trading_pipelines.config import StrategySpec

_FMT = {"1h": "%Y-%m-%d-%H:%M", "4h": "%Y-%m-%d-%H:%M", "1d": "%Y-%m-%d"}
_CRON = {"1h": "0 * * * *", "4h": "0 */4 * * *", "1d": "0 0 * * *"}
INSTRUMENT_DIM = "instrument"
WINDOW_DIM = "window"


def instruments_partitions(spec: StrategySpec) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=spec.instruments_partitions_name)


def window_partitions(spec: StrategySpec) -> dg.TimeWindowPartitionsDefinition:
    end = spec.data.windows_end
    return dg.TimeWindowPartitionsDefinition(
        start=spec.data.windows_start.strftime(_FMT[spec.timeframe]),
        end=end.strftime(_FMT[spec.timeframe]) if end else None,
        fmt=_FMT[spec.timeframe],
        cron_schedule=_CRON[spec.timeframe],
        timezone="UTC",
    )


def review_partitions(spec: StrategySpec) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition({INSTRUMENT_DIM: instruments_partitions(spec), WINDOW_DIM: window_partitions(spec)})


def window_end(spec: StrategySpec, window_key: str) -> datetime:
    """UTC end of the window whose partition key is ``window_key``."""
    start = datetime.strptime(window_key, _FMT[spec.timeframe]).replace(tzinfo=timezone.utc)
    return start + spec.bar_duration


def window_key(spec: StrategySpec, end: datetime) -> str:
    return (end - spec.bar_duration).astimezone(timezone.utc).strftime(_FMT[spec.timeframe])


def split_key(context) -> tuple[str, str]:
    """(instrument, window key) of the single partition this step runs for."""
    key = context.partition_key
    if not isinstance(key, dg.MultiPartitionKey):
        key = dg.MultiPartitionKey({k: v for k, v in zip(sorted([INSTRUMENT_DIM, WINDOW_DIM]), str(key).split("|"))})
    return key.keys_by_dimension[INSTRUMENT_DIM], key.keys_by_dimension[WINDOW_DIM]
