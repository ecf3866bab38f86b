"""Structured output survives a transient server error (issue 13, "One transient 500 turned
structured output off for the rest of the run").

Measured before: a 500 saying "failed to parse grammar / json_schema" stepped ``response_format``
down three levels (up to 15 HTTP attempts for one call), and afterwards 328 of 600 spot calls went
out with no ``response_format``. Now:

- a 5xx is retried (the SDK's ``max_retries``) and never steps a setting down: after the retries
  the window is a recorded no-trade, and the next call asks for ``json_schema`` again;
- only a refusal that names the setting (a 400/415/422 whose message names ``response_format``,
  ``json_schema`` …) steps down; it is remembered per (base URL, model) for the process (one Dagster
  run or CLI command), with its record (status, message, when), by every provider of that server
  and model; the record goes with each call into ``provider_calls.parameters.dialect``;
- a remembered step-down is re-probed: a later run (a new process), or the same process after
  :data:`~trading_pipelines.llm.dialects.REPROBE_AFTER_S`, starts again from the configured level.

Real ``openai`` SDK against ``tests/openai_stub_server.py`` over HTTP.
"""

from __future__ import annotations

from openai_stub_server import OpenAIStubServer
from test_llm_dialects import provider
from test_signals_openai import SPOT_BUY, request

from trading_pipelines.llm import dialects

GRAMMAR_500 = "failed to parse grammar: json_schema conversion error (transient)"


def _rf(req) -> str | None:
    rf = req.body.get("response_format")
    return None if rf is None else (rf["type"] if rf["type"] != "json_object" or "schema" not in rf else "llamacpp_schema")


def test_a_transient_500_naming_the_schema_is_retried_and_never_steps_down():
    with OpenAIStubServer() as stub:
        for _ in range(3):  # the first attempt and the SDK's 2 retries
            stub.push_error(500, GRAMMAR_500)
        stub.push_json_answer(SPOT_BUY)
        p = provider(stub, max_retries=2)
        res = p.generate(request(chart=None))
        assert len(stub.chat_requests) == 3  # 1 + 2 retries, no step-down requests
        assert [_rf(r) for r in stub.chat_requests] == ["json_schema"] * 3
        assert res.signal.no_trade_reason.startswith("HTTP 500 from chat.completions (model gpt-4o-mini) after up to 2 "
                                                     "retries: Error code: 500 - " + GRAMMAR_500)
        assert res.dialect["step_downs"] == [] and p.dialect["response_format"] == "json_schema"
        again = p.generate(request(chart=None))  # the next call: structured output as configured
        assert again.signal.no_trade_reason is None and again.signal.action == "buy"
        assert _rf(stub.chat_requests[-1]) == "json_schema" and again.dialect["learned_step_downs"] == []


def test_a_single_transient_500_is_retried_by_the_sdk():
    with OpenAIStubServer() as stub:
        stub.push_error(500, GRAMMAR_500)
        stub.push_json_answer(SPOT_BUY)
        res = provider(stub, max_retries=2).generate(request(chart=None))
        assert res.signal.action == "buy" and res.dialect["step_downs"] == []
        assert [_rf(r) for r in stub.chat_requests] == ["json_schema", "json_schema"]


def test_a_4xx_naming_the_parameter_steps_down_once_and_is_remembered_per_server_and_model():
    with OpenAIStubServer() as stub:
        stub.push_error(400, "response_format json_schema is not supported by this server")
        stub.push_json_answer(SPOT_BUY)
        first = provider(stub).generate(request(chart=None))
        assert first.signal.action == "buy"
        (step,) = first.dialect["step_downs"]
        assert (step["setting"], step["from"], step["to"], step["status"]) == ("response_format", "json_schema",
                                                                               "llamacpp_schema", 400)
        assert "json_schema is not supported" in step["message"] and step["learned_at"]
        # another provider of the same server and model (another strategy, another step of the run)
        stub.push_json_answer(SPOT_BUY)
        second = provider(stub)
        assert second.dialect["response_format"] == "llamacpp_schema"
        res = second.generate(request(chart=None))
        assert _rf(stub.chat_requests[-1]) == "llamacpp_schema" and len(stub.chat_requests) == 3
        (learned,) = res.dialect["learned_step_downs"]
        assert learned["status"] == 400 and learned["model"] == "gpt-4o-mini" and learned["base_url_host"].startswith("127.0.0.1:")
        # another model on the same server has learned nothing
        stub.push_json_answer(SPOT_BUY)
        other = provider(stub, model="other-model").generate(request(chart=None))
        assert _rf(stub.chat_requests[-1]) == "json_schema" and other.dialect["learned_step_downs"] == []


def test_a_remembered_step_down_is_re_probed_later(monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(dialects, "_now", lambda: now[0])
    with OpenAIStubServer() as stub:
        stub.push_error(400, "response_format json_schema is not supported by this server")
        stub.push_json_answer(SPOT_BUY)
        p = provider(stub)
        p.generate(request(chart=None))
        now[0] += dialects.REPROBE_AFTER_S - 1
        stub.push_json_answer(SPOT_BUY)
        p.generate(request(chart=None))
        assert _rf(stub.chat_requests[-1]) == "llamacpp_schema"  # still remembered
        now[0] += 2
        stub.push_json_answer(SPOT_BUY)  # the server takes json_schema now
        res = p.generate(request(chart=None))
        assert _rf(stub.chat_requests[-1]) == "json_schema" and res.dialect["learned_step_downs"] == []
        assert res.signal.action == "buy" and p.dialect["response_format"] == "json_schema"
