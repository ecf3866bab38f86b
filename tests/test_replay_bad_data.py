"""Issue 13, "Market data": a bad CSV row in one instrument of a two-instrument strategy, and a
replay window after the end of the data, end to end through the CLI (``trading-pipelines replay``).

The data is made up from shipped files, in ``tmp_path``: ``BAD/USDT`` is a user instrument whose
4h file is the shipped ``BINANCE_BTC-USDT_4h.csv`` with one row corrupted (high below low); the
strategy is ``spot_4h_majors`` trading ``ETH/USDT`` (the shipped file) and ``BAD/USDT``. Nothing is
mocked: the runs are real in-process Dagster runs on a temporary ``DAGSTER_HOME`` and ledger.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import yaml

from trading_pipelines.config import DEFAULT_DATA_DIR, STRATEGIES_DIR

SPOT_DOC = yaml.safe_load((STRATEGIES_DIR / "spot_4h_majors" / "defs.yaml").read_text())
BTC_4H = (DEFAULT_DATA_DIR / "BINANCE_BTC-USDT_4h.csv").read_text().splitlines()
BAD_LINE = 2185  # 2026-02-27T20:00:00Z,65392.18,65953.2,64914.46,65872.1,1767.91718 in the shipped file
CRYPTO = {"asset_class": "crypto", "market": "spot", "lot_step": 0.0001, "min_qty": 0.0001, "tick_size": 0.01,
          "min_notional": 5}


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
def user_env(tmp_path, monkeypatch):
    """A temporary DAGSTER_HOME, ledger and chart dir; a catalogue adding BAD/USDT (data: the shipped
    BTC 4h file copied, ``lines`` of it, optionally with line :data:`BAD_LINE` corrupted) and a
    strategy folder. Returns ``make(name, instruments, lines, corrupt, windows_end)``."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(tmp_path / "charts"))
    roots = tmp_path / "strategies"
    monkeypatch.setenv("TRADING_STRATEGIES_PATH", str(roots))

    def make(name: str, instruments: list[str], lines: int = len(BTC_4H), corrupt: bool = True,
             windows_end: str = "2026-03-04T00:00:00Z"):
        rows = list(BTC_4H[:lines])
        if corrupt:
            ts, o, h, lo, c, v = rows[BAD_LINE - 1].split(",")
            assert ts == "2026-02-27T20:00:00Z"
            rows[BAD_LINE - 1] = ",".join([ts, o, "64000.0", lo, c, v])  # high 64 000 < low 64 914.46
        csv = tmp_path / "mydata" / "BAD-USDT_4h.csv"
        csv.parent.mkdir(exist_ok=True)
        csv.write_text("\n".join(rows) + "\n")
        catalogue = tmp_path / "my_instruments.yaml"
        _write_yaml(catalogue, {"instruments": {"BAD/USDT": {**CRYPTO, "data_file": str(tmp_path / "mydata" / "BAD-USDT_{timeframe}.csv")}}})
        monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", str(catalogue))
        doc = yaml.safe_load(yaml.safe_dump(SPOT_DOC))
        doc["attributes"].update(name=name, instruments=instruments,
                                 data={"source": "replay", "windows_start": "2025-06-01T00:00:00Z", "windows_end": windows_end})
        _write_yaml(roots / name / "defs.yaml", doc)
        return csv

    return make


def test_a_bad_row_in_one_instrument_finishes_and_lists_it(user_env):
    """ETH/USDT and BAD/USDT over 2026-02-27T00:00Z … 2026-02-28T00:00Z (7 windows), BAD's line 2185
    (the 2026-02-27T20:00 bar) with high 64 000 < low 64 914.46. On the old code the run failed (exit
    1, a Dagster traceback, no JSON): the report step read BAD's file again without catching the
    error. Now: exit 0, the JSON lists BAD/USDT in ``failed_instruments`` naming the file and line,
    and ETH/USDT trades as it does alone (buys at the first window, filled at the 04:00 open
    2046.41 for 0.9354 ETH, as in test_isolation_freshness)."""
    csv = user_env("bad_4h_user", ["ETH/USDT", "BAD/USDT"])
    rc, out, err = _cli(["replay", "bad_4h_user", "--start", "2026-02-27T00:00Z", "--end", "2026-02-28T00:00Z",
                         "--no-charts", "--quiet", "--json"])
    assert rc == 0, err
    assert "Traceback" not in err
    rep = json.loads(out.strip().splitlines()[-1])
    [failed] = rep["failed_instruments"]
    assert failed["instrument"] == "BAD/USDT"
    assert f"{csv}: line {BAD_LINE} (open_time 2026-02-27T20:00:00+00:00)" in failed["reason"]
    assert "high 64000.0 < max(open 65392.18, close 65872.1)" in failed["reason"]
    assert rep["windows"] == 7
    eth = [t for t in rep["trade_list"] if t["instrument"] == "ETH/USDT"]
    assert [(t["opened_at"], t["entry_price"], t["quantity"]) for t in eth][:1] == [
        ("2026-02-27T04:00:00+00:00", 2046.41, 0.9354)]
    # nothing of the failed instrument is valued: no buy-and-hold leg, no outcome with a close
    assert rep["instruments"] == ["ETH/USDT"]


def test_the_summary_names_the_failed_instrument(user_env):
    """The same run without ``--json``: exit 0 and the summary's last lines name BAD/USDT, its file and line."""
    csv = user_env("bad_4h_user", ["ETH/USDT", "BAD/USDT"])
    rc, out, err = _cli(["replay", "bad_4h_user", "--start", "2026-02-27T00:00Z", "--end", "2026-02-28T00:00Z",
                         "--no-charts", "--quiet"])
    assert rc == 0, err
    [line] = [x for x in out.splitlines() if x.startswith("failed instrument ")]
    assert line.startswith(f"failed instrument BAD/USDT: {csv}: line {BAD_LINE} (open_time 2026-02-27T20:00:00+00:00): high 64000.0")


def test_a_window_after_the_end_of_the_data_is_an_error_naming_the_last_bar(user_env, tmp_path):
    """BAD/USDT alone (not corrupted), its file cut after line 1105: the last bar opens
    2025-08-31T20:00Z and closes 2025-09-01T00:00Z, while the strategy's windows run to 2026-03-04.
    On the old code ``--start 2025-09-01T00:00Z`` exited 0 with ``"instruments": []``; now it is
    exit 2 naming the data's last bar, and nothing is run (no ledger)."""
    csv = user_env("short_4h_user", ["BAD/USDT"], lines=1105, corrupt=False)
    assert BTC_4H[1104].startswith("2025-08-31T20:00:00Z,")
    rc, out, err = _cli(["replay", "short_4h_user", "--start", "2025-09-01T00:00Z", "--no-charts", "--quiet", "--json"])
    assert rc == 2 and out == ""
    assert err.strip() == (
        "error: --start '2025-09-01T00:00Z': that window closes at 2025-09-01T04:00:00+00:00, after the data's last bar "
        f"(BAD/USDT: last bar opens 2025-08-31T20:00:00+00:00 in {csv}; the last bar closes at 2025-09-01T00:00:00+00:00); "
        "last window with data: 2025-08-31-20:00")
    assert not (tmp_path / "ledger.sqlite").exists()
    # --end after the data is refused the same way …
    rc, _, err = _cli(["replay", "short_4h_user", "--start", "2025-08-31T00:00Z", "--end", "2025-09-02T00:00Z", "--quiet"])
    assert rc == 2 and err.startswith("error: --end '2025-09-02T00:00Z': that window closes at 2025-09-02T04:00:00+00:00")
    # … and the last window with data runs: its bar is the file's last
    rc, out, err = _cli(["replay", "short_4h_user", "--start", "2025-08-31T20:00Z", "--no-charts", "--quiet", "--json"])
    assert rc == 0, err
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep["windows"] == 1 and rep["instruments"] == ["BAD/USDT"] and rep["failed_instruments"] == []


ETH_4H = (DEFAULT_DATA_DIR / "BINANCE_ETH-USDT_4h.csv").read_text().splitlines()
HELD_BAD_LINE = 2183  # 2026-02-27T12:00:00Z,1962.08,1969.0,1938.82,1948.59,105123.5497 in the shipped ETH file


def test_a_bad_row_under_an_open_position_freezes_that_instrument_only(user_env, tmp_path):
    """BAD/USDT is a copy of the shipped ETH 4h file, so it buys at the 2026-02-27T00:00 window as
    ETH does (both filled at the 04:00 open); its line 2183 (the 12:00 bar) has high 1 900 < low
    1 938.82. A window only sees the bars before it, so the first windows trade; the paper venue
    cannot fill BAD's open position over the 12:00 bar, so BAD is frozen from the window
    2026-02-27-12:00 (its position stays open, nothing is made up) while ETH goes on: the run
    walks all 6 windows, exit 0, ``failed_instruments`` names the window, the file and the line,
    and ETH's book is exactly the one ETH trades alone. (One instrument's failure never disturbs
    another's; before, the whole walk stopped at that window.)"""
    user_env("held_4h_user", ["ETH/USDT", "BAD/USDT"], corrupt=False)
    rows = list(ETH_4H)
    ts, o, h, lo, c, v = rows[HELD_BAD_LINE - 1].split(",")
    assert ts == "2026-02-27T12:00:00Z"
    rows[HELD_BAD_LINE - 1] = ",".join([ts, o, "1900.0", lo, c, v])
    csv = tmp_path / "mydata" / "BAD-USDT_4h.csv"
    csv.write_text("\n".join(rows) + "\n")
    argv = ["--start", "2026-02-27T00:00Z", "--end", "2026-02-27T20:00Z", "--no-charts", "--quiet", "--json"]
    rc, out, err = _cli(["replay", "held_4h_user", *argv])
    assert rc == 0, err
    rep = json.loads(out.strip().splitlines()[-1])
    [failed] = rep["failed_instruments"]
    assert failed["instrument"] == "BAD/USDT"
    assert failed["reason"].startswith("frozen at window 2026-02-27-12:00 (the paper venue cannot fill over its bars")
    assert f"{csv}: line {HELD_BAD_LINE} (open_time 2026-02-27T12:00:00+00:00)" in failed["reason"]
    assert rep["windows"] == 6 and len(rep["equity_curve"]) == 6
    eth = [t for t in rep["trade_list"] if t["instrument"] == "ETH/USDT"]
    bad = [t for t in rep["trade_list"] if t["instrument"] == "BAD/USDT"]
    assert [(t["opened_at"], t["entry_price"]) for t in bad] == [("2026-02-27T04:00:00+00:00", 2046.41)]
    assert bad[0]["closed_at"] is None  # frozen open: no exit is made up over bars nobody can read
    # ETH alone, same windows: the same trades (ETH decided first by name, so its sizing is unchanged)
    user_env("eth_4h_user", ["ETH/USDT"], corrupt=False)
    rc, out, err = _cli(["replay", "eth_4h_user", *argv])
    assert rc == 0, err
    alone = json.loads(out.strip().splitlines()[-1])
    key = lambda t: (t["opened_at"], t["entry_price"], t["quantity"], t["closed_at"], t["exit_price"])  # noqa: E731
    assert [key(t) for t in eth] == [key(t) for t in alone["trade_list"]] and eth


def _failing_job():
    """A one-op Dagster job whose step ``boom`` raises ``ValueError("bad thing at line 7")``."""
    import dagster as dg

    @dg.op
    def boom():
        raise ValueError("bad thing at line 7")

    @dg.job
    def job():
        boom()

    return job


def test_a_failed_run_is_named_by_its_cause():
    """When a run does fail (exit 1), the CLI's one error line carries the failed step and its own
    error (the old line said only "run … failed"): here a one-op job raising ValueError."""
    from trading_pipelines.cli.runs import _failure

    res = _failing_job().execute_in_process(raise_on_error=False)
    assert not res.success
    assert _failure(res) == ": step boom: ValueError: bad thing at line 7"


def test_a_failed_run_still_prints_one_json_object(user_env, monkeypatch):
    """``replay --json`` on a run that fails (exit 1) prints one JSON object saying so, with the
    step and its error, so a script never parses a traceback. The failing run is a one-op job
    raising ValueError, standing in for the replay job (a replay that fails for real needs a broken
    environment); everything else is the real CLI."""
    from trading_pipelines.cli import runs

    job = _failing_job()
    user_env("fail_4h_user", ["ETH/USDT"], corrupt=False)
    monkeypatch.setattr(runs, "_replay", lambda *a, **k: job.execute_in_process(raise_on_error=False))
    rc, out, err = _cli(["replay", "fail_4h_user", "--last", "2", "--no-charts", "--quiet", "--json"])
    assert rc == 1 and "Traceback" not in out + err
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep["success"] is False and rep["strategy"] == "fail_4h_user" and rep["failed_instruments"] == []
    assert rep["error"] == "step boom: ValueError: bad thing at line 7"
