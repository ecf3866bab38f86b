"""Window bounds: a strategy's window range and the parsing of ``--start``/``--end`` values (and
the replay job's ``start``/``end``) into window starts (UTC)."""

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


def _floor(ts: datetime, bar: timedelta) -> datetime:
    return _EPOCH + ((ts - _EPOCH) // bar) * bar


def _ceil(ts: datetime, bar: timedelta) -> datetime:
    lo = _floor(ts, bar)
    return lo if lo == ts else lo + bar


def _fmt_bound(ts: datetime, timeframe: str) -> str:
    return ts.strftime("%Y-%m-%d") if timeframe == "1d" else ts.strftime("%Y-%m-%dT%H:%MZ")


def window_range(spec: StrategySpec, now: datetime | None = None) -> tuple[datetime, datetime]:
    """(first, last) window start (UTC) of ``spec``, as the window partitions have them: the first
    boundary at or after ``data.windows_start`` and the last whose window ends by ``data.windows_end``
    (exclusive end; ``now`` when open-ended). ``last < first`` means there is no window."""
    bar = spec.bar_duration
    end = spec.data.windows_end or (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return _ceil(spec.data.windows_start, bar), _floor(end, bar) - bar


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
    from the UTC epoch; 1d: midnight UTC) and within :func:`window_range`. Otherwise raises
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
    if last < first or not first <= dt <= last:
        nearest = "" if last < first else f"; nearest window start: {_fmt_bound(first if dt < first else last, tf)}"
        raise WindowBoundError(f"{what} {value!r} is outside the {tf} windows of {spec.name}; {valid}{nearest}")
    return dt
