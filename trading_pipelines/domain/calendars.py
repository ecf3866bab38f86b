"""Market hours from exchange calendars (``exchange_calendars``, the Quantopian lineage).

Crypto trades 24/7. Equities: a daily window is tradeable when its bar's date is a session of
the instrument's exchange (orders are then queued for the next session's open); an intraday
window when the exchange is open at the window's end.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache

import pandas as pd

from trading_pipelines.domain.guards import MarketHours
from trading_pipelines.domain.models import InstrumentSpec


@lru_cache(maxsize=8)
def _calendar(name: str):
    import exchange_calendars as xcals

    return xcals.get_calendar(name, start="2000-01-01")


def market_hours(instrument: InstrumentSpec, window_end: datetime, bar: timedelta) -> MarketHours:
    if instrument.asset_class == "crypto":
        return MarketHours(True, "crypto trades 24/7")
    if not instrument.calendar:
        return MarketHours(False, f"{instrument.symbol}: no exchange calendar configured")
    cal = _calendar(instrument.calendar)
    if bar >= timedelta(days=1):
        day = pd.Timestamp((window_end - bar).date())
        if cal.is_session(day):
            nxt = cal.next_open(pd.Timestamp(window_end))
            return MarketHours(True, f"{instrument.calendar} session {day.date()}; order queued for the open at {nxt.isoformat()}")
        return MarketHours(False, f"{instrument.calendar} has no session on {day.date()} (market closed)")
    ts = pd.Timestamp(window_end)
    if cal.is_open_on_minute(ts):
        return MarketHours(True, f"{instrument.calendar} open at {ts.isoformat()}")
    return MarketHours(False, f"{instrument.calendar} closed at {ts.isoformat()}")
