"""Bad candle rows spoil only the windows that can see them (issue 13, "Market data").

The replay CSV source keeps every bad row aside with its file line and reason; a request for bars
(``bars``, ``bars_between``) returns the good bars of a span with no bad row in it, and raises
:class:`BadRowsError` naming the file, line and reason when the span contains one. The analysis
builds on that: a window whose bars all closed before the bad line trades as on the clean file, a
window whose lookback sees it is a recorded no-trade naming file and line, and a window far after
it trades again. Real candles: the first rows of the shipped ``BINANCE_BTC-USDT_4h.csv``; the rules
provider; a SQLite ledger per test; nothing is mocked.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trading_pipelines.analysis import analyze as analysis
from trading_pipelines.analysis import frames
from trading_pipelines.config import DEFAULT_DATA_DIR, parse_strategy
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.llm.providers import build_provider
from trading_pipelines.runtime import Runtime
from trading_pipelines.stores.charts import LocalChartStore
from trading_pipelines.stores.market_data import BadRowsError, CsvReplaySource, MarketDataError
from trading_pipelines.venues.factory import make_paper_venue

UTC = timezone.utc
H4 = timedelta(hours=4)
BTC_LINES = (DEFAULT_DATA_DIR / "BINANCE_BTC-USDT_4h.csv").read_text().splitlines()
HEADER = BTC_LINES[0]
NAMES = HEADER.split(",")


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


def edit(line: str, **fields: str) -> str:
    values = dict(zip(NAMES, line.split(",")))
    values.update(fields)
    return ",".join(values[n] for n in NAMES)


def field(line: str, name: str) -> str:
    return dict(zip(NAMES, line.split(",")))[name]


def opens(line: str) -> pd.Timestamp:
    return pd.Timestamp(field(line, "timestamp"))


class FileSource(CsvReplaySource):
    """The real CSV replay source, reading one given file for every instrument (so each test can
    point the catalogued BTC/USDT at its own tmp file without a user catalogue)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.parent)
        self.path = path

    def path_for(self, symbol: str, timeframe: str) -> Path:
        return self.path


def write(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


# ---------------------------------------------------------------- the store: which requests see a bad row

ROWS = BTC_LINES[1:31]  # 30 bars, 2025-03-01T00:00Z … 2025-03-05T20:00Z (file lines 2 … 31)
BAD = 20  # index into ROWS of the corrupted row: file line 22, the bar opening 2025-03-04T08:00Z


def corrupt(kind: str, rows: list[str], i: int) -> list[str]:
    """``rows`` with row ``i`` corrupted as ``kind`` (one row each, as the issue lists them)."""
    out = list(rows)
    r = out[i]
    low = float(field(r, "low"))
    if kind == "nan":
        out[i] = edit(r, close="")
    elif kind == "high_below_low":
        out[i] = edit(r, high=repr(low - 1.0))
    elif kind == "duplicate":
        out[i] = edit(r, timestamp=field(out[i - 1], "timestamp"))
    elif kind == "off_grid":
        out[i] = edit(r, timestamp=(opens(r) + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    elif kind == "negative_price":
        out[i] = edit(r, low="-1")
    elif kind == "unreadable_timestamp":
        out[i] = edit(r, timestamp="2025-03-04T8h")
    elif kind == "out_of_order":
        out[i] = edit(r, timestamp=field(out[i - 3], "timestamp").replace("2025", "2024"))
    elif kind == "zero_volume":
        out[i] = edit(r, volume="0")
    elif kind == "gap":
        del out[i]
    else:
        raise AssertionError(kind)
    return out


BAD_KINDS = ["nan", "high_below_low", "duplicate", "off_grid", "negative_price", "unreadable_timestamp", "out_of_order"]
REASONS = {
    "nan": r"line 22 \(open_time 2025-03-04T08:00:00\+00:00\): close is missing or not a number \(empty\)",
    "high_below_low": r"line 22 \(open_time 2025-03-04T08:00:00\+00:00\): high \S+ < max\(open",
    "duplicate": r"line 22 \(open_time 2025-03-04T04:00:00\+00:00\): duplicate timestamp \(previous row opens 2025-03-04T04:00",
    "off_grid": r"line 22: timestamp '2025-03-04T08:30:00Z' .* is not on the 4h grid",
    "negative_price": r"line 22 \(open_time 2025-03-04T08:00:00\+00:00\): non-positive price",
    "unreadable_timestamp": r"line 22: bad timestamp '2025-03-04T8h' \(need ISO-8601 UTC\)",
    "out_of_order": r"line 22 \(open_time 2024-03-03T20:00:00\+00:00\): timestamp out of order",
}


@pytest.fixture
def clean(tmp_path) -> FileSource:
    return FileSource(write(tmp_path / "clean" / "BTC_4h.csv", ROWS))


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_row_spoils_only_the_requests_whose_span_contains_it(tmp_path, clean, kind):
    """Old code: every request on the file raised, whatever span it asked for."""
    path = write(tmp_path / "bad" / "BTC_4h.csv", corrupt(kind, ROWS, BAD))
    src = FileSource(path)
    bad_open = opens(ROWS[BAD])  # 2025-03-04T08:00Z: the bar the corrupted line stood for
    assert bad_open == pd.Timestamp("2025-03-04T08:00:00Z")

    # the window whose newest bar closed when the bad one opened: its 10 bars, exactly the clean file's
    # (a duplicate of the 04:00 bar is seen by the window whose newest bar is 04:00: one window earlier)
    before = bad_open.to_pydatetime() - (H4 if kind == "duplicate" else timedelta(0))
    got = src.bars("BTC/USDT", "4h", end=before, limit=10)
    assert got.equals(clean.bars("BTC/USDT", "4h", end=before, limit=10)) and len(got) == 10
    # bars_between over a span that ends before it, too
    assert src.bars_between("BTC/USDT", "4h", utc(2025, 3, 1), before).equals(
        clean.bars_between("BTC/USDT", "4h", utc(2025, 3, 1), before))

    # the window whose newest bar is the bad one, and a longer one that skips over it: the file, line, reason
    for end, limit in ((bad_open.to_pydatetime() + H4, 10), (utc(2025, 3, 6), 12)):
        with pytest.raises(BadRowsError, match=REASONS[kind]) as err:
            src.bars("BTC/USDT", "4h", end=end, limit=limit)
        assert str(err.value).startswith(f"{path}: line 22")
        assert [r.line for r in err.value.rows] == [22]
    with pytest.raises(BadRowsError, match=REASONS[kind]):
        src.bars_between("BTC/USDT", "4h", utc(2025, 3, 3), utc(2025, 3, 6))

    # the last 8 bars (2025-03-04T16:00Z on) closed after it and do not reach back to it
    after = src.bars("BTC/USDT", "4h", end=utc(2025, 3, 6), limit=8)
    assert after.equals(clean.bars("BTC/USDT", "4h", end=utc(2025, 3, 6), limit=8))
    assert after.index[0] == pd.Timestamp("2025-03-04T16:00:00Z")
    assert src.bars_between("BTC/USDT", "4h", utc(2025, 3, 4, 16), utc(2025, 3, 6)).equals(after)
    assert src.last_closed_bar_end("BTC/USDT", "4h") == utc(2025, 3, 6)

    # the whole file is still refused with the same message
    with pytest.raises(MarketDataError, match=REASONS[kind]):
        src.frame("BTC/USDT", "4h")


def test_fewer_bars_than_asked_reach_back_to_a_bad_first_row(tmp_path):
    """A request that gets fewer than ``limit`` bars reaches back to the start of the file: a bad
    row there is in its span; a request of ``limit`` bars after it is not."""
    path = write(tmp_path / "BTC_4h.csv", corrupt("nan", ROWS, 0))  # line 2
    src = FileSource(path)
    with pytest.raises(BadRowsError, match=r"line 2 \(open_time 2025-03-01T00:00:00\+00:00\): close is missing"):
        src.bars("BTC/USDT", "4h", end=utc(2025, 3, 1, 12), limit=10)
    assert len(src.bars("BTC/USDT", "4h", end=utc(2025, 3, 1, 12), limit=2)) == 2


def test_the_broken_files_of_test_market_data_name_the_same_line_when_the_request_covers_it(tmp_path):
    """The messages of ``test_market_data.test_broken_csv_raises_naming_file_and_row`` when the
    request covers the whole file (10 bars): the line of a duplicate, a NaN cell, a negative
    volume and an unreadable timestamp are named; a request of the 3 newest bars, which do not
    include the bad line, returns them."""
    five = BTC_LINES[1:6]
    cases = [
        ([five[0], edit(five[1], close=""), *five[2:]], r"line 3 \(open_time 2025-03-01T04:00:00\+00:00\): close is missing"),
        ([*five[:2], five[1], *five[2:]], r"line 4 \(open_time 2025-03-01T04:00:00\+00:00\): duplicate timestamp"),
        ([five[0], edit(five[1], volume="-1.5"), *five[2:]], r"line 3 .*: negative volume -1.5"),
        ([edit(five[0], timestamp="yesterday"), *five[1:]], r"line 2: bad timestamp 'yesterday'"),
    ]
    for n, (rows, message) in enumerate(cases):
        src = FileSource(write(tmp_path / f"{n}" / "BTC_4h.csv", rows))
        with pytest.raises(MarketDataError, match=message):
            src.bars("BTC/USDT", "4h", end=utc(2025, 3, 2), limit=10)
        assert list(src.bars("BTC/USDT", "4h", end=utc(2025, 3, 2), limit=3).index) == [
            pd.Timestamp(f"2025-03-01T{h}:00:00Z") for h in ("08", "12", "16")]


def test_a_year_typo_is_one_bad_row_not_the_rest_of_the_file(tmp_path):
    """A timestamp far in the future in the middle of the file (2052 for 2025) is the row out of
    place: the rows after it are good."""
    rows = list(ROWS)
    rows[BAD] = edit(rows[BAD], timestamp=field(rows[BAD], "timestamp").replace("2025", "2052"))
    src = FileSource(write(tmp_path / "BTC_4h.csv", rows))
    [row] = src.bad_rows("BTC/USDT", "4h")
    assert row.line == 22 and "open_time 2052-03-04T08:00:00+00:00): timestamp out of order (not before the next row" in row.message
    # the 9 bars after it (2025-03-04T12:00Z on) are good; 10 bars skip over it
    assert src.bars("BTC/USDT", "4h", end=utc(2025, 3, 6), limit=9).index[0] == pd.Timestamp("2025-03-04T12:00:00Z")
    with pytest.raises(BadRowsError, match="line 22"):
        src.bars("BTC/USDT", "4h", end=utc(2025, 3, 6), limit=10)


def test_several_bad_rows_are_all_listed(tmp_path):
    rows = corrupt("nan", corrupt("negative_price", ROWS, 25), 5)
    src = FileSource(write(tmp_path / "BTC_4h.csv", rows))
    with pytest.raises(BadRowsError) as err:
        src.bars("BTC/USDT", "4h", end=utc(2025, 3, 6), limit=30)
    assert [r.line for r in err.value.rows] == [7, 27]
    assert str(err.value).endswith("(and 1 more bad row: line 27)")


def test_zero_volume_and_a_gap_are_not_bad_rows(tmp_path, clean):
    """A zero-volume placeholder and a missing bar are data the analysis judges (stale, gap), not bad rows."""
    for kind in ("zero_volume", "gap"):
        src = FileSource(write(tmp_path / kind / "BTC_4h.csv", corrupt(kind, ROWS, BAD)))
        assert src.bad_rows("BTC/USDT", "4h") == ()
        assert len(src.bars("BTC/USDT", "4h", end=utc(2025, 3, 6), limit=30)) == (30 if kind == "zero_volume" else 29)


# ---------------------------------------------------------------- the analysis: windows before, at and after a bad row

ROWS_LONG = BTC_LINES[1:701]  # 700 bars, 2025-03-01T00:00Z … 2025-06-25T12:00Z (file lines 2 … 701)
STRATEGY = {
    "name": "bad_candles_4h",
    "mode": "spot",
    "venue": {"kind": "paper", "starting_cash": 10000, "fee_rate": 0.001, "slippage_bps": 5},
    "timeframe": "4h",
    "instruments": ["BTC/USDT"],
    "data": {"source": "replay", "windows_start": "2025-03-01T00:00:00Z", "windows_end": "2025-06-26T00:00:00Z"},
    "template": {
        # a small indicator set and lookback: 34 bars of warm-up (MACD 26 + 9 − 1), 40 bars seen per window
        "indicators": {"ema": [10, 20], "sma": [30]},
        "signal_provider": {"kind": "rules"},
        "stop": {"method": "atr", "atr_multiple": 2.0},
        "take_profit_r": 2.0,
        "lookback_bars": 40,
        "chart_bars": 30,
    },
    "risk": {"risk_per_trade_pct": 1.0, "max_open_positions": 1, "max_daily_loss_pct": 3.0},
    "execution": {"dry_run": True, "confirm": "auto"},
}
LOOKBACK = 40


def runtime(source, home: Path) -> Runtime:
    spec = parse_strategy(STRATEGY)
    home.mkdir(parents=True, exist_ok=True)
    return Runtime(spec=spec, engine=get_engine(f"sqlite:///{home / 'ledger.sqlite'}"), market=source,
                   charts=LocalChartStore(home / "charts"), provider=build_provider(spec.template.signal_provider, spec.prompt_template),
                   venue=make_paper_venue(spec, source, get_engine(f"sqlite:///{home / 'venue.sqlite'}")))


def close_of(line: str) -> datetime:
    return (opens(line) + H4).to_pydatetime()


class outcome:  # noqa: N801 - used like a function
    """What a window decided (reason, signal, market context), and on which bars and indicators;
    equal when all are (frames compared NaN-aware, bit for bit)."""

    def __init__(self, a) -> None:
        self.error, self.signal, self.market, self.frame = a.error, a.signal, repr(a.market), a.frame

    def __eq__(self, other) -> bool:
        same_frame = (self.frame is None and other.frame is None) or (
            self.frame is not None and other.frame is not None and self.frame.equals(other.frame))
        return (self.error, self.signal, self.market) == (other.error, other.signal, other.market) and same_frame

    def __repr__(self) -> str:
        return f"outcome({self.error!r}, {self.signal!r}, {self.market})"


def test_windows_before_a_bad_row_trade_as_on_the_clean_file_and_windows_far_after_trade_again(tmp_path):
    """high < low on file line 302 (the bar 2025-04-20T00:00Z). Old code: every window of the file
    was "bad data: … line 302 …". Now: the windows whose bars all closed before it decide exactly
    as on the clean file; the 40 windows whose 40-bar lookback includes it are no-trades naming the
    file and line; the windows after them trade on the bars after it (40 bars ≥ the 34 of
    warm-up), and from the next indicator chunk on (its 80-bar warm-up starts after the bad row)
    exactly as on the clean file again. (A sample of the windows: analysing a subset gives each
    window the frame and signal it gets in a full range, see test_lookahead.)"""
    bad_i = 300
    path = write(tmp_path / "bad" / "BTC_4h.csv", corrupt("high_below_low", ROWS_LONG, bad_i))
    clean_rt = runtime(FileSource(write(tmp_path / "clean" / "BTC_4h.csv", ROWS_LONG)), tmp_path / "h_clean")
    bad_rt = runtime(FileSource(path), tmp_path / "h_bad")
    end_of = {i: close_of(ROWS_LONG[i]) for i in range(len(ROWS_LONG))}  # the window whose newest bar is row i
    assert end_of[bad_i] == utc(2025, 4, 20, 4)
    nxt = frames._chunk_start(pd.Timestamp("2025-06-01T00:00:00Z"), H4)  # the next 512-bar chunk
    assert nxt == pd.Timestamp("2025-05-16T00:00:00Z") and nxt - 80 * H4 > pd.Timestamp("2025-04-20T00:00:00Z")
    before = [100, 150, 200, 250, 290, 297, 298, 299]
    seen = [300, 301, 320, 338, 339]  # newest bar: the bad one … 39 bars after it
    after = [340, 341, 360, 400]  # in the bad row's chunk: indicators restart after it
    far = [i for i in range(len(ROWS_LONG)) if end_of[i] - H4 >= nxt][::40]  # the next chunk
    assert far[0] == 456 and len(far) == 7
    ends = [end_of[i] for i in before + seen + after + far]
    want = {a.window_end: a for a in analysis.analyze(clean_rt, "BTC/USDT", ends, "run-clean", charts=False)}
    got = {a.window_end: a for a in analysis.analyze(bad_rt, "BTC/USDT", ends, "run-bad", charts=False)}
    assert all(w.error is None for w in want.values())

    for i in before + far:
        assert outcome(got[end_of[i]]) == outcome(want[end_of[i]]), i
    assert {got[end_of[i]].signal.action for i in before + far} >= {"buy", "sell"}  # they do trade

    message = f"bad data: {path}: line 302 (open_time 2025-04-20T00:00:00+00:00): high "
    for i in seen:
        a = got[end_of[i]]
        assert a.error.startswith(message) and a.signal.no_trade_reason == a.error, i
        assert a.signal.provider == "pipeline" and a.signal.action == "hold" and a.frame is None

    for i in after:
        a = got[end_of[i]]
        assert a.error is None and a.signal.no_trade_reason is None, (i, a.error)
        assert a.frame.index[0] > pd.Timestamp("2025-04-20T00:00:00Z") and len(a.frame) == LOOKBACK
    # the first window after them: its 40 bars start right after the bad row
    assert got[end_of[340]].frame.index[0] == pd.Timestamp("2025-04-20T04:00:00Z")
    # its indicators restarted there: not the clean file's (a 34-bar warm-up instead of 80+)
    assert not got[end_of[340]].frame.equals(want[end_of[340]].frame)
    assert got[end_of[340]].bars.equals(want[end_of[340]].bars)


# ---------------------------------------------------------------- property: any one corrupted row, any window

PROP_KINDS = ["nan", "high_below_low", "duplicate", "off_grid", "negative_price", "zero_volume", "gap"]
WARM = 80  # bars of warm-up before a chunk's start: 2 × lookback_bars


@pytest.fixture(scope="module")
def prop_world(tmp_path_factory):
    """One clean file and its per-window outcomes (memoised: a window's outcome does not depend on
    the other windows analysed with it), and a counter for the corrupted files (a fresh path each:
    the CSV cache keys on path, mtime and size)."""
    class World(dict):
        def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
            return f"<world {self['root']}>"

    root = tmp_path_factory.mktemp("bad_candles_prop")
    clean_rt = runtime(FileSource(write(root / "clean" / "BTC_4h.csv", ROWS_LONG)), root / "h_clean")
    bad_rt = runtime(FileSource(write(root / "unused" / "BTC_4h.csv", ROWS_LONG)), root / "h_bad")
    return World(root=root, clean_rt=clean_rt, bad_rt=bad_rt, clean={}, n=0)


def _clean_outcomes(world, ends: list[datetime]) -> dict:
    todo = [e for e in ends if e not in world["clean"]]
    if todo:
        for a in analysis.analyze(world["clean_rt"], "BTC/USDT", todo, "run-clean", charts=False):
            world["clean"][a.window_end] = outcome(a)  # frames are copies: later analyses do not change them
    return {e: world["clean"][e] for e in ends}


def _footprint(kind: str, i: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The first and last bar open time the corruption of row ``i`` touches."""
    t = opens(ROWS_LONG[i])
    if kind == "duplicate":  # row i now repeats row i-1's time; the bar of row i is missing
        return opens(ROWS_LONG[i - 1]), t
    if kind == "off_grid":  # row i opens 30 min late; the bar of row i is missing
        return t, t + timedelta(minutes=30)
    return t, t


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(PROP_KINDS), i=st.integers(min_value=1, max_value=len(ROWS_LONG) - 2),
       offsets=st.lists(st.integers(min_value=-3, max_value=LOOKBACK + 3), min_size=3, max_size=6, unique=True),
       others=st.lists(st.integers(min_value=0, max_value=len(ROWS_LONG) - 1), min_size=1, max_size=3, unique=True))
def test_property_each_window_trades_on_what_it_sees_or_is_a_no_trade_naming_file_and_line(prop_world, kind, i, offsets, others):
    """One row corrupted at a random line (NaN, high < low, a duplicate or off-grid timestamp, zero
    volume, a negative price, a gap); windows around it (newest bar 3 before … 43 after it) and
    anywhere. Each window either decides exactly as on the clean file (when the corruption is
    outside the bars it can see: its chunk's warm-up up to its newest bar), or is a recorded no-trade
    naming the file and line (a zero-volume or missing newest bar: the stale-data no-trade naming the
    bar), or trades on bars that start after the bad row (a gap or zero-volume bar: on the bars it has)."""
    world = prop_world
    world["n"] += 1
    path = write(world["root"] / f"bad{world['n']}" / "BTC_4h.csv", corrupt(kind, ROWS_LONG, i))
    rt = dataclasses.replace(world["bad_rt"], market=FileSource(path))
    idx = sorted({j for j in [i + o for o in offsets] + others if 0 <= j < len(ROWS_LONG)})
    ends = [close_of(ROWS_LONG[j]) for j in idx]
    want = _clean_outcomes(world, ends)
    got = {a.window_end: a for a in analysis.analyze(rt, "BTC/USDT", ends, f"run-{world['n']}", charts=False)}
    with session_scope(rt.engine) as s:
        recorded = {e: r.no_trade_reason for e, r in repo.signal_rows(s, rt.spec.name, "BTC/USDT", ends).items()}
    first, last = _footprint(kind, i)
    line = f"{path}: line {i + 2}"
    for e in ends:
        a, newest = got[e], pd.Timestamp(e) - H4
        since = frames._chunk_start(newest, H4) - WARM * H4
        assert recorded[e] == a.signal.no_trade_reason == a.error, (e, recorded[e], a.error)
        if last < since or first > newest:  # the corruption is outside every bar this window can see
            event("unseen: as on the clean file")
            assert outcome(a) == want[e], (kind, i, e)
        elif a.error is not None:
            event(f"seen: no-trade {a.error.split(':')[0]}")
            if kind in ("zero_volume", "gap"):  # no bad row: the data problem named by its bar (or too few bars yet)
                assert (a.error.startswith("stale data: ") and first.isoformat() in a.error
                        or a.error.startswith("warming up: ")), (kind, i, e, a.error)
            else:
                assert line in a.error and a.error.startswith(("bad data: ", "warming up: ")), (kind, i, e, a.error)
        elif kind not in ("zero_volume", "gap"):  # it trades on the bars after the bad row only
            event("seen: trades on the bars after the bad row")
            assert a.frame.index[0] > last and a.signal.provider == "rules", (kind, i, e)
        else:
            event(f"seen: trades over the {kind.replace('_', ' ')} bar")
