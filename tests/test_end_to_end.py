"""End to end: a strategy materialized in-process over the real sample data, asserted on the ledger.

Nothing is mocked: real CSV candles, `ta` indicators, mplfinance charts in a local chart folder,
the rules provider, the paper venue and the SQLite ledger, through Dagster's own job execution.
"""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy import func, select

from trading_pipelines.assets.partitions import INSTRUMENT_DIM, WINDOW_DIM
from trading_pipelines.config import DEFAULT_DATA_DIR, load_strategies
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.ledger.repo import status_report

SPOT = "spot_4h_majors"
# Six 4h windows in which the rules provider enters BTC, ETH and SOL and two stops are hit.
WINDOWS = ["2026-02-27-00:00", "2026-02-27-04:00", "2026-02-27-08:00", "2026-02-27-12:00"]
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(tmp / "home"))
    mp.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp / 'ledger.sqlite'}")
    mp.setenv("TRADING_CHART_DIR", str(tmp / "charts"))
    (tmp / "home").mkdir()
    yield tmp
    mp.undo()


def _run(defs, instance, strategy, windows, instruments):
    defs.resolve_job_def(f"universe_{strategy}").execute_in_process(instance=instance, run_config=QUIET)
    job = defs.resolve_job_def(f"review_{strategy}")
    results = []
    for w in windows:
        for inst in instruments:
            key = dg.MultiPartitionKey({INSTRUMENT_DIM: inst, WINDOW_DIM: w})
            results.append(job.execute_in_process(instance=instance, partition_key=key, run_config=QUIET))
    return results


@pytest.fixture(scope="module")
def spot_run(env):
    from trading_pipelines.definitions import defs as build

    defs = build()
    instance = dg.DagsterInstance.local_temp(str(env / "home"))
    spec = load_strategies()[SPOT]
    results = _run(defs, instance, SPOT, WINDOWS, list(spec.instruments))
    engine = get_engine(f"sqlite:///{env / 'ledger.sqlite'}")
    return dict(defs=defs, instance=instance, spec=spec, results=results, engine=engine, env=env)


def _count(engine, model):
    with session_scope(engine) as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_every_partition_succeeds_and_is_in_the_ledger(spot_run):
    assert all(r.success for r in spot_run["results"])
    engine = spot_run["engine"]
    # 4 windows × 3 instruments: one signal, one intent, one snapshot per partition.
    assert _count(engine, m.SignalRow) == 12
    assert _count(engine, m.IntentRow) == 12
    assert _count(engine, m.SnapshotRow) == 12
    with session_scope(engine) as s:
        runs = {r.run_id for r in s.execute(select(m.SignalRow)).scalars()}
    assert runs == {r.run_id for r in spot_run["results"]}  # each row leads back to its Dagster run


def test_entries_fill_at_next_bar_open_plus_slippage(spot_run):
    """The ETH entry planned at window 2026-02-27 00:00-04:00 fills at the 04:00 bar's open × (1 + 5 bps),
    on the 0.01 USDT tick."""
    bars = pd.read_csv(DEFAULT_DATA_DIR / "BINANCE_ETH-USDT_4h.csv", parse_dates=["timestamp"], index_col="timestamp")
    open_0400 = float(bars.loc["2026-02-27T04:00:00Z", "open"])
    with session_scope(spot_run["engine"]) as s:
        rep = status_report(s, SPOT)
    eth_entries = [o for o in rep["orders"] if o["instrument"] == "ETH/USDT" and o["role"] == "entry"]
    assert eth_entries, "the rules provider entered ETH in these windows"
    o = eth_entries[0]
    assert o["status"] == "FILLED" and len(o["fills"]) == 1
    fill = o["fills"][0]
    assert fill["price"] == round(open_0400 * 1.0005, 2)
    assert fill["fee"] == pytest.approx(fill["price"] * fill["quantity"] * 0.001, rel=1e-9)
    assert fill["time"].startswith("2026-02-27T04:00:00")


def test_entry_sized_by_one_percent_risk_with_all_guards(spot_run):
    with session_scope(spot_run["engine"]) as s:
        rep = status_report(s, SPOT)
    entries = [i for i in rep["intents"] if i["kind"] == "entry"]
    assert entries
    for i in entries:
        # quantity × |entry − stop| ≤ 1 % of equity, and within one lot of it (rounded down).
        risk = i["quantity"] * abs(i["entry"] - i["stop"])
        assert risk <= i["equity"] * 0.01 + 1e-9
        lot = load_strategies()[SPOT].instrument(i["instrument"]).lot_step
        assert (i["quantity"] + lot) * abs(i["entry"] - i["stop"]) > i["equity"] * 0.01
        names = [g["guard"] for g in i["guards"]]
        assert names[:8] == ["fresh_window", "market_hours", "duplicate_position", "position_limit", "balance",
                             "risk_limit", "daily_loss", "min_notional"]
        # a 2R target
        assert abs(i["take_profit"] - i["entry"]) == pytest.approx(2 * abs(i["entry"] - i["stop"]), abs=0.011)


def test_stop_loss_exit_is_recorded_with_realized_pnl(spot_run):
    with session_scope(spot_run["engine"]) as s:
        rep = status_report(s, SPOT)
    closed = [p for p in rep["positions"] if p["status"] == "closed"]
    assert closed, "prices fell through the ATR stops on 2026-02-27"
    for p in closed:
        assert p["exit_reason"] in ("stop_loss", "take_profit", "exit")
        assert p["realized_pnl"] == pytest.approx((p["exit_price"] - p["entry_price"]) * p["quantity"])
    # The stop-loss order of each closed position filled; its take-profit sibling was cancelled (OCO).
    for p in closed:
        legs = {o["role"]: o for o in rep["orders"] if o["instrument"] == p["instrument"] and o["reduce_only"]}
        assert legs["stop_loss"]["status"] == "FILLED"
        assert legs["take_profit"]["status"] == "CANCELLED"


def test_snapshot_equity_is_cash_plus_positions(spot_run):
    with session_scope(spot_run["engine"]) as s:
        rep = status_report(s, SPOT)
    last = rep["snapshots"][-1]
    value = sum(p["quantity"] * p["mark_price"] for p in last["positions"])
    assert last["equity"] == pytest.approx(last["cash"] + value)
    realized = sum(p["realized_pnl"] for p in rep["positions"] if p["status"] == "closed")
    assert last["realized_pnl"] == pytest.approx(realized)


def test_rerun_of_a_partition_duplicates_nothing(spot_run):
    engine = spot_run["engine"]
    before = {mdl.__tablename__: _count(engine, mdl) for mdl in (m.SignalRow, m.IntentRow, m.OrderRow, m.FillRow,
                                                                   m.GuardResultRow, m.PaperOrderRow, m.SnapshotRow,
                                                                   m.IntentStatusRow, m.PositionRow)}
    job = spot_run["defs"].resolve_job_def(f"review_{SPOT}")
    for inst in spot_run["spec"].instruments:
        key = dg.MultiPartitionKey({INSTRUMENT_DIM: inst, WINDOW_DIM: WINDOWS[0]})
        assert job.execute_in_process(instance=spot_run["instance"], partition_key=key, run_config=QUIET).success
    after = {mdl.__tablename__: _count(engine, mdl) for mdl in (m.SignalRow, m.IntentRow, m.OrderRow, m.FillRow,
                                                                  m.GuardResultRow, m.PaperOrderRow, m.SnapshotRow,
                                                                  m.IntentStatusRow, m.PositionRow)}
    assert after == before


def test_asset_metadata_makes_the_ui_useful(spot_run):
    instance = spot_run["instance"]
    key = dg.MultiPartitionKey({INSTRUMENT_DIM: "BTC/USDT", WINDOW_DIM: WINDOWS[0]})
    chart = instance.get_latest_materialization_event(dg.AssetKey([SPOT, "chart_images"])).asset_materialization
    assert chart.metadata["preview"].value.startswith("![")
    assert "data:image/png;base64," in chart.metadata["preview"].value
    assert chart.metadata["object_key"].value.startswith(f"{SPOT}/")
    sig_events = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey([SPOT, "signals"]), asset_partitions=[str(key)]), limit=1).records
    meta = sig_events[0].asset_materialization.metadata
    assert meta["action"].value in ("buy", "sell", "hold") and 0 <= meta["confidence"].value <= 1
    bars = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey([SPOT, "ohlcv_bars"]), asset_partitions=[str(key)]), limit=1).records
    bmeta = bars[0].asset_materialization.metadata
    assert bmeta["rows"].value == 150
    assert bmeta["last_bar_close"].value == "2026-02-27T04:00:00+00:00"  # window 00:00-04:00 sees bars closed by 04:00


def test_status_json_cli_shape(spot_run, capsys):
    from trading_pipelines.cli import main

    assert main(["status", "--json", "--strategy", SPOT]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"signals", "intents", "orders", "positions", "snapshots"}
    for inst in spot_run["spec"].instruments:
        assert any(x["instrument"] == inst for x in out["signals"])
        assert any(x["instrument"] == inst and "guards" in x for x in out["intents"])
    assert any(o["fills"] for o in out["orders"])
    assert all("strategy" in x and "instrument" in x for k in out for x in out[k])


def test_futures_and_equities_strategies_run_by_name(env):
    """The other two strategies run through the same machinery (two windows each, every instrument)."""
    from trading_pipelines.definitions import defs as build

    defs = build()
    instance = dg.DagsterInstance.local_temp(str(env / "home"))
    specs = load_strategies()
    fut = _run(defs, instance, "futures_1h_btc_eth", ["2026-04-15-20:00", "2026-04-15-21:00"],
               list(specs["futures_1h_btc_eth"].instruments))
    eq = _run(defs, instance, "equities_1d_spy_aapl", ["2017-06-02", "2017-06-03"], list(specs["equities_1d_spy_aapl"].instruments))
    assert all(r.success for r in fut + eq)
    with session_scope(get_engine(f"sqlite:///{env / 'ledger.sqlite'}")) as s:
        rep = status_report(s, "equities_1d_spy_aapl")
        frep = status_report(s, "futures_1h_btc_eth")
    assert len(frep["signals"]) == 4 and {x["mode"] for x in frep["signals"]} == {"futures"}
    # Saturday 2017-06-03 is no NYSE session: any entry planned for it fails market_hours.
    sat = [i for i in rep["intents"] if i["window_end"].startswith("2017-06-04")]
    assert len(sat) == 2
    for i in sat:
        if i["kind"] == "entry":
            mh = next(g for g in i["guards"] if g["guard"] == "market_hours")
            assert not mh["passed"] and "no session on 2017-06-03" in mh["message"]


def test_futures_long_fills_with_leverage_and_margin(tmp_path, monkeypatch):
    """futures_1h_btc_eth goes long BTC/USDT:USDT at the 2026-04-13 20:00-21:00 window (ADX-strong
    uptrend): the entry fills at the 21:00 open, 3× isolated; the account holds notional / 3 as margin,
    and equity = cash + margin + unrealized P&L. (Its own instance and ledger: the module's account
    has already reviewed later futures windows, and a late window plans no trade.)"""
    from trading_pipelines.definitions import defs as build

    env = tmp_path
    (env / "home").mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(env / "home"))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{env / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(env / "charts"))
    defs = build()
    instance = dg.DagsterInstance.local_temp(str(env / "home"))
    spec = load_strategies()["futures_1h_btc_eth"]
    res = _run(defs, instance, spec.name, ["2026-04-13-20:00", "2026-04-13-21:00"], list(spec.instruments))
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
