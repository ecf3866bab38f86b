"""Market data sources: OHLCV bars, point in time.

Every source returns the same frame shape (see :func:`validate_ohlcv`):

* index ``open_time``: tz-aware UTC :class:`pandas.DatetimeIndex`, strictly increasing; a bar
  opened at ``open_time`` closes at ``open_time + timeframe``;
* float columns ``open``, ``high``, ``low``, ``close`` (quote currency) and ``volume`` (base
  quantity for crypto, shares for equities).

Point in time: a source never returns a bar whose close time is after the ``end`` it was asked
for, so a decision for a window can only see bars that had closed when the window ended.

* :class:`CsvReplaySource` replays the sample files in ``data/ohlcv`` (``config.DEFAULT_DATA_DIR``),
  or the absolute ``data_file`` paths of user catalogues. A bad row of a file (NaN, high < low, a
  duplicate or off-grid timestamp…) spoils only the requests whose span contains it
  (:class:`BadRowsError`, naming file, line and reason); the rest of the file serves as usual.
* :class:`CcxtSource` reads a live exchange through ccxt, retrying transient network errors.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from datetime import datetime, timedelta, timezone
from pathlib import Path

import ccxt
import numpy as np
import pandas as pd
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from trading_pipelines.config import DEFAULT_DATA_DIR, TIMEFRAMES, instrument_data_file, instruments_files

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
CSV_HEADER: tuple[str, ...] = ("timestamp", *OHLCV_COLUMNS)
TRANSIENT_CCXT_ERRORS: tuple[type[Exception], ...] = (ccxt.NetworkError, ccxt.RequestTimeout, ccxt.ExchangeNotAvailable)


class MarketDataError(ValueError):
    """Market data is missing or invalid. The message names the source (file, exchange) and the
    first offending row/timestamp or the unknown symbol/timeframe (bad rows of a replay CSV:
    :class:`BadRowsError`)."""


# ---------------------------------------------------------------- helpers


def timeframe_delta(timeframe: str) -> timedelta:
    """Bar duration of ``timeframe`` (one of ``config.TIMEFRAMES``: "1h", "4h", "1d").

    Raises :class:`MarketDataError` for an unknown timeframe.
    """
    try:
        return TIMEFRAMES[timeframe]
    except KeyError:
        raise MarketDataError(f"unknown timeframe {timeframe!r} (known: {sorted(TIMEFRAMES)})") from None


def _utc(ts: datetime, name: str) -> pd.Timestamp:
    if not isinstance(ts, datetime):
        raise MarketDataError(f"{name} must be a datetime, got {type(ts).__name__}")
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise MarketDataError(f"{name} must be timezone-aware (UTC), got naive {ts.isoformat()}")
    return pd.Timestamp(ts).tz_convert("UTC")


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise MarketDataError(f"limit must be a positive int, got {limit!r}")


def validate_ohlcv(df: pd.DataFrame, where: str, *, line_offset: int | None = None) -> pd.DataFrame:
    """Check an OHLCV frame and return it in canonical form.

    ``df`` must have a tz-aware :class:`~pandas.DatetimeIndex` of bar open times and the columns
    ``open, high, low, close, volume`` (extra columns are dropped). The returned frame has index
    ``open_time`` (UTC) and ``float64`` columns in that order.

    Raises :class:`MarketDataError` prefixed with ``where`` (a file path, ``exchange symbol
    timeframe``...) naming the first offending row and its ``open_time`` for: missing columns,
    NaN or non-numeric cells, duplicate or out-of-order timestamps, ``high < max(open, close)``,
    ``low > min(open, close)``, non-positive prices, negative volume. Rows are 0-based positions,
    or file line numbers (``position + line_offset``) when ``line_offset`` is given.
    """

    def at(pos: int) -> str:
        loc = f"line {pos + line_offset}" if line_offset is not None else f"row {pos}"
        return f"{where}: {loc} (open_time {df.index[pos].isoformat()})"

    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise MarketDataError(f"{where}: missing columns {missing} (need {list(OHLCV_COLUMNS)}, got {list(df.columns)})")
    if not isinstance(df.index, pd.DatetimeIndex) or df.index.tz is None:
        raise MarketDataError(f"{where}: index must be a tz-aware DatetimeIndex of bar open times")
    out = pd.DataFrame(index=df.index.tz_convert("UTC").rename("open_time"))
    for col in OHLCV_COLUMNS:
        values = pd.to_numeric(df[col], errors="coerce").astype("float64")
        bad = values.isna().to_numpy().nonzero()[0]
        if len(bad):
            raise MarketDataError(f"{at(int(bad[0]))}: {col} is missing or not a number ({df[col].iloc[bad[0]]!r})")
        out[col] = values.to_numpy()

    step = np.diff(out.index.asi8)
    bad = (step <= 0).nonzero()[0]
    if len(bad):
        pos = int(bad[0]) + 1
        kind = "duplicate timestamp" if step[pos - 1] == 0 else "timestamp out of order"
        raise MarketDataError(f"{at(pos)}: {kind} (previous row opens {out.index[pos - 1].isoformat()})")

    o, h, lo, c, v = (out[col] for col in OHLCV_COLUMNS)
    checks = (
        ((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), lambda p: f"non-positive price (open {o.iloc[p]}, high {h.iloc[p]}, low {lo.iloc[p]}, close {c.iloc[p]})"),
        (h < o.combine(c, max), lambda p: f"high {h.iloc[p]} < max(open {o.iloc[p]}, close {c.iloc[p]})"),
        (lo > o.combine(c, min), lambda p: f"low {lo.iloc[p]} > min(open {o.iloc[p]}, close {c.iloc[p]})"),
        (v < 0, lambda p: f"negative volume {v.iloc[p]}"),
    )
    for mask, describe in checks:
        bad = mask.to_numpy().nonzero()[0]
        if len(bad):
            pos = int(bad[0])
            raise MarketDataError(f"{at(pos)}: {describe(pos)}")
    return out


def _to_datetime(ts: pd.Timestamp) -> datetime:
    return ts.to_pydatetime().astimezone(timezone.utc)


# ---------------------------------------------------------------- interface


class MarketDataSource(ABC):
    """Where OHLCV bars come from. All times are tz-aware UTC; naive datetimes raise
    :class:`MarketDataError`. Frames have the shape described in :func:`validate_ohlcv`."""

    @abstractmethod
    def bars(self, symbol: str, timeframe: str, end: datetime, limit: int) -> pd.DataFrame:
        """At most ``limit`` most recent bars whose close time (``open_time + timeframe``) is <= ``end``.

        Never a bar that closes after ``end``. Fewer rows (possibly none) when the data starts later.
        Raises :class:`MarketDataError` for an unknown symbol/timeframe or invalid data
        (:class:`BadRowsError` when bad rows of a replay file lie in the span the bars would cover:
        from the oldest returned bar, or the start of the data when fewer than ``limit`` exist, to
        the bar closing at ``end``).
        """

    @abstractmethod
    def bars_between(self, symbol: str, timeframe: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Bars with ``open_time >= start`` and close time <= ``end`` (e.g. the bars after a window,
        on which the paper venue fills orders). Raises :class:`MarketDataError` like :meth:`bars`."""

    @abstractmethod
    def last_closed_bar_end(self, symbol: str, timeframe: str) -> datetime | None:
        """Close time (UTC) of the newest closed bar the source has; ``None`` if unknown."""


# ---------------------------------------------------------------- CSV replay

_NS_MIN, _NS_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max


class BadRow:
    """One line of a replay CSV that is not a usable bar.

    ``line``: 1-based file line (the header is line 1); ``message``: ``"<file>: line <n> …: <reason>"``;
    ``first_ns``/``last_ns``: the bar open times (ns since the UTC epoch, inclusive) the line may
    stand for. A line with a readable, in-order timestamp stands for its own bar (first = last =
    its open time); a line whose timestamp is unreadable or out of order stands for any bar between
    the good rows around it (exclusive), unbounded at either end of the file."""

    __slots__ = ("first_ns", "last_ns", "line", "message")

    def __init__(self, line: int, message: str, first_ns: int, last_ns: int) -> None:
        self.line, self.message, self.first_ns, self.last_ns = line, message, first_ns, last_ns

    def __repr__(self) -> str:
        return f"BadRow({self.message!r})"


class BadRowsError(MarketDataError):
    """Bars were asked for over a span that contains (or is cut by) bad rows of a replay CSV.

    ``rows``: the :class:`BadRow` s in the span, in file order. The message is the first row's
    (``"<file>: line <n> (open_time …): <reason>"``), followed by the count and lines of the others."""

    def __init__(self, rows: tuple[BadRow, ...] | list[BadRow]) -> None:
        self.rows = tuple(rows)
        text = self.rows[0].message
        if len(self.rows) > 1:
            more = [str(r.line) for r in self.rows[1:11]]
            text += (f" (and {len(self.rows) - 1} more bad row{'s' if len(self.rows) > 2 else ''}: line"
                     f"{'s' if len(more) > 1 else ''} {', '.join(more)}{', …' if len(self.rows) > 11 else ''})")
        super().__init__(text)


class _CsvData:
    """A parsed replay CSV: the good bars (the :func:`validate_ohlcv` shape, strictly increasing)
    and the bad rows, with the time spans they may stand for (see :class:`BadRow`)."""

    def __init__(self, frame: pd.DataFrame, bad: list[BadRow]) -> None:
        self.frame = frame
        self.bad = tuple(bad)
        self._first = np.array([b.first_ns for b in bad], dtype=np.int64)
        self._last = np.array([b.last_ns for b in bad], dtype=np.int64)

    def bad_in(self, first: pd.Timestamp | None, last: pd.Timestamp) -> tuple[BadRow, ...]:
        """The bad rows that may stand for a bar opening in ``[first, last]`` (``first`` None: from
        the start of the file)."""
        if not self.bad:
            return ()
        lo = _NS_MIN if first is None else first.as_unit("ns").value
        hi = last.as_unit("ns").value
        if lo > hi:
            return ()
        hit = ((self._first <= hi) & (self._last >= lo)).nonzero()[0]
        return tuple(self.bad[i] for i in hit)

    def strict(self) -> pd.DataFrame:
        """The frame, or :class:`BadRowsError` listing every bad row of the file."""
        if self.bad:
            raise BadRowsError(self.bad)
        return self.frame


_CSV_CACHE: dict[tuple[str, int, int, str], _CsvData] = {}
_CSV_LOCK = threading.Lock()


def load_ohlcv_csv(path: Path, timeframe: str | None = None) -> pd.DataFrame:
    """Read and validate one replay CSV (header ``timestamp,open,high,low,close,volume``,
    ISO-8601 UTC bar-open timestamps). With ``timeframe``, every timestamp must also lie on that
    timeframe's grid (see :func:`check_on_grid`). Cached per process by (path, mtime, size,
    timeframe); returns a copy of the whole file.

    Raises :class:`MarketDataError` naming the file (and line/timestamp) for a missing file,
    a wrong header or an unreadable CSV, and :class:`BadRowsError` (a :class:`MarketDataError`)
    naming the first bad row's line and reason when any row is bad (see :func:`read_ohlcv_csv`).
    """
    return read_ohlcv_csv(Path(path), timeframe).strict().copy()


def check_on_grid(index: pd.DatetimeIndex, timeframe: str) -> int | None:
    """Position of the first bar open time of ``index`` (UTC) that is not on ``timeframe``'s grid,
    else ``None``. The grid: multiples of the bar duration from the UTC epoch (1h: whole hours;
    4h: 00:00, 04:00, … UTC; 1d: midnight UTC)."""
    step_ns = int(timeframe_delta(timeframe).total_seconds()) * 1_000_000_000
    off = (index.as_unit("ns").asi8 % step_ns).nonzero()[0]  # asi8 counts from the UTC epoch
    return int(off[0]) if len(off) else None


def _grid_hint(ts: pd.Timestamp, timeframe: str) -> str:
    tf = timeframe_delta(timeframe)
    lo = ts.floor(tf)
    grid = "midnight UTC" if timeframe == "1d" else f"every {timeframe} from 00:00 UTC"
    return f"{timeframe} bars open at {grid}; nearest: {lo.isoformat()} or {(lo + tf).isoformat()}"


def read_ohlcv_csv(path: Path, timeframe: str | None = None) -> _CsvData:
    """The parsed replay CSV at ``path``, shared by all callers (slice or copy its frame, never
    mutate it). Cached per process by (path, mtime, size, timeframe).

    Whole-file problems raise :class:`MarketDataError` naming the file: not found, unreadable,
    wrong header. Row problems do not: each bad row is kept aside with its file line and reason,
    and the other rows are the frame. A row is bad for: an unreadable timestamp; a duplicate or
    out-of-order timestamp (the later line of a duplicate; a row later than the two after it);
    with ``timeframe``, a timestamp off its grid; a missing, non-numeric or infinite cell; a
    non-positive price; ``high < max(open, close)``; ``low > min(open, close)``; a negative volume.
    Zero volume is not bad (a placeholder bar: the analysis decides). Blank lines are skipped."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MarketDataError(f"{path}: data file not found") from None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, timeframe or "")
    with _CSV_LOCK:
        cached = _CSV_CACHE.get(key)
    if cached is not None:
        return cached
    data = _parse_csv(path, timeframe)
    with _CSV_LOCK:
        _CSV_CACHE[key] = data
    return data


def _cell(value) -> str:
    """A CSV cell as a message shows it: ``empty``, ``'abc'``, ``inf``."""
    if isinstance(value, str):
        return repr(value)
    return "empty" if pd.isna(value) else repr(float(value))


def _parse_csv(path: Path, timeframe: str | None) -> _CsvData:
    try:
        raw = pd.read_csv(path, dtype={"timestamp": str}, skip_blank_lines=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise MarketDataError(f"{path}: cannot read CSV: {e}") from None
    if tuple(raw.columns) != CSV_HEADER:
        raise MarketDataError(f"{path}: wrong header {list(raw.columns)} (expected {','.join(CSV_HEADER)})")
    lines = np.arange(len(raw)) + 2  # file lines: the header is line 1
    blank = raw.isna().all(axis=1).to_numpy()
    if blank.any():
        raw, lines = raw[~blank].reset_index(drop=True), lines[~blank]
    n = len(raw)
    stamps = pd.DatetimeIndex(pd.to_datetime(raw["timestamp"], utc=True, format="ISO8601", errors="coerce"))
    t = stamps.as_unit("ns").asi8
    readable = ~stamps.isna()

    def iso(i: int) -> str:
        return stamps[i].isoformat()

    # position -> (message, what it may stand for: "own" bar, the grid "slot" it opens in, or "between" its good neighbours)
    bad: dict[int, tuple[str, str]] = {}
    in_order = readable.copy()
    if not (readable.all() and (np.diff(t) > 0).all()):  # the usual file skips the walk
        idx = readable.nonzero()[0]
        last = -1  # position of the last in-order row
        for k, i in enumerate(idx):
            if last >= 0 and t[i] <= t[last]:
                dup = t[i] == t[last]
                kind = "duplicate timestamp" if dup else "timestamp out of order"
                bad[i] = (f"{path}: line {lines[i]} (open_time {iso(i)}): {kind} (previous row opens {iso(last)})",
                          "own" if dup else "between")
                in_order[i] = False
                continue
            nxt = idx[k + 1:k + 3]  # a row later than the next two (themselves in order) is the one out of place
            if len(nxt) and t[i] >= t[nxt[0]] and (last < 0 or t[nxt[0]] > t[last]) and (len(nxt) < 2 or t[i] >= t[nxt[1]]):
                bad[i] = (f"{path}: line {lines[i]} (open_time {iso(i)}): timestamp out of order "
                          f"(not before the next row, which opens {iso(nxt[0])})", "between")
                in_order[i] = False
                continue
            last = i
        for i in (~readable).nonzero()[0]:
            bad[i] = (f"{path}: line {lines[i]}: bad timestamp {raw['timestamp'].iloc[i]!r} (need ISO-8601 UTC)", "between")
    step_ns = int(timeframe_delta(timeframe).total_seconds()) * 1_000_000_000 if timeframe is not None else 1
    if timeframe is not None:
        for i in (in_order & (t % step_ns != 0)).nonzero()[0]:
            bad[i] = (f"{path}: line {lines[i]}: timestamp {raw['timestamp'].iloc[i]!r} (open_time {iso(i)}) "
                      f"is not on the {timeframe} grid ({_grid_hint(stamps[i], timeframe)})", "slot")
    values = {col: pd.to_numeric(raw[col], errors="coerce").astype("float64").to_numpy() for col in OHLCV_COLUMNS}
    o, h, lo, c, v = (values[col] for col in OHLCV_COLUMNS)
    with np.errstate(invalid="ignore"):
        checks = [(~np.isfinite(values[col]), lambda p, col=col: f"{col} is missing or not a number ({_cell(raw[col].iloc[p])})")
                  for col in OHLCV_COLUMNS]
        checks += [
            ((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), lambda p: f"non-positive price (open {o[p]}, high {h[p]}, low {lo[p]}, close {c[p]})"),
            (h < np.maximum(o, c), lambda p: f"high {h[p]} < max(open {o[p]}, close {c[p]})"),
            (lo > np.minimum(o, c), lambda p: f"low {lo[p]} > min(open {o[p]}, close {c[p]})"),
            (v < 0, lambda p: f"negative volume {v[p]}"),
        ]
    for mask, describe in checks:
        for i in (mask & in_order).nonzero()[0]:
            if i not in bad:
                bad[i] = (f"{path}: line {lines[i]} (open_time {iso(i)}): {describe(i)}", "own")
    good = in_order.copy()
    good[list(bad)] = False
    frame = pd.DataFrame({col: values[col][good] for col in OHLCV_COLUMNS},
                         index=stamps[good].tz_convert("UTC").rename("open_time"))
    good_pos = good.nonzero()[0]
    rows = []
    for i in sorted(bad):
        message, stands_for = bad[i]
        if stands_for == "own":
            first = last_ = int(t[i])
        elif stands_for == "slot":  # an off-grid time: the bar of the grid slot it opens in
            first, last_ = int(t[i]) - int(t[i]) % step_ns, int(t[i])
        else:  # somewhere between the good rows around it
            k = int(np.searchsorted(good_pos, i))
            first = int(t[good_pos[k - 1]]) + 1 if k > 0 else _NS_MIN
            last_ = int(t[good_pos[k]]) - 1 if k < len(good_pos) else _NS_MAX
        rows.append(BadRow(int(lines[i]), message, first, last_))
    return _CsvData(frame, rows)


class CsvReplaySource(MarketDataSource):
    """Replays the sample CSVs in ``data_dir``; the file of an instrument comes from the catalogue
    (``config.instrument_data_file``): a name relative to ``data_dir`` (e.g.
    ``BINANCE_BTC-USDT_4h.csv``) or an absolute path, read as is (so several data sets of a symbol
    can coexist). Every bar's open time must be on the timeframe's grid.

    A bad row (see :func:`read_ohlcv_csv`) spoils only the requests that would see it:
    :meth:`bars` and :meth:`bars_between` return the good bars of a span that contains no bad row,
    and raise :class:`BadRowsError` naming the file, line and reason when the span they would
    return contains one (a request for the last ``limit`` bars that skips a bad row, or whose
    newest bar is one, contains it). :meth:`frame` is the whole file: any bad row raises."""

    def __init__(self, data_dir: Path = DEFAULT_DATA_DIR) -> None:
        self.data_dir = Path(data_dir)

    def path_for(self, symbol: str, timeframe: str) -> Path:
        """The CSV file of ``symbol`` at ``timeframe``. Raises :class:`MarketDataError` for an
        unknown symbol or timeframe."""
        timeframe_delta(timeframe)
        try:
            name = Path(instrument_data_file(symbol, timeframe))
        except KeyError:
            raise MarketDataError(f"unknown instrument {symbol!r}: not in the instrument catalogue "
                                  f"({', '.join(str(f) for f in instruments_files())})") from None
        return name if name.is_absolute() else self.data_dir / name

    def frame(self, symbol: str, timeframe: str) -> pd.DataFrame:
        """The whole validated file of ``symbol`` at ``timeframe`` (a copy). Raises
        :class:`BadRowsError` listing the bad rows when the file has any."""
        return self._data(symbol, timeframe).strict().copy()

    def bad_rows(self, symbol: str, timeframe: str) -> tuple[BadRow, ...]:
        """The bad rows of the file of ``symbol`` at ``timeframe``, in file order (empty: none)."""
        return self._data(symbol, timeframe).bad

    def _data(self, symbol: str, timeframe: str) -> _CsvData:
        return read_ohlcv_csv(self.path_for(symbol, timeframe), timeframe)

    def bars(self, symbol: str, timeframe: str, end: datetime, limit: int) -> pd.DataFrame:
        _check_limit(limit)
        end_ts = _utc(end, "end")
        data = self._data(symbol, timeframe)
        frame, newest = data.frame, end_ts - timeframe_delta(timeframe)
        stop = frame.index.searchsorted(newest, side="right")
        start = max(0, stop - limit)
        # fewer than `limit` good bars: the span reaches back to the start of the file
        bad = data.bad_in(frame.index[start] if stop - start == limit else None, newest)
        if bad:
            raise BadRowsError(bad)
        return frame.iloc[start:stop].copy()

    def bars_between(self, symbol: str, timeframe: str, start: datetime, end: datetime) -> pd.DataFrame:
        start_ts, end_ts = _utc(start, "start"), _utc(end, "end")
        data = self._data(symbol, timeframe)
        frame, newest = data.frame, end_ts - timeframe_delta(timeframe)
        bad = data.bad_in(start_ts, newest)
        if bad:
            raise BadRowsError(bad)
        lo = frame.index.searchsorted(start_ts, side="left")
        hi = frame.index.searchsorted(newest, side="right")
        return frame.iloc[lo:max(lo, hi)].copy()

    def last_closed_bar_end(self, symbol: str, timeframe: str) -> datetime | None:
        """Close time of the newest good bar (a bad last row is not a bar)."""
        frame = self._data(symbol, timeframe).frame
        if frame.empty:
            return None
        return _to_datetime(frame.index[-1] + timeframe_delta(timeframe))


# ---------------------------------------------------------------- ccxt


class CcxtSource(MarketDataSource):
    """Bars from an exchange through ccxt (``fetch_ohlcv``).

    ``exchange`` is a built :class:`ccxt.Exchange` or an exchange id (``"binance"``), built with
    ``enableRateLimit=True``. Transient errors (``ccxt.NetworkError``, ``RequestTimeout``,
    ``ExchangeNotAvailable``) are retried with tenacity: ``retry_attempts`` attempts in all,
    exponential backoff with full jitter from ``retry_initial_wait_s`` up to ``retry_max_wait_s``
    seconds; after the last attempt the ccxt error propagates. ``ccxt.BadSymbol`` becomes
    :class:`MarketDataError`. Requests are paged by ``max_bars_per_call`` (Binance spot: 1000).
    The newest bar of a live exchange is still open and is dropped by the point-in-time rule.
    """

    def __init__(
        self,
        exchange: ccxt.Exchange | str,
        *,
        retry_attempts: int = 4,
        retry_initial_wait_s: float = 1.0,
        retry_max_wait_s: float = 20.0,
        max_bars_per_call: int = 1000,
    ) -> None:
        if isinstance(exchange, str):
            cls = getattr(ccxt, exchange, None)
            if not (isinstance(cls, type) and issubclass(cls, ccxt.Exchange)):
                raise MarketDataError(f"unknown ccxt exchange id {exchange!r}")
            exchange = cls({"enableRateLimit": True})
        self.exchange = exchange
        self.max_bars_per_call = max_bars_per_call
        self._retrying = Retrying(
            retry=retry_if_exception_type(TRANSIENT_CCXT_ERRORS),
            stop=stop_after_attempt(retry_attempts),
            wait=wait_random_exponential(multiplier=retry_initial_wait_s, max=retry_max_wait_s),
            reraise=True,
        )

    def _where(self, symbol: str, timeframe: str) -> str:
        return f"{self.exchange.id} {symbol} {timeframe}"

    def _fetch(self, symbol: str, timeframe: str, since_ms: int | None, limit: int) -> list[list]:
        try:
            return self._retrying.copy()(self.exchange.fetch_ohlcv, symbol, timeframe, since=since_ms, limit=limit)
        except ccxt.BadSymbol as e:
            raise MarketDataError(f"{self._where(symbol, timeframe)}: unknown symbol {symbol!r}: {e}") from None

    def _frame(self, rows: list[list], symbol: str, timeframe: str) -> pd.DataFrame:
        where = self._where(symbol, timeframe)
        if not rows:
            return validate_ohlcv(pd.DataFrame(columns=list(OHLCV_COLUMNS), index=pd.DatetimeIndex([], tz="UTC")), where)
        if any(len(r) < 6 for r in rows):
            raise MarketDataError(f"{where}: fetch_ohlcv returned a row with fewer than 6 fields")
        raw = pd.DataFrame([r[:6] for r in rows], columns=["ts", *OHLCV_COLUMNS])
        index = pd.DatetimeIndex(pd.to_datetime(raw.pop("ts").astype("int64"), unit="ms", utc=True))
        return validate_ohlcv(raw.set_index(index), where)

    def _range(self, symbol: str, timeframe: str, start: pd.Timestamp, end: pd.Timestamp, max_bars: int | None) -> pd.DataFrame:
        """Bars with open_time >= start and close <= end, paging forward from ``start``."""
        tf = timeframe_delta(timeframe)
        last_open = end - tf  # the newest bar that can have closed by `end`
        rows: dict[int, list] = {}
        cursor = start
        while cursor <= last_open:
            wanted = int((last_open - cursor) / tf) + 1
            if max_bars is not None:
                wanted = min(wanted, max_bars - len(rows))
            page = self._fetch(symbol, timeframe, int(cursor.timestamp() * 1000), min(wanted, self.max_bars_per_call))
            fresh = [r for r in page if r and int(r[0]) >= int(cursor.timestamp() * 1000)]
            if not fresh:
                break
            for r in fresh:
                rows[int(r[0])] = r
            newest = pd.Timestamp(max(int(r[0]) for r in fresh), unit="ms", tz="UTC")
            cursor = newest + tf
            if max_bars is not None and len(rows) >= max_bars:
                break
        frame = self._frame([rows[k] for k in sorted(rows)], symbol, timeframe)
        keep = (frame.index >= start) & (frame.index + tf <= end)
        return frame[keep]

    def bars(self, symbol: str, timeframe: str, end: datetime, limit: int) -> pd.DataFrame:
        _check_limit(limit)
        end_ts = _utc(end, "end")
        tf = timeframe_delta(timeframe)
        # the `limit` bars that end at the last bar boundary <= end (boundaries are UTC-epoch aligned)
        start = end_ts.floor(tf) - limit * tf
        return self._range(symbol, timeframe, start, end_ts, max_bars=limit).tail(limit).copy()

    def bars_between(self, symbol: str, timeframe: str, start: datetime, end: datetime) -> pd.DataFrame:
        return self._range(symbol, timeframe, _utc(start, "start"), _utc(end, "end"), max_bars=None).copy()

    def last_closed_bar_end(self, symbol: str, timeframe: str) -> datetime | None:
        tf = timeframe_delta(timeframe)
        frame = self._frame(self._fetch(symbol, timeframe, None, 2), symbol, timeframe)
        now = pd.Timestamp(self.exchange.milliseconds(), unit="ms", tz="UTC")
        closed = frame.index[frame.index + tf <= now]
        return _to_datetime(closed[-1] + tf) if len(closed) else None
