"""Short histories and old dates (issue 13, "Market data"), on real SPY daily bars from 1999-11-01
(tests/fixtures/ohlcv, provenance in its README).

* A data set whose first 512-bar indicator chunk holds fewer bars than the indicators need (NVDA
  daily from its 1999 IPO: 96 bars) made every window of the range a no-trade "compute_indicators:
  need at least 100 bars …, got 96". Now the first windows are "warming up: N of 100 bars" and
  every window with 100 bars of history trades.
* Exchange calendars started on 2000-01-03, so a 1999 window crashed the replay with
  ``DateOutOfBounds``. Now a calendar is built from a start early enough for the date asked.
* A daily window on an exchange holiday is "market closed: …", not a stale-data no-trade.

The rules provider, a SQLite ledger per test, nothing mocked.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from trading_pipelines.analysis import analyze as analysis
from trading_pipelines.analysis import frames
from trading_pipelines.config import parse_strategy
from trading_pipelines.domain.calendars import calendar, calendar_start, market_hours
from trading_pipelines.domain.models import InstrumentSpec, Mode
from trading_pipelines.ledger.db import get_engine
from trading_pipelines.llm.providers import build_provider
from trading_pipelines.runtime import Runtime
from trading_pipelines.stores.charts import LocalChartStore
from trading_pipelines.stores.market_data import CsvReplaySource
from trading_pipelines.venues.factory import make_paper_venue

UTC = timezone.utc
DAY = timedelta(days=1)
SPY_FILE = Path(__file__).parent / "fixtures" / "ohlcv" / "NYSEARCA_SPY_1d_1999-2001.csv"
SPY_LINES = SPY_FILE.read_text().splitlines()
SPY = InstrumentSpec(symbol="SPY", asset_class="equity", market=Mode.SPOT, lot_step=1, min_qty=1, tick_size=0.01,
                     min_notional=0.0, calendar="XNYS")
STRATEGY = {  # the shipped equities_1d_spy_aapl settings (EMA 20/50, SMA 100: 100 bars of warm-up; 150 bars seen)
    "name": "warmup_1d",
    "mode": "spot",
    "venue": {"kind": "paper", "starting_cash": 100000, "fee_rate": 0.0005, "slippage_bps": 2},
    "timeframe": "1d",
    "instruments": ["SPY"],
    "data": {"source": "replay", "windows_start": "1999-11-01", "windows_end": "2002-01-01"},
    "template": {
        "indicators": {"ema": [20, 50], "sma": [100]},
        "signal_provider": {"kind": "rules"},
        "stop": {"method": "swing", "swing_lookback": 10, "buffer_atr": 0.25},
        "take_profit_r": 2.5,
        "lookback_bars": 150,
    },
    "risk": {"risk_per_trade_pct": 1.0, "max_open_positions": 2, "max_daily_loss_pct": 3.0},
    "execution": {"dry_run": True, "confirm": "auto"},
}


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


class FileSource(CsvReplaySource):
    """The real CSV replay source, reading one given file for every instrument."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.parent)
        self.path = path

    def path_for(self, symbol: str, timeframe: str) -> Path:
        return self.path


def runtime(path: Path, home: Path) -> Runtime:
    spec = parse_strategy(STRATEGY)
    home.mkdir(parents=True, exist_ok=True)
    source = FileSource(path)
    return Runtime(spec=spec, engine=get_engine(f"sqlite:///{home / 'ledger.sqlite'}"), market=source,
                   charts=LocalChartStore(home / "charts"), provider=build_provider(spec.template.signal_provider, spec.prompt_template),
                   venue=make_paper_venue(spec, source, get_engine(f"sqlite:///{home / 'venue.sqlite'}")))


def test_a_short_first_chunk_warms_up_its_windows_and_the_later_ones_trade(tmp_path):
    """SPY from 2000-06-20, as if it listed then: the 1d chunk 1999-06-10 … 2000-11-02 holds its
    first 96 bars (the NVDA case). Old code: every window "bad data: compute_indicators: need at
    least 100 bars for this indicator set, got 96", 2001 included."""
    rows = [line for line in SPY_LINES[1:] if line >= "2000-06-20"]
    path = tmp_path / "data" / "SPY_1d.csv"
    path.parent.mkdir()
    path.write_text("\n".join([SPY_LINES[0], *rows]) + "\n")
    opens = [pd.Timestamp(line.split(",")[0]) for line in rows]
    assert opens[0] == pd.Timestamp("2000-06-20T00:00:00Z") and len(rows) == 383
    chunk = frames._chunk_start(opens[0], DAY)
    assert chunk == pd.Timestamp("1999-06-10T00:00:00Z")
    assert sum(1 for t in opens if t < chunk + 512 * DAY) == 96  # 2000-11-03 opens the next chunk

    rt = runtime(path, tmp_path / "home")
    picks = [0, 1, 29, 50, 95, 96, 98, 99, 100, 150, 250, 382]  # the window whose newest bar is session i
    ends = [(opens[i] + DAY).to_pydatetime() for i in picks]
    got = {a.window_end: a for a in analysis.analyze(rt, "SPY", ends, "run-warmup", charts=False)}
    for i in picks:
        a = got[(opens[i] + DAY).to_pydatetime()]
        if i + 1 < 100:
            assert a.error == f"warming up: {i + 1} of 100 bars (the first opens 2000-06-20T00:00:00+00:00)", (i, a.error)
            assert a.signal.no_trade_reason == a.error and a.signal.provider == "pipeline" and a.frame is None
        else:  # 100 bars of history: every indicator is defined on the newest bar
            assert a.error is None and a.signal.no_trade_reason is None, (i, a.error)
            assert len(a.frame) == min(150, i + 1) and not a.frame.iloc[-1].isna().any()
            assert a.signal.provider == "rules"
    # the window with exactly 100 bars: SMA 100 is the mean of all 100 closes
    first = got[(opens[99] + DAY).to_pydatetime()]
    closes = [float(line.split(",")[4]) for line in rows[:100]]
    assert first.frame["sma_100"].iloc[-1] == pytest.approx(sum(closes) / 100, rel=1e-12)
    # a window of 2001 trades on the same frame whether analysed alone or in the range
    alone = frames.indicator_frame(rt, "SPY", (opens[382] + DAY).to_pydatetime())
    assert alone.equals(got[(opens[382] + DAY).to_pydatetime()].frame)
    with pytest.raises(Exception, match=r"warming up: 96 of 100 bars"):
        frames.indicator_frame(rt, "SPY", (opens[95] + DAY).to_pydatetime())


# ---------------------------------------------------------------- calendars before 2000


def test_a_1999_session_is_open_and_queued_for_the_next_open():
    """Old code: ``DateOutOfBounds: … first session of calendar 'XNYS' ('2000-01-03')``."""
    # window 1999-11-16T00:00Z → bar date Mon 1999-11-15, an NYSE session; next open Tue 09:30 ET = 14:30Z
    h = market_hours(SPY, utc(1999, 11, 16), DAY)
    assert h.open and h.message == "XNYS session 1999-11-15; order queued for the open at 1999-11-16T14:30:00+00:00"
    # Thanksgiving 1999 and Christmas 1995 are holidays; 1995-12-22 (a Friday) a session
    assert not market_hours(SPY, utc(1999, 11, 26), DAY).open
    assert market_hours(SPY, utc(1999, 11, 26), DAY).message == "XNYS has no session on 1999-11-25 (market closed)"
    assert not market_hours(SPY, utc(1995, 12, 26), DAY).open
    assert market_hours(SPY, utc(1995, 12, 23), DAY).open
    # intraday: Mon 1999-11-15 15:30Z = 10:30 ET open; 22:00Z = 17:00 ET closed
    assert market_hours(SPY, utc(1999, 11, 15, 15, 30), timedelta(hours=1)).open
    assert not market_hours(SPY, utc(1999, 11, 15, 22), timedelta(hours=1)).open


def test_calendars_are_cached_per_calendar_and_start():
    assert calendar_start(pd.Timestamp("2017-06-02")) == pd.Timestamp("2000-01-01")  # as before: one calendar from 2000
    assert calendar_start(pd.Timestamp("1999-11-15")) == pd.Timestamp("1990-01-01")
    assert calendar_start(pd.Timestamp("1995-12-25")) == pd.Timestamp("1990-01-01")
    assert calendar_start(pd.Timestamp("1990-03-01")) == pd.Timestamp("1980-01-01")
    assert calendar("XNYS", pd.Timestamp("1990-01-01")) is calendar("XNYS", pd.Timestamp("1990-01-01"))
    assert calendar("XNYS", pd.Timestamp("1990-01-01")).first_session == pd.Timestamp("1990-01-02")
    assert calendar("XNYS").first_session == pd.Timestamp("2000-01-03")


def test_a_date_before_what_a_calendar_can_cover_is_closed_not_a_crash():
    """XTKS (Tokyo) cannot be built before 1997-01-01: a 1995 window is a closed market, named."""
    tokyo = SPY.model_copy(update={"symbol": "7203", "calendar": "XTKS"})
    h = market_hours(tokyo, utc(1995, 6, 2), DAY)
    assert not h.open and h.message.startswith("XTKS calendar does not cover 1995-06-01 (it runs 1997-01-06")
    assert market_hours(tokyo, utc(1999, 6, 2), DAY).open  # Tue 1999-06-01, a Tokyo session


# ---------------------------------------------------------------- exchange holidays in the analysis


def test_a_daily_window_on_an_exchange_holiday_is_market_closed(tmp_path):
    """The window whose bar date is Thanksgiving 1999 (no row in the file): "market closed: XNYS
    has no session on 1999-11-25", not "warming up" or "stale data". Old code: no such reason (and
    a calendar that could not answer for 1999)."""
    rt = runtime(SPY_FILE, tmp_path / "home")
    ends = [utc(1999, 11, 25), utc(1999, 11, 26), utc(1999, 11, 27), utc(2000, 12, 26), utc(2000, 12, 27)]
    got = {a.window_end: a for a in analysis.analyze(rt, "SPY", ends, "run-holiday", charts=False)}
    assert got[utc(1999, 11, 26)].error == "market closed: XNYS has no session on 1999-11-25"
    assert got[utc(1999, 11, 26)].signal.no_trade_reason == "market closed: XNYS has no session on 1999-11-25"
    assert got[utc(2000, 12, 26)].error == "market closed: XNYS has no session on 2000-12-25"
    # the sessions around them: warming up in 1999 (18 and 19 bars), trading in December 2000
    assert got[utc(1999, 11, 25)].error.startswith("warming up: 18 of 100 bars")
    assert got[utc(1999, 11, 27)].error.startswith("warming up: 19 of 100 bars")
    assert got[utc(2000, 12, 27)].error is None and got[utc(2000, 12, 27)].signal.no_trade_reason is None
