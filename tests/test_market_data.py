"""Market data sources on the real sample data (data/ohlcv) and on recorded Binance responses."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import ccxt
import pandas as pd
import pytest

from trading_pipelines.config import DEFAULT_DATA_DIR
from trading_pipelines.stores.market_data import CcxtSource, CsvReplaySource, MarketDataError, validate_ohlcv

FIXTURES = Path(__file__).parent / "fixtures" / "ccxt"
BTC_4H = DEFAULT_DATA_DIR / "BINANCE_BTC-USDT_4h.csv"
UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(scope="module")
def replay() -> CsvReplaySource:
    return CsvReplaySource()


# ---------------------------------------------------------------- CsvReplaySource, real files


def test_btc_4h_file_loads_with_known_rows(replay):
    frame = replay.frame("BTC/USDT", "4h")
    assert frame.shape == (2208, 5)  # data/README.md: 2208 rows
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert frame.index.name == "open_time" and str(frame.index.tz) == "UTC"
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert (frame.dtypes == "float64").all()
    # line 1345 of BINANCE_BTC-USDT_4h.csv: the 2025-10-10 20:00Z flash-crash bar
    crash = frame.loc[pd.Timestamp("2025-10-10T20:00:00Z")]
    assert crash.to_dict() == {"open": 116661.5, "high": 117214.64, "low": 102000.0, "close": 112774.5, "volume": 41734.73429}
    assert frame.index[0] == pd.Timestamp("2025-03-01T00:00:00Z") and frame["open"].iloc[0] == 84349.95
    assert frame.index[-1] == pd.Timestamp("2026-03-03T20:00:00Z") and frame["close"].iloc[-1] == 68338.0


def test_every_sample_file_passes_validation(replay):
    rows = {
        ("BTC/USDT", "4h"): 2208, ("ETH/USDT", "4h"): 2208, ("SOL/USDT", "4h"): 2466,
        ("BTC/USDT", "1h"): 2520, ("ETH/USDT", "1h"): 2520, ("SPY", "1d"): 1425, ("AAPL", "1d"): 768,
    }  # fmt: skip
    assert {k: len(replay.frame(*k)) for k in rows} == rows


def test_bars_ending_on_a_bar_boundary_include_the_bar_closing_at_end(replay):
    bars = replay.bars("BTC/USDT", "4h", end=utc(2025, 10, 11), limit=3)
    assert list(bars.index) == [pd.Timestamp(f"2025-10-10T{h}:00:00Z") for h in ("12", "16", "20")]
    # the last bar (opened 20:00) closes exactly at end, 00:00
    assert bars.index[-1] + timedelta(hours=4) == pd.Timestamp("2025-10-11T00:00:00Z")
    assert bars["close"].iloc[-1] == 112774.5


def test_bars_ending_between_boundaries_exclude_the_open_bar(replay):
    # at 23:59 the 20:00 bar is still open: the newest bar is the 16:00 one, closing 20:00
    bars = replay.bars("BTC/USDT", "4h", end=utc(2025, 10, 10, 23, 59), limit=2)
    assert list(bars.index) == [pd.Timestamp("2025-10-10T12:00:00Z"), pd.Timestamp("2025-10-10T16:00:00Z")]
    assert bars["close"].iloc[-1] == 116661.5
    # one microsecond before the boundary is still before the 20:00 bar's close
    just_before = replay.bars("BTC/USDT", "4h", end=utc(2025, 10, 11) - timedelta(microseconds=1), limit=1)
    assert just_before.index[-1] == pd.Timestamp("2025-10-10T16:00:00Z")


def test_bars_end_in_another_timezone_is_the_same_instant(replay):
    cest = timezone(timedelta(hours=2))
    a = replay.bars("BTC/USDT", "4h", end=datetime(2025, 10, 11, 2, 0, tzinfo=cest), limit=5)
    b = replay.bars("BTC/USDT", "4h", end=utc(2025, 10, 11), limit=5)
    pd.testing.assert_frame_equal(a, b)


def test_bars_near_the_start_of_the_data_return_fewer_rows(replay):
    assert len(replay.bars("BTC/USDT", "4h", end=utc(2025, 3, 1, 8), limit=10)) == 2  # 00:00 and 04:00
    assert replay.bars("BTC/USDT", "4h", end=utc(2025, 3, 1, 3), limit=10).empty


def test_bars_between_keeps_only_bars_closed_by_end(replay):
    bars = replay.bars_between("BTC/USDT", "4h", start=utc(2025, 10, 10, 14), end=utc(2025, 10, 11, 6))
    # 14:00 is mid-bar: the first bar opening at or after it is 16:00; the 04:00 bar closes 08:00 > end
    assert list(bars.index) == [pd.Timestamp(t) for t in ("2025-10-10T16:00Z", "2025-10-10T20:00Z", "2025-10-11T00:00Z")]
    assert bars["low"].min() == 102000.0


def test_last_closed_bar_end_is_last_open_plus_timeframe(replay):
    assert replay.last_closed_bar_end("BTC/USDT", "4h") == utc(2026, 3, 4)
    assert replay.last_closed_bar_end("SPY", "1d") == utc(2020, 8, 29)


def test_callers_cannot_corrupt_the_cached_file(replay):
    bars = replay.bars("BTC/USDT", "4h", end=utc(2025, 10, 11), limit=3)
    bars["close"] = 0.0
    whole = replay.frame("BTC/USDT", "4h")
    whole["close"] = 0.0
    assert replay.bars("BTC/USDT", "4h", end=utc(2025, 10, 11), limit=1)["close"].iloc[0] == 112774.5


def test_naive_end_and_bad_limit_are_rejected(replay):
    with pytest.raises(MarketDataError, match="timezone-aware"):
        replay.bars("BTC/USDT", "4h", end=datetime(2025, 10, 11), limit=3)
    with pytest.raises(MarketDataError, match="limit"):
        replay.bars("BTC/USDT", "4h", end=utc(2025, 10, 11), limit=0)


def test_unknown_symbol_and_timeframe_are_named(replay):
    with pytest.raises(MarketDataError, match=r"unknown instrument 'DOGE/USDT'"):
        replay.bars("DOGE/USDT", "4h", end=utc(2025, 10, 11), limit=3)
    with pytest.raises(MarketDataError, match=r"unknown timeframe '15m'"):
        replay.bars("BTC/USDT", "15m", end=utc(2025, 10, 11), limit=3)


def test_catalogued_instrument_without_a_file_names_the_file(replay):
    with pytest.raises(MarketDataError, match=r"BINANCE_SOL-USDT_1h\.csv: data file not found"):
        replay.frame("SOL/USDT", "1h")


# ---------------------------------------------------------------- CsvReplaySource, broken files

REAL_LINES = BTC_4H.read_text().splitlines()[:6]  # header + the first five real bars


def write_btc_4h(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "BINANCE_BTC-USDT_4h.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def edit(line: str, **fields: str) -> str:
    names = REAL_LINES[0].split(",")
    values = dict(zip(names, line.split(",")))
    values.update(fields)
    return ",".join(values[n] for n in names)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        pytest.param(
            [REAL_LINES[0], REAL_LINES[1], edit(REAL_LINES[2], close=""), *REAL_LINES[3:]],
            r"line 3 \(open_time 2025-03-01T04:00:00\+00:00\): close is missing",
            id="nan-cell",
        ),
        pytest.param(
            [REAL_LINES[0], REAL_LINES[1], REAL_LINES[3], REAL_LINES[2], *REAL_LINES[4:]],
            r"line 4 \(open_time 2025-03-01T04:00:00\+00:00\): timestamp out of order",
            id="out-of-order",
        ),
        pytest.param(
            [*REAL_LINES[:3], REAL_LINES[2], *REAL_LINES[3:]],
            r"line 4 \(open_time 2025-03-01T04:00:00\+00:00\): duplicate timestamp",
            id="duplicate",
        ),
        pytest.param(
            # 08:00 bar: open 84740.16, close 84632.79, low 84382.62 -> high set below the low
            [*REAL_LINES[:3], edit(REAL_LINES[3], high="84300.0"), *REAL_LINES[4:]],
            r"line 4 \(open_time 2025-03-01T08:00:00\+00:00\): high 84300.0 < max\(open 84740.16, close 84632.79\)",
            id="high-below-low",
        ),
        pytest.param(
            [*REAL_LINES[:3], edit(REAL_LINES[3], low="84700.0"), *REAL_LINES[4:]],
            r"line 4 .*: low 84700.0 > min\(open 84740.16, close 84632.79\)",
            id="low-above-body",
        ),
        pytest.param(
            [*REAL_LINES[:5], edit(REAL_LINES[5], low="0")],
            r"line 6 .*: non-positive price",
            id="zero-price",
        ),
        pytest.param(
            [*REAL_LINES[:2], edit(REAL_LINES[2], volume="-1.5"), *REAL_LINES[3:]],
            r"line 3 .*: negative volume -1.5",
            id="negative-volume",
        ),
        pytest.param(
            ["time,open,high,low,close,volume", *REAL_LINES[1:]],
            r"wrong header \['time', 'open', 'high', 'low', 'close', 'volume'\]",
            id="wrong-header",
        ),
        pytest.param(
            [REAL_LINES[0], edit(REAL_LINES[1], timestamp="yesterday"), *REAL_LINES[2:]],
            r"line 2: bad timestamp 'yesterday'",
            id="bad-timestamp",
        ),
    ],
)
def test_broken_csv_raises_naming_file_and_row(tmp_path, lines, message):
    path = write_btc_4h(tmp_path, lines)
    with pytest.raises(MarketDataError, match=message) as err:
        CsvReplaySource(data_dir=tmp_path).bars("BTC/USDT", "4h", end=utc(2025, 3, 2), limit=10)
    assert str(err.value).startswith(str(path))


def test_valid_tmp_file_loads_and_a_rewrite_is_reloaded(tmp_path):
    write_btc_4h(tmp_path, REAL_LINES)
    source = CsvReplaySource(data_dir=tmp_path)
    assert source.bars("BTC/USDT", "4h", end=utc(2025, 3, 2), limit=10)["close"].tolist() == [
        85330.84, 84740.15, 84632.79, 84800.0, float(REAL_LINES[5].split(",")[4])
    ]
    write_btc_4h(tmp_path, [REAL_LINES[0], REAL_LINES[2], REAL_LINES[1]])  # cache must not hide this
    with pytest.raises(MarketDataError, match="out of order"):
        source.frame("BTC/USDT", "4h")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(MarketDataError, match=r"BINANCE_BTC-USDT_4h\.csv: data file not found"):
        CsvReplaySource(data_dir=tmp_path).frame("BTC/USDT", "4h")


def test_validate_ohlcv_needs_tz_aware_index():
    frame = pd.DataFrame({c: [1.0] for c in ("open", "high", "low", "close", "volume")}, index=pd.DatetimeIndex(["2025-01-01"]))
    with pytest.raises(MarketDataError, match="here: index must be a tz-aware"):
        validate_ohlcv(frame, "here")


# ---------------------------------------------------------------- CcxtSource on recorded Binance data

RESPONSES = json.loads((FIXTURES / "response_binance.json").read_text())
SPOT_1H = next(c for c in RESPONSES["methods"]["fetchOHLCV"] if c["description"] == "Spot OHLCV with since and limit")
MARKETS = json.loads((FIXTURES / "markets_binance.json").read_text())
# recorded bars open 2024-01-30 16:00, 17:00, 18:00 UTC; the third closes at 19:00
THIRD_BAR_CLOSE = utc(2024, 1, 30, 19)


class RecordedHttp:
    """Stands in for ``exchange.fetch`` (ccxt's HTTP layer): each call pops the next item of
    ``script`` (an exception to raise, or ``None`` for the recorded response) and logs the URL."""

    def __init__(self, response: list, script: list | None = None) -> None:
        self.response = response
        self.script = list(script or [])
        self.urls: list[str] = []

    def __call__(self, url, method="GET", headers=None, body=None):
        self.urls.append(url)
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        return json.loads(json.dumps(self.response))


def binance_with(http: RecordedHttp) -> ccxt.binance:
    exchange = ccxt.binance()
    exchange.set_markets(json.loads(json.dumps(MARKETS)))
    exchange.fetch = http
    return exchange


def test_ccxt_bars_parse_the_recorded_binance_klines():
    """HTTP layer replaced by the recorded fetchOHLCV response (tests/fixtures/ccxt/response_binance.json);
    ccxt's real request building and kline parsing run."""
    http = RecordedHttp(SPOT_1H["httpResponse"])
    bars = CcxtSource(binance_with(http)).bars("BTC/USDT", "1h", end=THIRD_BAR_CLOSE, limit=3)

    expected = SPOT_1H["parsedResponse"]
    assert [int(t.timestamp() * 1000) for t in bars.index] == [row[0] for row in expected]
    assert bars.to_numpy().tolist() == [[float(v) for v in row[1:]] for row in expected]
    assert bars.index.name == "open_time" and str(bars.index.tz) == "UTC"
    # worked request: end 19:00 floored to the hour minus 3 bars = 16:00 = 1706630400000 ms
    assert len(http.urls) == 1
    assert "symbol=BTCUSDT" in http.urls[0] and "interval=1h" in http.urls[0]
    assert "startTime=1706630400000" in http.urls[0] and "limit=3" in http.urls[0]


def test_ccxt_drops_the_bar_still_open_at_end():
    """HTTP layer replaced by the recorded fetchOHLCV response."""
    http = RecordedHttp(SPOT_1H["httpResponse"])
    source = CcxtSource(binance_with(http))
    bars = source.bars("BTC/USDT", "1h", end=utc(2024, 1, 30, 18, 40), limit=3)
    # the 18:00 bar closes at 19:00 > 18:40: only the 16:00 and 17:00 bars remain
    assert list(bars.index) == [pd.Timestamp("2024-01-30T16:00Z"), pd.Timestamp("2024-01-30T17:00Z")]
    assert bars["close"].tolist() == [43488.71, 43374.8]


def test_ccxt_last_closed_bar_end_ignores_the_open_bar():
    """HTTP layer replaced by the recorded response; the exchange clock is pinned to 18:40 UTC."""
    exchange = binance_with(RecordedHttp(SPOT_1H["httpResponse"]))
    exchange.milliseconds = lambda: int(utc(2024, 1, 30, 18, 40).timestamp() * 1000)
    assert CcxtSource(exchange).last_closed_bar_end("BTC/USDT", "1h") == utc(2024, 1, 30, 18)


def test_ccxt_retries_a_network_error_then_succeeds():
    """HTTP layer replaced: the first call raises ccxt.NetworkError, the second returns the recording.
    Backoff wait set to 0 to keep the test fast."""
    http = RecordedHttp(SPOT_1H["httpResponse"], script=[ccxt.NetworkError("connection reset"), None])
    bars = CcxtSource(binance_with(http), retry_initial_wait_s=0).bars("BTC/USDT", "1h", end=THIRD_BAR_CLOSE, limit=3)
    assert len(http.urls) == 2
    assert bars["close"].tolist() == [43488.71, 43374.8, 43361.11]


def test_ccxt_gives_up_after_four_attempts():
    """HTTP layer replaced: every call raises ccxt.RequestTimeout."""
    http = RecordedHttp(SPOT_1H["httpResponse"], script=[ccxt.RequestTimeout("timeout")] * 10)
    with pytest.raises(ccxt.RequestTimeout):
        CcxtSource(binance_with(http), retry_initial_wait_s=0).bars("BTC/USDT", "1h", end=THIRD_BAR_CLOSE, limit=3)
    assert len(http.urls) == 4


def test_ccxt_does_not_retry_a_non_transient_error():
    """HTTP layer replaced: the call raises ccxt.AuthenticationError, which is not retried."""
    http = RecordedHttp(SPOT_1H["httpResponse"], script=[ccxt.AuthenticationError("bad key")])
    with pytest.raises(ccxt.AuthenticationError):
        CcxtSource(binance_with(http), retry_initial_wait_s=0).bars("BTC/USDT", "1h", end=THIRD_BAR_CLOSE, limit=3)
    assert len(http.urls) == 1


def test_ccxt_validates_the_returned_bars():
    """HTTP layer replaced by the recorded response with the second kline's high set below its low."""
    broken = json.loads(json.dumps(SPOT_1H["httpResponse"]))
    broken[1][2] = "43000.00000000"  # low is 43084
    with pytest.raises(MarketDataError, match=r"binance BTC/USDT 1h: row 1 \(open_time 2024-01-30T17:00:00\+00:00\): high 43000.0"):
        CcxtSource(binance_with(RecordedHttp(broken))).bars("BTC/USDT", "1h", end=THIRD_BAR_CLOSE, limit=3)


def test_ccxt_unknown_symbol_is_named_without_a_request():
    """HTTP layer replaced; ccxt rejects the symbol from the recorded markets before any request."""
    http = RecordedHttp(SPOT_1H["httpResponse"])
    with pytest.raises(MarketDataError, match=r"unknown symbol 'NOPE/USDT'"):
        CcxtSource(binance_with(http)).bars("NOPE/USDT", "1h", end=THIRD_BAR_CLOSE, limit=3)
    assert http.urls == []


def test_ccxt_source_from_an_exchange_id():
    source = CcxtSource("binance")
    assert isinstance(source.exchange, ccxt.binance) and source.exchange.enableRateLimit is True
    with pytest.raises(MarketDataError, match="unknown ccxt exchange id 'nope'"):
        CcxtSource("nope")


# ---------------------------------------------------------------- timestamps off the timeframe grid


def _bars_at(*stamps: str) -> list[str]:
    return [REAL_LINES[0], *(edit(line, timestamp=ts) for ts, line in zip(stamps, REAL_LINES[1:]))]


def test_off_grid_timestamp_names_line_and_timestamp(tmp_path):
    path = write_btc_4h(tmp_path, _bars_at("2026-01-01T00:00:00Z", "2026-01-01T04:30:00Z", "2026-01-01T08:00:00Z"))
    source = CsvReplaySource(data_dir=tmp_path)
    with pytest.raises(MarketDataError) as err:
        source.bars("BTC/USDT", "4h", end=utc(2026, 1, 2), limit=3)
    text = str(err.value)
    assert text.startswith(f"{path}: line 3: timestamp '2026-01-01T04:30:00Z'")
    assert "not on the 4h grid" in text and "2026-01-01T04:00:00+00:00 or 2026-01-01T08:00:00+00:00" in text
    # the refusal is not cached away, and a fixed file loads
    with pytest.raises(MarketDataError, match="line 3"):
        source.frame("BTC/USDT", "4h")
    write_btc_4h(tmp_path, _bars_at("2026-01-01T00:00:00Z", "2026-01-01T04:00:00Z", "2026-01-01T08:00:00Z"))
    assert len(source.frame("BTC/USDT", "4h")) == 3


def test_off_grid_1h_and_1d(tmp_path):
    (tmp_path / "BINANCE_BTC-USDT_1h.csv").write_text("\n".join(_bars_at("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", "2026-01-01T02:00:01Z")) + "\n")
    with pytest.raises(MarketDataError, match=r"line 4: timestamp '2026-01-01T02:00:01Z' .*not on the 1h grid"):
        CsvReplaySource(data_dir=tmp_path).frame("BTC/USDT", "1h")
    # 1d: midnight UTC; 14:30Z (a US open) is off the grid, as is midnight New York time
    spy = (DEFAULT_DATA_DIR / "NYSEARCA_SPY_1d.csv").read_text().splitlines()[:4]
    for stamp in ("2015-01-05T14:30:00Z", "2015-01-05T00:00:00-05:00"):
        rows = [spy[0], spy[1], spy[2].replace("2015-01-05T00:00:00Z", stamp), spy[3]]
        (tmp_path / "NYSEARCA_SPY_1d.csv").write_text("\n".join(rows) + "\n")
        with pytest.raises(MarketDataError, match=rf"NYSEARCA_SPY_1d\.csv: line 3: timestamp '{stamp}' .*not on the 1d grid"):
            CsvReplaySource(data_dir=tmp_path).frame("SPY", "1d")


def test_grid_is_checked_only_with_a_timeframe(tmp_path):
    from trading_pipelines.stores.market_data import load_ohlcv_csv

    path = write_btc_4h(tmp_path, _bars_at("2026-01-01T00:00:00Z", "2026-01-01T04:30:00Z"))
    assert len(load_ohlcv_csv(path)) == 2  # no timeframe given: no grid to check
    with pytest.raises(MarketDataError, match="line 3"):
        load_ohlcv_csv(path, "4h")
