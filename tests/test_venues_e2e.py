"""One strategy file, its venue block changed and nothing else (issue 8): the shipped equities
file on paper, IBKR and the webhook; the shipped spot crypto file on Binance through ccxt (its
instruments narrowed to BTC/USDT, the one pair the recorded markets and ticker cover) and the
webhook — IBKR trades the equities, Binance the crypto. The account step of the real
pipeline — PLAN (technical stop, 1 % sizing at the protective limit) → VALIDATE (guards asking the
venue) → EXECUTE (one ``create_bracket``) → reconcile — against the paper exchange, Binance through
ccxt, IBKR through ib_async and a signed webhook; with a crash between the venue's answer and the
ledger write on each: the re-run reconciles, the venue holds exactly one order set.

What cannot run here is stood in for, one thing per venue, through ``venues.factory.CLIENTS``:
* ccxt: the real ``ccxt.binance`` object; only its HTTP session is ``FakeBinance`` (test_venue_ccxt:
  records requests, answers like Binance with recorded fixtures and documented shapes).
* IBKR: ``FakeIB`` (tests/fake_ib.py) stands in for TWS / IB Gateway, which cannot run here.
* webhook: nothing: a real local HTTP server verifying the HMAC (tests/webhook_receiver.py).
The wall clock of the real venues is pinned (``runtime.WALL_CLOCK``) to one hour after the window,
so the window is the current one; the paper exchange keeps its own simulated clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import yaml
from fake_ib import FakeIB
from sqlalchemy import select
from test_venue_ccxt import KEY, SECRET, FakeBinance, exchange_factory
from webhook_receiver import WebhookReceiver

from trading_pipelines.analysis import analyze as analysis
from trading_pipelines import runtime
from trading_pipelines.account import window
from trading_pipelines.account.engine import ExecutionEngine
from trading_pipelines.config import STRATEGIES_DIR, parse_strategy
from trading_pipelines.domain.models import IntentStatus, Mode, Signal
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.resources.dagster_resources import default_resources
from trading_pipelines.venues import factory

HOOK_SECRET = "whsec-e2e-0123456789abcdef"
LIVE = {"dry_run": False, "confirm": "auto"}  # plus live_ack = the strategy's name, and TRADING_PIPELINES_LIVE=1


class Crash(BaseException):
    """The process dies between the venue's answer and the ledger write."""


@pytest.fixture()
def env(embedded_home, monkeypatch):
    monkeypatch.setenv("TRADING_PIPELINES_LIVE", "1")
    monkeypatch.setenv("BINANCE_API_KEY", KEY)
    monkeypatch.setenv("BINANCE_SECRET", SECRET)
    monkeypatch.setenv("TRADING_WEBHOOK_SECRET", HOOK_SECRET)
    monkeypatch.setattr(factory, "CLIENTS", {})
    return monkeypatch


def spec_with(shipped: str, venue: dict, instruments: list[str] | None = None):
    """The shipped strategy file with only ``venue`` (and, for a real venue, ``execution``) changed."""
    attrs = yaml.safe_load((STRATEGIES_DIR / shipped / "defs.yaml").read_text())["attributes"]
    if instruments:
        attrs["instruments"] = instruments
    attrs["venue"] = {**attrs["venue"], **venue} if venue.get("kind") == "paper" else {
        **{k: attrs["venue"][k] for k in ("starting_cash", "fee_rate", "slippage_bps")}, **venue}
    if venue["kind"] != "paper":
        attrs["execution"] = {**LIVE, "live_ack": attrs["name"]}
    return parse_strategy(attrs)


def forced_buy(rt, instrument: str, end: datetime):
    """The window's real analysis (bars, indicators, market context), its signal replaced by a buy."""
    [a] = analysis.analyze(rt, instrument, [end], "e2e-analysis", charts=False)
    assert a.market is not None, a.error
    sig = Signal(strategy=rt.spec.name, instrument=instrument, window_end=end, mode=Mode.SPOT, action="buy",
                 confidence=0.9, thesis="forced buy (test)", provider="test", model="test", prompt_hash="0" * 64)
    return sig, a.market


def run(rt, instrument, end, sig, market):
    return window.account_window(rt, end, {instrument: sig}, {instrument: market}, f"{end:%Y-%m-%d-%H:%M}", "e2e-run")


def crash_once(monkeypatch):
    """Die once right after the venue answered the engine's dispatch, before the ledger folded the
    answers in (the legs were written ahead, so the re-run finds them by client order id)."""
    real = ExecutionEngine.fold
    state = {"crashed": False}

    def fold(self, s, outcomes):
        if outcomes and not state["crashed"]:
            state["crashed"] = True
            raise Crash("killed after the venue answered, before the ledger recorded its answers")
        return real(self, s, outcomes)

    monkeypatch.setattr(ExecutionEngine, "fold", fold)
    return state


def ledger(rt):
    with session_scope(rt.engine) as s:
        intents = s.execute(select(m.IntentRow).where(m.IntentRow.strategy == rt.spec.name)).scalars().all()
        orders = s.execute(select(m.OrderRow).where(m.OrderRow.strategy == rt.spec.name)).scalars().all()
        guards = s.execute(select(m.GuardResultRow)).scalars().all()
        return ([(i.instrument, i.status, i.reason) for i in intents], sorted((o.role, o.status, o.venue) for o in orders),
                [(g.guard, g.passed, g.message) for g in guards])


AAPL_END = datetime(2017, 8, 1, tzinfo=timezone.utc)  # the AAPL 2017-07-31 session (close 148.73)


def test_paper(env):
    """The shipped equities file as it is: the paper exchange, fills at the next open."""
    spec = spec_with("equities_1d_spy_aapl", {"kind": "paper"})
    rt = default_resources()["trading"].runtime(spec)
    sig, market = forced_buy(rt, "AAPL", AAPL_END)
    state = crash_once(env)
    with pytest.raises(Crash):
        run(rt, "AAPL", AAPL_END, sig, market)
    out = run(default_resources()["trading"].runtime(spec), "AAPL", AAPL_END, sig, market)
    assert state["crashed"] and out.intents["AAPL"].status is IntentStatus.SUBMITTED
    venue = default_resources()["trading"].runtime(spec).venue
    assert sorted(o.request.role.value for o in venue.fetch_open_orders()) == ["entry", "stop_loss", "take_profit"]
    _, orders, _ = ledger(rt)
    assert orders == [("entry", "ACCEPTED", "paper"), ("stop_loss", "ACCEPTED", "paper"), ("take_profit", "ACCEPTED", "paper")]


def test_ibkr(env):
    """The same file with ``venue: {kind: ibkr, …}``: the bracket reaches IB once, orderRef = client order ids."""
    ib = FakeIB()
    ib.set_account_values({"NetLiquidation": 100_000.0, "TotalCashValue": 100_000.0, "UnrealizedPnL": 0.0,
                           "RealizedPnL": 0.0})
    env.setattr(factory, "CLIENTS", {"ibkr": lambda: ib})
    env.setattr(runtime, "WALL_CLOCK", lambda: AAPL_END + timedelta(hours=1))
    spec = spec_with("equities_1d_spy_aapl", {"kind": "ibkr", "host": "127.0.0.1", "port": 4002, "client_id": 17,
                                              "account": "DU1234567"})
    rt = default_resources()["trading"].runtime(spec)
    assert ib.connect_calls and ib.connect_calls[0][:3] == ("127.0.0.1", 4002, 17)
    sig, market = forced_buy(rt, "AAPL", AAPL_END)
    crash_once(env)
    with pytest.raises(Crash):
        run(rt, "AAPL", AAPL_END, sig, market)
    assert len(ib.placed) == 3  # at the venue before the crash
    ib.forget_session()
    out = run(default_resources()["trading"].runtime(spec), "AAPL", AAPL_END, sig, market)  # a new process
    intent = out.intents["AAPL"]
    assert intent.status is IntentStatus.SUBMITTED
    assert len(ib.placed) == 3  # the re-run found them by orderRef: nothing placed twice
    entry, tp, sl = (o for _, o in ib.placed)
    # worked: AAPL close 148.73 (the 2017-07-31 session); protective limit 148.73 × 1.005 = 149.4737 → 149.47 (tick
    # 0.01, rounded down); swing stop 146.72; 1 % of 100 000 = 1000 / (149.47 − 146.72) = 363.6 → 363 shares;
    # target 148.73 + 2.5 × (148.73 − 146.72) = 153.755 → 153.75
    assert (intent.entry, intent.stop, intent.take_profit, intent.quantity) == (148.729996, 146.72, 153.75, 363.0)
    assert (entry.orderType, entry.lmtPrice, entry.totalQuantity) == ("LMT", 149.47, 363.0)
    assert (sl.orderType, sl.auxPrice, tp.orderType, tp.lmtPrice) == ("STP", 146.72, "LMT", 153.75)
    cid = "tp-" + intent.intent_id[3:]
    assert [o.orderRef for _, o in ib.placed] == [f"{cid}-en", f"{cid}-tp", f"{cid}-sl"]
    _, orders, _ = ledger(rt)
    assert [r for r, _, v in orders if v == "ibkr"] == ["entry", "stop_loss", "take_profit"]


def test_ibkr_manual_position_is_a_duplicate(env):
    """A position opened by hand in TWS is the venue's: a second entry on it is refused by asking IB."""
    ib = FakeIB()
    ib.set_account_values({"NetLiquidation": 100_000.0, "TotalCashValue": 99_150.0, "UnrealizedPnL": 0.0, "RealizedPnL": 0.0})
    ib.add_manual_position("AAPL", 5, 170.0, mark=150.0)
    env.setattr(factory, "CLIENTS", {"ibkr": lambda: ib})
    env.setattr(runtime, "WALL_CLOCK", lambda: AAPL_END + timedelta(hours=1))
    spec = spec_with("equities_1d_spy_aapl", {"kind": "ibkr", "account": "DU1234567"})
    rt = default_resources()["trading"].runtime(spec)
    sig, market = forced_buy(rt, "AAPL", AAPL_END)
    out = run(rt, "AAPL", AAPL_END, sig, market)
    assert out.intents["AAPL"].status is IntentStatus.REJECTED and "duplicate_position" in out.intents["AAPL"].reason
    assert ib.placed == []


BTC_END = datetime(2026, 3, 1, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("shipped", "inst", "end", "equity"), [("equities_1d_spy_aapl", "AAPL", AAPL_END, 100_000),
                                                               ("spot_4h_majors", "BTC/USDT", BTC_END, 10_000)])
def test_webhook(env, shipped, inst, end, equity):
    """Either shipped spot file with ``venue: {kind: webhook, …}``: one signed POST for the bracket, SENT."""
    with WebhookReceiver(HOOK_SECRET) as hook:
        env.setenv("TRADING_WEBHOOK_URL", hook.url)
        env.setattr(runtime, "WALL_CLOCK", lambda: end + timedelta(hours=1))
        spec = spec_with(shipped, {"kind": "webhook", "equity": equity})
        rt = default_resources()["trading"].runtime(spec)
        sig, market = forced_buy(rt, inst, end)
        crash_once(env)
        with pytest.raises(Crash):
            run(rt, inst, end, sig, market)
        out = run(default_resources()["trading"].runtime(spec), inst, end, sig, market)
        intent = out.intents[inst]
        assert intent.status is IntentStatus.SENT, intent.reason
        assert len(hook.orders) == 1 and len(hook.requests) == 2  # re-sent under the same Idempotency-Key
        [accepted] = hook.orders.values()
        body = accepted.body
        assert (body["instrument"], body["side"], body["type"], body["quantity"]) == (inst, "buy", "limit", intent.quantity)
        # the 1 % rule on the configured sizing equity, at the protective limit
        assert intent.risk_amount <= equity * 0.01 + 1e-6 and intent.equity == equity
        assert [leg["role"] for leg in body["legs"]] == ["stop_loss", "take_profit"]
        assert body["legs"][0]["trigger_price"] == intent.stop and body["legs"][1]["price"] == intent.take_profit
        intents, orders, _ = ledger(rt)
        assert orders == [("entry", "SENT", "webhook"), ("stop_loss", "SENT", "webhook"), ("take_profit", "SENT", "webhook")]
        assert HOOK_SECRET not in str(intents) + str(orders)


def test_ccxt_binance_spot(env):
    """spot_4h_majors with ``venue: {kind: ccxt, exchange: binance}``: a limit IOC entry then one OCO."""
    fake = FakeBinance()
    env.setattr(factory, "CLIENTS", {"ccxt": exchange_factory(fake)})
    # BTC/USDT only: the recorded exchangeInfo (ccxt's static markets fixture) has no SOLUSDT, the ticker is BTCUSDT's
    spec = spec_with("spot_4h_majors", {"kind": "ccxt", "exchange": "binance"}, instruments=["BTC/USDT"])
    rt = default_resources()["trading"].runtime(spec)
    end = BTC_END
    env.setattr(runtime, "WALL_CLOCK", lambda: end + timedelta(hours=1))
    sig, market = forced_buy(rt, "BTC/USDT", end)
    fake.fill_price["BTCUSDT"] = f"{market.last_close:.2f}"
    fake.balances["USDT"] = ["10000.00000000", "0.00000000"]
    crash_once(env)
    with pytest.raises(Crash):
        run(rt, "BTC/USDT", end, sig, market)
    out = run(default_resources()["trading"].runtime(spec), "BTC/USDT", end, sig, market)
    intent = out.intents["BTC/USDT"]
    assert intent.status in (IntentStatus.SUBMITTED, IntentStatus.MONITORING), intent.reason
    posts = fake.calls("POST", "/api/v3/order")
    assert len(posts) == 1 and posts[0]["params"]["type"] == "LIMIT" and posts[0]["params"]["timeInForce"] == "IOC"
    assert posts[0]["params"]["newClientOrderId"].endswith("en")
    assert len(fake.calls("POST", "/api/v3/orderList/oco")) == 1
    assert float(posts[0]["params"]["price"]) == pytest.approx(market.last_close * 1.005, abs=0.011)
    # the plan used the exchange's rules from load_markets (LOT_SIZE 0.00001, PRICE_FILTER 0.01, NOTIONAL 5)
    rt2 = default_resources()["trading"].runtime(spec)
    assert rt2.instrument("BTC/USDT").model_dump(include={"lot_step", "min_qty", "tick_size", "min_notional"}) == \
        rt2.venue.instrument_rules("BTC/USDT") == {"lot_step": 0.00001, "min_qty": 0.00001, "tick_size": 0.01, "min_notional": 5.0}


def test_webhook_positions_are_what_the_ledger_sent_fail_closed(env):
    """A webhook reports nothing back, so the book counts what it SENT: a second entry on AAPL is a
    duplicate, and a sell exits exactly the quantity the entry sent."""
    with WebhookReceiver(HOOK_SECRET) as hook:
        env.setenv("TRADING_WEBHOOK_URL", hook.url)
        spec = spec_with("equities_1d_spy_aapl", {"kind": "webhook", "equity": 100_000})
        ends = [AAPL_END, AAPL_END + timedelta(days=1), AAPL_END + timedelta(days=2)]
        intents = []
        for end, action in zip(ends, ("buy", "buy", "sell")):
            env.setattr(runtime, "WALL_CLOCK", lambda end=end: end + timedelta(hours=1))
            rt = default_resources()["trading"].runtime(spec)
            sig, market = forced_buy(rt, "AAPL", end)
            intents.append(run(rt, "AAPL", end, sig.model_copy(update={"action": action}), market).intents["AAPL"])
        first, second, exit_ = intents
        assert first.status is IntentStatus.SENT and first.quantity == 363.0
        assert second.status is IntentStatus.REJECTED and "duplicate_position" in second.reason
        assert exit_.status is IntentStatus.SENT and exit_.kind.value == "exit"
        bodies = [a.body for a in hook.orders.values()]
        assert len(bodies) == 2 and bodies[1]["role"] == "exit" and bodies[1]["reduce_only"] is True
        assert (bodies[1]["side"], bodies[1]["quantity"]) == ("sell", 363.0)
