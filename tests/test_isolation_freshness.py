"""Failure isolation and data freshness, worked on the shipped sample data.

Each test copies a shipped CSV from ``data/ohlcv`` into a tmp file, alters one row, and points a
user instrument catalogue (``TRADING_INSTRUMENTS_PATH``, absolute ``data_file``) at the copy; a user
strategy (``TRADING_STRATEGIES_PATH``) trades it next to untouched instruments. What is asserted:
a problem with one instrument × window becomes that instrument's recorded no-trade, with a reason
naming the file and line (or the missing bar), never a failed run and never a change to the other
instruments' decisions.

Reference numbers (rules provider, shipped 4h files, window key = window start, end = start + 4h):

    window        BTC/USDT        ETH/USDT         SOL/USDT
    02-26 20:00   hold 0.5        buy 0.73567      buy 0.6905
    02-27 00:00   hold 0.5        buy 0.7145       buy 0.68467
    02-27 04:00   hold 0.5        buy 0.69933      buy 0.68233
    02-27 08:00   hold 0.5        hold 0.5         hold 0.5
    02-27 12:00   sell 0.6        sell 0.6         sell 0.6
    02-27 16:00   sell 0.6        sell 0.6         sell 0.6
    02-27 20:00   sell 0.6        sell 0.6         sell 0.6
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy import select

from trading_pipelines.analysis import analyze as analysis
from trading_pipelines.analysis import charting
from trading_pipelines.analysis import frames
from trading_pipelines.assets.partitions import range_tags, window_end
from trading_pipelines.assets.review import BOOK_TAG, CHARTS_TAG
from trading_pipelines.config import DEFAULT_DATA_DIR, INSTRUMENTS_FILE, STRATEGIES_DIR, load_strategies
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.stores.chart_render import PNG_SIGNATURE
from trading_pipelines.stores.market_data import CsvReplaySource, MarketDataError

UTC = timezone.utc
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
SPOT = "spot_4h_majors"
USER = "iso_4h_user"
SHIPPED_CATALOGUE = yaml.safe_load(INSTRUMENTS_FILE.read_text())["instruments"]
SPOT_DOC = yaml.safe_load((STRATEGIES_DIR / SPOT / "defs.yaml").read_text())

# Six windows of 2026-02-27 (starts 00:00 … 20:00). ETH buys at the first two, holds at 08:00 and
# sells from 12:00; BTC holds three times then sells (nothing to sell: no position).
SIX = ["2026-02-27-00:00", "2026-02-27-04:00", "2026-02-27-08:00", "2026-02-27-12:00", "2026-02-27-16:00",
       "2026-02-27-20:00"]
BTC_ACTIONS = ["hold", "hold", "hold", "sell", "sell", "sell"]
ETH_ACTIONS = ["buy", "buy", "hold", "sell", "sell", "sell"]


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


# ---------------------------------------------------------------- helpers


def csv_lines(name: str) -> list[str]:
    return (DEFAULT_DATA_DIR / name).read_text().splitlines()


def line_no(lines: list[str], timestamp: str) -> int:
    """1-based file line of the row opening at ``timestamp`` (the header is line 1)."""
    [i] = [i for i, row in enumerate(lines) if row.startswith(timestamp + ",")]
    return i + 1


def edit_row(lines: list[str], at: str, **fields) -> list[str]:
    """A copy of ``lines`` with the row opening at ``at`` changed (its ``timestamp`` too)."""
    out = list(lines)
    n = line_no(out, at) - 1
    header = out[0].split(",")
    cells = dict(zip(header, out[n].split(",")))
    cells.update({k: str(v) for k, v in fields.items()})
    out[n] = ",".join(cells[h] for h in header)
    return out


def drop_row(lines: list[str], timestamp: str) -> list[str]:
    n = line_no(lines, timestamp) - 1
    return lines[:n] + lines[n + 1:]


def write_csv(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_yaml(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fresh DAGSTER_HOME, ledger and chart folder; no user catalogue or strategies yet."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(tmp_path / "charts"))
    for var in ("TRADING_VENUE_URL", "TRADING_STRATEGIES_PATH", "TRADING_INSTRUMENTS_PATH", "TRADING_INSTRUMENTS_FILE",
                "TRADING_DATA_DIR", "TRADING_CHART_STORE", "TRADING_FRAME_STORE"):
        monkeypatch.delenv(var, raising=False)

    class Env:
        root = tmp_path
        ledger = tmp_path / "ledger.sqlite"

        @staticmethod
        def catalogue(entries: dict[str, tuple[str, str]]) -> Path:
            """``{symbol: (shipped symbol whose fields to copy, absolute data_file)}`` as a user catalogue."""
            doc = {"instruments": {sym: {**SHIPPED_CATALOGUE[base], "data_file": data_file}
                                   for sym, (base, data_file) in entries.items()}}
            path = write_yaml(tmp_path / "catalogue" / "user_instruments.yaml", doc)
            monkeypatch.setenv("TRADING_INSTRUMENTS_PATH", str(path))
            return path

        @staticmethod
        def strategy(name: str = USER, folder: str = "strategies", **attrs) -> Path:
            doc = yaml.safe_load(yaml.safe_dump(SPOT_DOC))
            doc["attributes"].update(name=name, **attrs)
            path = write_yaml(tmp_path / folder / name / "defs.yaml", doc)
            monkeypatch.setenv("TRADING_STRATEGIES_PATH", str(tmp_path / folder))
            return path

        @staticmethod
        def engine():
            return get_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")

        @staticmethod
        def runtime(strategy: str):
            from trading_pipelines.resources.dagster_resources import default_resources

            spec = load_strategies()[strategy]
            return spec, default_resources()["trading"].runtime(spec)

        @staticmethod
        def run(strategy: str, windows: list[str], charts: bool = False):
            """One in-process run of ``review_<strategy>`` over ``windows`` on a replay book."""
            from trading_pipelines.definitions import defs

            instance = dg.DagsterInstance.local_temp(str(home))
            job = defs().resolve_job_def(f"review_{strategy}")
            res = job.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False, tags={
                **range_tags(windows[0], windows[-1]), BOOK_TAG: "replay", CHARTS_TAG: "on" if charts else "off"})
            return res, instance

    return Env


def checks(res) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.event_specific_data.asset_check_key.name: e.event_specific_data
            for e in res.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def materialization(instance, run_id, strategy, step, partition):
    recs = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey([strategy, step]), asset_partitions=[partition]), limit=20).records
    [rec] = [r for r in recs if r.run_id == run_id]
    return rec.asset_materialization.metadata


def ledger(engine, strategy: str):
    """(signals, intents, orders) of ``strategy``: {(instrument, window_end): row} / list of order rows."""
    with session_scope(engine) as s:
        sigs = {(r.instrument, r.window_end): r for r in s.execute(select(m.SignalRow).where(m.SignalRow.strategy == strategy)).scalars()}
        ints = {(r.instrument, r.window_end): r for r in s.execute(select(m.IntentRow).where(m.IntentRow.strategy == strategy)).scalars()}
        ords = list(s.execute(select(m.OrderRow).where(m.OrderRow.strategy == strategy)).scalars())
        for r in (*sigs.values(), *ints.values(), *ords):
            s.expunge(r)
    return sigs, ints, ords


# ---------------------------------------------------------------- 1 + 5: bad data in one instrument's file

SOL_LINES = csv_lines("BINANCE_SOL-USDT_4h.csv")
BAD_TS = "2026-02-26T04:00:00Z"  # inside the 150-bar lookback of every window of SIX
BAD_LINE = line_no(SOL_LINES, BAD_TS)  # 2175


def _high_below_close(path: Path) -> tuple[list[str], str]:
    # the row: open 87.95, high 89.05, low 87.22, close 87.24 → high 87.0 < max(open, close) = 87.95
    return (edit_row(SOL_LINES, BAD_TS, high=87.0),
            f"{path}: line {BAD_LINE} (open_time 2026-02-26T04:00:00+00:00): high 87.0 < max(open 87.95, close 87.24)")


def _off_grid(path: Path) -> tuple[list[str], str]:
    # 04:30 is still in time order (after 00:00, before 08:00), but not on the 4h grid
    return (edit_row(SOL_LINES, BAD_TS, timestamp="2026-02-26T04:30:00Z"),
            f"{path}: line {BAD_LINE}: timestamp '2026-02-26T04:30:00Z' (open_time 2026-02-26T04:30:00+00:00) is not on "
            f"the 4h grid (4h bars open at every 4h from 00:00 UTC; nearest: 2026-02-26T04:00:00+00:00 or "
            f"2026-02-26T08:00:00+00:00)")


@pytest.mark.parametrize("corrupt", [_high_below_close, _off_grid], ids=["high_below_close", "off_grid_04_30"])
def test_bad_rows_in_one_instrument_are_its_no_trades_and_the_others_trade(env, corrupt):
    bad_csv = env.root / "userdata" / "BAD-USDT_4h.csv"
    lines, message = corrupt(bad_csv)
    write_csv(bad_csv, lines)
    env.catalogue({"BAD/USDT": ("SOL/USDT", str(env.root / "userdata" / "BAD-USDT_{timeframe}.csv"))})
    env.strategy(instruments=["BTC/USDT", "ETH/USDT", "BAD/USDT"])

    # the loader names the file and the line
    with pytest.raises(MarketDataError) as exc:
        CsvReplaySource().frame("BAD/USDT", "4h")
    assert str(exc.value) == message

    res, instance = env.run(USER, SIX, charts=True)
    assert res.success
    spec = load_strategies()[USER]
    ends = [window_end(spec, w) for w in SIX]
    sigs, ints, ords = ledger(env.engine(), USER)
    assert len(sigs) == 18 and len(ints) == 18

    # BAD/USDT: a recorded no-trade for every window, naming file and line; no intent to trade
    for e in ends:
        sig, it = sigs[("BAD/USDT", e)], ints[("BAD/USDT", e)]
        assert sig.no_trade_reason == f"bad data: {message}"
        assert sig.action == "hold" and sig.confidence == 0.0 and sig.provider == "pipeline"
        assert sig.chart_key is None  # bad data renders no chart
        assert it.kind == "none" and it.status == "NO_TRADE"
        assert it.reason == f"signal failed: bad data: {message}"
    assert not [o for o in ords if o.instrument == "BAD/USDT"]

    # BTC and ETH: the rules' usual signals, charts, and ETH's entry at the first window filled
    assert [sigs[("BTC/USDT", e)].action for e in ends] == BTC_ACTIONS
    assert [sigs[("ETH/USDT", e)].action for e in ends] == ETH_ACTIONS
    assert all(sigs[(i, e)].no_trade_reason is None and sigs[(i, e)].chart_key for i in ("BTC/USDT", "ETH/USDT") for e in ends)
    eth_entries = [o for o in ords if o.instrument == "ETH/USDT" and o.role == "entry"]
    assert len(eth_entries) == 1 and eth_entries[0].status == "FILLED"
    eth_open_0400 = 2045.39  # the ETH row opening 2026-02-27T04:00, filled × (1 + 5 bps) on the 0.01 tick
    assert eth_entries[0].average_price == round(eth_open_0400 * 1.0005, 2) == 2046.41
    assert ints[("ETH/USDT", ends[0])].status == "CLOSED"  # its bracket closed the position within the windows

    # signal_usable fails, naming BAD/USDT in all 6 windows and nothing else
    check = checks(res)["signal_usable"]
    assert check.passed is False
    assert check.metadata["no_trade"].value == 6
    table = check.metadata["failures"].value
    rows = [r for r in table.splitlines()[2:]]
    assert len(rows) == 6 and all("| BAD/USDT |" in r for r in rows)
    assert "BTC/USDT" not in table and "ETH/USDT" not in table
    assert f"line {BAD_LINE}" in table
    bars_meta = materialization(instance, res.run_id, USER, "ohlcv_bars", SIX[-1])
    assert bars_meta["stale_or_bad"].value == 6
    assert checks(res)["no_order_from_invalid_intent"].passed is True


# ---------------------------------------------------------------- 2: provider and chart failures


class ChartReadingRules:
    """The rules provider's decisions, but declared as reading charts (like an LLM provider):
    records every request it gets; ``fail_for`` raises inside generate."""

    reads_chart = True

    def __init__(self, rules, fail_for: str | None = None):
        self.rules, self.fail_for, self.requests = rules, fail_for, []

    def generate(self, req):
        self.requests.append(req)
        if req.instrument == self.fail_for:
            raise RuntimeError(f"provider down for {req.instrument}")
        return self.rules.generate(req)


TWO = [utc(2026, 2, 27, 4), utc(2026, 2, 27, 8)]  # windows 2026-02-27-00:00 and -04:00


def _baseline(rt) -> dict:
    return {(i, a.window_end): (a.signal.action, a.signal.confidence)
            for i in rt.spec.instruments for a in analysis.analyze(rt, i, TWO, "baseline", charts=False)}


def _failing_render(monkeypatch, instrument: str):
    real = charting.render_chart

    def render(frame, title, *args, **kw):
        if title.startswith(instrument):
            raise RuntimeError(f"renderer crashed on {instrument}")
        return real(frame, title, *args, **kw)
    monkeypatch.setattr(charting, "render_chart", render)


def test_a_chart_failure_is_a_no_trade_for_a_provider_that_reads_charts(env, monkeypatch):
    spec, rt = env.runtime(SPOT)
    base = _baseline(rt)
    assert base[("SOL/USDT", TWO[0])][0] == "buy"  # what the chart failure will cost
    _failing_render(monkeypatch, "SOL/USDT")
    rt.provider = ChartReadingRules(rt.provider)
    out = {i: analysis.analyze(rt, i, TWO, "run-chart", charts=True) for i in spec.instruments}

    reason = "chart failed: RuntimeError: renderer crashed on SOL/USDT"
    for a in out["SOL/USDT"]:
        assert a.error == a.chart_error == reason
        assert a.chart is None and a.signal.no_trade_reason == reason and a.signal.provider == "pipeline"
    assert {r.instrument for r in rt.provider.requests} == {"BTC/USDT", "ETH/USDT"}  # SOL never reached the provider
    for r in rt.provider.requests:
        assert r.chart_png and r.chart_png.startswith(PNG_SIGNATURE)
    for i in ("BTC/USDT", "ETH/USDT"):
        for a in out[i]:
            assert a.error is None and a.chart_error is None and a.chart is not None
            assert (a.signal.action, a.signal.confidence) == base[(i, a.window_end)]
    sigs, _, _ = ledger(env.engine(), SPOT)
    assert sigs[("SOL/USDT", TWO[0])].no_trade_reason == reason and sigs[("SOL/USDT", TWO[0])].run_id == "run-chart"
    assert sigs[("ETH/USDT", TWO[0])].no_trade_reason is None and sigs[("ETH/USDT", TWO[0])].chart_key


def test_a_provider_error_is_that_instruments_no_trade(env):
    spec, rt = env.runtime(SPOT)
    base = _baseline(rt)
    rt.provider = ChartReadingRules(rt.provider, fail_for="ETH/USDT")
    out = {i: analysis.analyze(rt, i, TWO, "run-provider", charts=False) for i in spec.instruments}
    for a in out["ETH/USDT"]:
        assert a.error == "provider error: RuntimeError: provider down for ETH/USDT"
        assert a.signal.no_trade_reason == a.error and a.signal.action == "hold" and a.signal.confidence == 0.0
        assert a.market is not None  # the data was fine: only the provider failed
    for i in ("BTC/USDT", "SOL/USDT"):
        assert [(a.signal.action, a.signal.confidence) for a in out[i]] == [base[(i, e)] for e in TWO]
        assert all(a.error is None for a in out[i])


def test_a_failed_chart_does_not_block_the_rules_signal(env, monkeypatch):
    """The rules provider never reads charts: a failed chart is recorded as ``chart_error`` and the
    signal stands — rendered in process (``render=None``) or in the background (``render_async``)."""
    spec, rt = env.runtime(SPOT)
    base = _baseline(rt)
    assert rt.provider.reads_chart is False
    _failing_render(monkeypatch, "SOL/USDT")
    sync = {i: analysis.analyze(rt, i, TWO, "run-sync", charts=True) for i in spec.instruments}
    for a in sync["SOL/USDT"]:
        assert a.chart_error == "chart failed: RuntimeError: renderer crashed on SOL/USDT"
        assert a.error is None and a.chart is None and a.signal.no_trade_reason is None
        assert (a.signal.action, a.signal.confidence) == base[("SOL/USDT", a.window_end)]
    assert all(a.chart is not None and a.chart_error is None for i in ("BTC/USDT", "ETH/USDT") for a in sync[i])

    # background rendering: the future fails after the signals were decided and recorded
    def submit(jobs):
        f = Future()
        f.set_exception(OSError("chart pool died"))
        return f
    deferred: list = []
    bg = analysis.analyze(rt, "SOL/USDT", TWO, "run-async", charts=True, render_async=submit, deferred=deferred)
    assert [(a.signal.action, a.signal.confidence) for a in bg] == [base[("SOL/USDT", e)] for e in TWO]
    assert len(deferred) == 1
    deferred[0]()  # does not raise
    assert [a.chart_error for a in bg] == ["chart failed: OSError: chart pool died"] * 2
    assert all(a.error is None and a.chart is None for a in bg)
    sigs, _, _ = ledger(env.engine(), SPOT)
    assert sigs[("SOL/USDT", TWO[0])].no_trade_reason is None and sigs[("SOL/USDT", TWO[0])].chart_key is None


# ---------------------------------------------------------------- 3: freshness (a missing bar)

ETH_LINES = csv_lines("BINANCE_ETH-USDT_4h.csv")


def test_a_missing_bar_makes_its_window_stale_and_plans_no_entry(env):
    """The ETH row opening 2026-02-27T00:00 deleted: window 2026-02-27-00:00 (end 04:00) must trade on
    that very bar; its newest bar is now the 20:00 bar closing at 00:00. The rules bought ETH at that
    window on the full file (0.7145): with the bar missing nothing is planned, and the next window,
    whose own newest bar (04:00) is there, enters instead."""
    eth = write_csv(env.root / "userdata" / "ETH-USDT_4h.csv", drop_row(ETH_LINES, "2026-02-27T00:00:00Z"))
    env.catalogue({"ETH/USDT": ("ETH/USDT", str(eth))})
    env.strategy(instruments=["BTC/USDT", "ETH/USDT"])
    spec, rt = env.runtime(USER)
    keys = ["2026-02-26-20:00", "2026-02-27-00:00", "2026-02-27-04:00"]
    ends = [window_end(spec, k) for k in keys]
    a_prev, a_stale, a_next = analysis.analyze(rt, "ETH/USDT", ends, "probe", charts=False)
    reason = ("stale data: newest bar closed at 2026-02-27T00:00:00+00:00, 1 bar missing before the window end "
              "2026-02-27T04:00:00+00:00")
    assert frames.freshness(rt, a_stale.frame, a_stale.window_end) == reason
    assert a_stale.error == reason and a_stale.signal.no_trade_reason == reason and a_stale.market is None
    # the window before never saw the deleted bar: the same decision as on the full file
    assert (a_prev.signal.action, round(a_prev.signal.confidence, 6)) == ("buy", 0.735667)
    assert a_prev.error is None and a_prev.bars.index[-1].isoformat() == "2026-02-26T20:00:00+00:00"
    # the window after has its newest bar (04:00) and is fresh, though its lookback has a gap
    assert a_next.error is None and a_next.signal.no_trade_reason is None and a_next.signal.action == "buy"
    assert a_next.bars.index[-1].isoformat() == "2026-02-27T04:00:00+00:00" and len(a_next.bars) == 150

    # through a run starting at the stale window: no entry there; the fresh window after enters
    # (filled at the 08:00 open, which the venue reaches in the run's third window)
    res, _ = env.run(USER, [*keys[1:], "2026-02-27-08:00"])
    assert res.success
    sigs, ints, ords = ledger(env.engine(), USER)
    stale_intent = ints[("ETH/USDT", ends[1])]
    assert stale_intent.kind == "none" and stale_intent.status == "NO_TRADE"
    assert stale_intent.reason == f"signal failed: {reason}"
    assert not [o for o in ords if o.intent_id == stale_intent.intent_id]
    nxt = ints[("ETH/USDT", ends[2])]
    assert nxt.kind == "entry" and nxt.status == "MONITORING"  # entry filled, its bracket resting
    [entry] = [o for o in ords if o.intent_id == nxt.intent_id and o.role == "entry"]
    assert entry.average_price == round(2032.69 * 1.0005, 2)  # the 08:00 open (ETH row 2026-02-27T08:00)
    # BTC, with a complete file, is untouched: two holds
    btc = sorted((e, r) for (i, e), r in sigs.items() if i == "BTC/USDT")
    assert [r.action for _, r in btc] == ["hold", "hold", "hold"] and all(r.no_trade_reason is None for _, r in btc)
    check = checks(res)["signal_usable"]
    assert check.passed is False and check.metadata["no_trade"].value == 1
    assert "stale data: newest bar closed at 2026-02-27T00:00:00+00:00" in check.metadata["failures"].value


def test_the_bar_that_must_exist_opens_at_the_window_start(env):
    """The brief's example: BTC row 2026-02-27T08:00 deleted → window key 2026-02-27-08:00 (end 12:00)
    is stale; 04:00 and 12:00 are not (BTC holds at 08:00 anyway, see the table above). The 12:00
    window is fresh but its lookback lost the 08:00 bar (the −2.3 % bar, close 66 126.99), so it
    holds where the full file sells: freshness only guards the newest bar, not gaps further back."""
    btc = write_csv(env.root / "userdata" / "BTC-USDT_4h.csv",
                    drop_row(csv_lines("BINANCE_BTC-USDT_4h.csv"), "2026-02-27T08:00:00Z"))
    env.catalogue({"BTC/USDT": ("BTC/USDT", str(btc))})
    env.strategy(instruments=["BTC/USDT"])
    spec, rt = env.runtime(USER)
    keys = ["2026-02-27-04:00", "2026-02-27-08:00", "2026-02-27-12:00"]
    ends = [window_end(spec, k) for k in keys]
    assert ends[1] == utc(2026, 2, 27, 12)
    out = analysis.analyze(rt, "BTC/USDT", ends, "probe", charts=False)
    assert [a.error for a in out] == [
        None,
        "stale data: newest bar closed at 2026-02-27T08:00:00+00:00, 1 bar missing before the window end 2026-02-27T12:00:00+00:00",
        None]
    assert [a.signal.no_trade_reason is None for a in out] == [True, False, True]
    assert [a.signal.action for a in out] == ["hold", "hold", "hold"]
    assert out[2].bars.index[-1].isoformat() == "2026-02-27T12:00:00+00:00"
    assert "2026-02-27T08:00:00+00:00" not in {t.isoformat() for t in out[2].bars.index}
    # the hole is counted: 24/7 BTC should have 150 consecutive bars; the 12:00 window's span is 151
    assert [a.gap_bars for a in out] == [0, 0, 1]


# ---------------------------------------------------------------- 4: zero-volume placeholders


def test_a_zero_volume_newest_bar_is_a_no_trade_but_older_ones_only_count(env):
    """ETH volume set to 0 on the row opening 2026-02-27T00:00 (the newest bar of window
    2026-02-27-00:00) and on the row opening 2026-02-20T00:00 (inside every window's lookback)."""
    lines = edit_row(edit_row(ETH_LINES, "2026-02-27T00:00:00Z", volume=0), "2026-02-20T00:00:00Z", volume=0)
    eth = write_csv(env.root / "userdata" / "ETH-USDT_4h.csv", lines)
    env.catalogue({"ETH/USDT": ("ETH/USDT", str(eth))})
    env.strategy(instruments=["BTC/USDT", "ETH/USDT"])
    spec, rt = env.runtime(USER)
    keys = ["2026-02-26-20:00", "2026-02-27-00:00", "2026-02-27-04:00"]
    ends = [window_end(spec, k) for k in keys]
    prev, zero, nxt = analysis.analyze(rt, "ETH/USDT", ends, "probe", charts=False)
    assert [a.zero_volume_bars for a in (prev, zero, nxt)] == [1, 2, 2]
    reason = ("stale data: the newest bar (2026-02-27T00:00:00+00:00) has zero volume, a placeholder, "
              "never the basis of an entry")
    assert zero.error == reason and zero.signal.no_trade_reason == reason
    assert zero.flags == ["zero-volume newest bar"] and zero.market is not None
    for a in (prev, nxt):  # a zero-volume bar further back is counted, never blocking
        assert a.error is None and a.flags == [] and a.signal.no_trade_reason is None and a.signal.action == "buy"

    res, instance = env.run(USER, keys[1:])
    assert res.success
    _, ints, ords = ledger(env.engine(), USER)
    it = ints[("ETH/USDT", ends[1])]
    assert it.kind == "none" and it.status == "NO_TRADE" and it.reason == f"signal failed: {reason}"
    assert ints[("ETH/USDT", ends[2])].kind == "entry"
    meta = materialization(instance, res.run_id, USER, "ohlcv_bars", keys[-1])
    assert meta["zero_volume_bars"].value == 4  # ETH 2 + 2 over the run's two windows, BTC none
    assert meta["stale_or_bad"].value == 1


# ---------------------------------------------------------------- 6: config errors at the CLI


def test_replay_start_off_the_grid_exits_2_and_changes_nothing(env, capsys):
    from trading_pipelines.cli import main

    assert main(["replay", SPOT, "--start", "2026-02-27T05:00Z", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "error: --start '2026-02-27T05:00Z' is not a window boundary of spot_4h_majors's 4h timeframe (windows start "
        "every 4 hours from 00:00 UTC); nearest boundaries: 2026-02-27T04:00Z and 2026-02-27T08:00Z; valid range: "
        "2025-06-01T00:00Z … 2026-03-03T20:00Z")
    assert main(["replay", SPOT, "--start", "2024-01-01T00:00Z", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("error: --start '2024-01-01T00:00Z' is outside the 4h windows of spot_4h_majors; valid range: "
                           "2025-06-01T00:00Z … 2026-03-03T20:00Z; nearest window start: 2025-06-01T00:00Z")
    assert main(["replay", SPOT, "--start", "2026-03-04T00:00Z", "--quiet"]) == 2  # the window ending after the data
    assert "nearest window start: 2026-03-03T20:00Z" in capsys.readouterr().err
    home = env.root / "home"
    assert not env.ledger.exists()
    assert not (home / "paper_venue.sqlite").exists()
    assert not (home / "storage").exists() and not (home / "history").exists()


def test_a_broken_user_strategy_does_not_hide_the_good_one(env, capsys):
    from trading_pipelines.cli import main

    env.strategy(name="good_4h_user", folder="mine", instruments=["ETH/USDT"])
    broken = env.root / "mine" / "broken_4h_user" / "defs.yaml"
    doc = yaml.safe_load(yaml.safe_dump(SPOT_DOC))
    doc["attributes"].update(name="broken_4h_user", leverage_typo=3)
    write_yaml(broken, doc)

    assert main(["list"]) == 2  # the broken file is an error of `list` …
    out, err = capsys.readouterr()
    names = [line.split()[0] for line in out.splitlines()]
    assert "good_4h_user" in names and SPOT in names and "broken_4h_user" not in names
    assert f"error: {broken}: attributes.leverage_typo: unknown field" in err

    # … and the good one still replays (two windows, ETH buys at the first and fills at 04:00)
    assert main(["replay", "good_4h_user", "--start", "2026-02-27T00:00Z", "--end", "2026-02-27T04:00Z",
                 "--no-charts", "--quiet", "--json"]) == 0
    out, err = capsys.readouterr()
    assert f"warning: skipped a broken strategy file: {broken}: attributes.leverage_typo: unknown field" in err
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep["strategy"] == "good_4h_user" and rep["windows"] == 2 and rep["instruments"] == ["ETH/USDT"]
    assert rep["signals"] == {"buy": 2, "no_trade": 0} and rep["trades"] == 1
    [trade] = rep["trade_list"]
    assert (trade["instrument"], trade["side"], trade["opened_at"], trade["entry_price"], trade["quantity"]) == (
        "ETH/USDT", "long", "2026-02-27T04:00:00+00:00", 2046.41, 0.9354)  # sized at the 2 055.61 protective limit
    sigs, ints, ords = ledger(env.engine(), "good_4h_user")
    assert len(sigs) == 2 and all(s.no_trade_reason is None for s in sigs.values())
    [entry] = [o for o in ords if o.role == "entry"]
    assert entry.status == "FILLED" and entry.average_price == 2046.41


def test_a_failed_background_chart_in_a_run_is_flagged_by_signal_usable(env, monkeypatch):
    """In a run (rules provider, charts on), the pool's charts of SOL/USDT fail: the signals and the
    account are those of a clean run, and only ``signal_usable`` (WARN) names the chart failures."""
    from trading_pipelines.resources.dagster_resources import TradingResource

    real = TradingResource.chart_submitter

    def submitter(self):
        submit = real(self)

        def maybe_fail(jobs):
            if jobs and jobs[0][1].startswith("SOL/USDT"):
                f = Future()
                f.set_exception(RuntimeError("pool lost SOL/USDT"))
                return f
            return submit(jobs)
        return maybe_fail
    monkeypatch.setattr(TradingResource, "chart_submitter", submitter)
    windows = SIX[:2]
    res, _ = env.run(SPOT, windows, charts=True)
    assert res.success
    sigs, ints, ords = ledger(env.engine(), SPOT)
    spec = load_strategies()[SPOT]
    ends = [window_end(spec, w) for w in windows]
    assert [sigs[("SOL/USDT", e)].action for e in ends] == ["buy", "buy"]
    assert all(sigs[("SOL/USDT", e)].no_trade_reason is None and sigs[("SOL/USDT", e)].chart_key is None for e in ends)
    assert all(sigs[(i, e)].chart_key for i in ("BTC/USDT", "ETH/USDT") for e in ends)
    assert ints[("SOL/USDT", ends[0])].kind == "entry"  # the chart failure blocked nothing
    check = checks(res)["signal_usable"]
    assert check.passed is False and check.severity is dg.AssetCheckSeverity.WARN
    assert check.metadata["no_trade"].value == 2
    table = check.metadata["failures"].value
    assert table.count("| SOL/USDT | chart failed: RuntimeError: pool lost SOL/USDT |") == 2
