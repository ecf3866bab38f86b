"""The provider's defaults work against a one-slot server (issue 13: against llama.cpp's server,
one request at a time, the defaults — ``max_concurrent_calls: 4``, ``timeout_s: 60``, timeouts
not retried — timed out 8 calls of 10; with ``max_concurrent_calls: 1`` all 8 of 8 answered).

The provider finds the server's capacity itself: the slot count where the server reports it
(llama.cpp's server: ``GET /props`` → ``total_slots``), else by backing off (AIMD) on timeouts and
429s; a timed-out call is retried once at the lower concurrency, its timeout extended by the work
the server may still be doing for attempts the client gave up on.

The server is ``tests/openai_stub_server.py`` with ``slots=1``: it computes one request at a time
(each answer takes 0.3 s) and, like llama-cpp-python's server, finishes a request whose client
has gone. Real ``openai`` SDK over HTTP, the real analysis path (``analyze``: pool, ledger).
Time is scaled down: ``timeout_s`` 0.8 s against 0.3 s of compute a call, as 60 s against ~25 s.
"""

from __future__ import annotations

import pytest
from openai_stub_server import OpenAIStubServer
from test_llm_budget_concurrency import ENDS, INST, KEY, _answer  # noqa: F401

from trading_pipelines.analysis import analyze as analysis
from trading_pipelines.analysis import calls
from trading_pipelines.llm import capacity as cp

COMPUTE_S = 0.3
TIMEOUT_S = 0.8


@pytest.fixture()
def one_slot(tmp_path, monkeypatch, request):
    props = getattr(request, "param", None)
    stub = OpenAIStubServer(slots=1, props=props).start()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("TRADING_CHART_DIR", str(tmp_path / "charts"))
    monkeypatch.delenv("TRADING_VENUE_URL", raising=False)
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    for _ in range(20):  # more than enough: attempts the client gave up on consume answers too
        stub.push_slow_json_answer(_answer(0), COMPUTE_S)
    yield stub
    stub.stop()


def _runtime(**provider):
    import yaml

    from trading_pipelines.config import STRATEGIES_DIR, parse_strategy
    from trading_pipelines.resources.dagster_resources import default_resources

    attrs = yaml.safe_load((STRATEGIES_DIR / "spot_4h_majors" / "defs.yaml").read_text())["attributes"]
    attrs["name"] = "spot_4h_llm"
    attrs["template"]["signal_provider"] = {"kind": "openai", "model": "gpt-4o-mini", "timeout_s": TIMEOUT_S, **provider}
    return default_resources()["trading"].runtime(parse_strategy(attrs))


def test_defaults_against_a_one_slot_server_that_reports_nothing_answer_every_window(one_slot):
    rt = _runtime()  # the defaults: max_concurrent_calls 4, retry_timeouts off
    assert rt.spec.template.signal_provider.max_concurrent_calls == 4
    out = analysis.analyze(rt, INST, ENDS, "run-1")
    reasons = [a.signal.no_trade_reason for a in out]
    assert reasons == [None] * 6, reasons
    cap = cp.server_capacity(one_slot.base_url)
    assert cap.slots is None and cap.allowed() < 4  # backed off on its own


@pytest.mark.parametrize("one_slot", [{"total_slots": 1, "default_generation_settings": {"n_ctx": 4096}}], indirect=True)
def test_a_server_reporting_one_slot_gets_one_call_at_a_time(one_slot):
    rt = _runtime()
    assert calls._call_workers(rt) == 1  # total_slots 1 from GET /props
    out = analysis.analyze(rt, INST, ENDS, "run-1")
    assert [a.signal.no_trade_reason for a in out] == [None] * 6
    assert [a.http_calls for a in out] == [1] * 6 and len(one_slot.chat_requests) == 6  # no timeout, no retry
    assert one_slot.held_max == 1
    assert [r.path for r in one_slot.requests if r.method == "GET"] == ["/props"]  # probed once
    assert out[0].result.dialect["server_slots"] == 1


def test_aimd_worked_numbers(monkeypatch):
    t = [100.0]
    monkeypatch.setattr(cp, "_mono", lambda: t[0])
    cap = cp.ServerCapacity(ceiling=4, slots=None)
    sent = [cap.acquire() for _ in range(4)]  # 4 in flight: the limit
    assert cap.allowed() == 4 and cap.in_flight == 4
    t[0] = 101.0
    cap.release(sent[0], "ok", 0.8)  # +1/limit, at the ceiling already
    t[0] = 101.8
    cap.release(sent[1], "timeout", 0.8)  # 3 were in flight: halved to 2, capped at 3 - 1 = 2
    assert (cap.limit, cap.cap, cap.allowed()) == (2.0, 2, 2)
    assert cap.extra_timeout() == pytest.approx(0.8)  # the abandoned attempt may still be computed
    cap.release(sent[2], "timeout", 0.8)  # sent before that decrease: the same wave, no second halving
    assert cap.limit == 2.0 and cap.extra_timeout() == pytest.approx(1.6)
    retry = cap.acquire()
    cap.release(retry, "timeout", 0.8)  # sent after the decrease, 2 in flight: halved to 1, capped at 1
    assert (cap.limit, cap.cap, cap.allowed()) == (1.0, 1, 1)
    cap.release(sent[3], "ok", 0.8)
    for _ in range(3):
        cap.release(cap.acquire(), "ok", 0.8)
    assert cap.allowed() == 1  # the cap holds: this server took fewer than 2 at once
    t[0] += cp.REPROBE_AFTER_S + 1
    assert cap.allowed() == 1 and cap.cap == 4  # the cap is re-probed after REPROBE_AFTER_S ...
    cap.release(cap.acquire(), "ok", 0.8)
    assert cap.allowed() == 2  # ... and the limit grows by one per limit's worth of answers


def test_429s_back_the_concurrency_off():
    from test_llm_dialects import provider
    from test_signals_openai import SPOT_BUY, request

    with OpenAIStubServer() as stub:
        stub.push_rate_limit(0.05)
        stub.push_json_answer(SPOT_BUY)
        p = provider(stub, max_concurrent_calls=8)
        assert p.concurrency() == 8
        res = p.generate(request())
        assert res.signal.action == "buy" and len(stub.chat_requests) == 2  # the SDK retried the 429
        assert p.concurrency() == 4  # halved by the 429 the SDK retried
        assert res.dialect["server_slots"] is None and res.dialect["concurrency"] == 8
