"""Signal providers (trading_pipelines.llm): prompts, rules provider, OpenAI provider over real HTTP.

OpenAI cannot be reached from here, so the model is a scripted local OpenAI-compatible server
(tests/openai_stub_server.py: stdlib http.server on 127.0.0.1). The real ``openai`` SDK talks to
it over HTTP through ``base_url``; only the model's answers are scripted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from datetime import datetime, timedelta, timezone

import pytest
from samples import indicator_summary
from openai_stub_server import OpenAIStubServer

from trading_pipelines.config import OpenAIProviderConfig, RulesProviderConfig
from trading_pipelines.domain.models import Mode
from trading_pipelines.llm.openai_provider import OpenAISignalProvider
from trading_pipelines.llm.parsing import redact_request_body
from trading_pipelines.llm.prompts import prompt_hash, render_prompt
from trading_pipelines.llm.providers import build_provider
from trading_pipelines.llm.requests import ProviderConfigError, SignalRequest
from trading_pipelines.llm.rules_provider import RulesSignalProvider
from trading_pipelines.llm.schemas import FuturesSignalResponse, SpotSignalResponse, response_json_schema

API_KEY = "sk-test-DO-NOT-LEAK-7f3a9c"
MODEL = "gpt-4o-mini"
CHART = b"\x89PNG\r\n\x1a\n" + b"fake chart bytes for the test"
WINDOW_END = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def summary(**overrides: float) -> dict[str, float]:
    return indicator_summary(**overrides)


def bars(n: int = 20) -> list[dict]:
    out = []
    for i in range(n):
        t = WINDOW_END - timedelta(hours=4 * (n - i))
        c = 83000.0 + 60 * i
        out.append({"open_time": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "o": c - 30, "h": c + 80, "l": c - 90, "c": c, "v": 512.25 + i})
    return out


def request(mode: Mode = Mode.SPOT, chart: bytes | None = CHART, **kw) -> SignalRequest:
    args = dict(
        strategy="btc_trend",
        instrument="BTC/USDT" if mode is Mode.SPOT else "BTC/USDT:USDT",
        window_end=WINDOW_END,
        mode=mode,
        timeframe="4h",
        summary=summary(),
        chart_png=chart,
        chart_key="charts/btc_trend/BTC-USDT/2024-05-01T12.png",
        recent_bars=bars(),
    )
    args.update(kw)
    return SignalRequest(**args)


@pytest.fixture
def stub():
    with OpenAIStubServer() as server:
        yield server


def provider(stub: OpenAIStubServer, mode: Mode = Mode.SPOT, **kw) -> OpenAISignalProvider:
    args = dict(
        model=MODEL,
        base_url=stub.base_url,
        api_key=API_KEY,
        temperature=0.0,
        max_tokens=600,
        timeout_s=10.0,
        template_name=f"{mode.value}_review.j2",
    )
    args.update(kw)
    return OpenAISignalProvider(**args)


SPOT_BUY = {
    "action": "buy",
    "confidence": 0.72,
    "entry": 84210.5,
    "stop": 82300.0,
    "take_profit": 88030.0,
    "thesis": "Close 84210.5 above EMA50 83100.2 with MACD hist +120.4; RSI 58.1 leaves room.",
    "instrument": "BTC/USDT",
}


# ---- happy paths ------------------------------------------------------------------------------


def test_valid_spot_answer_becomes_signal_with_usage_and_exact_request(stub):
    stub.push_json_answer(SPOT_BUY, prompt_tokens=1234, completion_tokens=56)
    req = request()
    res = provider(stub).generate(req)

    sig = res.signal
    assert sig.no_trade_reason is None
    assert (sig.action, sig.confidence) == ("buy", 0.72)
    assert (sig.entry, sig.stop, sig.take_profit) == (84210.5, 82300.0, 88030.0)
    assert sig.thesis == SPOT_BUY["thesis"]
    assert (sig.provider, sig.model, sig.mode) == ("openai", MODEL, Mode.SPOT)
    assert sig.window_end == WINDOW_END
    assert res.usage == {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}
    assert json.loads(res.response_text) == SPOT_BUY
    assert res.chart_sha256 == hashlib.sha256(CHART).hexdigest()
    assert res.latency_ms > 0

    # what reached the server
    (sent,) = stub.chat_requests
    body = sent.body
    assert body["model"] == MODEL
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "spot_signal", "strict": True, "schema": response_json_schema(Mode.SPOT)},
    }
    assert body["temperature"] == 0.0 and body["max_tokens"] == 600
    text_part, image_part = body["messages"][0]["content"]
    assert text_part == {"type": "text", "text": res.prompt}
    assert image_part["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(CHART).decode()
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"  # the key goes to the server only

    # request_json is exactly the sent body with the image swapped for a placeholder
    assert res.request_json == redact_request_body(body, res.chart_sha256)
    assert res.request_json["messages"][0]["content"][1]["image_url"]["url"] == f"<chart sha256={res.chart_sha256}>"
    assert sig.prompt_hash == prompt_hash(res.prompt, res.chart_sha256, MODEL, "spot_review.j2")


def test_valid_futures_answer_parses_with_futures_schema(stub):
    answer = {
        "action": "short",
        "confidence": 0.64,
        "entry": 3050.0,
        "stop": 3121.5,
        "take_profit": 2907.0,
        "leverage_hint": 3,
        "thesis": "Lower highs under EMA50 3100; MACD hist -12.",
        "instrument": "BTC/USDT:USDT",
    }
    stub.push_json_answer(answer)
    req = request(Mode.FUTURES, summary=summary(close=3050.0, ema_20=3080.0, ema_50=3100.0, macd_hist=-12.0))
    res = provider(stub, Mode.FUTURES).generate(req)
    sig = res.signal
    assert sig.no_trade_reason is None
    assert (sig.mode, sig.action, sig.confidence) == (Mode.FUTURES, "short", 0.64)
    assert (sig.entry, sig.stop, sig.take_profit) == (3050.0, 3121.5, 2907.0)
    assert FuturesSignalResponse.model_validate_json(res.response_text).leverage_hint == 3.0
    assert '"long" | "short" | "close" | "hold"' in res.prompt
    assert "futures" in res.prompt and '"buy"' not in res.prompt


def test_no_chart_sends_text_only_and_says_so(stub):
    stub.push_json_answer({**SPOT_BUY, "action": "hold", "entry": None, "stop": None, "take_profit": None})
    res = provider(stub).generate(request(chart=None))
    assert res.signal.action == "hold" and res.signal.no_trade_reason is None
    # no image: plain-string content (string-only chat templates refuse a list of parts)
    assert stub.chat_requests[0].body["messages"][0]["content"] == res.prompt
    assert res.dialect["content"] == "string" and res.dialect["chart"] == "none"
    assert "No chart is attached" in res.prompt and res.chart_sha256 is None


def test_sdk_retries_a_500_then_succeeds(stub):
    stub.push_error(500)
    stub.push_json_answer(SPOT_BUY)
    res = provider(stub).generate(request())
    assert res.signal.action == "buy" and res.signal.no_trade_reason is None
    assert len(stub.chat_requests) == 2
    assert stub.chat_requests[0].body == stub.chat_requests[1].body


# ---- error as data ----------------------------------------------------------------------------


def assert_no_trade(res, *fragments: str) -> str:
    sig = res.signal
    assert (sig.action, sig.confidence) == ("hold", 0.0)
    assert sig.provider == "openai" and sig.model == MODEL
    assert sig.no_trade_reason, "no_trade_reason must be set"
    for f in fragments:
        assert f in sig.no_trade_reason, (f, sig.no_trade_reason)
    assert sig.thesis.startswith("no trade: ")
    return sig.no_trade_reason


def test_spot_answer_with_futures_action_is_no_trade(stub):
    stub.push_json_answer({**SPOT_BUY, "action": "long"})
    res = provider(stub).generate(request())
    assert_no_trade(res, "action 'long' is not allowed in spot mode", "buy, sell, hold")
    assert json.loads(res.response_text)["action"] == "long"  # the raw answer is kept for the audit
    assert res.usage["total_tokens"] == 120


def test_futures_answer_with_spot_action_is_no_trade(stub):
    stub.push_json_answer({**SPOT_BUY, "action": "buy"})
    res = provider(stub, Mode.FUTURES).generate(request(Mode.FUTURES))
    assert_no_trade(res, "action 'buy' is not allowed in futures mode")


def test_invalid_json_is_no_trade(stub):
    stub.push_completion("I think you should buy, confidence high.")
    res = provider(stub).generate(request())
    assert_no_trade(res, "not valid JSON")
    assert res.response_text == "I think you should buy, confidence high."


def test_missing_field_is_no_trade(stub):
    stub.push_json_answer({k: v for k, v in SPOT_BUY.items() if k != "confidence"})
    assert_no_trade(provider(stub).generate(request()), "spot schema", "confidence: Field required")


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"leverage_hint": 5}, "leverage_hint: unknown field"),  # futures-only field in spot
        ({"confidence": 1.2}, "confidence"),
        ({"confidence": "0.7"}, "confidence"),  # strict: a string is not a number
        ({"stop": -5.0}, "stop"),
    ],
)
def test_schema_violations_are_no_trade(stub, patch, fragment):
    stub.push_json_answer({**SPOT_BUY, **patch})
    assert_no_trade(provider(stub).generate(request()), "spot schema", fragment)


def test_buy_with_stop_above_entry_is_no_trade(stub):
    stub.push_json_answer({**SPOT_BUY, "stop": 85000.0})
    assert_no_trade(provider(stub).generate(request()), "stop 85000 must be below entry 84210.5 for a buy")


def test_short_with_stop_below_entry_is_no_trade(stub):
    stub.push_json_answer({"action": "short", "confidence": 0.6, "entry": 3050.0, "stop": 3000.0, "thesis": "x",
                           "instrument": None})
    res = provider(stub, Mode.FUTURES).generate(request(Mode.FUTURES))
    assert_no_trade(res, "stop 3000 must be above entry 3050 for a short")


def test_buy_without_entry_checks_stop_against_close(stub):
    # close in the summary is 84210.5; a stop of 84500 is above it
    stub.push_json_answer({"action": "buy", "confidence": 0.6, "stop": 84500.0, "thesis": "x", "instrument": None})
    assert_no_trade(provider(stub).generate(request()), "stop 84500 must be below close 84210.5")


def test_refusal_and_empty_content_are_no_trade(stub):
    stub.push_completion(None, refusal="I can't help with trading decisions.")
    stub.push_completion("   ", finish_reason="length")
    p = provider(stub)
    assert_no_trade(p.generate(request()), "model refused", "can't help")
    assert_no_trade(p.generate(request()), "empty response content", "finish_reason=length")


def test_persistent_500_is_no_trade_after_sdk_retries(stub):
    for _ in range(3):
        stub.push_error(500, "upstream exploded")
    res = provider(stub).generate(request())
    assert_no_trade(res, "HTTP 500", "upstream exploded", "chat.completions (model gpt-4o-mini)")
    assert len(stub.chat_requests) == 3  # 1 attempt + max_retries=2, all by the SDK
    assert res.response_text is None and res.request_json is not None and res.prompt


def test_client_error_is_not_retried_and_is_no_trade(stub):
    stub.push_error(400, "bad request: image too large")
    res = provider(stub).generate(request())
    assert_no_trade(res, "HTTP 400", "image too large")
    assert len(stub.chat_requests) == 1


def test_unreachable_server_is_no_trade():
    with OpenAIStubServer() as s:
        dead_url = s.base_url  # the port is closed once the server stops
    p = OpenAISignalProvider(
        model=MODEL, base_url=dead_url, api_key=API_KEY, timeout_s=2.0, template_name="spot_review.j2", max_retries=0
    )
    res = p.generate(request())
    assert_no_trade(res, "connection error")


# ---- hashing and secrets ----------------------------------------------------------------------


def test_prompt_hash_stable_for_identical_inputs_and_sensitive_to_chart(stub):
    for _ in range(3):
        stub.push_json_answer(SPOT_BUY)
    p = provider(stub)
    a = p.generate(request())
    b = p.generate(request())
    c = p.generate(request(chart=CHART + b"\x00"))
    assert a.prompt == b.prompt and a.signal.prompt_hash == b.signal.prompt_hash
    assert c.signal.prompt_hash != a.signal.prompt_hash
    assert len(a.signal.prompt_hash) == 64
    # each component matters
    h = prompt_hash("p", "c", "m", "t")
    assert h == prompt_hash("p", "c", "m", "t")
    assert len({h, prompt_hash("p2", "c", "m", "t"), prompt_hash("p", None, "m", "t"),
                prompt_hash("p", "c", "m2", "t"), prompt_hash("p", "c", "m", "t2")}) == 5  # fmt: skip


def test_api_key_never_in_results_repr_or_logs(stub, caplog):
    stub.push_json_answer(SPOT_BUY)
    stub.push_error(401, f"Incorrect API key provided: {API_KEY}")  # a server echoing the key back
    caplog.set_level(logging.DEBUG)
    p = provider(stub)
    ok = p.generate(request())
    bad = p.generate(request())
    assert ok.signal.action == "buy"
    assert_no_trade(bad, "HTTP 401", "***")
    for res in (ok, bad):
        dumped = res.model_dump_json()
        assert API_KEY not in dumped
        assert API_KEY not in json.dumps(res.request_json)
    assert API_KEY not in repr(p)
    assert API_KEY not in caplog.text


# ---- build_provider / rules provider / prompts -----------------------------------------------


def test_build_provider_reads_named_env_vars_and_reaches_that_url(stub):
    cfg = OpenAIProviderConfig(model="llava-13b", base_url_env="MY_LLM_URL", api_key_env="MY_LLM_KEY", max_tokens=300)
    p = build_provider(cfg, "spot_review.j2", environ={"MY_LLM_URL": stub.base_url, "MY_LLM_KEY": API_KEY})
    assert isinstance(p, OpenAISignalProvider)
    stub.push_json_answer(SPOT_BUY, model="llava-13b")
    res = p.generate(request())
    assert res.signal.model == "llava-13b" and res.signal.action == "buy"
    assert stub.chat_requests[0].body["model"] == "llava-13b"
    assert stub.chat_requests[0].body["max_tokens"] == 300


def test_build_provider_missing_key_names_the_env_var():
    with pytest.raises(ProviderConfigError, match="OPENAI_API_KEY"):
        build_provider(OpenAIProviderConfig(), "spot_review.j2", environ={})
    with pytest.raises(ProviderConfigError, match="MY_KEY"):
        build_provider(OpenAIProviderConfig(api_key_env="MY_KEY"), "spot_review.j2", environ={"MY_KEY": "  "})


def test_build_provider_unknown_template_and_default_url():
    with pytest.raises(ProviderConfigError, match="nope.j2"):
        build_provider(RulesProviderConfig(), "nope.j2", environ={})
    p = build_provider(OpenAIProviderConfig(), "futures_review.j2", environ={"OPENAI_API_KEY": API_KEY})
    assert p.base_url == "https://api.openai.com/v1"


def test_rules_provider_uses_the_rule_and_the_same_template():
    p = build_provider(RulesProviderConfig(), "spot_review.j2", environ={})
    assert isinstance(p, RulesSignalProvider)
    res = p.generate(request())
    sig = res.signal
    assert (sig.provider, sig.model, sig.action) == ("rules", "rules-v1", "buy")
    assert sig.confidence == pytest.approx(0.5 + 7.3 / 60)
    assert sig.entry == 84210.5 and sig.stop is None and sig.no_trade_reason is None
    assert res.prompt == render_prompt("spot_review.j2", request())
    assert json.loads(res.response_text)["action"] == "buy"
    assert json.loads(res.response_text)["ema_slow"] == "ema_50"
    assert res.request_json is None and res.usage == {}
    assert sig.prompt_hash == prompt_hash(res.prompt, res.chart_sha256, "rules-v1", "spot_review.j2")


def test_rules_provider_futures_and_missing_emas():
    p = RulesSignalProvider("futures_review.j2")
    bear = summary(close=82000.0, ema_20=82500.0, ema_50=83100.0, macd_hist=-80.0, rsi=42.0, adx=30.0)
    res = p.generate(request(Mode.FUTURES, summary=bear))
    assert res.signal.action == "short" and res.signal.entry == 82000.0
    one_ema = {k: v for k, v in summary().items() if k != "ema_50"}
    res = p.generate(request(Mode.FUTURES, summary=one_ema))
    assert res.signal.action == "hold" and res.signal.confidence == 0.0
    assert "needs two EMAs" in res.signal.no_trade_reason and res.signal.provider == "rules"


def test_prompts_are_mode_specific_and_list_every_schema_field():
    spot_p = render_prompt("spot_review.j2", request())
    fut_p = render_prompt("futures_review.j2", request(Mode.FUTURES))
    assert '"buy" | "sell" | "hold"' in spot_p and '"long"' not in spot_p and '"short"' not in spot_p
    assert '"long" | "short" | "close" | "hold"' in fut_p and '"buy"' not in fut_p
    # every field, ``instrument`` included (optional: checked against the reviewed one when named)
    for field in SpotSignalResponse.model_fields:
        assert f'"{field}"' in spot_p
    for field in FuturesSignalResponse.model_fields:
        assert f'"{field}"' in fut_p
    assert '"instrument": string or null' in spot_p and '"instrument": string or null' in fut_p
    assert "leverage_hint" not in spot_p
    for p in (spot_p, fut_p):
        assert "2024-05-01T12:00:00Z" in p and "4h" in p
        assert "| close | 84210.5 |" in p and "| ema_50 | 83100.2 |" in p
        assert "| 2024-05-01T08:00:00Z | 84110 | 84220 | 84050 | 84140 | 531.25 |" in p  # the last bar
        assert "charts/btc_trend/BTC-USDT/2024-05-01T12.png" in p
        assert "stop is BELOW the entry" in p
    assert "stop is ABOVE the entry" in fut_p


def test_prompt_shows_warming_up_indicators():
    p = render_prompt("spot_review.j2", request(summary=summary(adx=float("nan"))))
    assert "| adx | n/a (warming up) |" in p


def test_signal_request_requires_aware_utc_window_end():
    with pytest.raises(ValueError, match="timezone-aware"):
        request(window_end=datetime(2024, 5, 1, 12, 0))
    cet = timezone(timedelta(hours=2))
    assert request(window_end=datetime(2024, 5, 1, 14, 0, tzinfo=cet)).window_end == WINDOW_END
