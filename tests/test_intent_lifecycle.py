"""The intent lifecycle by hand (trading_pipelines.operations): plan → show → execute (DRY_RUN |
LIVE) → cancel, through the functions, the CLI (``main(argv)``) and the launchpad jobs (executed in
process), on the real sample candles, the paper venue and a SQLite ledger (``embedded_home``).

Worked numbers (spot_4h_majors, ETH/USDT, 4h, ATR ×2 stop, 2R target, 0.5 % protective band,
tick 0.01, lot 0.0001; equity 10 000 USDT, 1 % risk = 100 USDT):

* window ending 2026-02-27 04:00: close 2045.39, ATR(14) 48.336030 → stop ⌊2045.39 − 96.67206⌋
  = 1948.71, limit ⌊2045.39 × 1.005⌋ = 2055.61, target 2045.39 + 2 × 96.68 = 2238.75,
  quantity ⌊100 / (2055.61 − 1948.71) / 0.0001⌋ × 0.0001 = ⌊9354.5⌋ × 0.0001 = 0.9354.
  With capital 5 000: ⌊50 / 106.90 / 0.0001⌋ × 0.0001 = 0.4677.
* the last window of the data (ends 2026-03-04 00:00, the CLI's and the jobs' "latest closed
  window" on replay data): quantity 0.8218 at close 1982.8, stop 1871.03.
* futures_1h_btc_eth, BTC/USDT:USDT short, window ending 2026-04-16 00:00 (tick 0.1, lot 0.001,
  3x): close 74809.99, ATR 490.913666 → stop ⌈74809.99 + 1227.284⌉ = 76037.3, limit
  ⌈74809.99 × 0.995⌉ = 74436.0, quantity ⌊100 / 1601.3 / 0.001⌋ × 0.001 = 0.062.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal

import dagster as dg
import pytest
from sqlalchemy import func, select

from trading_pipelines import operations as op
from trading_pipelines.analysis import frames
from trading_pipelines.account import window
from trading_pipelines.assets.review import INSTRUMENTS_TAG
from trading_pipelines.components import build_strategy_defs
from trading_pipelines.config import load_strategies
from trading_pipelines.domain.ids import intent_id as pipeline_intent_id
from trading_pipelines.intent_jobs import CANCEL_JOB, EXECUTE_JOB, PLAN_JOB, build_intent_jobs, op_name
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.ledger.repo import Lineage
from trading_pipelines.resources.dagster_resources import default_resources

SPOT, FUT = "spot_4h_majors", "futures_1h_btc_eth"
UTC = timezone.utc
W0400 = datetime(2026, 2, 27, 4, tzinfo=UTC)          # the window 2026-02-27-00:00 ends here
AT_0500 = datetime(2026, 2, 27, 5, tzinfo=UTC)         # "now" for the plan: the latest closed window ends 04:00
LAST_SPOT = datetime(2026, 3, 4, tzinfo=UTC)           # the last window of the spot sample
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture()
def env(embedded_home, monkeypatch):
    monkeypatch.delenv("TRADING_PIPELINES_LIVE", raising=False)
    specs = load_strategies()
    trading = default_resources()["trading"]
    return specs, trading


def _d(x) -> Decimal:
    return Decimal(str(x))


def _ledger_counts(engine) -> dict:
    with session_scope(engine) as s:
        return {t.__name__: s.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (m.IntentRow, m.OrderRow, m.GuardResultRow, m.IntentStatusRow, m.AuditRow)}


def _plan_0400(rt, **kw):
    return op.plan_manual(rt, "ETH/USDT", "buy", who="tester", run_id="test", now=AT_0500, **kw)


# ---------------------------------------------------------------- plan


def test_manual_plan_sizes_on_the_technical_stop_and_validates(env):
    specs, trading = env
    rt = op.runtime_for(trading, specs[SPOT])
    rep = _plan_0400(rt)
    # the worked numbers, recomputed here from the frame the pipeline would see
    frame = frames.indicator_frame(rt, "ETH/USDT", W0400)
    close, atr = _d(frame["close"].iloc[-1]), _d(float(frame["atr"].iloc[-1]))
    assert (float(close), round(float(atr), 6)) == (2045.39, 48.33603)
    tick, lot = _d("0.01"), _d("0.0001")
    stop = ((close - 2 * atr) / tick).to_integral_value(ROUND_FLOOR) * tick
    limit = ((close * _d("1.005")) / tick).to_integral_value(ROUND_FLOOR) * tick
    qty = ((_d(10000) * _d("0.01") / (limit - stop)) / lot).to_integral_value(ROUND_DOWN) * lot
    assert (stop, limit, qty) == (_d("1948.71"), _d("2055.61"), _d("0.9354"))
    assert rep["window_end"] == W0400.isoformat() and rep["partition_key"] == "2026-02-27-00:00"
    assert (rep["kind"], rep["side"], rep["position_side"]) == ("entry", "buy", "long")
    assert (rep["quantity"], rep["entry"], rep["stop"], rep["take_profit"]) == (0.9354, 2045.39, 1948.71, 2238.75)
    assert rep["equity"] == 10000.0 and math.isclose(rep["risk_amount"], 0.9354 * 106.90)
    assert rep["status"] == "VALIDATED" and rep["reason"] == "all guards passed" and rep["origin"] == "manual"
    assert [g["guard"] for g in rep["guards"]] == ["fresh_window", "market_hours", "duplicate_position", "position_limit",
                                                  "balance", "risk_limit", "daily_loss", "min_notional"]
    assert all(g["passed"] for g in rep["guards"])
    assert next(g for g in rep["guards"] if g["guard"] == "risk_limit")["message"] == "risk 99.99 ≤ 1.0% of equity (100.00)"
    assert [(t["from"], t["to"]) for t in rep["transitions"]] == [(None, "PENDING"), ("PENDING", "VALIDATED")]
    plan_audit = next(a for a in rep["audit"] if a["event"] == "intent")
    assert plan_audit["detail"]["reason"] == "buy (1.00): manual plan by tester"   # the manual signal's thesis
    # the id: manual, deterministic, never the pipeline's id of the window
    assert rep["intent_id"] == op.manual_intent_id(SPOT, "ETH/USDT", W0400, "buy", None, 1)
    assert rep["intent_id"] != pipeline_intent_id(SPOT, "ETH/USDT", W0400)
    assert len(rep["intent_id"]) == 27 and rep["intent_id"].startswith("it-")
    assert rep["orders"] == []
    assert rt.venue.fetch_open_orders() == []


def test_same_request_returns_the_open_intent_and_capital_sizes_a_new_one(env):
    specs, trading = env
    rt = op.runtime_for(trading, specs[SPOT])
    first = _plan_0400(rt)
    counts = _ledger_counts(rt.engine)
    again = _plan_0400(rt)                              # a retried launch: the same intent, nothing planned
    assert again["intent_id"] == first["intent_id"] and again["status"] == "VALIDATED"
    after = _ledger_counts(rt.engine)
    assert {k: after[k] - counts[k] for k in after} == {"IntentRow": 0, "OrderRow": 0, "GuardResultRow": 0,
                                                        "IntentStatusRow": 0, "AuditRow": 1}  # manual_plan_repeated
    half = _plan_0400(rt, capital=5000.0)
    assert half["intent_id"] == op.manual_intent_id(SPOT, "ETH/USDT", W0400, "buy", 5000.0, 1) != first["intent_id"]
    assert (half["quantity"], half["equity"], half["status"]) == (0.4677, 5000.0, "VALIDATED")
    # once the first is spent (cancelled), the same request plans the next in sequence
    op.cancel_intent(rt, first["intent_id"], "re-plan", who="tester")
    third = _plan_0400(rt)
    assert third["intent_id"] == op.manual_intent_id(SPOT, "ETH/USDT", W0400, "buy", None, 2)
    assert third["status"] == "VALIDATED"


def test_manual_plan_does_not_collide_with_the_pipeline(env):
    specs, trading = env
    spec = specs[SPOT]
    rt = op.runtime_for(trading, spec)
    manual = _plan_0400(rt)
    defs = dg.Definitions.merge(build_strategy_defs(spec), dg.Definitions(resources=default_resources()))
    assert defs.resolve_job_def(f"review_{SPOT}").execute_in_process(
        partition_key="2026-02-27-00:00", tags={INSTRUMENTS_TAG: "ETH/USDT"}, run_config=QUIET).success
    with session_scope(rt.engine) as s:
        rows = {r.intent_id: r.status for r in s.execute(select(m.IntentRow).where(m.IntentRow.instrument == "ETH/USDT"))
                .scalars()}
        signal = s.execute(select(m.SignalRow).where(m.SignalRow.instrument == "ETH/USDT")).scalars().one()
    pipeline = pipeline_intent_id(SPOT, "ETH/USDT", W0400)
    assert rows == {manual["intent_id"]: "VALIDATED", pipeline: "SUBMITTED"}  # the pipeline planned and sent its own
    assert signal.provider == "rules"                                          # the window's signal row is the pipeline's


def test_plan_refusals_change_nothing(env):
    specs, trading = env
    rt = op.runtime_for(trading, specs[SPOT])
    before = _ledger_counts(rt.engine)
    with pytest.raises(op.Refused, match="not a spot side of spot_4h_majors \\(one of: buy, sell\\)"):
        op.plan_manual(rt, "ETH/USDT", "long", now=AT_0500)
    with pytest.raises(op.Refused, match="does not trade 'DOGE/USDT'"):
        op.plan_manual(rt, "DOGE/USDT", "buy", now=AT_0500)
    with pytest.raises(op.Refused, match="capital must be a positive amount"):
        op.plan_manual(rt, "ETH/USDT", "buy", -5, now=AT_0500)
    with pytest.raises(op.Refused, match="no closed 4h window"):
        op.plan_manual(rt, "ETH/USDT", "buy", now=datetime(2025, 6, 1, 3, tzinfo=UTC))
    assert _ledger_counts(rt.engine) == before
    # the venue already past the window: a past window plans no trade
    window.monitor(rt, Lineage(SPOT, "*", "monitor", "test"), datetime(2026, 2, 27, 12, tzinfo=UTC))
    before = _ledger_counts(rt.engine)
    with pytest.raises(op.Refused, match="past the window ending 2026-02-27T04:00:00\\+00:00"):
        _plan_0400(rt)
    assert _ledger_counts(rt.engine) == before


def test_a_sell_without_a_position_is_recorded_rejected(env):
    specs, trading = env
    rt = op.runtime_for(trading, specs[SPOT])
    rep = op.plan_manual(rt, "SOL/USDT", "sell", who="tester", now=AT_0500)
    assert (rep["kind"], rep["status"]) == ("exit", "REJECTED")
    assert rep["reason"] == "position_exists: no position on SOL/USDT to exit"
    with pytest.raises(op.Refused, match="is REJECTED, not executable"):
        op.execute_intent(rt, rep["intent_id"], "DRY_RUN")


# ---------------------------------------------------------------- execute


def test_dry_run_records_the_bracket_and_sends_nothing(env):
    specs, trading = env
    rt = op.runtime_for(trading, specs[SPOT])
    iid = _plan_0400(rt)["intent_id"]
    rep = op.execute_intent(rt, iid, "DRY_RUN", who="tester", run_id="test")
    assert rep["status"] == "DRY_RUN" and rep["reason"].startswith("dry run by tester: 3 orders recorded, nothing sent to paper")
    orders = {o["role"]: o for o in rep["orders"]}
    assert {r: (o["side"], o["type"], o["quantity"], o["price"], o["trigger_price"], o["status"], o["mode"])
            for r, o in orders.items()} == {
        "entry": ("buy", "limit", 0.9354, 2055.61, None, "DRY_RUN", "spot"),         # the protective limit
        "stop_loss": ("sell", "stop", 0.9354, None, 1948.71, "DRY_RUN", "spot"),
        "take_profit": ("sell", "limit", 0.9354, 2238.75, None, "DRY_RUN", "spot")}
    assert orders["entry"]["client_order_id"] == f"tp-{iid[3:]}-en"
    assert rt.venue.fetch_open_orders() == [] and rt.venue.fetch_balance().reserved == 0.0   # nothing reached the venue
    assert rt.venue.fetch_order(f"tp-{iid[3:]}-en") is None
    assert [t["to"] for t in rep["transitions"]] == ["PENDING", "VALIDATED", "DRY_RUN"]
    assert any(a["event"] == "execute" and a["detail"]["mode"] == "DRY_RUN" for a in rep["audit"])
    before = _ledger_counts(rt.engine)
    with pytest.raises(op.Refused, match=f"intent {iid} is DRY_RUN: already executed, it is never executed twice"):
        op.execute_intent(rt, iid, "DRY_RUN")
    with pytest.raises(op.Refused, match="is DRY_RUN: already executed, it cannot be cancelled"):
        op.cancel_intent(rt, iid)
    assert _ledger_counts(rt.engine) == before


def test_live_refused_without_acknowledgement_or_live_switch(env, monkeypatch):
    specs, trading = env
    rt = op.runtime_for(trading, specs[SPOT])
    iid = _plan_0400(rt)["intent_id"]
    before = _ledger_counts(rt.engine)
    with pytest.raises(op.Refused, match="LIVE execution refused: acknowledge_risk is not set"):
        op.execute_intent(rt, iid, "LIVE", acknowledge_risk=False)
    with pytest.raises(op.Refused, match="live switch TRADING_PIPELINES_LIVE=1 is not set .*paper venue included"):
        op.execute_intent(rt, iid, "LIVE", acknowledge_risk=True)
    monkeypatch.setenv("TRADING_PIPELINES_LIVE", "0")
    with pytest.raises(op.Refused, match="TRADING_PIPELINES_LIVE=1 is not set"):
        op.execute_intent(rt, iid, "LIVE", acknowledge_risk=True)
    with pytest.raises(op.Refused, match="mode 'paper' is not DRY_RUN or LIVE"):
        op.execute_intent(rt, iid, "paper")
    with pytest.raises(op.Refused, match="unknown intent 'it-nope'"):
        op.execute_intent(rt, "it-nope", "DRY_RUN")
    assert _ledger_counts(rt.engine) == before
    assert op.show_intent(rt.engine, iid)["status"] == "VALIDATED"
    assert rt.venue.fetch_open_orders() == []


def test_live_sends_once_then_cancel_reaches_the_venue(env, monkeypatch):
    specs, trading = env
    monkeypatch.setenv("TRADING_PIPELINES_LIVE", "1")
    rt = op.runtime_for(trading, specs[SPOT])
    iid = _plan_0400(rt)["intent_id"]
    rep = op.execute_intent(rt, iid, "LIVE", acknowledge_risk=True, who="tester")
    assert rep["status"] == "SUBMITTED"
    assert {o["role"]: (o["status"], o["quantity"], o["price"] or o["trigger_price"]) for o in rep["orders"]} == {
        "entry": ("ACCEPTED", 0.9354, 2055.61), "stop_loss": ("ACCEPTED", 0.9354, 1948.71), "take_profit": ("ACCEPTED", 0.9354, 2238.75)}
    assert {o.client_order_id for o in rt.venue.fetch_open_orders()} == {o["client_order_id"] for o in rep["orders"]}
    with pytest.raises(op.Refused, match=f"intent {iid} is SUBMITTED: already executed"):
        op.execute_intent(rt, iid, "LIVE", acknowledge_risk=True)
    rep = op.cancel_intent(rt, iid, "changed my mind", who="tester")
    assert rep["status"] == "CANCELLED" and rep["reason"] == "cancelled by tester: changed my mind"
    assert {o["role"]: o["status"] for o in rep["orders"]} == {"entry": "CANCELED", "stop_loss": "CANCELED",
                                                                "take_profit": "CANCELED"}
    assert rt.venue.fetch_open_orders() == [] and rt.venue.fetch_balance().reserved == 0.0
    assert [t["to"] for t in rep["transitions"]] == ["PENDING", "VALIDATED", "SUBMITTED", "CANCELLED"]
    cancel = next(a for a in rep["audit"] if a["event"] == "cancel")["detail"]
    assert (cancel["previous_status"], cancel["reason"], cancel["who"]) == ("SUBMITTED", "changed my mind", "tester")
    assert sorted(cancel["cancelled_at_venue"]) == [f"tp-{iid[3:]}-en"]   # the entry; the venue cancels its bracket
    with pytest.raises(op.Refused, match="is CANCELLED: nothing to cancel"):
        op.cancel_intent(rt, iid)


def test_cancel_refused_once_the_entry_filled(env, monkeypatch):
    specs, trading = env
    monkeypatch.setenv("TRADING_PIPELINES_LIVE", "1")
    rt = op.runtime_for(trading, specs[SPOT])
    iid = _plan_0400(rt)["intent_id"]
    op.execute_intent(rt, iid, "LIVE", acknowledge_risk=True)
    events = window.monitor(rt, Lineage(SPOT, "*", "monitor", "test"), datetime(2026, 2, 27, 8, tzinfo=UTC))
    assert [(e.role, e.quantity, e.price) for e in events if e.kind == "fill"] == [("entry", 0.9354, 2046.41)]
    status = op.show_intent(rt.engine, iid)["status"]
    assert status not in {"VALIDATED", "AWAITING_CONFIRMATION", "SUBMITTED"}   # executed (monitored by the lead's states)
    before = _ledger_counts(rt.engine)
    with pytest.raises(op.Refused, match=f"intent {iid} is {status}: already executed, it cannot be cancelled "
                                         f"\\(exit the position instead\\)"):
        op.cancel_intent(rt, iid)
    assert _ledger_counts(rt.engine) == before
    assert [p.instrument for p in rt.venue.fetch_positions()] == ["ETH/USDT"]


def test_a_plan_is_good_for_one_bar(env):
    specs, trading = env
    rt = op.runtime_for(trading, specs[SPOT])
    iid = _plan_0400(rt)["intent_id"]
    window.monitor(rt, Lineage(SPOT, "*", "monitor", "test"), datetime(2026, 2, 27, 8, tzinfo=UTC))
    rep = op.execute_intent(rt, iid, "DRY_RUN", who="tester")
    assert rep["status"] == "CANCELLED" and rep["orders"] == []
    assert rep["reason"].startswith("expired: DRY_RUN execution by tester at 2026-02-27T08:00:00+00:00")


def test_a_pipeline_intent_awaiting_confirmation_executes_through_the_same_path(env):
    import yaml

    from trading_pipelines.config import STRATEGIES_DIR, parse_strategy

    attrs = yaml.safe_load((STRATEGIES_DIR / SPOT / "defs.yaml").read_text())["attributes"]
    attrs["execution"]["confirm"] = "manual"
    spec = parse_strategy(attrs)
    _, trading = env
    defs = dg.Definitions.merge(build_strategy_defs(spec), dg.Definitions(resources=default_resources()))
    assert defs.resolve_job_def(f"review_{SPOT}").execute_in_process(
        partition_key="2026-02-27-00:00", tags={INSTRUMENTS_TAG: "ETH/USDT"}, run_config=QUIET).success
    rt = op.runtime_for(trading, spec)
    iid = pipeline_intent_id(SPOT, "ETH/USDT", W0400)
    assert op.show_intent(rt.engine, iid)["status"] == "AWAITING_CONFIRMATION"
    rep = op.execute_intent(rt, iid, "DRY_RUN", who="tester")
    assert rep["status"] == "DRY_RUN" and rep["origin"] == "pipeline"
    assert [t["to"] for t in rep["transitions"]] == ["PENDING", "VALIDATED", "AWAITING_CONFIRMATION", "DRY_RUN"]
    assert {o["role"]: o["status"] for o in rep["orders"]} == {"entry": "DRY_RUN", "stop_loss": "DRY_RUN",
                                                                "take_profit": "DRY_RUN"}
    assert rt.venue.fetch_open_orders() == []


def test_futures_dry_run_and_history_per_mode(env):
    specs, trading = env
    rf = op.runtime_for(trading, specs[FUT])
    with pytest.raises(op.Refused, match="not a futures side .*long, short, close"):
        op.plan_manual(rf, "BTC/USDT:USDT", "buy")
    rep = op.plan_manual(rf, "BTC/USDT:USDT", "short", who="tester")
    frame = frames.indicator_frame(rf, "BTC/USDT:USDT", datetime(2026, 4, 16, tzinfo=UTC))
    close, atr = _d(frame["close"].iloc[-1]), _d(float(frame["atr"].iloc[-1]))
    tick, lot = _d("0.1"), _d("0.001")
    stop = ((close + _d("2.5") * atr) / tick).to_integral_value(ROUND_CEILING) * tick
    limit = ((close * _d("0.995")) / tick).to_integral_value(ROUND_CEILING) * tick
    qty = ((_d(100) / (stop - limit)) / lot).to_integral_value(ROUND_DOWN) * lot
    assert (float(close), stop, limit, qty) == (74809.99, _d("76037.3"), _d("74436.0"), _d("0.062"))
    assert rep["window_end"] == "2026-04-16T00:00:00+00:00"
    assert (rep["side"], rep["position_side"], rep["quantity"], rep["stop"], rep["leverage"], rep["status"]) == (
        "sell", "short", 0.062, 76037.3, 3.0, "VALIDATED")
    done = op.execute_intent(rf, rep["intent_id"], "DRY_RUN")
    assert {o["role"]: (o["side"], o["quantity"], o["price"] or o["trigger_price"]) for o in done["orders"]} == {
        "entry": ("sell", 0.062, 74436.0), "stop_loss": ("buy", 0.062, 76037.3), "take_profit": ("buy", 0.062, 72355.4)}
    rs = op.runtime_for(trading, specs[SPOT])
    spot = op.execute_intent(rs, op.plan_manual(rs, "ETH/USDT", "buy")["intent_id"], "DRY_RUN")
    fut_h, spot_h = op.history(rf.engine, "futures"), op.history(rf.engine, "SPOT")
    assert [i["intent_id"] for i in fut_h["intents"]] == [rep["intent_id"]]
    assert {o["mode"] for o in fut_h["orders"]} == {"futures"} and len(fut_h["orders"]) == 3
    assert [i["intent_id"] for i in spot_h["intents"]] == [spot["intent_id"]] and spot_h["intents"][0]["origin"] == "manual"
    assert {o["mode"] for o in spot_h["orders"]} == {"spot"} and len(spot_h["orders"]) == 3
    assert op.history(rf.engine, "futures", strategy=SPOT)["orders"] == []
    with pytest.raises(op.Refused, match="mode 'options' is not spot or futures"):
        op.history(rf.engine, "options")


# ---------------------------------------------------------------- CLI


def test_cli_create_show_execute_cancel_history(env, capsys):
    from trading_pipelines.cli import main

    assert main(["intent", "create", SPOT, "ETH/USDT", "buy", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    iid = created["intent_id"]
    assert (created["window_end"], created["status"], created["quantity"], created["entry"], created["stop"]) == (
        LAST_SPOT.isoformat(), "VALIDATED", 0.8218, 1982.8, 1871.03)   # the last window of the replay data
    assert main(["intent", "show", iid]) == 0
    text = capsys.readouterr().out
    assert "status VALIDATED: all guards passed" in text and "PASS  risk_limit" in text and "PENDING -> VALIDATED" in text
    assert main(["intent", "execute", iid, "--mode", "LIVE"]) == 2
    assert "error: LIVE execution refused: acknowledge_risk is not set" in capsys.readouterr().err
    assert main(["intent", "execute", iid, "--mode", "LIVE", "--acknowledge-risk"]) == 2
    assert "TRADING_PIPELINES_LIVE=1 is not set" in capsys.readouterr().err
    assert main(["intent", "execute", iid, "--mode", "dry_run", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["status"] == "DRY_RUN" and [o["status"] for o in done["orders"]] == ["DRY_RUN"] * 3
    assert main(["intent", "execute", iid, "--mode", "DRY_RUN"]) == 2
    assert f"error: intent {iid} is DRY_RUN: already executed, it is never executed twice" in capsys.readouterr().err
    assert main(["intent", "cancel", iid, "--reason", "late"]) == 2
    assert "is DRY_RUN: already executed, it cannot be cancelled" in capsys.readouterr().err
    assert main(["history", "--mode", "spot", "--json"]) == 0
    hist = json.loads(capsys.readouterr().out)
    assert [i["intent_id"] for i in hist["intents"]] == [iid] and len(hist["orders"]) == 3
    assert main(["history", "--mode", "futures"]) == 0
    assert "0 intents, 0 orders" in capsys.readouterr().out
    assert main(["intent", "show", "it-unknown"]) == 2
    assert "error: unknown intent 'it-unknown'" in capsys.readouterr().err
    assert main(["intent", "create", SPOT, "ETH/USDT", "short"]) == 2
    assert "not a spot side" in capsys.readouterr().err
    assert main(["intent", "create", "no_such_strategy", "ETH/USDT", "buy"]) == 2
    # a second plan, cancelled by the CLI with a reason
    assert main(["intent", "create", SPOT, "ETH/USDT", "buy", "--capital", "5000", "--json"]) == 0
    other = json.loads(capsys.readouterr().out)["intent_id"]
    assert main(["intent", "cancel", other, "--reason", "too small", "--json"]) == 0
    cancelled = json.loads(capsys.readouterr().out)
    assert cancelled["status"] == "CANCELLED" and cancelled["reason"].endswith(": too small")


# ---------------------------------------------------------------- launchpad jobs


def _jobs():
    specs = load_strategies()
    return dg.Definitions(jobs=build_intent_jobs(list(specs.values())), resources=default_resources())


def _cfg(job: str, config: dict) -> dict:
    return {**QUIET, "ops": {op_name(job): {"config": config}}}


def _failure(result) -> str:
    ev = result.get_step_failure_events()[0]
    return ev.step_failure_data.user_failure_data.description if ev.step_failure_data.user_failure_data else \
        ev.step_failure_data.error.message


def test_launchpad_jobs_plan_execute_cancel(env):
    defs = _jobs()
    plan = defs.resolve_job_def(PLAN_JOB).execute_in_process(run_config=_cfg(PLAN_JOB, {
        "strategy": SPOT, "instrument": "ETH/USDT", "side": "buy", "capital": 5000.0}))
    assert plan.success
    rep = plan.output_for_node(op_name(PLAN_JOB))
    assert (rep["status"], rep["quantity"], rep["equity"], rep["window_end"]) == ("VALIDATED", 0.4109, 5000.0,
                                                                                 LAST_SPOT.isoformat())
    assert rep["transitions"][0]["run_id"] == plan.run_id   # the run is the cause on record
    iid = rep["intent_id"]
    bad = defs.resolve_job_def(EXECUTE_JOB).execute_in_process(raise_on_error=False, run_config=_cfg(EXECUTE_JOB, {
        "intent_id": iid, "mode": "LIVE", "acknowledge_risk": False}))
    assert not bad.success and "refused: LIVE execution refused: acknowledge_risk is not set" in _failure(bad)
    run = defs.resolve_job_def(EXECUTE_JOB).execute_in_process(run_config=_cfg(EXECUTE_JOB, {"intent_id": iid,
                                                                                             "mode": "DRY_RUN"}))
    assert run.success and run.output_for_node(op_name(EXECUTE_JOB))["status"] == "DRY_RUN"
    twice = defs.resolve_job_def(EXECUTE_JOB).execute_in_process(raise_on_error=False, run_config=_cfg(EXECUTE_JOB, {
        "intent_id": iid, "mode": "DRY_RUN"}))
    assert not twice.success and f"intent {iid} is DRY_RUN: already executed" in _failure(twice)
    nope = defs.resolve_job_def(CANCEL_JOB).execute_in_process(raise_on_error=False, run_config=_cfg(CANCEL_JOB, {
        "intent_id": iid, "reason": "no"}))
    assert not nope.success and "cannot be cancelled" in _failure(nope)
    unknown = defs.resolve_job_def(PLAN_JOB).execute_in_process(raise_on_error=False, run_config=_cfg(PLAN_JOB, {
        "strategy": "nope", "instrument": "ETH/USDT", "side": "buy"}))
    assert not unknown.success and "unknown strategy 'nope'" in _failure(unknown)
    # a fresh plan, cancelled from the launchpad with its reason
    fresh = defs.resolve_job_def(PLAN_JOB).execute_in_process(run_config=_cfg(PLAN_JOB, {
        "strategy": SPOT, "instrument": "ETH/USDT", "side": "buy"})).output_for_node(op_name(PLAN_JOB))
    gone = defs.resolve_job_def(CANCEL_JOB).execute_in_process(run_config=_cfg(CANCEL_JOB, {
        "intent_id": fresh["intent_id"], "reason": "UI test"}))
    assert gone.success
    out = gone.output_for_node(op_name(CANCEL_JOB))
    assert out["status"] == "CANCELLED" and out["reason"].endswith(": UI test")


def test_code_location_registers_the_launchpad_jobs():
    from trading_pipelines.definitions import defs

    d = defs()
    for job in (PLAN_JOB, EXECUTE_JOB, CANCEL_JOB):
        jd = d.resolve_job_def(job)
        assert jd.executor_def.name == "in_process" and jd.tags["purpose"] == "intent_lifecycle"
    fields = d.resolve_job_def(EXECUTE_JOB).get_config_schema_snapshot()
    assert fields is not None
    ops_cfg = d.resolve_job_def(PLAN_JOB).run_config_schema.config_type.fields["ops"]
    plan_fields = ops_cfg.config_type.fields[op_name(PLAN_JOB)].config_type.fields["config"].config_type.fields
    assert set(plan_fields) == {"strategy", "instrument", "side", "capital"} and not plan_fields["capital"].is_required
