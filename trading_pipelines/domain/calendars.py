"""Market hours from exchange calendars (``exchange_calendars``, the Quantopian lineage).

Crypto trades 24/7. Equities: a daily window is tradeable when its bar's date is a session of
the instrument's exchange (orders are then queued for the next session's open); an intraday
window when the exchange is open at the window's end.

A calendar covers the dates asked of it: :func:`calendar` builds it from an explicit ``start``
(``exchange_calendars`` would otherwise start 20 years before today), 2000-01-01 for windows from
2001 on and the first day of an earlier decade for earlier windows (an equity from 1995 gets a
calendar from 1990), never before the calendar's own first date (``bound_min``, e.g. XTKS 1997).
A date the calendar still cannot cover is a closed market, named, never a crash.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache

import pandas as pd

from trading_pipelines.domain.guards import MarketHours
from trading_pipelines.domain.models import InstrumentSpec

DEFAULT_START = pd.Timestamp("2000-01-01")
"""First date of every calendar used for windows from 2001 on."""


def calendar_start(day: pd.Timestamp | datetime) -> pd.Timestamp:
    """The ``start`` a calendar needs to answer for ``day`` (and the year before it, for the
    previous session): :data:`DEFAULT_START`, or the 1st of January of an earlier decade."""
    year = pd.Timestamp(day).year - 1
    return min(DEFAULT_START, pd.Timestamp(year=year - year % 10, month=1, day=1))


@lru_cache(maxsize=16)
def calendar(name: str, start: pd.Timestamp = DEFAULT_START):
    """The ``exchange_calendars`` calendar ``name`` (e.g. ``"XNYS"``) from ``start`` (a naive date;
    raised to the calendar's ``bound_min`` when earlier) to a year from today. Cached per (name,
    start). Raises ``exchange_calendars.errors.InvalidCalendarName`` for an unknown name."""
    import exchange_calendars as xcals

    if start < DEFAULT_START:  # the calendar's class knows how far back it can go
        bound = type(calendar(name, DEFAULT_START)).bound_min()
        if bound is not None:
            start = max(start, pd.Timestamp(bound).tz_localize(None))
    return xcals.get_calendar(name, start=start.strftime("%Y-%m-%d"))


def market_hours(instrument: InstrumentSpec, window_end: datetime, bar: timedelta) -> MarketHours:
    """Whether ``instrument``'s market takes an order for the window ending ``window_end`` (UTC)
    with bars of ``bar`` (see the module doc), with the calendar's words for it."""
    if instrument.asset_class == "crypto":
        return MarketHours(True, "crypto trades 24/7")
    if not instrument.calendar:
        return MarketHours(False, f"{instrument.symbol}: no exchange calendar configured")
    from exchange_calendars.errors import DateOutOfBounds

    day = pd.Timestamp((window_end - bar).date())
    cal = calendar(instrument.calendar, calendar_start(day))
    try:
        if bar >= timedelta(days=1):
            if cal.is_session(day):
                nxt = cal.next_open(pd.Timestamp(window_end))
                return MarketHours(True, f"{instrument.calendar} session {day.date()}; order queued for the open at {nxt.isoformat()}")
            return MarketHours(False, f"{instrument.calendar} has no session on {day.date()} (market closed)")
        ts = pd.Timestamp(window_end)
        if cal.is_open_on_minute(ts):
            return MarketHours(True, f"{instrument.calendar} open at {ts.isoformat()}")
        return MarketHours(False, f"{instrument.calendar} closed at {ts.isoformat()}")
    except DateOutOfBounds as e:  # fail closed: a date the calendar cannot answer for takes no order
        return MarketHours(False, f"{instrument.calendar} calendar does not cover {day.date()} "
                                  f"(it runs {cal.first_session.date()} … {cal.last_session.date()}): {e}")
