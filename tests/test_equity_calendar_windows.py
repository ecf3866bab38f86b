"""Issue 13, "Daily equities get a window on every calendar day": a daily strategy whose every
instrument has an exchange calendar has weekday windows only (the Dagster partitions' cron
``0 0 * * 1-5``), and every place that lists or validates windows agrees with that definition:
``window_range``/``parse_window_bound`` (config), ``window_keys``/``last_closed_window_key``
(partitions), the CLI's ``replay``. An exchange holiday on a weekday stays a window.

Made-up data no shipped file covers: ``OLDCO``, a daily XNYS equity from 1994-06-01 to 1997-06-12.
Its 768 rows are the shipped ``NASDAQ_AAPL_1d.csv`` rows (2015-01-02 … 2018-01-19) in order, each
re-dated onto the i-th XNYS session from 1994-06-01 (``exchange_calendars``), so the prices are real
AAPL prices and the dates are real NYSE sessions: 1995-12-25 (Christmas, a Monday) has no row, as
the NYSE was closed. Nothing is mocked; the replays are real in-process Dagster runs on a temporary
``DAGSTER_HOME`` and ledger.
"""

from __future__ import annotations

import contextlib
import io
import json
from datetime import datetime, timezone

import pytest
import yaml

from trading_pipelines.config import DEFAULT_DATA_DIR, STRATEGIES_DIR, WindowBoundError, load_strategies, parse_window_bound, window_range

UTC = timezone.utc
EQ_DOC = yaml.safe_load((STRATEGIES_DIR / "equities_1d_spy_aapl" / "defs.yaml").read_text())
AAPL_1D = (DEFAULT_DATA_DIR / "NASDAQ_AAPL_1d.csv").read_text().splitlines()
CHRISTMAS_WEEKS = ["1995-12-18", "1995-12-19", "1995-12-20", "1995-12-21", "1995-12-22",
                   "1995-12-25", "1995-12-26", "1995-12-27", "1995-12-28", "1995-12-29"]


def _cli(argv: list[str]) -> tuple[int, str, str]:
    from trading_pipelines.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _write_yaml(path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture
def oldco(tmp_path, monkeypatch):
    """OLDCO (see the module doc) in a user catalogue, and ``old_1d_user`` trading it over the
    windows 1995-06-01 … 1995-12-29 (windows_end 1996-01-01), the shipped equity template."""
    import exchange_calendars as xcals

    sessions = xcals.get_calendar("XNYS", start="1994-01-01", end="1998-12-31").sessions_in_range("1994-06-01", "1998-12-31")
    rows = AAPL_1D[1:]
    out = [AAPL_1D[0]] + [f"{day.strftime('%Y-%m-%d')}T00:00:00Z,{row.split(',', 1)[1]}" for day, row in zip(sessions, rows)]
    assert len(out) == 769 and out[-1].startswith("1997-06-12T00:00:00Z,178.610001")  # AAPL 2018-01-19
    csv = tmp_path / "mydata" / "OLDCO_1d.csv"
    csv.parent.mkdir()
    csv.write_text("\n".join(out) + "\n")
    catalogue = tmp_path / "old_instruments.yaml"
    _write_yaml(catalogue, {"instruments": {"OLDCO": {
        "asset_class": "equity", "market": "spot", "calendar": "XNYS", "data_file": str(tmp_path / "mydata" / "OLDCO_{timeframe}.csv"),
        "lot_step": 1, "min_qty": 1, "tick_size": 0.01, "min_notional": 0}}})
    doc = yaml.safe_load(yaml.safe_dump(EQ_DOC))
    doc["attributes"].update(name="old_1d_user", instruments=["OLDCO"],
                             data={"source": "replay", "windows_start": "1995-06-01", "windows_end": "1996-01-01"})
    _write_yaml(tmp_path / "strategies" / "old_1d_user" / "defs.yaml", doc)
    monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", str(catalogue))
    monkeypatch.setenv("TRADING_STRATEGIES_PATH", str(tmp_path / "strategies"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(tmp_path / "charts"))
    return load_strategies()["old_1d_user"]


# ---------------------------------------------------------------- the windows


def test_weekends_make_no_window(oldco):
    """1995-06-01 … 1995-12-29: 152 weekdays (the old code listed all 214 calendar days); the
    Christmas fortnight is 10 windows, Monday 1995-12-25 (an NYSE holiday) among them."""
    from trading_pipelines.assets.partitions import window_cron, window_keys, window_partitions

    assert window_cron(oldco) == "0 0 * * 1-5"
    keys = window_partitions(oldco).get_partition_keys()
    assert window_keys(oldco) == keys and len(keys) == 152
    assert (keys[0], keys[-1]) == ("1995-06-01", "1995-12-29")
    assert all(datetime.strptime(k, "%Y-%m-%d").weekday() < 5 for k in keys)
    assert [k for k in keys if "1995-12-18" <= k <= "1995-12-29"] == CHRISTMAS_WEEKS
    assert window_range(oldco) == (datetime(1995, 6, 1, tzinfo=UTC), datetime(1995, 12, 29, tzinfo=UTC))


def test_crypto_daily_keeps_every_day():
    """A daily strategy with an instrument without a calendar (crypto) keeps one window per day."""
    from trading_pipelines.assets.partitions import window_cron
    from trading_pipelines.config.windows import weekday_windows

    spot = load_strategies()["spot_4h_majors"]
    daily = spot.model_copy(update={"timeframe": "1d"})
    assert not weekday_windows(daily) and window_cron(daily) == "0 0 * * *"
    assert weekday_windows(load_strategies()["equities_1d_spy_aapl"])


def test_a_weekend_bound_is_refused_naming_the_weekdays(oldco):
    with pytest.raises(WindowBoundError) as e:
        parse_window_bound(oldco, "1995-12-23", what="--start")
    assert str(e.value) == (
        "--start '1995-12-23' is a Saturday: old_1d_user's daily equity windows start on weekdays only (Monday–Friday "
        "midnight UTC; exchange calendars ['XNYS']); nearest window starts: 1995-12-22 and 1995-12-25; valid range: "
        "1995-06-01 … 1995-12-29")
    assert parse_window_bound(oldco, "1995-12-25") == datetime(1995, 12, 25, tzinfo=UTC)  # a holiday is a window


def test_the_review_of_a_friday_is_due_on_saturday():
    """The shipped equity strategy's schedule ticks Tue–Sat 00:30 UTC: on Saturday the last window
    whose bar has closed is Friday's (its Dagster partition, Friday → Monday, is listed thanks to
    ``end_offset=1``), on Tuesday Monday's (Tuesday's partition is in progress, not closed)."""
    from trading_pipelines.assets.partitions import last_closed_window_key, window_keys

    eq = load_strategies()["equities_1d_spy_aapl"]
    sat, tue, sun = (datetime(2017, 6, d, 0, 30, tzinfo=UTC) for d in (3, 6, 4))
    assert last_closed_window_key(eq, sat) == "2017-06-02"
    assert last_closed_window_key(eq, sun) == "2017-06-02"
    assert last_closed_window_key(eq, tue) == "2017-06-05"
    assert window_keys(eq, tue)[-3:] == ["2017-06-01", "2017-06-02", "2017-06-05"]
    spot = load_strategies()["spot_4h_majors"]  # one partition per bar: unchanged
    assert last_closed_window_key(spot, datetime(2026, 3, 1, 8, 1, tzinfo=UTC)) == "2026-03-01-04:00"


# ---------------------------------------------------------------- end to end


def test_cli_replay_of_1995_across_christmas_weekends_are_no_window(oldco):
    """``replay old_1d_user --start 1995-12-18 --end 1995-12-29``: 10 windows (the old code made 12,
    the two weekend days "stale data: … bars missing"); no signal on a Saturday or Sunday."""
    rc, out, err = _cli(["replay", "old_1d_user", "--start", "1995-12-18", "--end", "1995-12-29", "--no-charts", "--quiet", "--json"])
    assert rc == 0, err
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep["windows"] == 10
    assert rep["failed_instruments"] == []
    ends = sorted(p[0] for p in rep["equity_curve"])
    assert [e[:10] for e in ends] == ["1995-12-19", "1995-12-20", "1995-12-21", "1995-12-22", "1995-12-23",
                                      "1995-12-26", "1995-12-27", "1995-12-28", "1995-12-29", "1995-12-30"]


def test_cli_replay_of_1995_the_christmas_holiday_is_a_market_closed_window(oldco):
    """1995-12-25 (NYSE closed, no row in the file) is a window whose no-trade reason starts with
    ``market closed`` and is counted in ``market_closed``, not among the no-trades; no other window
    of the fortnight is a "stale data" no-trade (the old code: "stale data: newest bar closed at
    1995-12-23T00:00:00+00:00, 3 bars missing before the window end 1995-12-26T00:00:00+00:00",
    the analysis' market-closed check is b276f2e)."""
    from trading_pipelines.cli.common import _ledger_report

    rc, out, err = _cli(["replay", "old_1d_user", "--start", "1995-12-18", "--end", "1995-12-29", "--no-charts", "--quiet", "--json"])
    assert rc == 0, err
    rep = json.loads(out.strip().splitlines()[-1])
    sigs = {s["window_end"][:10]: s["no_trade_reason"] for s in _ledger_report("old_1d_user", rep["book"])["signals"]}
    assert rep["market_closed"] == 1
    assert sigs["1995-12-26"] == "market closed: XNYS has no session on 1995-12-25"
    assert not [r for r in sigs.values() if r and r.startswith("stale data")]


def test_buy_and_hold_from_a_holiday_starts_at_the_first_session(oldco):
    """``--start 1995-12-25`` (Christmas, no bar): buy-and-hold runs from the first close in the span,
    1995-12-26's 106.050003 (AAPL's 2016-08-01 row re-dated), to 1995-12-29's 105.870003:
    (105.870003 / 106.050003 − 1) × 100 = −0.1697 %. The old report had no close at the first
    window end and said ``buy_and_hold_pct: null`` with ``"instruments": []`` (as the shipped
    equities replay from its first window, the 2016-01-01 holiday, did)."""
    rc, out, err = _cli(["replay", "old_1d_user", "--start", "1995-12-25", "--end", "1995-12-29", "--no-charts", "--quiet", "--json"])
    assert rc == 0, err
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep["windows"] == 5 and rep["instruments"] == ["OLDCO"]
    assert rep["buy_and_hold_pct"] == pytest.approx((105.870003 / 106.050003 - 1) * 100, abs=1e-9)
