"""Window bounds: a strategy's window range and the parsing of ``--start``/``--end`` values (and
the replay job's ``start``/``end``) into window starts (UTC).

Which windows exist: one per bar on the timeframe's UTC grid, except for a daily strategy whose
every instrument has an exchange calendar (:func:`weekday_windows`): its windows start on weekdays
only (Monday–Friday midnight UTC; the Dagster partitions' cron :data:`WEEKDAY_CRON`), so a weekend
makes no window. An exchange holiday on a weekday stays a window (a recorded "market closed"
no-trade). The window partitions (:func:`trading_pipelines.assets.partitions.window_partitions`)
are built from the same rule, so :func:`window_range` and :func:`parse_window_bound` agree with them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from trading_pipelines.config.spec import StrategySpec


class WindowBoundError(ValueError):
    """A ``--start``/``--end`` value is not a window start of the strategy. The message names the
    flag, the value, the timeframe, the nearest window starts and the valid range."""


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LEGACY_KEY_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})-(\d{2}):(\d{2})$")
_GRID = {"1h": "windows start on every UTC hour", "4h": "windows start every 4 hours from 00:00 UTC",
         "1d": "windows start at midnight UTC"}
WEEKDAY_CRON = "0 0 * * 1-5"
"""The windows of :func:`weekday_windows` strategies: midnight UTC, Monday to Friday."""
_DAY = timedelta(days=1)


def weekday_windows(spec: StrategySpec) -> bool:
    """True when ``spec``'s windows start on weekdays only: a ``1d`` strategy whose every
    instrument has an exchange calendar (``calendar`` in the instrument catalogue, e.g. XNYS).
    Crypto and intraday strategies have a window on every bar."""
    return spec.timeframe == "1d" and all(spec.instrument(i).calendar for i in spec.instruments)


def _weekday_on_or_after(day: datetime) -> datetime:
    return day + _DAY * max(0, 7 - day.weekday()) if day.weekday() >= 5 else day


def _weekday_on_or_before(day: datetime) -> datetime:
    return day - _DAY * (day.weekday() - 4) if day.weekday() >= 5 else day


def next_window_start(spec: StrategySpec, start: datetime) -> datetime:
    """The window start after ``start`` (a window start of ``spec``): one bar later, or for
    :func:`weekday_windows` the next weekday (Friday → Monday). This is where the Dagster time
    window of the partition ``start`` ends."""
    nxt = start + spec.bar_duration
    return _weekday_on_or_after(nxt) if weekday_windows(spec) else nxt


def _floor(ts: datetime, bar: timedelta) -> datetime:
    return _EPOCH + ((ts - _EPOCH) // bar) * bar


def _ceil(ts: datetime, bar: timedelta) -> datetime:
    lo = _floor(ts, bar)
    return lo if lo == ts else lo + bar


def _fmt_bound(ts: datetime, timeframe: str) -> str:
    return ts.strftime("%Y-%m-%d") if timeframe == "1d" else ts.strftime("%Y-%m-%dT%H:%MZ")


def window_range(spec: StrategySpec, now: datetime | None = None) -> tuple[datetime, datetime]:
    """(first, last) window start (UTC) of ``spec``, as the window partitions have them: the first
    window start at or after ``data.windows_start`` and the last whose bar closes by
    ``data.windows_end`` (exclusive end; ``now`` when open-ended, default the wall clock).
    ``last < first`` means there is no window. Weekday windows (:func:`weekday_windows`) skip
    Saturdays and Sundays."""
    bar = spec.bar_duration
    end = spec.data.windows_end or (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    first, last = _ceil(spec.data.windows_start, bar), _floor(end, bar) - bar
    if weekday_windows(spec):
        first, last = _weekday_on_or_after(first), _weekday_on_or_before(last)
    return first, last


def _parse_instant(value: str) -> datetime | None:
    v = value.strip()
    m = _LEGACY_KEY_RE.match(v)
    if m:
        v = f"{m[1]}T{m[2]}:{m[3]}"
    if v[-1:] == "z":
        v = v[:-1] + "Z"
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def parse_window_bound(spec: StrategySpec, value: str | datetime, *, what: str = "--start") -> datetime:
    """``value`` as the UTC start of one of ``spec``'s windows.

    Accepts ISO-8601 dates and datetimes (``2024-11-01``, ``2024-11-01T04:00Z``,
    ``2024-11-01T04:00:00+00:00``; naive values are UTC) and the partition key format
    ``2024-11-01-04:00``. The instant must lie on the timeframe's grid (1h/4h: a multiple of the bar
    from the UTC epoch; 1d: midnight UTC; :func:`weekday_windows`: a weekday's midnight) and within
    :func:`window_range`. Otherwise raises
    :class:`WindowBoundError` naming ``what`` (the flag), the value, the timeframe, the nearest
    window starts and the valid range.
    """
    tf, bar = spec.timeframe, spec.bar_duration
    first, last = window_range(spec)
    valid = (f"valid range: {_fmt_bound(first, tf)} … {_fmt_bound(last, tf)}" if last >= first
             else f"{spec.name} has no windows yet (data.windows_start {_fmt_bound(spec.data.windows_start, tf)})")
    if isinstance(value, datetime):
        dt = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    else:
        dt = _parse_instant(str(value))
    if dt is None:
        raise WindowBoundError(
            f"{what} {value!r}: not a date or datetime of a {tf} window (use ISO-8601 UTC, e.g. "
            f"{_fmt_bound(first, tf)}{'' if tf == '1d' else ' or ' + first.strftime('%Y-%m-%d-%H:%M')}); {valid}")
    lo = _floor(dt, bar)
    if lo != dt:
        raise WindowBoundError(
            f"{what} {value!r} is not a window boundary of {spec.name}'s {tf} timeframe ({_GRID[tf]}); "
            f"nearest boundaries: {_fmt_bound(lo, tf)} and {_fmt_bound(lo + bar, tf)}; {valid}")
    if weekday_windows(spec) and dt.weekday() >= 5:
        before, after = _weekday_on_or_before(dt), _weekday_on_or_after(dt)
        raise WindowBoundError(
            f"{what} {value!r} is a {dt.strftime('%A')}: {spec.name}'s daily equity windows start on weekdays only "
            f"(Monday–Friday midnight UTC; exchange calendars {sorted({spec.instrument(i).calendar for i in spec.instruments})}); "
            f"nearest window starts: {_fmt_bound(before, tf)} and {_fmt_bound(after, tf)}; {valid}")
    if last < first or not first <= dt <= last:
        nearest = "" if last < first else f"; nearest window start: {_fmt_bound(first if dt < first else last, tf)}"
        raise WindowBoundError(f"{what} {value!r} is outside the {tf} windows of {spec.name}; {valid}{nearest}")
    return dt
