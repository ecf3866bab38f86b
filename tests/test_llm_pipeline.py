"""The OpenAI provider inside the pipeline: a bad LLM answer becomes a recorded no-trade and never
an order; a good one flows through plan, guards and the paper venue.

OpenAI cannot be reached from here: the model is ``tests/openai_stub_server.py``, a scripted
OpenAI-compatible HTTP server on 127.0.0.1 that the real ``openai`` SDK talks to.
"""

from __future__ import annotations

import dagster as dg
import pytest
import yaml
from sqlalchemy import select

from openai_stub_server import OpenAIStubServer
from trading_pipelines.assets.review import BOOK_TAG, INSTRUMENTS_TAG
from trading_pipelines.components import build_strategy_defs
from trading_pipelines.config import STRATEGIES_DIR, parse_strategy
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.resources.dagster_resources import default_resources

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture()
def llm_env(tmp_path, monkeypatch):
    stub = OpenAIStubServer().start()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(tmp_path / "charts"))
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-0000")
    attrs = yaml.safe_load((STRATEGIES_DIR / "spot_4h_majors" / "defs.yaml").read_text())["attributes"]
    attrs["name"] = "spot_4h_llm"
    attrs["template"]["signal_provider"] = {"kind": "openai", "model": "gpt-4o-mini"}
    spec = parse_strategy(attrs)
    defs = dg.Definitions.merge(build_strategy_defs(spec), dg.Definitions(resources=default_resources()))
    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    yield stub, defs, instance, get_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    stub.stop()


def _run(defs, instance, inst="ETH/USDT", window="2026-02-27-00:00"):
    """One window, one instrument (the run's ``trading/instruments`` tag), the live book."""
    return defs.resolve_job_def("review_spot_4h_llm").execute_in_process(
        instance=instance, partition_key=window, run_config=QUIET, tags={INSTRUMENTS_TAG: inst, BOOK_TAG: "live"})


def _checks(res) -> dict[str, bool]:
    return {e.event_specific_data.asset_check_key.name: e.event_specific_data.passed
            for e in res.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def test_answer_outside_the_schema_is_a_recorded_no_trade(llm_env):
    stub, defs, instance, engine = llm_env
    stub.push_json_answer({"action": "long", "confidence": 0.9, "thesis": "futures word in a spot answer",
                           "instrument": "ETH/USDT"})
    res = _run(defs, instance)
    assert res.success
    with session_scope(engine) as s:
        sig = s.execute(select(m.SignalRow)).scalar_one()
        intent = s.execute(select(m.IntentRow)).scalar_one()
        orders = s.execute(select(m.OrderRow)).scalars().all()
    assert sig.action == "hold" and sig.confidence == 0 and "action" in sig.no_trade_reason
    assert sig.response_text and '"long"' in sig.response_text  # the raw answer is kept for the audit
    assert intent.status == "NO_TRADE" and intent.reason.startswith("signal failed:")
    assert orders == []
    assert len(stub.chat_requests) == 1  # one instrument, one window: one call
    checks = _checks(res)
    assert checks["signal_usable"] is False  # flagged in the UI
    assert checks["no_order_from_invalid_intent"] is True


def test_valid_answer_is_audited_and_traded(llm_env):
    stub, defs, instance, engine = llm_env
    stub.push_json_answer({"action": "buy", "confidence": 0.8, "entry": 2040.0, "stop": 1990.0, "take_profit": 2140.0,
                           "thesis": "trend up, MACD positive", "instrument": "ETH/USDT"}, prompt_tokens=900,
                          completion_tokens=40)
    res = _run(defs, instance)
    assert res.success
    assert len(stub.chat_requests) == 1
    assert _checks(res) == {"signal_usable": True, "reviewed_in_time": True, "no_order_from_invalid_intent": True,
                              "positions_protected": True}
    req = stub.chat_requests[0].body
    assert req["model"] == "gpt-4o-mini"
    image = [p for msg in req["messages"] if isinstance(msg.get("content"), list) for p in msg["content"] if p.get("type") == "image_url"]
    assert image and image[0]["image_url"]["url"].startswith("data:image/png;base64,")
    with session_scope(engine) as s:
        sig = s.execute(select(m.SignalRow)).scalar_one()
        intent = s.execute(select(m.IntentRow)).scalar_one()
        orders = s.execute(select(m.OrderRow)).scalars().all()
        audit = s.execute(select(m.AuditRow).where(m.AuditRow.event == "signal")).scalars().all()
    assert (sig.provider, sig.model, sig.action, sig.confidence) == ("openai", "gpt-4o-mini", "buy", 0.8)
    assert (sig.prompt_tokens, sig.completion_tokens, sig.total_tokens) == (900, 40, 940)
    assert sig.chart_key and sig.chart_sha256 and len(sig.prompt_hash) == 64
    assert "<chart sha256=" in str(sig.request_json) and "sk-test" not in str(sig.request_json)
    assert intent.status == "SUBMITTED" and {o.role for o in orders} == {"entry", "stop_loss", "take_profit"}
    assert intent.book == "live" and {o.book for o in orders} == {"live"}
    assert audit and all("sk-test" not in str(a.detail) for a in audit)


def test_the_ui_shows_per_signal_the_chart_prompt_raw_answer_tokens_and_cost(llm_env):
    """The ``signals`` materialization of a one-window run: dagster-openai's usage keys and, per
    instrument, the chart, the exact prompt, the raw answer, tokens and the estimated cost."""
    stub, defs, instance, engine = llm_env
    stub.push_json_answer({"action": "hold", "confidence": 0.4, "thesis": "range-bound", "instrument": "ETH/USDT"}, prompt_tokens=900,
                          completion_tokens=40)
    res = _run(defs, instance)
    assert res.success
    mat = next(e.event_specific_data.materialization for e in res.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
               and e.event_specific_data.materialization.asset_key.path[-1] == "signals")
    md = {k: v.value for k, v in mat.metadata.items()}
    # worked: gpt-4o-mini list price 0.15 / 0.60 USD per million prompt / completion tokens
    assert (md["openai.calls"], md["openai.prompt_tokens"], md["openai.completion_tokens"], md["openai.total_tokens"]) == (1, 900, 40, 940)
    assert md["openai.estimated_cost_usd"] == pytest.approx((900 * 0.15 + 40 * 0.60) / 1e6) and md["openai.cache_hits"] == 0
    with session_scope(engine) as s:
        call = s.execute(select(m.ProviderCallRow)).scalar_one()
    view = md["signal/ETH/USDT"]
    assert "![ETH/USDT](data:image/png;base64," in view  # the chart the model saw
    assert call.prompt in view and '"range-bound"' in view  # the exact prompt and the raw answer
    assert "900 prompt + 40 completion" in view and f"ledger call id: {call.id}" in view
    assert "agent: spot_analyst" in md["calls"] and "| 2026-02-27-00:00 | ETH/USDT | hold | 900 | 40 | 0.000159 |" in md["calls"]
