"""Cadence: the per-strategy review schedule and the position-monitor sensor, evaluated against a
real instance, real candles, the paper venue and the SQLite ledger."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import pytest
from sqlalchemy import select

from trading_pipelines.assets.partitions import window_end
from trading_pipelines.config import load_strategies
from trading_pipelines.domain.models import IntentKind, IntentStatus, Mode, PositionSide, Side, TradeIntent
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.ledger.repo import Lineage, record_intent, record_orders, set_intent_status

SPOT = "spot_4h_majors"


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(tmp_path / "charts"))
    from trading_pipelines.definitions import defs

    return defs(), dg.DagsterInstance.local_temp(str(tmp_path)), get_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")


def test_schedule_requests_each_instrument_for_the_window_that_just_closed(env):
    defs, instance, _ = env
    instance.add_dynamic_partitions(f"{SPOT}__instruments", ["BTC/USDT", "ETH/USDT", "SOL/USDT"])
    sched = defs.resolve_schedule_def(f"review_{SPOT}_schedule")
    tick = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)  # the 04:00-08:00 window has just closed
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as ctx:
        reqs = sched.evaluate_tick(ctx).run_requests
    assert sorted(r.partition_key for r in reqs) == [
        "BTC/USDT|2026-03-01-04:00", "ETH/USDT|2026-03-01-04:00", "SOL/USDT|2026-03-01-04:00"]
    assert len({r.run_key for r in reqs}) == 3  # run keys: each instrument × window runs once


def test_equities_schedule_reviews_the_session_that_just_closed(env):
    """Saturday 00:30 UTC reviews Friday's NYSE session (window 2017-06-02), Tuesday 00:30 Monday's;
    an instrument registered but no longer in the strategy file gets no run."""
    defs, instance, _ = env
    instance.add_dynamic_partitions("equities_1d_spy_aapl__instruments", ["SPY", "AAPL", "MSFT"])
    sched = defs.resolve_schedule_def("review_equities_1d_spy_aapl_schedule")
    assert sched.cron_schedule == "30 0 * * 2-6"
    for tick, window in ((datetime(2017, 6, 3, 0, 30, tzinfo=timezone.utc), "2017-06-02"),
                         (datetime(2017, 6, 6, 0, 30, tzinfo=timezone.utc), "2017-06-05")):
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick,
                                       repository_def=defs.get_repository_def()) as ctx:
            reqs = sched.evaluate_tick(ctx).run_requests
        assert sorted(r.partition_key for r in reqs) == [f"AAPL|{window}", f"SPY|{window}"]


def test_schedule_skips_without_instruments(env):
    defs, instance, _ = env
    sched = defs.resolve_schedule_def(f"review_{SPOT}_schedule")
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2026, 3, 1, 8, tzinfo=timezone.utc),
                                   repository_def=defs.get_repository_def()) as ctx:
        data = sched.evaluate_tick(ctx)
    assert not data.run_requests and "symbol_universe" in data.skip_message


def test_position_monitor_records_the_stop_loss_exit(env):
    """A BTC long placed at the 2025-10-10 16:00 window end fills at that bar's open 119 018.99 × 1.0005
    = 119 078.50; its 110 000 stop is hit by the 20:00 flash-crash bar (low 102 000) and fills at
    110 000 × (1 − 5 bps) = 109 945.00. The monitor advances BTC to the strategy's clock (set by an
    ETH review a day later) and records both fills and the exit."""
    defs, instance, engine = env
    spec = load_strategies()[SPOT]
    from trading_pipelines.resources.dagster_resources import default_resources
    from trading_pipelines.sensors.position_monitor import monitor_strategy

    trading = default_resources()["trading"]
    rt = trading.runtime(spec)
    placed = window_end(spec, "2025-10-10-12:00")  # 16:00Z
    intent = TradeIntent(intent_id="it-" + "a" * 24, strategy=SPOT, instrument="BTC/USDT", window_end=placed, mode=Mode.SPOT,
                         kind=IntentKind.ENTRY, side=Side.BUY, position_side=PositionSide.LONG, quantity=0.01, entry=114000.0,
                         stop=110000.0, take_profit=130000.0, risk_amount=40.0, notional=1140.0, margin=1140.0, equity=10000.0)
    lin = Lineage(SPOT, "BTC/USDT", "BTC/USDT|2025-10-10-12:00", "test-run")
    with session_scope(engine) as s:
        record_intent(s, lin, intent)
        set_intent_status(s, lin, intent.intent_id, IntentStatus.VALIDATED)
        orders = rt.venue.submit(s, intent, placed_at=placed)
        record_orders(s, lin, intent.intent_id, "spot", "paper", orders)
        set_intent_status(s, lin, intent.intent_id, IntentStatus.SUBMITTED)
        rt.venue.advance(s, "BTC/USDT", placed)                      # the clock starts at placement
        rt.venue.advance(s, "ETH/USDT", placed.replace(day=11))      # another instrument's review moved on
    events = monitor_strategy(spec, trading)
    roles = [(e.role, e.price) for e in events]
    # entry at the 16:00 open × 1.0005, then the 20:00 crash bar (low 102 000) hits the 110 000 stop
    assert roles[0] == ("entry", 119078.5)
    assert roles[1] == ("stop_loss", 109945.0)
    with session_scope(engine) as s:
        pos = s.execute(select(m.PositionRow)).scalar_one()
        status = s.get(m.IntentRow, intent.intent_id).status
        audit = s.execute(select(m.AuditRow).where(m.AuditRow.event == "venue_event")).scalars().all()
    assert pos.status == "closed" and pos.exit_reason == "stop_loss" and pos.exit_price == 109945.0
    assert pos.realized_pnl == pytest.approx((109945.0 - pos.entry_price) * 0.01)
    assert status == "FILLED" and len(audit) == 2
    assert monitor_strategy(spec, trading) == []  # nothing new: idempotent


def test_monitor_sensor_launches_the_job_only_while_something_is_open(env):
    """No positions or resting orders: the sensor skips. After an entry is placed: it requests one
    position_monitor_job run for the strategy, and that run (in process here) fills the entry."""
    defs, instance, engine = env
    sensor = defs.resolve_sensor_def("position_monitor")
    repo_def = defs.get_repository_def()
    with dg.build_sensor_context(instance=instance, repository_def=repo_def, resources=repo_def.get_top_level_resources()) as ctx:
        data = sensor.evaluate_tick(ctx)
    assert not data.run_requests and "no open positions" in data.skip_message

    from trading_pipelines.resources.dagster_resources import default_resources

    spec = load_strategies()[SPOT]
    rt = default_resources()["trading"].runtime(spec, signals=False)
    placed = window_end(spec, "2025-10-10-12:00")
    intent = TradeIntent(intent_id="it-" + "b" * 24, strategy=SPOT, instrument="BTC/USDT", window_end=placed, mode=Mode.SPOT,
                         kind=IntentKind.ENTRY, side=Side.BUY, position_side=PositionSide.LONG, quantity=0.01, entry=119000.0,
                         stop=110000.0, take_profit=130000.0, risk_amount=90.0, notional=1190.0, margin=1190.0, equity=10000.0)
    with session_scope(engine) as s:
        rt.venue.submit(s, intent, placed_at=placed)
        rt.venue.advance(s, "BTC/USDT", placed)
        rt.venue.advance(s, "ETH/USDT", placed + spec.bar_duration)  # another review moved the account to 20:00
    with dg.build_sensor_context(instance=instance, repository_def=repo_def, resources=repo_def.get_top_level_resources()) as ctx:
        [req] = sensor.evaluate_tick(ctx).run_requests
    assert req.run_config["ops"]["monitor_positions"]["config"]["strategies"] == [SPOT]
    result = defs.resolve_job_def("position_monitor_job").execute_in_process(
        instance=instance, run_config=req.run_config, raise_on_error=True)
    assert result.success and result.output_for_node("monitor_positions") == {SPOT: 1}  # the entry filled
    with session_scope(engine) as s:
        assert len(rt.venue.positions(s)) == 1
