"""End to end: a strategy materialized in-process over the real sample data, asserted on the ledger.

Nothing is mocked: real CSV candles, `ta` indicators (chunked, sliced point in time), mplfinance
charts in a local chart folder, the rules provider, the paper venue on its own SQLite store
($DAGSTER_HOME/paper_venue.sqlite) and the SQLite ledger, through Dagster's own job execution:
one run of ``review_<strategy>`` covering a window range (the range tags), or one run per window.
"""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy import func, select

from trading_pipelines import runtime
from trading_pipelines.assets.partitions import range_tags, window_end
from trading_pipelines.assets.review import BOOK_TAG
from trading_pipelines.config import DEFAULT_DATA_DIR, load_strategies
from trading_pipelines.domain.costs import protective_limit
from trading_pipelines.domain.models import Side
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.ledger.repo import status_report

SPOT = "spot_4h_majors"
# Four 4h windows of 2026-02-27 (00:00 … 12:00 starts). The rules provider enters ETH and SOL at
# the first window (filled at the 04:00 open) and both ATR stops are hit by the 12:00 bar.
# Recomputed for the chunked indicators: the old 150-bar frame also entered BTC at the 08:00
# window, because its EMA50 (66 965.10, an EMA over only 150 bars) sat just below EMA20
# (66 965.61). Each 512-bar chunk now warms up over 300 more bars, and EMA50 at that close is
# 66 980.23 — the value an EMA over the whole file converges to — above EMA20, so BTC holds.
WINDOWS = ["2026-02-27-00:00", "2026-02-27-04:00", "2026-02-27-08:00", "2026-02-27-12:00"]
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
LEDGER_MODELS = (m.SignalRow, m.IntentRow, m.OrderRow, m.FillRow, m.GuardResultRow, m.SnapshotRow, m.IntentStatusRow,
                 m.PositionRow, m.BookRow)
VENUE_MODELS = (m.PaperAccountRow, m.PaperOrderRow, m.PaperFillRow)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(tmp / "home"))
    mp.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp / 'ledger.sqlite'}")
    mp.setenv("TRADING_CHART_DIR", str(tmp / "charts"))
    mp.delenv("TRADING_VENUE_URL", raising=False)
    (tmp / "home").mkdir()
    yield tmp
    mp.undo()


def _run_range(defs, instance, strategy, windows, **tags):
    """One run of the strategy's job over ``windows`` (a contiguous range), all instruments."""
    job = defs.resolve_job_def(f"review_{strategy}")
    return job.execute_in_process(instance=instance, run_config=QUIET,
                                  tags={**range_tags(windows[0], windows[-1]), **tags})


def _run_each(defs, instance, strategy, windows):
    """One run per window (what the schedule does), oldest first."""
    job = defs.resolve_job_def(f"review_{strategy}")
    return [job.execute_in_process(instance=instance, partition_key=w, run_config=QUIET, tags={BOOK_TAG: "live"})
            for w in windows]


def _count(engine, model, **where):
    with session_scope(engine) as s:
        stmt = select(func.count()).select_from(model)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return s.execute(stmt).scalar_one()


def _run_ids(engine, model):
    with session_scope(engine) as s:
        return {r.run_id for r in s.execute(select(model)).scalars()}


@pytest.fixture(scope="module")
def spot_run(env):
    from trading_pipelines.definitions import defs as build

    defs = build()
    instance = dg.DagsterInstance.local_temp(str(env / "home"))
    spec = load_strategies()[SPOT]
    result = _run_range(defs, instance, SPOT, WINDOWS, **{BOOK_TAG: "live"})
    engine = get_engine(f"sqlite:///{env / 'ledger.sqlite'}")
    venue_engine = get_engine(f"sqlite:///{env / 'home' / 'paper_venue.sqlite'}")
    # what the run wrote, captured before any other test re-runs a window
    lineage = {mdl.__tablename__: _run_ids(engine, mdl) for mdl in (m.SignalRow, m.IntentRow, m.SnapshotRow, m.OrderRow)}
    return dict(defs=defs, instance=instance, spec=spec, result=result, engine=engine, venue_engine=venue_engine, env=env,
                lineage=lineage)


def test_one_run_covers_every_window_and_is_in_the_ledger(spot_run):
    result, engine = spot_run["result"], spot_run["engine"]
    assert result.success
    # 4 windows × 3 instruments: one signal and one intent per instrument × window; one snapshot of
    # the book per window (the account is one step per window, across instruments).
    assert _count(engine, m.SignalRow) == 12
    assert _count(engine, m.IntentRow) == 12
    assert _count(engine, m.IntentRow, book="live") == 12
    assert _count(engine, m.SnapshotRow) == 4
    with session_scope(engine) as s:
        snaps = s.execute(select(m.SnapshotRow).order_by(m.SnapshotRow.as_of)).scalars().all()
        assert [r.partition_key for r in snaps] == WINDOWS
        assert {(r.book, r.instrument) for r in snaps} == {("live", "*")}
        assert {r.book for r in s.execute(select(m.OrderRow)).scalars()} == {"live"}
        book = s.get(m.BookRow, ("live", SPOT))
        assert book.kind == "live" and book.windows_done == 4
        assert book.last_done == window_end(spot_run["spec"], WINDOWS[-1])
    # each row leads back to the one Dagster run
    for table, runs in spot_run["lineage"].items():
        assert runs == {result.run_id}, table
    # every asset of the job materialized for every window, in that run
    instance = spot_run["instance"]
    for step in ("ohlcv_bars", "indicator_frames", "chart_images", "signals", "trade_intents", "validated_intents",
                 "orders", "portfolio_snapshots"):
        recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey([SPOT, step])), limit=100).records
        mine = [r for r in recs if r.run_id == result.run_id]
        assert sorted(r.partition_key for r in mine) == WINDOWS, step
    # the paper venue keeps its own store beside the ledger, never the ledger's tables
    assert (spot_run["env"] / "home" / "paper_venue.sqlite").exists()
    assert _count(engine, m.PaperAccountRow) == 0
    assert _count(spot_run["venue_engine"], m.PaperAccountRow, account=SPOT) == 1


def test_entries_fill_at_next_bar_open_plus_slippage(spot_run):
    """The ETH and SOL entries planned at window 2026-02-27 00:00-04:00 fill at the 04:00 bar's open
    × (1 + 5 bps), on the 0.01 USDT tick: ETH 2045.39 × 1.0005 = 2046.41, SOL 87.63 × 1.0005 = 87.67."""
    with session_scope(spot_run["engine"]) as s:
        rep = status_report(s, SPOT)
    expected = {"ETH/USDT": 2046.41, "SOL/USDT": 87.67}
    for inst, price in expected.items():
        bars = pd.read_csv(DEFAULT_DATA_DIR / f"BINANCE_{inst.split('/')[0]}-USDT_4h.csv", parse_dates=["timestamp"],
                           index_col="timestamp")
        open_0400 = float(bars.loc["2026-02-27T04:00:00Z", "open"])
        entries = [o for o in rep["orders"] if o["instrument"] == inst and o["role"] == "entry"]
        assert entries, f"the rules provider entered {inst} in these windows"
        o = entries[0]
        assert o["status"] == "FILLED" and len(o["fills"]) == 1
        fill = o["fills"][0]
        assert fill["price"] == round(open_0400 * 1.0005, 2) == price
        assert fill["fee"] == pytest.approx(fill["price"] * fill["quantity"] * 0.001, rel=1e-9)
        assert fill["time"].startswith("2026-02-27T04:00:00")
    # BTC: no entry in these windows (see WINDOWS); the rules held
    assert not [o for o in rep["orders"] if o["instrument"] == "BTC/USDT"]
    btc = [i for i in rep["intents"] if i["instrument"] == "BTC/USDT"]
    # the 12:00 sell signal finds no BTC position: planned as a hold (nothing to exit), not an exit the guards refuse
    assert [i["kind"] for i in btc] == ["none", "none", "none", "none"]
    assert "no BTC/USDT position to exit" in btc[3]["reason"] and btc[3]["status"] == "NO_TRADE"
    assert "EMA50 66980.23" in btc[1]["reason"]


def test_entry_sized_by_one_percent_risk_with_all_guards(spot_run):
    with session_scope(spot_run["engine"]) as s:
        rep = status_report(s, SPOT)
    entries = [i for i in rep["intents"] if i["kind"] == "entry"]
    assert len(entries) == 4  # ETH and SOL at 00:00 (filled) and again at 04:00 (rejected: duplicate position)
    for i in entries:
        # sized at the worst fill, the protective limit entry × 1.005 on the tick (domain.costs):
        # quantity × |limit − stop| ≤ 1 % of equity, and within one lot of it (rounded down).
        spec_i = load_strategies()[SPOT].instrument(i["instrument"])
        limit = protective_limit(Side.BUY, i["entry"], 0.5, spec_i.tick_size)
        risk = i["quantity"] * abs(limit - i["stop"])
        assert risk <= i["equity"] * 0.01 + 1e-9
        lot = spec_i.lot_step
        assert (i["quantity"] + lot) * abs(limit - i["stop"]) > i["equity"] * 0.01
        names = [g["guard"] for g in i["guards"]]
        assert names[:8] == ["fresh_window", "market_hours", "duplicate_position", "position_limit", "balance",
                             "risk_limit", "daily_loss", "min_notional"]
        # a 2R target
        assert abs(i["take_profit"] - i["entry"]) == pytest.approx(2 * abs(i["entry"] - i["stop"]), abs=0.011)
    second = [i for i in entries if i["window_end"].startswith("2026-02-27T08:00")]
    assert {i["instrument"] for i in second} == {"ETH/USDT", "SOL/USDT"}
    for i in second:
        # sized on the book's equity as of that window end (after the first entries' fees and marks)
        assert i["status"] == "REJECTED" and "duplicate_position" in i["reason"]
        assert i["equity"] == pytest.approx(9976.153207336, abs=1e-6)


def test_stop_loss_exit_is_recorded_with_realized_pnl(spot_run):
    """Both stops are hit by the 12:00 bar (it opens above the stop and trades below it) and fill at
    stop × (1 − 5 bps) on the tick: ETH 1948.71 → 1947.74, SOL 83.14 → 83.10."""
    with session_scope(spot_run["engine"]) as s:
        rep = status_report(s, SPOT)
    closed = [p for p in rep["positions"] if p["status"] == "closed"]
    assert closed, "prices fell through the ATR stops on 2026-02-27"
    assert {p["instrument"] for p in closed} == {"ETH/USDT", "SOL/USDT"}
    assert not [p for p in rep["positions"] if p["status"] != "closed"]
    # sizes at the protective limit (close × 1.005 on the tick, domain.costs): ETH limit 2 055.61,
    # 100 / (2 055.61 − 1 948.71 = 106.90) = 0.93545 → 0.9354; SOL limit 88.06, 100 / 4.92 = 20.3252 → 20.325
    worked = {"ETH/USDT": (2046.41, 1948.71, 1947.74, 0.9354), "SOL/USDT": (87.67, 83.14, 83.10, 20.325)}
    for p in closed:
        assert p["exit_reason"] in ("stop_loss", "take_profit", "exit")
        assert p["realized_pnl"] == pytest.approx((p["exit_price"] - p["entry_price"]) * p["quantity"])
        entry, stop, exit_price, qty = worked[p["instrument"]]
        bars = pd.read_csv(DEFAULT_DATA_DIR / f"BINANCE_{p['instrument'].split('/')[0]}-USDT_4h.csv",
                           parse_dates=["timestamp"], index_col="timestamp")
        bar = bars.loc["2026-02-27T12:00:00Z"]
        assert bar["open"] > stop >= bar["low"]
        assert p["exit_reason"] == "stop_loss" and p["closed_at"].startswith("2026-02-27T12:00")
        assert (p["entry_price"], p["exit_price"], p["quantity"]) == (entry, exit_price, qty)
        assert exit_price == round(stop * (1 - 0.0005), 2)
    pnl = {p["instrument"]: p["realized_pnl"] for p in closed}
    assert pnl["ETH/USDT"] == pytest.approx((1947.74 - 2046.41) * 0.9354)   # −92.295918
    assert pnl["SOL/USDT"] == pytest.approx((83.10 - 87.67) * 20.325)      # −92.88525
    # The stop-loss order of each closed position filled; its take-profit sibling was cancelled (OCO).
    for p in closed:
        legs = {o["role"]: o for o in rep["orders"] if o["instrument"] == p["instrument"] and o["reduce_only"]}
        assert legs["stop_loss"]["status"] == "FILLED"
        assert legs["take_profit"]["status"] == "CANCELED"


def test_snapshot_equity_is_cash_plus_positions(spot_run):
    with session_scope(spot_run["engine"]) as s:
        rep = status_report(s, SPOT)
    fees = {o["instrument"] + "/" + o["role"]: o["fills"][0]["fee"] for o in rep["orders"] if o["fills"]}
    for snap in rep["snapshots"]:
        value = sum(p["quantity"] * p["mark_price"] for p in snap["positions"])
        assert snap["equity"] == pytest.approx(snap["cash"] + value)
    last = rep["snapshots"][-1]
    realized = sum(p["realized_pnl"] for p in rep["positions"] if p["status"] == "closed")
    assert last["realized_pnl"] == pytest.approx(realized)
    # worked: 10 000 − 92.295918 − 92.88525 (stops) − 7.20702816 (four fills at 0.1 %) = 9 807.61180384,
    # all in cash (no position left)
    assert sum(fees.values()) == pytest.approx(7.20702816, abs=1e-9)
    assert last["equity"] == pytest.approx(10_000 + realized - sum(fees.values()), abs=1e-9)
    assert last["equity"] == pytest.approx(9807.61180384, abs=1e-6)
    assert last["cash"] == pytest.approx(last["equity"]) and last["positions"] == []
    # 08:00: both positions open, marked at the 04:00 bar's close: 10 000 − entry fees − 20.150688
    snap08 = next(x for x in rep["snapshots"] if x["as_of"].startswith("2026-02-27T08:00"))
    assert snap08["unrealized_pnl"] == pytest.approx((2032.69 - 2046.41) * 0.9354 + (87.31 - 87.67) * 20.325)
    assert snap08["equity"] == pytest.approx(10_000 - fees["ETH/USDT/entry"] - fees["SOL/USDT/entry"]
                                             + snap08["unrealized_pnl"])
    assert snap08["equity"] == pytest.approx(9976.153207336, abs=1e-6)
    assert rep["snapshots"][0]["equity"] == 10_000.0  # the first window only places orders


def _counts(spot_run):
    out = {mdl.__tablename__: _count(spot_run["engine"], mdl) for mdl in LEDGER_MODELS}
    out.update({mdl.__tablename__: _count(spot_run["venue_engine"], mdl) for mdl in VENUE_MODELS})
    return out


def test_rerun_of_a_window_or_the_range_duplicates_nothing(spot_run):
    before = _counts(spot_run)
    with session_scope(spot_run["engine"]) as s:
        equity_before = [r.equity for r in s.execute(select(m.SnapshotRow).order_by(m.SnapshotRow.as_of)).scalars()]
    instance, defs = spot_run["instance"], spot_run["defs"]
    [single] = _run_each(defs, instance, SPOT, [WINDOWS[0]])
    assert single.success
    assert _run_range(defs, instance, SPOT, WINDOWS, **{BOOK_TAG: "live"}).success
    after = _counts(spot_run)
    assert after == before
    with session_scope(spot_run["engine"]) as s:
        assert [r.equity for r in s.execute(select(m.SnapshotRow).order_by(m.SnapshotRow.as_of)).scalars()] == equity_before
    # the re-read windows are not late reviews: the stored decisions stand
    checks = [e for e in single.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    by_name = {e.event_specific_data.asset_check_key.name: e.event_specific_data.passed for e in checks}
    assert by_name == {"signal_usable": True, "reviewed_in_time": True, "no_order_from_invalid_intent": True,
                       "positions_protected": True}


def test_asset_metadata_makes_the_ui_useful(spot_run):
    instance, result = spot_run["instance"], spot_run["result"]

    def meta(step, run_id, partition):
        recs = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey([SPOT, step]), asset_partitions=[partition]), limit=20).records
        [rec] = [r for r in recs if r.run_id == run_id]
        return rec.asset_materialization.metadata

    # the range run: a summary over its windows, with the last window's detail
    bmeta = meta("ohlcv_bars", result.run_id, WINDOWS[0])
    assert bmeta["windows"].value == 4 and bmeta["first_window"].value == WINDOWS[0]
    assert bmeta["last_window"].value == WINDOWS[-1]
    assert bmeta["instruments"].value == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    table = bmeta["last_window_bars"].value
    for inst in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):
        # 150 lookback bars; window 12:00-16:00 sees bars closed by 16:00, the newest opening at 12:00
        assert f"| {inst} | 150 | 2026-02-27T12:00:00+00:00 | 0 | 0 | ok |" in table  # no zero-volume, no missing bars
    smeta = meta("signals", result.run_id, WINDOWS[2])
    assert smeta["counts"].value == {"hold": 5, "buy": 4, "sell": 3}
    assert "| 2026-02-27-00:00 | ETH/USDT | buy |" in smeta["signals"].value
    pmeta = meta("portfolio_snapshots", result.run_id, WINDOWS[-1])
    assert pmeta["book"].value == "live" and pmeta["equity"].value == pytest.approx(9807.61180384)
    assert pmeta["point_in_time"].value is True
    # a single window (what a tick runs): chart previews inline, and the window's own bars
    [single] = _run_each(spot_run["defs"], instance, SPOT, [WINDOWS[0]])
    assert single.success
    chart = meta("chart_images", single.run_id, WINDOWS[0])
    assert chart["preview"].value.startswith("**")
    assert "![" in chart["preview"].value and "data:image/png;base64," in chart["preview"].value
    assert set(chart["last_window_keys"].value) == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
    assert all(k.startswith(f"{SPOT}/") for k in chart["last_window_keys"].value.values())
    assert chart["charts"].value == 3
    one = meta("ohlcv_bars", single.run_id, WINDOWS[0])
    # window 00:00-04:00 sees bars closed by 04:00: the newest opens at 00:00
    assert "| ETH/USDT | 150 | 2026-02-27T00:00:00+00:00 | 0 | 0 | ok |" in one["last_window_bars"].value
    sig = meta("signals", single.run_id, WINDOWS[0])
    assert sig["counts"].value == {"hold": 1, "buy": 2}
    for row in sig["signals"].value.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] in ("buy", "sell", "hold") and 0 <= float(cells[3]) <= 1


def test_status_json_cli_shape(spot_run, capsys):
    from trading_pipelines.cli import main

    assert main(["status", "--json", "--strategy", SPOT]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"books", "signals", "intents", "orders", "positions", "snapshots"}
    for inst in spot_run["spec"].instruments:
        assert any(x["instrument"] == inst for x in out["signals"])
        assert any(x["instrument"] == inst and "guards" in x for x in out["intents"])
    assert any(o["fills"] for o in out["orders"])
    assert all("strategy" in x and "instrument" in x for k in out if k != "books" for x in out[k])
    assert any(b["book_id"] == "live" and b["strategy"] == SPOT for b in out["books"])
    assert all(x["book"] == "live" for k in ("intents", "orders", "positions", "snapshots") for x in out[k])


def test_replay_book_is_its_own_account(spot_run):
    """The same windows tagged trading/book=replay trade a fresh replay book named after what it
    replays: the same decisions as the live book (same signals, same starting cash), its own rows."""
    spec, engine = spot_run["spec"], spot_run["engine"]
    with session_scope(engine) as s:
        live_before = status_report(s, SPOT, "live")
    res = _run_range(spot_run["defs"], spot_run["instance"], SPOT, WINDOWS, **{BOOK_TAG: "replay"})
    assert res.success
    ends = [window_end(spec, w) for w in WINDOWS]
    book = runtime.replay_book_id(spec, list(spec.instruments), ends[0], ends[-1])
    with session_scope(engine) as s:
        rep = status_report(s, SPOT, book)
        live_after = status_report(s, SPOT, "live")
        row = s.get(m.BookRow, (book, SPOT))
    assert row.kind == "replay" and row.windows_done == 4
    assert [x["equity"] for x in rep["snapshots"]] == pytest.approx([x["equity"] for x in live_before["snapshots"]])
    assert rep["snapshots"][-1]["equity"] == pytest.approx(9807.61180384, abs=1e-6)
    assert {p["instrument"] for p in rep["positions"] if p["exit_reason"] == "stop_loss"} == {"ETH/USDT", "SOL/USDT"}
    assert len(rep["intents"]) == 12 and all(i["book"] == book for i in rep["intents"])
    for k in ("intents", "orders", "positions", "snapshots"):
        assert live_after[k] == live_before[k]  # the live book is untouched
    assert _count(spot_run["venue_engine"], m.PaperAccountRow, account=f"{SPOT}@{book}") == 1


def test_futures_and_equities_strategies_run_by_name(env):
    """The other two strategies run through the same machinery (two windows each, every instrument),
    one run per window."""
    from trading_pipelines.definitions import defs as build

    defs = build()
    instance = dg.DagsterInstance.local_temp(str(env / "home"))
    fut = _run_each(defs, instance, "futures_1h_btc_eth", ["2026-04-15-20:00", "2026-04-15-21:00"])
    eq = _run_each(defs, instance, "equities_1d_spy_aapl", ["2017-07-03", "2017-07-04"])
    assert all(r.success for r in fut + eq)
    with session_scope(get_engine(f"sqlite:///{env / 'ledger.sqlite'}")) as s:
        rep = status_report(s, "equities_1d_spy_aapl")
        frep = status_report(s, "futures_1h_btc_eth")
    assert len(frep["signals"]) == 4 and {x["mode"] for x in frep["signals"]} == {"futures"}
    assert {x["instrument"] for x in frep["signals"]} == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    assert len(frep["snapshots"]) == 2 and len(rep["snapshots"]) == 2
    # Tuesday 2017-07-04 (Independence Day) is a window but no NYSE session: each instrument's signal
    # is a "market closed" no-trade and nothing is planned; a Saturday is no window at all.
    hol = [x for x in rep["signals"] if x["window_end"].startswith("2017-07-05")]
    assert len(hol) == 2 and {x["no_trade_reason"] for x in hol} == {"market closed: XNYS has no session on 2017-07-04"}
    assert [i["kind"] for i in rep["intents"] if i["window_end"].startswith("2017-07-05")] == ["none", "none"]
    with pytest.raises(dg.DagsterUnknownPartitionError, match="2017-06-03"):
        _run_each(defs, instance, "equities_1d_spy_aapl", ["2017-06-03"])


@pytest.mark.parametrize("per_window", [True, False], ids=["window_by_window", "one_range_run"])
def test_futures_long_fills_with_leverage_and_margin(tmp_path, monkeypatch, per_window):
    """futures_1h_btc_eth goes long BTC/USDT:USDT at the 2026-04-13 20:00-21:00 window (ADX-strong
    uptrend): the entry fills at the 21:00 open, 3× isolated; the account holds notional / 3 as margin,
    and equity = cash + margin + unrealized P&L. (Its own instance, ledger and venue store: the
    module's live book has already reviewed later futures windows, and a late window plans no trade.)
    The same outcome whether the two windows run one by one or as one range run."""
    from trading_pipelines.definitions import defs as build

    env = tmp_path
    (env / "home").mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(env / "home"))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{env / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(env / "charts"))
    monkeypatch.delenv("TRADING_VENUE_URL", raising=False)
    defs = build()
    instance = dg.DagsterInstance.local_temp(str(env / "home"))
    spec = load_strategies()["futures_1h_btc_eth"]
    windows = ["2026-04-13-20:00", "2026-04-13-21:00"]
    res = _run_each(defs, instance, spec.name, windows) if per_window else [
        _run_range(defs, instance, spec.name, windows, **{BOOK_TAG: "live"})]
    assert all(r.success for r in res)
    with session_scope(get_engine(f"sqlite:///{env / 'ledger.sqlite'}")) as s:
        rep = status_report(s, spec.name)
    btc = next(i for i in rep["intents"] if i["instrument"] == "BTC/USDT:USDT" and i["kind"] == "entry")
    assert btc["position_side"] == "long" and btc["leverage"] == 3.0 and btc["margin_mode"] == "isolated"
    assert btc["margin"] == pytest.approx(btc["notional"] / 3)
    assert btc["liquidation_price"] == pytest.approx(btc["entry"] * (1 - 1 / 3 + 0.004))
    assert btc["stop"] > btc["liquidation_price"]
    entry = next(o for o in rep["orders"] if o["intent_id"] == btc["intent_id"] and o["role"] == "entry")
    assert entry["status"] == "FILLED" and entry["fills"][0]["time"].startswith("2026-04-13T21:00")
    # worked: BTC entry 73 149.36 (the 21:00 open) × (1 + 3 bps) = 73 171.30 on the 0.1 tick, within the
    # protective limit 73 149.36 × 1.005 = 73 515.1 (domain.costs); sized on it: 100 / (73 515.1 − 71 894.7
    # = 1 620.4) = 0.0617 → 0.061 BTC
    assert entry["price"] == 73515.1 and entry["type"] == "limit"
    assert entry["fills"][0]["price"] == 73171.3 and entry["quantity"] == 0.061
    snap = rep["snapshots"][-1]
    [pos] = [p for p in snap["positions"] if p["instrument"] == "BTC/USDT:USDT"]
    unreal = (pos["mark_price"] - pos["entry_price"]) * pos["quantity"]
    assert pos["margin"] == pytest.approx(pos["quantity"] * pos["entry_price"] / 3)
    assert snap["equity"] == pytest.approx(snap["cash"] + sum(p["margin"] for p in snap["positions"])
                                           + sum((p["mark_price"] - p["entry_price"]) * p["quantity"] * (1 if p["side"] == "long" else -1)
                                                 for p in snap["positions"]))
    assert unreal == pytest.approx(snap["unrealized_pnl"] - sum(
        (p["mark_price"] - p["entry_price"]) * p["quantity"] * (1 if p["side"] == "long" else -1)
        for p in snap["positions"] if p["instrument"] != "BTC/USDT:USDT"))
    # both instruments long at 21:00 (BTC 0.061 @ 73 171.3, ETH 1.623 @ 2 253.17); the 22:00 snapshot marks
    # them at 73 179.71 and 2 260.07: unrealized 0.061 × 8.41 + 1.623 × 6.90 = 11.71171, equity 10 007.65
    assert snap["as_of"].startswith("2026-04-13T22:00")
    assert snap["equity"] == pytest.approx(10007.651537895, abs=1e-6)
    assert snap["unrealized_pnl"] == pytest.approx(11.71171, abs=1e-6)
