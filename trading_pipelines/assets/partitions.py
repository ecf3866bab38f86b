"""Partitions of a strategy's assets: its time windows (UTC).

A window key is the window's *start* (``%Y-%m-%d-%H:%M`` for 1h/4h, ``%Y-%m-%d`` for 1d); the
window ends one bar later, and the review of a window sees only bars that closed at or before
that end. A daily strategy whose every instrument has an exchange calendar has windows on weekdays
only (cron :data:`~trading_pipelines.config.windows.WEEKDAY_CRON`): the Dagster time window of a
Friday's partition runs to Monday, its bar still closes on Saturday 00:00 (:func:`window_end`), so
those partitions are defined with ``end_offset=1`` (the Friday exists on Saturday, when its bar has
closed; the partition of the day in progress is listed too) and :func:`window_keys` /
:func:`last_closed_window_key` keep only the windows whose bar has closed.
Instruments are not a partition dimension (see :mod:`trading_pipelines.assets.review`
for why): every step loops over the strategy's instruments inside the run.
"""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from trading_pipelines.config import StrategySpec
from trading_pipelines.config.windows import WEEKDAY_CRON, next_window_start, weekday_windows, window_range

_FMT = {"1h": "%Y-%m-%d-%H:%M", "4h": "%Y-%m-%d-%H:%M", "1d": "%Y-%m-%d"}
_CRON = {"1h": "0 * * * *", "4h": "0 */4 * * *", "1d": "0 0 * * *"}
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def window_cron(spec: StrategySpec) -> str:
    """The cron of ``spec``'s window partitions: one window per bar, weekdays only for a daily
    strategy on exchange calendars (:func:`~trading_pipelines.config.windows.weekday_windows`)."""
    return WEEKDAY_CRON if weekday_windows(spec) else _CRON[spec.timeframe]


def window_partitions(spec: StrategySpec) -> dg.TimeWindowPartitionsDefinition:
    """The strategy's windows as Dagster time-window partitions (UTC), keys in :data:`_FMT`. With
    ``data.windows_end`` the last partition is the last window whose bar closes by it
    (:func:`~trading_pipelines.config.windows.window_range`): for weekday windows Dagster's ``end``
    is the next weekday after that window (a Friday's partition ends on Monday), and ``end_offset=1``
    lists the partition in progress (a Friday's on the weekend)."""
    end = spec.data.windows_end
    if end is not None and weekday_windows(spec):
        first, last = window_range(spec)
        end = next_window_start(spec, max(first, last)) if last >= first else first
    return dg.TimeWindowPartitionsDefinition(
        start=spec.data.windows_start.strftime(_FMT[spec.timeframe]),
        end=end.strftime(_FMT[spec.timeframe]) if end else None,
        fmt=_FMT[spec.timeframe],
        cron_schedule=window_cron(spec),
        timezone="UTC",
        end_offset=1 if weekday_windows(spec) else 0,
    )


def window_keys(spec: StrategySpec, now: datetime | None = None) -> list[str]:
    """Every window key of ``spec`` (oldest first) whose bar has closed by ``now`` (default: the
    wall clock; ``window_end <= now``), from Dagster's partitions definition at ``now``."""
    now = now or datetime.now(timezone.utc)
    with dg.partition_loading_context(effective_dt=now):
        keys = window_partitions(spec).get_partition_keys()
    while keys and window_end(spec, keys[-1]) > now:  # weekday windows: the partition in progress
        keys.pop()
    return keys


def last_closed_window_key(spec: StrategySpec, now: datetime) -> str | None:
    """The newest window key whose bar has closed by ``now`` (``window_end <= now``), or None: what
    a review schedule ticking at ``now`` reviews. Dagster's ``get_last_partition_key`` except for
    weekday windows (``end_offset=1`` lists the partition in progress)."""
    if not weekday_windows(spec):  # one partition per bar: Dagster's last partition is the last closed bar
        with dg.partition_loading_context(effective_dt=now):
            return window_partitions(spec).get_last_partition_key()
    keys = window_keys(spec, now)
    return keys[-1] if keys else None


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
