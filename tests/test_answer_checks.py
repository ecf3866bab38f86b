"""Model answers (issue 13): absurd levels on the correct side, reasoning blocks and fences, a
missing ``instrument``, control characters inside tokens.

Levels exercised: the pure domain rule (:func:`domain.stops.answer_levels_problem`), the PLAN step
(:func:`domain.planning.plan_intent`), the answer parser (:func:`llm.parsing.parse_signal_response`)
and the OpenAI provider over real HTTP — the real ``openai`` SDK against
``tests/openai_stub_server.py`` (OpenAI cannot be reached from here; only the model's answers are
scripted) — and, for the levels, the whole Dagster review job of a strategy on the shipped ETH/USDT
4h candles (``execute_in_process``), the window of ``test_llm_pipeline.py``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import dagster as dg
import pytest
import yaml
from sqlalchemy import select

from openai_stub_server import OpenAIStubServer, ScriptedResponse, completion_body
from test_signals_openai import SPOT_BUY, provider, request
from trading_pipelines.assets.review import BOOK_TAG, INSTRUMENTS_TAG
from trading_pipelines.components import build_strategy_defs
from trading_pipelines.config import STRATEGIES_DIR, parse_strategy
from trading_pipelines.domain.models import InstrumentSpec, IntentKind, IntentStatus, Mode, PositionSide, Signal
from trading_pipelines.domain.planning import MarketContext, PlanParams, plan_intent
from trading_pipelines.domain.stops import answer_levels_problem
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.llm.parsing import InvalidSignalResponse, answer_json_text, parse_signal_response
from trading_pipelines.resources.dagster_resources import default_resources

UTC = timezone.utc
LONG, SHORT = PositionSide.LONG, PositionSide.SHORT

# --------------------------------------------------------------------------------------------
# 1. Absurd levels on the correct side: the pure rule, worked numbers
# --------------------------------------------------------------------------------------------


def test_a_stop_far_beyond_the_atr_bound_is_named_with_its_numbers():
    # long at 64 000, ATR 850: max 5 ATR = 4 250; a stop at 1e-300 is 64 000 / 850 = 75.29 ATR away
    why = answer_levels_problem(LONG, 64_000.0, 850.0, 1e-300, None, own_stop=62_300.0)
    assert why == "stop 1e-300 is 75.29 ATR from entry 64,000.00 (max 5 ATR = 4,250.00)"
    # ×0.001 the close: 64 000 − 64 = 63 936 → 75.22 ATR
    assert answer_levels_problem(LONG, 64_000.0, 850.0, 64.0, None, own_stop=62_300.0) == \
        "stop 64.00 is 75.22 ATR from entry 64,000.00 (max 5 ATR = 4,250.00)"
    # exactly 5 ATR (59 750) is within; 59 749.99 is not
    assert answer_levels_problem(LONG, 64_000.0, 850.0, 59_750.0, None, own_stop=62_300.0) is None
    assert "5.00 ATR" in answer_levels_problem(LONG, 64_000.0, 850.0, 59_749.99, None, own_stop=62_300.0)


def test_a_target_beyond_the_r_bound_is_named_with_its_numbers():
    # stop 62 300 → R = 1 700; 10 R → 81 000. A target of 1e300 is 5.882e+296 R
    why = answer_levels_problem(LONG, 64_000.0, 850.0, 62_300.0, 1e300, own_stop=62_300.0)
    assert why == ("take-profit 1e+300 is 5.882e+296 R from entry 64,000.00 (R = 1,700.00 to its stop 62,300.00; "
                   "max 10 R = 81,000.00)")
    # ×1000 the close, no stop given: R from the planner's stop 62 300 (1 700): 63 936 000 / 1 700 = 37 609.41 R
    why = answer_levels_problem(LONG, 64_000.0, 850.0, None, 64_000_000.0, own_stop=62_300.0)
    assert why == ("take-profit 64,000,000.00 is 37,609.41 R from entry 64,000.00 (R = 1,700.00 to the planner's "
                   "stop 62,300.00; max 10 R = 81,000.00)")
    assert answer_levels_problem(LONG, 64_000.0, 850.0, 62_300.0, 81_000.0, own_stop=62_300.0) is None


def test_futures_short_levels_are_bounded_the_other_way():
    # short at 3 000, ATR 40: the stop above (max 5 ATR → 3 200), the target below (R to the stop)
    assert answer_levels_problem(SHORT, 3_000.0, 40.0, 3_200.0, 2_000.0, own_stop=3_080.0) is None  # 5 ATR, 5 R
    assert answer_levels_problem(SHORT, 3_000.0, 40.0, 3e6, None, own_stop=3_080.0) == \
        "stop 3,000,000.00 is 74,925.00 ATR from entry 3,000.00 (max 5 ATR = 200.00)"
    # ×0.001: target 3 is 2 997 below; R = 80 to the planner's stop 3 080 → 37.46 R (max 10 R = 2 200)
    assert answer_levels_problem(SHORT, 3_000.0, 40.0, None, 3.0, own_stop=3_080.0) == (
        "take-profit 3.00 is 37.46 R from entry 3,000.00 (R = 80.00 to the planner's stop 3,080.00; max 10 R = "
        "2,200.00)")
    # the wrong side is refused too (the parser refuses it first; the rule does not rely on that)
    assert "not above entry" in answer_levels_problem(SHORT, 3_000.0, 40.0, 2_990.0, None, own_stop=3_080.0)


def test_the_bounds_are_the_strategys():
    assert answer_levels_problem(LONG, 64_000.0, 850.0, 55_000.0, None, own_stop=62_300.0, max_stop_atr=12) is None
    assert "max 2 R" in answer_levels_problem(LONG, 64_000.0, 850.0, 62_300.0, 68_000.0, own_stop=62_300.0,
                                              max_target_r=2)


# --------------------------------------------------------------------------------------------
# 1. ... in the PLAN step: a recorded no-trade naming the numbers, spot and futures
# --------------------------------------------------------------------------------------------

BTC = InstrumentSpec(symbol="BTC/USDT", asset_class="crypto", market=Mode.SPOT, lot_step=0.00001, min_qty=0.00001,
                     tick_size=0.01, min_notional=5.0)
ETH_PERP = InstrumentSpec(symbol="ETH/USDT:USDT", asset_class="crypto", market=Mode.FUTURES, lot_step=0.001,
                          min_qty=0.001, tick_size=0.01, min_notional=5.0, maintenance_margin_rate=0.005)
BTC_MARKET = MarketContext(last_close=64_000.0, atr=850.0, swing_low=60_500.0, swing_high=65_000.0)
ETH_MARKET = MarketContext(last_close=3_000.0, atr=40.0, swing_low=2_900.0, swing_high=3_100.0)


def _signal(action: str, mode: Mode = Mode.SPOT, instrument: str = "BTC/USDT", **levels) -> Signal:
    return Signal(strategy="s", instrument=instrument, window_end=datetime(2024, 3, 1, 4, tzinfo=UTC), mode=mode,
                  action=action, confidence=0.8, thesis="trend up", provider="openai", model="m", prompt_hash="h",
                  **levels)


@pytest.mark.parametrize(("levels", "fragment"), [
    ({"take_profit": 1e300}, "take-profit 1e+300 is 5.882e+296 R from entry 64,000.00"),
    ({"take_profit": 64_000_000.0}, "take-profit 64,000,000.00 is 37,609.41 R"),
    ({"stop": 1e-300}, "stop 1e-300 is 75.29 ATR from entry 64,000.00 (max 5 ATR = 4,250.00)"),
    ({"stop": 64.0, "take_profit": 70_000.0}, "stop 64.00 is 75.22 ATR"),
])
def test_spot_plan_refuses_absurd_levels(levels, fragment):
    it = plan_intent(_signal("buy", **levels), BTC, 10_000.0, BTC_MARKET, PlanParams())
    assert it.kind is IntentKind.NONE and it.status is IntentStatus.NO_TRADE
    assert it.reason.startswith("openai levels refused: ") and fragment in it.reason, it.reason


def test_spot_plan_keeps_credible_levels_and_plans_its_own():
    # the planner's stop: 64 000 − 2 × 850 = 62 300; its target 2 R = 67 400; the model's levels are not used
    it = plan_intent(_signal("buy", stop=61_000.0, take_profit=72_000.0), BTC, 10_000.0, BTC_MARKET, PlanParams())
    assert it.kind is IntentKind.ENTRY and (it.stop, it.take_profit) == (62_300.0, 67_400.0)


@pytest.mark.parametrize(("action", "levels", "fragment"), [
    ("short", {"take_profit": 3.0}, "take-profit 3.00 is 37.46 R from entry 3,000.00 (R = 80.00 to the planner's stop"),
    ("short", {"stop": 3e300}, "stop 3e+300 is 7.5e+298 ATR"),
    ("long", {"take_profit": 3e6}, "take-profit 3,000,000.00 is 37,462.50 R"),
    ("long", {"stop": 1e-300}, "stop 1e-300 is 75.00 ATR from entry 3,000.00 (max 5 ATR = 200.00)"),
])
def test_futures_plan_refuses_absurd_levels(action, levels, fragment):
    p = PlanParams(leverage=3.0, margin_mode="isolated")
    it = plan_intent(_signal(action, Mode.FUTURES, "ETH/USDT:USDT", **levels), ETH_PERP, 10_000.0, ETH_MARKET, p)
    assert it.status is IntentStatus.NO_TRADE and fragment in it.reason, it.reason


def test_plan_params_carry_the_bounds():
    it = plan_intent(_signal("buy", stop=55_000.0), BTC, 10_000.0, BTC_MARKET, PlanParams(max_stop_atr=12.0))
    assert it.kind is IntentKind.ENTRY
    it = plan_intent(_signal("buy", take_profit=70_000.0), BTC, 10_000.0, BTC_MARKET, PlanParams(max_target_r=3.0))
    assert "3.53 R" in it.reason and "max 3 R = 69,100.00" in it.reason  # 6 000 / 1 700 = 3.53


def _attrs(**risk) -> dict:
    attrs = yaml.safe_load((STRATEGIES_DIR / "spot_4h_majors" / "defs.yaml").read_text())["attributes"]
    attrs["risk"].update(risk)
    return attrs


def test_the_risk_block_takes_the_bounds_and_refuses_ones_below_the_planners_own():
    spec = parse_strategy(_attrs())
    assert (spec.risk.max_stop_atr, spec.risk.max_target_r) == (5.0, 10.0)
    assert parse_strategy(_attrs(max_stop_atr=8, max_target_r=4)).risk.max_target_r == 4
    with pytest.raises(Exception, match=r"risk.max_stop_atr 1.5 is below template.stop.atr_multiple 2.0"):
        parse_strategy(_attrs(max_stop_atr=1.5))
    with pytest.raises(Exception, match=r"risk.max_target_r 1.0 is below template.take_profit_r 2.0"):
        parse_strategy(_attrs(max_target_r=1.0))
    with pytest.raises(Exception, match="max_stop_atr"):
        parse_strategy(_attrs(max_stop_atr=0))


# --------------------------------------------------------------------------------------------
# 1. ... end to end: the review job over the shipped ETH/USDT 4h candles, a stub model
# --------------------------------------------------------------------------------------------

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture()
def llm_job(tmp_path, monkeypatch):
    stub = OpenAIStubServer().start()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(tmp_path / "charts"))
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-0000")
    attrs = _attrs()
    attrs["name"] = "spot_4h_llm"
    attrs["template"]["signal_provider"] = {"kind": "openai", "model": "gpt-4o-mini"}
    defs = dg.Definitions.merge(build_strategy_defs(parse_strategy(attrs)), dg.Definitions(resources=default_resources()))
    instance = dg.DagsterInstance.local_temp(str(tmp_path))

    def run(answer: dict):
        stub.push_json_answer(answer, prompt_tokens=900, completion_tokens=40)
        res = defs.resolve_job_def("review_spot_4h_llm").execute_in_process(
            instance=instance, partition_key="2026-02-27-00:00", run_config=QUIET,
            tags={INSTRUMENTS_TAG: "ETH/USDT", BOOK_TAG: "live"})
        assert res.success
        with session_scope(get_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")) as s:
            return (s.execute(select(m.SignalRow)).scalar_one(), s.execute(select(m.IntentRow)).scalar_one(),
                    s.execute(select(m.OrderRow)).scalars().all())

    yield run
    stub.stop()


def test_an_absurd_take_profit_on_the_right_side_places_no_order(llm_job):
    """The answer of the issue (take_profit 1e300 on the right side of the close): before, an
    accepted buy and 3 orders; now a recorded no-trade naming the numbers, and no order."""
    sig, intent, orders = llm_job({"action": "buy", "confidence": 0.8, "entry": 2040.0, "stop": 1990.0,
                                   "take_profit": 1e300, "thesis": "trend up", "instrument": "ETH/USDT"})
    assert sig.action == "buy"  # the answer is a valid signal; its levels are what is refused
    assert intent.status == "NO_TRADE" and orders == []
    assert intent.reason.startswith("openai levels refused: take-profit 1e+300 is ") and " R from entry " in intent.reason
    assert "to its stop 1,990.00; max 10 R = " in intent.reason


# --------------------------------------------------------------------------------------------
# 3. Reasoning blocks and fences
# --------------------------------------------------------------------------------------------

ANSWER = json.dumps(SPOT_BUY)  # names BTC/USDT


def _parse(text: str, reasoning: str | None = None):
    return parse_signal_response(Mode.SPOT, text, 84_210.5, instrument="BTC/USDT", max_entry_deviation_pct=2.0,
                                 reasoning=reasoning)


@pytest.mark.parametrize("text", [
    "<think>The trend is up. A draft: {\"action\": \"hold\"}. No, buy.</think>\n" + ANSWER,
    "<think>\nstep 1\n</think>\n\n```json\n" + ANSWER + "\n```",
    "<thinking>hmm</thinking>" + ANSWER,
    "Okay, the chat template opened the block; the close is above EMA50.\n</think>\n" + ANSWER,
    "Here is my analysis: the close is above EMA50 and MACD is rising, so I would buy.\n```json\n" + ANSWER +
    "\n```\nHope this helps.",
    "Analysis first.\n```\n" + ANSWER + "\n```",
])
def test_one_object_after_reasoning_or_one_fenced_block_is_taken(text):
    assert _parse(text).action == "buy"


def test_reasoning_repeated_at_the_start_of_the_content_is_skipped():
    reasoning = "Let me think about BTC. It trends up."
    assert _parse(reasoning + "\n" + ANSWER, reasoning=reasoning).action == "buy"
    with pytest.raises(InvalidSignalResponse, match="not valid JSON"):
        _parse(reasoning + "\n" + ANSWER)  # without the reasoning it is prose before the object


@pytest.mark.parametrize(("text", "fragment"), [
    (ANSWER + ANSWER, "more than one JSON value"),
    ("<think>x</think>" + ANSWER + "\n" + ANSWER, "more than one JSON value"),
    ("<think>x</think>" + ANSWER + "\nActually I meant hold.", "text after the object"),
    ("```json\n" + ANSWER + "\n```\n```json\n" + ANSWER + "\n```", "2 fenced blocks"),
    ("Here it is:\n```json\n" + ANSWER + "\n```\nActually, on reflection: hold.", "could change its meaning"),
    ("```json\n" + ANSWER + "\n```\nbut use a stop of 80000", "could change its meaning"),
    ("Ignore the following block.\n```json\n" + ANSWER + "\n```", "may not be the answer"),
    ("<think>the answer is " + ANSWER, "never closed"),
    ("<think>all reasoning</think>\n  ", "no answer after the reasoning block"),
    ("Here:\n```json\n" + ANSWER + "\n```\x00", "control character"),
    ("\x0b" + ANSWER, "not valid JSON"),  # \x0b is Python whitespace, not JSON's
    (ANSWER + "\x0b", "text after the object"),
    ("Sure! " + ANSWER, "not valid JSON"),
])
def test_ambiguous_answers_are_still_refused(text, fragment):
    with pytest.raises(InvalidSignalResponse, match=fragment):
        _parse(text)


def test_empty_content_with_a_separate_reasoning_is_not_an_answer():
    with pytest.raises(InvalidSignalResponse, match=r"empty response content \(the separate reasoning, 12 characters"):
        answer_json_text("", reasoning="I'd buy. {}.")


@pytest.fixture
def stub():
    with OpenAIStubServer() as server:
        yield server


def test_reasoning_block_and_fence_through_the_provider(stub):
    """Over HTTP: before, both were no-trades 'response is not valid JSON'."""
    stub.push_completion("<think>Close above EMA50; MACD rising.</think>\n" + ANSWER)
    stub.push_completion("My analysis: trend up.\n```json\n" + ANSWER + "\n```\nGood luck.")
    p = provider(stub)
    for _ in range(2):
        res = p.generate(request())
        assert res.signal.no_trade_reason is None and res.signal.action == "buy", res.signal.no_trade_reason
        assert res.signal.take_profit == SPOT_BUY["take_profit"]


def test_a_reasoning_content_field_beside_a_think_block_through_the_provider(stub):
    body = completion_body("<think>It trends up.</think>" + ANSWER)
    body["choices"][0]["message"]["reasoning_content"] = "It trends up."
    stub.push(ScriptedResponse(200, body))
    res = provider(stub).generate(request())
    assert res.signal.no_trade_reason is None and res.signal.action == "buy"


# --------------------------------------------------------------------------------------------
# 2. Control characters inside a token: parsed as received
# --------------------------------------------------------------------------------------------


def test_a_control_character_inside_a_token_is_refused_by_the_parser():
    with pytest.raises(InvalidSignalResponse, match="Invalid control character"):
        _parse(ANSWER.replace('"buy"', '"b\x00uy"'))
    with pytest.raises(InvalidSignalResponse, match="not valid JSON"):
        _parse(ANSWER.replace("0.72", "0.\x017"))


def test_a_control_character_inside_the_action_is_a_no_trade_through_the_provider(stub):
    """The issue's answer: ``"b\\u0000uy"`` (a NUL byte inside the token) was cleaned to "buy"
    before parsing and traded. It must be a no-trade; the stored text is still cleaned."""
    stub.push_completion(ANSWER.replace('"buy"', '"b\x00uy"'))
    res = provider(stub).generate(request())
    assert res.signal.action == "hold" and "Invalid control character" in (res.signal.no_trade_reason or "")
    assert "\x00" not in res.response_text


# --------------------------------------------------------------------------------------------
# 4. A missing instrument
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [Mode.SPOT, Mode.FUTURES])
def test_a_missing_instrument_is_refused_in_both_modes(mode):
    answer = {k: v for k, v in SPOT_BUY.items() if k != "instrument"} | {"action": "buy" if mode is Mode.SPOT else "long"}
    with pytest.raises(InvalidSignalResponse, match="instrument: Field required"):
        parse_signal_response(mode, json.dumps(answer), 84_210.5, instrument="BTC/USDT")
    ok = parse_signal_response(mode, json.dumps({**answer, "instrument": None}), 84_210.5, instrument="BTC/USDT")
    assert ok.instrument is None  # null stays allowed, as the prompt and the schema sent say


def test_a_missing_instrument_is_a_no_trade_through_the_provider(stub):
    stub.push_json_answer({k: v for k, v in SPOT_BUY.items() if k != "instrument"})  # no "instrument" key
    res = provider(stub).generate(request())
    assert res.signal.action == "hold" and "instrument: Field required" in res.signal.no_trade_reason


def test_finite_guard():
    with pytest.raises(ValueError, match="ATR must be a positive number"):
        answer_levels_problem(LONG, 100.0, math.nan, 90.0, None, own_stop=95.0)


def test_the_strategys_bounds_reach_the_planner(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    rt = default_resources()["trading"].runtime(parse_strategy(_attrs(max_stop_atr=12.5, max_target_r=4.0)))
    assert (rt.plan_params.max_stop_atr, rt.plan_params.max_target_r) == (12.5, 4.0)
