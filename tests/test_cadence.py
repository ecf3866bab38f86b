"""Cadence: the per-strategy review schedule and the position-monitor sensor, evaluated against a
real instance, real candles, the paper venue (its own SQLite store under DAGSTER_HOME) and the
SQLite ledger."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import pytest
from sqlalchemy import select

from trading_pipelines.assets.partitions import window_end
from trading_pipelines.assets.review import BOOK_TAG, INSTRUMENTS_TAG
from trading_pipelines.config import load_strategies
from trading_pipelines.domain.models import IntentKind, IntentStatus, Mode, OrderRole, PositionSide, Side, TradeIntent
from trading_pipelines.domain.paper import entry_reserve
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.ledger.legs import record_reported
from trading_pipelines.ledger.repo import Lineage, record_intent, set_intent_status
from trading_pipelines.account.requests import order_requests

SPOT = "spot_4h_majors"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture()
def env(embedded_home):
    tmp_path = embedded_home
    from trading_pipelines.definitions import defs

    return defs(), dg.DagsterInstance.local_temp(str(tmp_path)), get_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")


def _tick(defs, instance, name, tick):
    sched = defs.resolve_schedule_def(f"review_{name}_schedule")
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as ctx:
        return sched.evaluate_tick(ctx)


def _covers_all(tags, spec) -> bool:
    """A run covers every instrument when it names no subset (or names them all)."""
    chosen = tags.get(INSTRUMENTS_TAG)
    return chosen is None or sorted(chosen.split(",")) == sorted(spec.instruments)


def test_schedule_requests_one_run_for_the_window_that_just_closed(env):
    defs, instance, engine = env
    spec = load_strategies()[SPOT]
    tick = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)  # the 04:00-08:00 window has just closed
    [req] = _tick(defs, instance, SPOT, tick).run_requests  # exactly one run per tick
    assert req.partition_key == "2026-03-01-04:00"
    assert req.run_key == "2026-03-01-04:00"  # each window runs once, however often the tick is evaluated
    assert req.tags[BOOK_TAG] == "live"
    assert _covers_all(req.tags, spec)
    [again] = _tick(defs, instance, SPOT, tick).run_requests
    assert (again.run_key, again.partition_key) == (req.run_key, req.partition_key)
    # the run it asks for reviews every instrument of the window on the live book
    job = defs.resolve_job_def(req.job_name or f"review_{SPOT}")
    assert job.name == f"review_{SPOT}"
    res = job.execute_in_process(instance=instance, partition_key=req.partition_key, tags=req.tags, run_config=QUIET)
    assert res.success
    end = window_end(spec, req.partition_key)
    with session_scope(engine) as s:
        sigs = s.execute(select(m.SignalRow).where(m.SignalRow.window_end == end)).scalars().all()
        intents = s.execute(select(m.IntentRow).where(m.IntentRow.window_end == end)).scalars().all()
        snaps = s.execute(select(m.SnapshotRow)).scalars().all()
    assert sorted(x.instrument for x in sigs) == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    assert sorted(x.instrument for x in intents) == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    assert {x.book for x in intents} == {"live"} and {x.run_id for x in sigs} == {res.run_id}
    assert [(x.book, x.partition_key) for x in snaps] == [("live", "2026-03-01-04:00")]


def test_equities_schedule_reviews_the_session_that_just_closed(env):
    """Saturday 00:30 UTC reviews Friday's NYSE session (window 2017-06-02), Tuesday 00:30 Monday's;
    one run per tick, covering the strategy file's instruments (SPY and AAPL) and nothing else
    (instruments are no partition dimension any more: there is nothing left registered to drop)."""
    defs, instance, _ = env
    spec = load_strategies()["equities_1d_spy_aapl"]
    assert sorted(spec.instruments) == ["AAPL", "SPY"]
    sched = defs.resolve_schedule_def("review_equities_1d_spy_aapl_schedule")
    assert sched.cron_schedule == "30 0 * * 2-6"
    for tick, window in ((datetime(2017, 6, 3, 0, 30, tzinfo=timezone.utc), "2017-06-02"),
                         (datetime(2017, 6, 6, 0, 30, tzinfo=timezone.utc), "2017-06-05")):
        [req] = _tick(defs, instance, spec.name, tick).run_requests
        assert (req.partition_key, req.run_key) == (window, window)
        assert req.tags[BOOK_TAG] == "live" and _covers_all(req.tags, spec)


def test_schedule_skips_before_the_first_window_has_closed(env):
    defs, instance, _ = env
    spec = load_strategies()[SPOT]
    first_close = window_end(spec, "2025-06-01-00:00")
    data = _tick(defs, instance, SPOT, datetime(2025, 5, 31, 20, tzinfo=timezone.utc))
    assert not data.run_requests and "no complete window yet" in data.skip_message
    [req] = _tick(defs, instance, SPOT, first_close).run_requests
    assert req.partition_key == "2025-06-01-00:00"


def _place(rt, intent, placed, partition_key, engine):
    """Record the intent in the ledger and send its bracket to the book's venue (what EXECUTE does)."""
    lin = Lineage(SPOT, intent.instrument, partition_key, "test-run", rt.book)
    venue = rt.venue
    with session_scope(engine) as s:
        record_intent(s, lin, intent)
        set_intent_status(s, lin, intent.intent_id, IntentStatus.VALIDATED)
        reserve = entry_reserve(intent.quantity, intent.entry, 1.0, False, rt.spec.venue.fee_rate, rt.spec.venue.slippage_bps)
        with venue.unit_of_work():
            orders = [venue.create_order(r, placed_at=placed, position_side="long", leverage=1.0,
                                         reserve=reserve if r.role is OrderRole.ENTRY else 0.0)
                      for r in order_requests(intent)]
        record_reported(s, lin, intent.intent_id, "spot", venue.name, orders)
        set_intent_status(s, lin, intent.intent_id, IntentStatus.SUBMITTED)


def test_position_monitor_records_the_stop_loss_exit(env):
    """A BTC long placed at the 2025-10-10 16:00 window end fills at that bar's open 119 018.99 × 1.0005
    = 119 078.50; its 110 000 stop is hit by the 20:00 flash-crash bar (low 102 000) and fills at
    110 000 × (1 − 5 bps) = 109 945.00. The monitor advances the live book's venue to its clock (set
    by an ETH review a day later) and records both fills and the exit."""
    defs, instance, engine = env
    spec = load_strategies()[SPOT]
    from trading_pipelines.resources.dagster_resources import default_resources
    from trading_pipelines.sensors.position_monitor import monitor_strategy

    trading = default_resources()["trading"]
    rt = trading.runtime(spec)
    assert rt.book == "live"
    placed = window_end(spec, "2025-10-10-12:00")  # 16:00Z
    intent = TradeIntent(intent_id="it-" + "a" * 24, strategy=SPOT, instrument="BTC/USDT", window_end=placed, mode=Mode.SPOT,
                         kind=IntentKind.ENTRY, side=Side.BUY, position_side=PositionSide.LONG, quantity=0.01, entry=119018.98,
                         stop=110000.0, take_profit=130000.0, risk_amount=90.19, notional=1190.19, margin=1190.19, equity=10000.0)
    # the entry is a protective limit 0.5 % above the 12:00 close 119 018.98 (domain.costs): 119 613.67 ≥ the fill
    # another instrument's review has moved the account on a day (the paper exchange advances every
    # instrument holding orders with the account, so BTC is behind the clock only for an order placed
    # after that move); the BTC order's clock starts at its placement
    rt.venue.advance(["ETH/USDT"], placed.replace(day=11))
    _place(rt, intent, placed, "2025-10-10-12:00", engine)
    with rt.venue.unit_of_work():
        assert rt.venue.clock() == placed.replace(day=11)
        assert rt.venue.instrument_clock("BTC/USDT") is None and len(rt.venue.fetch_open_orders()) == 3
    events = monitor_strategy(spec, trading)
    roles = [(e.role, e.price) for e in events]
    # entry at the 16:00 open × 1.0005, then the 20:00 crash bar (low 102 000) hits the 110 000 stop
    assert roles[0] == ("entry", 119078.5)
    assert roles[1] == ("stop_loss", 109945.0)
    assert len(roles) == 2
    with session_scope(engine) as s:
        pos = s.execute(select(m.PositionRow)).scalar_one()
        status = s.get(m.IntentRow, intent.intent_id).status
        audit = s.execute(select(m.AuditRow).where(m.AuditRow.event == "venue_event")).scalars().all()
        legs = {o.role: o.status for o in s.execute(select(m.OrderRow)).scalars()}
    assert pos.book == "live"
    assert pos.status == "closed" and pos.exit_reason == "stop_loss" and pos.exit_price == 109945.0
    assert pos.entry_price == 119078.5
    assert pos.realized_pnl == pytest.approx((109945.0 - pos.entry_price) * 0.01)
    assert status == "CLOSED" and len(audit) == 2
    with session_scope(engine) as s:
        reason = s.get(m.IntentRow, intent.intent_id).reason
    # worked: 0.01 × (109945.0 − 119078.5) = −91.335 (in binary floating point −91.33500000000013: −91.34 to the cent)
    # fees: 0.1 % of each fill's notional, 1 190.785 × 0.001 = 1.190785 + 1 099.45 × 0.001 = 1.09945 → 2.29; net −93.63
    assert reason == ("position closed by its stop_loss at 109945.0: realized P&L -91.34 (quote currency, before fees); "
                      "fees 2.29, net -93.63")
    assert legs == {"entry": "FILLED", "stop_loss": "FILLED", "take_profit": "CANCELED"}
    assert monitor_strategy(spec, trading) == []  # nothing new: idempotent


def test_monitor_sensor_launches_the_job_only_while_the_live_book_holds_something(env):
    """No positions or resting orders: the sensor skips. An entry resting on a replay book changes
    nothing (replay books are finished simulations, never monitored). After an entry is placed on the
    live book: it requests one position_monitor_job run for the strategy, and that run (in process
    here) fills the entry; the open position keeps the sensor launching."""
    defs, instance, engine = env
    sensor = defs.resolve_sensor_def("position_monitor")
    repo_def = defs.get_repository_def()

    def evaluate():
        with dg.build_sensor_context(instance=instance, repository_def=repo_def,
                                     resources=repo_def.get_top_level_resources()) as ctx:
            return sensor.evaluate_tick(ctx)

    data = evaluate()
    assert not data.run_requests and "no open positions" in data.skip_message

    from trading_pipelines.resources.dagster_resources import default_resources

    spec = load_strategies()[SPOT]
    trading = default_resources()["trading"]
    placed = window_end(spec, "2025-10-10-12:00")

    def entry(letter):
        return TradeIntent(intent_id="it-" + letter * 24, strategy=SPOT, instrument="BTC/USDT", window_end=placed,
                           mode=Mode.SPOT, kind=IntentKind.ENTRY, side=Side.BUY, position_side=PositionSide.LONG,
                           quantity=0.01, entry=119000.0, stop=110000.0, take_profit=130000.0, risk_amount=90.0,
                           notional=1190.0, margin=1190.0, equity=10000.0)

    replay = trading.runtime(spec, signals=False, book="replay-0123456789ab")
    with session_scope(engine) as s:
        from trading_pipelines.ledger.repo import ensure_book

        ensure_book(s, SPOT, replay.book, kind="replay", venue_account=f"{SPOT}@{replay.book}",
                    starting_cash=spec.venue.starting_cash)
    _place(replay, entry("c"), placed, "2025-10-10-12:00", engine)
    with replay.venue.unit_of_work():
        assert replay.venue.fetch_open_orders()  # the replay book does hold a resting entry
    data = evaluate()
    assert not data.run_requests and "no open positions" in data.skip_message

    rt = trading.runtime(spec, signals=False)
    assert rt.book == "live"
    rt.venue.advance(["ETH/USDT"], placed + spec.bar_duration)  # another review moved the account to 20:00
    _place(rt, entry("b"), placed, "2025-10-10-12:00", engine)
    [req] = evaluate().run_requests
    assert req.run_config["ops"]["monitor_positions"]["config"]["strategies"] == [SPOT]
    result = defs.resolve_job_def("position_monitor_job").execute_in_process(
        instance=instance, run_config=req.run_config, raise_on_error=True)
    assert result.success and result.output_for_node("monitor_positions") == {SPOT: 1}  # the entry filled
    with rt.venue.unit_of_work():
        assert len(rt.venue.fetch_positions()) == 1
    with replay.venue.unit_of_work():  # the replay book was not advanced
        assert not replay.venue.fetch_positions() and replay.venue.fetch_open_orders()
    [again] = evaluate().run_requests  # the open position is still watched
    assert again.run_config["ops"]["monitor_positions"]["config"]["strategies"] == [SPOT]
