"""The execution engine end to end, with worked numbers, against the Binance stand-in: the real
ccxt clients (``binanceusdm``, ``binance``) talk HTTP to tests/binance_standin.py, a separate
process that matches orders, keeps positions and balances, and — like Binance's Algo Service —
does not cancel one reduce-only conditional leg when the other triggers. Nothing is mocked on the
project's side: the intent goes through ``ExecutionEngine.stage_send`` → ``run`` and the position
monitor's own call (``account.window.monitor``).

Numbers (USDⓈ-M BTCUSDT, the stand-in's 0.05 % taker fee, quantity step 0.001):
* an IOC long entry of 1.0 at limit 68 340 while the mark is 68 000 fills 0.3 at 68 000 and
  EXPIRES (the stand-in's ``partial`` control): fee 0.3 × 68 000 × 0.0005 = 10.20;
* the engine sizes the stop-loss (66 000) and take-profit (72 000) algo legs to 0.3;
* the mark drops to 65 900: the stop triggers, a reduce-only market sell of 0.3 fills at 65 900,
  fee 9.885; realized 0.3 × (65 900 − 68 000) = −630.00 before fees, fees 20.085, net −650.085;
* in the same monitor tick the engine cancels the take-profit, which Binance left resting.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from binance_standin import FUT_FEE, StandIn, account_id, ccxt_exchange
from sqlalchemy import select
from test_venues_e2e import spec_with

from trading_pipelines import runtime
from trading_pipelines.account import window
from trading_pipelines.account.engine import ExecutionEngine, step
from trading_pipelines.account.sync import reserve_of
from trading_pipelines.domain.ids import intent_id
from trading_pipelines.domain.models import GuardResult, IntentKind, IntentStatus, Mode, PositionSide, Side, TradeIntent
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.resources.dagster_resources import default_resources
from trading_pipelines.venues import factory

END = datetime(2026, 4, 14, 6, tzinfo=timezone.utc)
INST, SYMBOL = "BTC/USDT:USDT", "BTCUSDT"


@pytest.fixture(scope="module")
def standin():
    s = StandIn()
    try:
        yield s
    finally:
        s.stop()


def binance_env(monkeypatch, standin, now: datetime) -> str:
    """A fresh stand-in account (its own API key) for the strategy's ccxt venue, the live switch on,
    the wall clock pinned to ``now``; returns the account's id on the stand-in."""
    key = f"engine-{uuid.uuid4().hex}"
    monkeypatch.setenv("TRADING_PIPELINES_LIVE", "1")
    monkeypatch.setenv("BINANCE_API_KEY", key)
    monkeypatch.setenv("BINANCE_SECRET", "engine-test-secret")
    # ccxt's throttle spaces requests by Binance's weights (an unfiltered openOrders weighs 40 × 50 ms);
    # the stand-in on loopback needs no courtesy: 1 ms a weight unit
    monkeypatch.setattr(factory, "CLIENTS", {"ccxt": lambda ex: ccxt_exchange(ex, standin.url, key, "engine-test-secret",
                                                                               rateLimit=1)})
    monkeypatch.setattr(runtime, "WALL_CLOCK", lambda: now)
    acct = account_id(key)
    standin.control("price", symbol=SYMBOL, price=68000, account=acct)
    return acct


@pytest.fixture()
def futures(embedded_home, monkeypatch, standin):
    """A live USDⓈ-M book on a fresh stand-in account, the wall clock in the bar after END."""
    acct = binance_env(monkeypatch, standin, END + timedelta(minutes=10))
    standin.control("balance", account=acct, wallet=100_000)
    spec = spec_with("futures_1h_btc_eth", {"kind": "ccxt", "exchange": "binanceusdm"}, instruments=[INST])
    return default_resources()["trading"].runtime(spec), acct


def long_intent(rt, quantity: float = 1.0) -> TradeIntent:
    return TradeIntent(intent_id=intent_id(rt.spec.name, INST, END), strategy=rt.spec.name, instrument=INST, window_end=END,
                       mode=Mode.FUTURES, kind=IntentKind.ENTRY, side=Side.BUY, position_side=PositionSide.LONG,
                       quantity=quantity, entry=68000.0, stop=66000.0, take_profit=72000.0, leverage=3.0,
                       margin_mode="isolated", risk_amount=2000.0 * quantity, notional=68000.0 * quantity,
                       margin=68000.0 * quantity / 3, equity=100_000.0)


def send(rt, intent: TradeIntent):
    """EXECUTE through the one route: the legs written ahead, committed, then the engine."""
    engine = ExecutionEngine(rt, "engine-test")
    lin = repo.Lineage(rt.spec.name, INST, "2026-04-14-05:00", "engine-test", rt.book)
    with step(rt) as s:
        repo.record_intent(s, lin, intent)
        repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.VALIDATED, "test")
        cmd = engine.stage_send(s, intent.model_copy(update={"status": IntentStatus.VALIDATED}), END, reserve_of(rt, intent))
    return engine.run([cmd])


def refuse_stops(monkeypatch) -> None:
    """The venue takes the entry and refuses every protective leg (Binance −2021)."""
    from trading_pipelines.venues.ccxt_venue import CcxtVenue
    from trading_pipelines.venues.protocol import OrderRejected

    def entry_only(self, entry, stop_loss, take_profit, **kw):
        return [self.create_order(entry, placed_at=kw["placed_at"], position_side=kw["position_side"],
                                  leverage=kw["leverage"], margin_mode=kw.get("margin_mode"))]

    def refuse(self, stop_loss, take_profit, **kw):
        raise OrderRejected("binanceusdm: -2021 Order would immediately trigger.", -2021)

    monkeypatch.setattr(CcxtVenue, "create_bracket", entry_only)
    monkeypatch.setattr(CcxtVenue, "create_protection", refuse)


def legs(rt, iid: str) -> dict:
    with session_scope(rt.engine) as s:
        rows = s.execute(select(m.OrderRow).where(m.OrderRow.intent_id == iid).order_by(m.OrderRow.client_order_id)).scalars()
        return {r.client_order_id[-3:].lstrip("-"): (r.role, r.status, r.quantity, r.filled_quantity) for r in rows}


def intent_row(rt, iid: str):
    with session_scope(rt.engine) as s:
        r = s.get(m.IntentRow, iid)
        return r.status, r.reason


def open_algo(standin, acct):
    return sorted((o["orderType"], float(o["quantity"])) for o in standin.state(acct)["fut"]["algo"]
                  if o["algoStatus"] == "NEW")


def test_a_partial_fill_is_monitored_with_legs_of_the_filled_quantity_and_pnl_with_fees(futures, standin):
    rt, acct = futures
    intent = long_intent(rt, 1.0)
    standin.control("partial", account=acct, fraction=0.3)
    send(rt, intent)
    got = legs(rt, intent.intent_id)
    assert got["en"] == ("entry", "EXPIRED", 1.0, pytest.approx(0.3))  # IOC: 0.3 filled, the rest expired
    assert got["sl"][1:3] == ("ACCEPTED", pytest.approx(0.3)) and got["tp"][1:3] == ("ACCEPTED", pytest.approx(0.3))
    assert open_algo(standin, acct) == [("STOP_MARKET", 0.3), ("TAKE_PROFIT_MARKET", 0.3)]
    status, reason = intent_row(rt, intent.intent_id)
    assert status == "MONITORING"
    assert reason == "entry filled at 68000.0 (partial: 0.3 of 1): position open, stop-loss and take-profit resting"

    standin.control("price", symbol=SYMBOL, price=65900, account=acct)  # the stop triggers; the take-profit rests
    assert open_algo(standin, acct) == [("TAKE_PROFIT_MARKET", 0.3)]
    window.monitor(rt, repo.Lineage(rt.spec.name, "*", "monitor", "engine-test", rt.book), END + timedelta(minutes=20))
    assert open_algo(standin, acct) == []  # the sibling cancelled within that one tick
    with session_scope(rt.engine) as s:
        pos = s.execute(select(m.PositionRow).where(m.PositionRow.strategy == rt.spec.name)).scalar_one()
    fees = 0.3 * 68000 * FUT_FEE + 0.3 * 65900 * FUT_FEE  # 10.20 + 9.885
    assert (pos.status, pos.quantity, pos.exit_quantity, pos.entry_price, pos.exit_price) == (
        "closed", pytest.approx(0.3), pytest.approx(0.3), 68000.0, 65900.0)
    assert pos.realized_pnl == pytest.approx(-630.0) and pos.fees == pytest.approx(fees) == pytest.approx(20.085)
    status, reason = intent_row(rt, intent.intent_id)
    assert status == "CLOSED"
    assert reason == ("position closed by its stop_loss at 65900.0: realized P&L -630.00 (quote currency, before fees); "
                      "fees 20.09, net -650.09")
    assert legs(rt, intent.intent_id)["tp"][1] == "CANCELED"


def test_a_position_closed_by_hand_at_the_venue_is_closed_with_the_venues_pnl(futures, standin):
    rt, acct = futures
    intent = long_intent(rt, 0.3)
    send(rt, intent)
    assert intent_row(rt, intent.intent_id)[0] == "MONITORING"
    # closed by hand in the Binance app: a reduce-only market sell the project never placed
    import os

    hand = ccxt_exchange("binanceusdm", standin.url, os.environ["BINANCE_API_KEY"], "engine-test-secret",
                         options={"fetchCurrencies": False, "fetchMarkets": {"types": ["linear"]}, "defaultType": "swap"})
    standin.control("price", symbol=SYMBOL, price=69000, account=acct)
    hand.create_order(INST, "market", "sell", 0.3, None, {"reduceOnly": True, "clientOrderId": "web_hand_close"})
    window.monitor(rt, repo.Lineage(rt.spec.name, "*", "monitor", "engine-test", rt.book), END + timedelta(minutes=20))
    with session_scope(rt.engine) as s:
        pos = s.execute(select(m.PositionRow).where(m.PositionRow.strategy == rt.spec.name)).scalar_one()
        hand_leg = s.get(m.OrderRow, "web_hand_close")
    # 0.3 × (69 000 − 68 000) = +300.00; fees 0.3 × 68 000 × 0.0005 + 0.3 × 69 000 × 0.0005 = 10.20 + 10.35
    assert (pos.status, pos.exit_reason, pos.exit_price) == ("closed", "exit", 69000.0)
    assert pos.realized_pnl == pytest.approx(300.0) and pos.fees == pytest.approx(20.55)
    assert hand_leg.reason == "placed at the venue by hand" and hand_leg.intent_id == intent.intent_id
    status, reason = intent_row(rt, intent.intent_id)
    assert status == "CLOSED" and reason.endswith("realized P&L +300.00 (quote currency, before fees); fees 20.55, net +279.45")
    assert open_algo(standin, acct) == []  # both legs had no position behind them: cancelled


def test_a_refused_stop_flattens_the_position(futures, standin, monkeypatch):
    """``execution.protection: flatten`` (the default): when the venue refuses the stop-loss for an
    open position, the engine closes it with a reduce-only market order and audits why."""
    rt, acct = futures
    refuse_stops(monkeypatch)
    intent = long_intent(rt, 0.3)
    run = send(rt, intent)
    assert run.flattened == [intent.intent_id]
    state = standin.state(acct)["fut"]
    assert all(abs(float(p.get("amt", 0))) < 1e-12 for p in state["positions"].values())  # flat at the venue
    status, reason = intent_row(rt, intent.intent_id)
    assert status == "CLOSED" and "closed by its exit at 68000.0" in reason
    with session_scope(rt.engine) as s:
        audit = [a.detail for a in s.execute(select(m.AuditRow).where(m.AuditRow.event == "flatten")).scalars()]
    assert len(audit) == 1 and "-2021 Order would immediately trigger" in audit[0]["reason"]



# ---------------------------------------------------------------- the causes, one test each
# Each reproduced the failure on 39841a4 (the code before the engine; tests/test_crash_harness.py's
# table in the README) and passes here.

SPOT_END = datetime(2026, 3, 3, 4, tzinfo=timezone.utc)


class Crash(BaseException):
    """The process dies here (no handler runs, the transaction in progress is lost)."""


@pytest.fixture()
def spot(embedded_home, monkeypatch, standin):
    """A live Binance spot book (10 000 USDT) on a fresh stand-in account; a runtime factory (a new
    process after a crash builds its own)."""
    acct = binance_env(monkeypatch, standin, SPOT_END + timedelta(minutes=10))
    standin.control("balance", account=acct, asset="USDT", free=10_000)
    spec = spec_with("spot_4h_majors", {"kind": "ccxt", "exchange": "binance"}, instruments=["BTC/USDT"])
    return (lambda: default_resources()["trading"].runtime(spec)), acct


def spot_intent(rt, quantity: float = 0.05) -> TradeIntent:
    return TradeIntent(intent_id=intent_id(rt.spec.name, "BTC/USDT", SPOT_END), strategy=rt.spec.name, instrument="BTC/USDT",
                       window_end=SPOT_END, mode=Mode.SPOT, kind=IntentKind.ENTRY, side=Side.BUY,
                       position_side=PositionSide.LONG, quantity=quantity, entry=68000.0, stop=66000.0, take_profit=72000.0,
                       risk_amount=2000.0 * quantity, notional=68000.0 * quantity, margin=68000.0 * quantity, equity=10_000.0)


def stage(rt, intent: TradeIntent):
    engine = ExecutionEngine(rt, "engine-test")
    lin = repo.Lineage(rt.spec.name, intent.instrument, "2026-03-03-00:00", "engine-test", rt.book)
    with step(rt) as s:
        repo.record_intent(s, lin, intent)
        repo.record_guards(s, lin, intent.intent_id, [])
        repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.VALIDATED, "test")
        return engine, engine.stage_send(s, intent.model_copy(update={"status": IntentStatus.VALIDATED}), SPOT_END,
                                         reserve_of(rt, intent))


def order_posts(standin, acct) -> list[str]:
    return [p["path"] for p in standin.posts(acct) if p["path"] in ("/api/v3/order", "/api/v3/orderList/oco")
            and p["status"] == 200]


def test_cause_1_a_half_placed_bracket_gets_its_stop(spot, standin, monkeypatch):
    """The entry filled and the run died before the OCO went out: the re-run (the same engine call)
    finds the entry by its client order id and places the OCO for what filled — on 39841a4 it
    recorded MONITORING, "stop-loss and take-profit resting", with no leg at Binance."""
    new_rt, acct = spot
    rt = new_rt()
    engine, cmd = stage(rt, spot_intent(rt))
    from trading_pipelines.venues.ccxt_venue import CcxtVenue

    real = CcxtVenue.create_protection

    def die(self, *a, **kw):
        raise Crash("killed after the entry filled, before the OCO")

    monkeypatch.setattr(CcxtVenue, "create_protection", die)
    with pytest.raises(Crash):
        engine.run([cmd])
    monkeypatch.setattr(CcxtVenue, "create_protection", real)
    assert order_posts(standin, acct) == ["/api/v3/order"]  # the entry only
    rt = new_rt()  # a new process
    ExecutionEngine(rt, "rerun").run([], intent_ids=[cmd.intent_id])
    assert order_posts(standin, acct) == ["/api/v3/order", "/api/v3/orderList/oco"]  # nothing sent twice
    book = standin.state(acct)["spot"]
    stops = [o for o in book["orders"] if o["status"] == "NEW" and o["type"] in ("STOP_LOSS", "STOP_LOSS_LIMIT")]
    # 0.05 BTC bought, 0.1 % of it (0.00005 BTC) taken as the fee: 0.04995 free, the stop covers it all
    assert [float(o["origQty"]) for o in stops] == [0.04995]
    status, reason = intent_row(rt, cmd.intent_id)
    assert status == "MONITORING" and reason.endswith("stop-loss and take-profit resting")


def test_cause_2_the_manual_route_after_a_crash_resumes_not_cancels(spot, standin, monkeypatch):
    """`intent execute --mode LIVE` killed after Binance answered, then run again: the same call
    syncs the intent's legs by client order id — on 39841a4 its pre-submit check saw the position
    as a duplicate, CANCELLED the intent and left the venue's orders out of the ledger."""
    from trading_pipelines import operations as op

    new_rt, acct = spot
    rt = new_rt()
    intent = spot_intent(rt)
    lin = repo.Lineage(rt.spec.name, "BTC/USDT", "2026-03-03-00:00", "engine-test", rt.book)
    with step(rt) as s:
        repo.record_intent(s, lin, intent)
        repo.record_guards(s, lin, intent.intent_id, [GuardResult(guard="all", passed=True, message="test")])
        repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.VALIDATED, "test")
    real = ExecutionEngine.fold

    def fold(self, s, outcomes):
        if outcomes:
            raise Crash("killed after Binance answered, before the ledger recorded it")
        return real(self, s, outcomes)

    monkeypatch.setattr(ExecutionEngine, "fold", fold)
    with pytest.raises(Crash):
        op.execute_intent(rt, intent.intent_id, "LIVE", acknowledge_risk=True, who="tester")
    monkeypatch.setattr(ExecutionEngine, "fold", real)
    rep = op.execute_intent(new_rt(), intent.intent_id, "LIVE", acknowledge_risk=True, who="tester")
    assert rep["status"] == "MONITORING", rep["reason"]
    assert order_posts(standin, acct) == ["/api/v3/order", "/api/v3/orderList/oco"]
    venue_ids = {o["clientOrderId"] for o in standin.state(acct)["spot"]["orders"]}
    assert venue_ids <= {o["client_order_id"] for o in rep["orders"]}  # every venue order is in the ledger


def test_cause_6_insufficient_balance_fails_the_intent_and_the_window_goes_on(spot, standin):
    """Binance −2010 on the entry: the intent is FAILED with Binance's words, the window's snapshot
    is taken — on 39841a4 no intent row was written and the window raised."""
    from trading_pipelines.analysis import analyze as analysis
    from trading_pipelines.domain.models import Signal

    new_rt, acct = spot
    standin.control("balance", account=acct, asset="USDT", free=50)
    rt = new_rt()
    [a] = analysis.analyze(rt, "BTC/USDT", [SPOT_END], "engine-test", charts=False)
    standin.control("price", symbol=SYMBOL, price=a.market.last_close, account=acct)
    sig = Signal(strategy=rt.spec.name, instrument="BTC/USDT", window_end=SPOT_END, mode=Mode.SPOT, action="buy",
                 confidence=0.9, thesis="forced buy (test)", provider="test", model="test", prompt_hash="0" * 64)
    # the venue reports 50 USDT, the guards would refuse: the paper-sized plan is sent as validated by an
    # account view that still showed 10 000 (another process spent it in between)
    from trading_pipelines.account import view

    real_view = view.account_view

    def stale(s, rt_, end, **kw):
        v = real_view(s, rt_, end, **kw)
        return v.__class__(**{**v.__dict__, "free_cash": 10_000.0, "equity": 10_000.0})

    import trading_pipelines.account.window as w

    w_view = w.account_view
    w.account_view = stale
    try:
        out = window.account_window(rt, SPOT_END, {"BTC/USDT": sig}, {"BTC/USDT": a.market}, "2026-03-03-00:00", "engine-test")
    finally:
        w.account_view = w_view
    it = out.intents["BTC/USDT"]
    assert it.status is IntentStatus.FAILED and "-2010" in it.reason and "insufficient balance" in it.reason.lower()
    assert out.point_in_time and out.snapshot.cash == pytest.approx(50.0)
    assert {o["status"] for o in out.orders["BTC/USDT"]} == {"REJECTED"}


def test_cause_6_an_order_the_venue_no_longer_knows_is_not_submitted_forever(futures, standin):
    rt, acct = futures
    intent = long_intent(rt, 0.3)
    send(rt, intent)
    ghost = "tp-" + intent.intent_id[3:] + "-sl9"
    with step(rt) as s:  # a leg the ledger thinks rests, which Binance has purged
        row = s.get(m.OrderRow, legs_rows(s, intent.intent_id)["sl"])
        s.add(m.OrderRow(**{c.key: getattr(row, c.key) for c in m.OrderRow.__table__.columns
                            if c.key not in ("client_order_id", "updated_at")}, client_order_id=ghost))
    window.monitor(rt, repo.Lineage(rt.spec.name, "*", "monitor", "engine-test", rt.book), END + timedelta(minutes=20))
    with session_scope(rt.engine) as s:
        g = s.get(m.OrderRow, ghost)
        assert (g.status, g.reason) == ("CANCELED", "no longer known to the venue")


def legs_rows(s, iid: str) -> dict:
    return {r.client_order_id[-2:]: r.client_order_id
            for r in s.execute(select(m.OrderRow).where(m.OrderRow.intent_id == iid)).scalars()}


def test_cause_5_a_position_stays_open_while_the_venue_holds_it(tmp_path):
    """USDⓈ-M ``positionRisk.updateTime`` is not the fill time: a position is matched to the
    venue's by instrument and closed only when its quantity reaches zero — on 39841a4 an
    ``opened_at`` 7 ms off closed it "P&L +0.00" while it was open."""
    from trading_pipelines.domain.models import Fill, Position
    from trading_pipelines.ledger import legs as ledger_legs
    from trading_pipelines.ledger.db import get_engine, migrate

    eng = get_engine(f"sqlite:///{tmp_path / 'l.sqlite'}")
    migrate(eng)
    t0 = datetime(2026, 4, 14, 6, 0, 1, 250_000, tzinfo=timezone.utc)
    intent = TradeIntent(intent_id="it-" + "5" * 24, strategy="f", instrument=INST, window_end=END, mode=Mode.FUTURES,
                         kind=IntentKind.ENTRY, side=Side.BUY, position_side=PositionSide.LONG, quantity=0.3, entry=68000.0,
                         stop=66000.0, take_profit=72000.0)
    lin = repo.Lineage("f", INST, "k", "r")
    from trading_pipelines.account.requests import order_requests

    with session_scope(eng) as s:
        repo.record_intent(s, lin, intent)
        for r in order_requests(intent):
            ledger_legs.stage_leg(s, lin, intent.intent_id, "futures", "ccxt", r, END)
        fill = Fill(fill_id="1", client_order_id=order_requests(intent)[0].client_order_id, instrument=INST, side=Side.BUY,
                    quantity=0.3, price=68000.0, fee=10.2, time=t0)
        venue_pos = Position(instrument=INST, side=PositionSide.LONG, quantity=0.3, entry_price=68000.0, mark_price=68100.0,
                             opened_at=t0 + timedelta(milliseconds=7))
        ledger_legs.record_fills(s, "f", "live", "futures", [fill], {INST: venue_pos})
        ledger_legs.record_fills(s, "f", "live", "futures", [], {INST: venue_pos})  # the next tick
        [pos] = s.execute(select(m.PositionRow)).scalars().all()
        assert (pos.status, pos.quantity, pos.mark_price, pos.fees) == ("open", 0.3, 68100.0, 10.2)
        ledger_legs.record_fills(s, "f", "live", "futures", [], {})  # the venue holds none: closed, no price guessed
        assert (pos.status, pos.exit_reason, pos.exit_price) == ("closed", "venue_closed", None)


def test_cause_4_an_ibkr_entry_partly_filled_then_cancelled_keeps_its_shares_protected(embedded_home, monkeypatch):
    """IB filled 4 of 10 AAPL, then the rest of the entry was cancelled: the intent is MONITORING
    with 4 shares and the engine replaces the bracket's 10-share legs by a stop and a take-profit
    for 4, one OCA group of this client id — on 39841a4 the intent was CANCELLED while the shares
    were held, unprotected. (TWS / IB Gateway cannot run here: tests/fake_ib.py stands in.)"""
    from fake_ib import FakeIB

    ib = FakeIB()
    ib.set_account_values({"NetLiquidation": 100_000.0, "TotalCashValue": 100_000.0, "UnrealizedPnL": 0.0, "RealizedPnL": 0.0})
    monkeypatch.setenv("TRADING_PIPELINES_LIVE", "1")
    monkeypatch.setattr(factory, "CLIENTS", {"ibkr": lambda: ib})
    end = datetime(2017, 8, 1, tzinfo=timezone.utc)
    monkeypatch.setattr(runtime, "WALL_CLOCK", lambda: end + timedelta(hours=1))
    spec = spec_with("equities_1d_spy_aapl", {"kind": "ibkr", "account": "DU1234567"})
    rt = default_resources()["trading"].runtime(spec)
    intent = TradeIntent(intent_id=intent_id(spec.name, "AAPL", end), strategy=spec.name, instrument="AAPL", window_end=end,
                         mode=Mode.SPOT, kind=IntentKind.ENTRY, side=Side.BUY, position_side=PositionSide.LONG, quantity=10,
                         entry=148.73, stop=146.72, take_profit=153.75, risk_amount=20.1, notional=1487.3, margin=1487.3,
                         equity=100_000.0)
    engine = ExecutionEngine(rt, "engine-test")
    lin = repo.Lineage(spec.name, "AAPL", "2017-07-31", "engine-test", rt.book)
    with step(rt) as s:
        repo.record_intent(s, lin, intent)
        repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.VALIDATED, "test")
        cmd = engine.stage_send(s, intent.model_copy(update={"status": IntentStatus.VALIDATED}), end, reserve_of(rt, intent))
    engine.run([cmd])
    cid = "tp-" + intent.intent_id[3:]
    assert [o.orderRef for _, o in ib.placed] == [f"{cid}-en", f"{cid}-tp", f"{cid}-sl"]
    ib.fill(f"{cid}-en", 148.70, shares=4)
    ib.cancelOrder(ib.trade_by_ref(f"{cid}-en").order)
    window.monitor(rt, repo.Lineage(spec.name, "*", "monitor", "engine-test", rt.book), end + timedelta(hours=2))
    got = legs(rt, intent.intent_id)
    assert got["en"] == ("entry", "CANCELED", 10.0, 4.0)
    assert got["sl"][1] == got["tp"][1] == "CANCELED"  # the 10-share legs, replaced
    assert got["sl1"] == ("stop_loss", "ACCEPTED", 4.0, 0.0) and got["tp1"] == ("take_profit", "ACCEPTED", 4.0, 0.0)
    new = {o.orderRef: o for _, o in ib.placed[3:]}
    assert set(new) == {f"{cid}-sl1", f"{cid}-tp1"}
    assert {(o.totalQuantity, o.ocaType, o.parentId) for o in new.values()} == {(4.0, 1, 0)}
    assert len({o.ocaGroup for o in new.values()}) == 1
    status, reason = intent_row(rt, intent.intent_id)
    assert status == "MONITORING" and reason == ("entry filled at 148.7 (partial: 4 of 10): position open, "
                                                 "stop-loss and take-profit resting")


def test_protection_flag_marks_the_intent_unprotected_and_fails_the_check(futures, standin, monkeypatch):
    """``execution.protection: flag``: the refused stop leaves the position open, the intent
    UNPROTECTED, and ``positions_protected`` (the account's blocking check, and the monitor job)
    names it."""
    from trading_pipelines.account.checks import unprotected_positions

    rt, acct = futures
    rt.spec = rt.spec.model_copy(update={"execution": rt.spec.execution.model_copy(update={"protection": "flag"})})
    refuse_stops(monkeypatch)
    intent = long_intent(rt, 0.3)
    run = send(rt, intent)
    assert run.flagged == [intent.intent_id] and run.flattened == []
    status, reason = intent_row(rt, intent.intent_id)
    assert status == "UNPROTECTED" and "-2021" in reason
    [u] = unprotected_positions(rt)
    assert (u.intent_id, u.quantity, u.stop_quantity) == (intent.intent_id, pytest.approx(0.3), 0.0)
