"""Append-only, replayable provider calls and the response cache (issue 7, item 4), against the
real ``openai`` SDK talking to ``tests/openai_stub_server.py``.

- every provider call is its own ``provider_calls`` row, never updated; the signal row points at
  the call it came from (``signals.call_id``);
- a re-run of analysed windows is served from the response cache: zero HTTP calls, cache hits
  counted, identical signals;
- a window whose live intent has left PENDING makes no call at all on a re-run, and its signal
  still points at the original call (a crash + re-run keeps the call behind its trade);
- the migration upgrades and downgrades (SQLite; Postgres with the real server).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, func, inspect, select

from openai_stub_server import OpenAIStubServer
from trading_pipelines.analysis import analyze as analysis
from trading_pipelines.account import window
from trading_pipelines.config import STRATEGIES_DIR, parse_strategy
from trading_pipelines.domain.ids import intent_id
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.db import MIGRATIONS_DIR, get_engine, session_scope
from trading_pipelines.llm.calls import estimated_cost_usd
from trading_pipelines.llm.prompts import template_sha256
from trading_pipelines.resources.dagster_resources import default_resources

UTC = timezone.utc
KEY = "sk-test-not-a-real-key-0000"
INST = "ETH/USDT"
# five 4h windows of 2026-02-27 (ends 04:00 … 20:00)
ENDS = [datetime(2026, 2, 27, 4, tzinfo=UTC) + timedelta(hours=4 * i) for i in range(5)]
HOLD = {"action": "hold", "confidence": 0.5, "thesis": "no edge here", "instrument": INST}
BUY = {"action": "buy", "confidence": 0.8, "thesis": "trend up, MACD positive", "instrument": INST}


@pytest.fixture()
def llm(tmp_path, monkeypatch):
    stub = OpenAIStubServer().start()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(tmp_path / "charts"))
    monkeypatch.delenv("TRADING_VENUE_URL", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)

    def runtime(**provider):
        attrs = yaml.safe_load((STRATEGIES_DIR / "spot_4h_majors" / "defs.yaml").read_text())["attributes"]
        attrs["name"] = "spot_4h_llm"
        attrs["template"]["signal_provider"] = {"kind": "openai", "model": "gpt-4o-mini", **provider}
        spec = parse_strategy(attrs)
        return default_resources()["trading"].runtime(spec)

    yield stub, runtime, get_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    stub.stop()


def _calls(engine) -> list[dict]:
    with session_scope(engine) as s:
        return [{c.key: getattr(r, c.key) for c in m.ProviderCallRow.__table__.columns} for r in repo.provider_calls(s)]


def _signals(engine) -> dict[datetime, m.SignalRow]:
    with session_scope(engine) as s:
        return {r.window_end: r for r in s.execute(select(m.SignalRow)).scalars()}


def _decision(r: m.SignalRow) -> tuple:
    return (r.action, r.confidence, r.entry, r.stop, r.take_profit, r.thesis, r.provider, r.model, r.prompt_hash,
            r.no_trade_reason, r.response_text)


def test_a_rerun_is_served_from_the_cache_and_rows_are_append_only(llm):
    stub, runtime, engine = llm
    for i in range(5):
        stub.push_json_answer(BUY if i == 0 else HOLD, prompt_tokens=900, completion_tokens=40)
    rt = runtime()
    first = analysis.analyze(rt, INST, ENDS, "run-1")
    assert len(stub.chat_requests) == 5
    assert [a.http_calls for a in first] == [1] * 5 and not any(a.cache_hit for a in first)
    calls = _calls(engine)
    assert len(calls) == 5 and not any(c["cache_hit"] for c in calls)
    signals = _signals(engine)
    assert sorted(signals) == ENDS
    assert {signals[c["window_end"]].call_id for c in calls} == {c["id"] for c in calls}
    c0 = calls[0]
    assert (c0["provider"], c0["model"], c0["mode"], c0["strategy"], c0["instrument"]) == \
        ("openai", "gpt-4o-mini", "spot", "spot_4h_llm", INST)
    assert (c0["agent"], c0["template"]) == ("spot_analyst", rt.spec.prompt_template)
    assert c0["template_sha256"] == template_sha256(rt.spec.prompt_template)
    assert c0["system_text"].startswith("You are spot_analyst")
    assert len(c0["template_sha256"]) == 64
    assert c0["base_url_host"] == stub.base_url.split("//")[1].split("/")[0]  # host:port only
    assert (c0["prompt_tokens"], c0["completion_tokens"], c0["total_tokens"]) == (900, 40, 940)
    assert c0["estimated_cost_usd"] == pytest.approx((900 * 0.15 + 40 * 0.60) / 1e6)
    assert c0["latency_ms"] > 0 and c0["http_calls"] == 1 and c0["error"] is None
    assert c0["parameters"]["max_tokens"] and c0["parameters"]["response_format"] == "json_schema"
    assert c0["parameters"]["dialect"]["step_downs"] == []
    assert c0["chart_key"] and c0["chart_sha256"] and "<chart sha256=" in str(c0["request_json"])
    assert c0["parsed_signal"]["action"] == "buy" and '"buy"' in c0["response_text"]
    assert c0["prompt"] == signals[ENDS[0]].prompt and len(c0["cache_key"]) == 64
    assert all(KEY not in str(c) for c in calls)

    # a re-run (a new process: a new runtime) of the same windows: zero HTTP calls, five cache hits
    second = analysis.analyze(runtime(), INST, ENDS, "run-2")
    assert len(stub.chat_requests) == 5
    assert [a.http_calls for a in second] == [0] * 5 and all(a.cache_hit for a in second)
    assert sum(a.cache_hit for a in second) == 5
    assert [a.signal for a in second] == [a.signal for a in first]
    after = _calls(engine)
    assert after[:5] == calls  # never updated
    hits = after[5:]
    assert len(hits) == 5 and all(h["cache_hit"] and h["http_calls"] == 0 for h in hits)
    assert [h["cached_from"] for h in hits] == [c["id"] for c in calls]
    assert [h["response_text"] for h in hits] == [c["response_text"] for c in calls]
    assert [h["cache_key"] for h in hits] == [c["cache_key"] for c in calls]
    assert all(h["estimated_cost_usd"] == 0.0 and h["run_id"] == "run-2" for h in hits)
    resigned = _signals(engine)
    assert {e: _decision(r) for e, r in resigned.items()} == {e: _decision(r) for e, r in signals.items()}
    assert {e: r.call_id for e, r in resigned.items()} == {h["window_end"]: h["id"] for h in hits}

    # another parameter is another cache key: new HTTP calls, the old rows still unchanged
    for _ in range(5):
        stub.push_json_answer(HOLD)
    third = analysis.analyze(runtime(temperature=0.3), INST, ENDS, "run-3")
    assert len(stub.chat_requests) == 10 and sum(a.http_calls for a in third) == 5
    assert not any(a.cache_hit for a in third)
    final = _calls(engine)
    assert final[:10] == after and len(final) == 15


def test_a_window_whose_intent_left_pending_makes_no_call_on_a_rerun(llm):
    stub, runtime, engine = llm
    for i in range(5):
        stub.push_json_answer(BUY if i < 2 else HOLD)
    rt = runtime()
    first = analysis.analyze(rt, INST, ENDS, "run-1")
    assert len(stub.chat_requests) == 5
    original = _signals(engine)[ENDS[0]]
    assert original.action == "buy" and original.call_id is not None

    # the first window is planned, validated and sent on the live book (then, say, the run crashes);
    # the second is only planned (PENDING: a crash before validation)
    out = window.account_window(rt, ENDS[0], {INST: first[0].signal}, {INST: first[0].market},
                                  f"{INST}|{ENDS[0].isoformat()}", "run-1")
    traded = out.intents[INST]
    assert traded.intent_id == intent_id(rt.spec.name, INST, ENDS[0]) and traded.status.value != "PENDING"
    assert out.orders[INST]  # a trade stands behind the first window's signal
    lin1 = rt.lineage(INST, f"{INST}|{ENDS[1].isoformat()}", "run-1")
    pending = window.plan(rt, lin1, first[1].signal, first[1].frame)
    assert pending.status.value == "PENDING"
    before = _calls(engine)

    # the re-run with other parameters (no cache hit possible): no call at all for the traded window
    for _ in range(4):
        stub.push_json_answer(HOLD)
    rerun = analysis.analyze(runtime(temperature=0.3), INST, ENDS, "run-2")
    assert len(stub.chat_requests) == 5 + 4
    kept = rerun[0]
    assert kept.signal_kept and kept.http_calls == 0 and not kept.cache_hit and kept.call_id == original.call_id
    assert kept.signal.action == "buy" and kept.signal.prompt_hash == original.prompt_hash
    assert [a.http_calls for a in rerun[1:]] == [1] * 4  # the PENDING window was asked again
    after = _calls(engine)
    assert after[:5] == before  # nothing updated
    assert len(after) == 9 and ENDS[0] not in {c["window_end"] for c in after[5:]}
    stored = _signals(engine)
    assert stored[ENDS[0]].call_id == original.call_id and _decision(stored[ENDS[0]]) == _decision(original)
    assert stored[ENDS[1]].call_id == after[5]["id"]
    with session_scope(engine) as s:
        call = s.get(m.ProviderCallRow, stored[ENDS[0]].call_id)
        assert call.parsed_signal["action"] == "buy" and call.run_id == "run-1"  # the call behind the trade
        skips = s.execute(select(m.AuditRow).where(m.AuditRow.event == "signal_kept")).scalars().all()
        assert len(skips) == 1 and skips[0].detail["intent_id"] == traded.intent_id
        assert skips[0].detail["call_id"] == original.call_id

    # and once more: still no call for it, cache hits for the others
    again = analysis.analyze(runtime(temperature=0.3), INST, ENDS, "run-3")
    assert len(stub.chat_requests) == 9
    assert again[0].signal_kept and [a.cache_hit for a in again[1:]] == [True] * 4
    assert _calls(engine)[:9] == after


def test_errors_are_recorded_but_never_served_from_the_cache_and_nothing_stored_holds_the_key(llm):
    stub, runtime, engine = llm
    stub.push_error(400, "stub: bad request")  # not retried: a no-trade without an answer
    stub.push_completion('{"action": "hold", "confidence": 0.4, "thesis": "echo ' + KEY + ' and a NUL \x00 here", "instrument": null}')
    rt = runtime()
    [a] = analysis.analyze(rt, INST, ENDS[:1], "run-1")
    assert a.signal.no_trade_reason and "HTTP 400" in a.signal.no_trade_reason and a.http_calls == 1
    [b] = analysis.analyze(runtime(), INST, ENDS[:1], "run-2")  # the error is not a cache entry: asked again
    assert not b.cache_hit and b.http_calls == 1 and b.signal.action == "hold"
    calls = _calls(engine)
    assert len(calls) == 2 and calls[0]["error"] and calls[1]["error"] is None
    for c in calls:
        text = repr(c)
        assert KEY not in text and "\x00" not in text
    assert "***" in calls[1]["response_text"]
    [c] = analysis.analyze(runtime(), INST, ENDS[:1], "run-3")
    assert c.cache_hit and len(stub.chat_requests) == 2


def test_rules_calls_are_recorded_without_cost(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(tmp_path / "charts"))
    attrs = yaml.safe_load((STRATEGIES_DIR / "spot_4h_majors" / "defs.yaml").read_text())["attributes"]
    rt = default_resources()["trading"].runtime(parse_strategy(attrs))
    out = analysis.analyze(rt, INST, ENDS, "run-1", charts=False)
    calls = _calls(rt.engine)
    assert len(calls) == 5 and {c["provider"] for c in calls} == {"rules"}
    assert all(c["estimated_cost_usd"] is None and c["http_calls"] == 0 and not c["cache_hit"] for c in calls)
    assert all(c["base_url_host"] is None and c["cache_key"] for c in calls)
    assert [a.call_id for a in out] == [c["id"] for c in calls]


def test_estimated_cost_table():
    assert estimated_cost_usd("gpt-4o-mini", {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000}) == pytest.approx(0.75)
    assert estimated_cost_usd("gpt-4o", {"prompt_tokens": 1_000_000, "completion_tokens": 0}) == pytest.approx(2.50)
    assert estimated_cost_usd("gpt-4o-2024-08-06", {"completion_tokens": 1_000_000}) == pytest.approx(10.0)
    assert estimated_cost_usd("llama-3", {"prompt_tokens": 10}) is None
    assert estimated_cost_usd("gpt-4o", {}) is None


# ---------------------------------------------------------------- the migration


def _alembic(url: str) -> tuple[Config, object]:
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg, engine


def _run(cfg, engine, fn, rev):
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        fn(cfg, rev)


def _check_migration(url: str) -> None:
    cfg, engine = _alembic(url)
    _run(cfg, engine, command.upgrade, "0004")
    assert "provider_calls" not in inspect(engine).get_table_names()
    with engine.begin() as conn:  # a signal recorded before the migration survives it
        conn.execute(_legacy_signal_insert())
    _run(cfg, engine, command.upgrade, "0005")
    insp = inspect(engine)
    assert "provider_calls" in insp.get_table_names()
    assert "call_id" in {c["name"] for c in insp.get_columns("signals")}
    assert any(fk["referred_table"] == "provider_calls" for fk in insp.get_foreign_keys("signals"))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(m.SignalRow.__table__)).scalar_one() == 1
    _run(cfg, engine, command.downgrade, "0004")
    insp = inspect(engine)
    assert "provider_calls" not in insp.get_table_names()
    assert "call_id" not in {c["name"] for c in insp.get_columns("signals")}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(m.SignalRow.__table__)).scalar_one() == 1
    _run(cfg, engine, command.upgrade, "head")
    assert "provider_calls" in inspect(engine).get_table_names()
    engine.dispose()


def _legacy_signal_insert():
    """A ``signals`` row as revision 0004 knows it (no ``call_id``)."""
    from sqlalchemy import text

    return text("INSERT INTO signals (strategy, instrument, partition_key, run_id, mode, window_end, action, confidence, "
                "thesis, provider, model, prompt_hash, prompt, created_at) VALUES ('s', 'i', 'p', 'r', 'spot', "
                "'2026-02-27 04:00:00+00:00', 'hold', 0.5, 't', 'rules', 'rules-v1', :h, 'p', '2026-02-27 04:00:00+00:00')"
                ).bindparams(h="0" * 64)


def test_migration_upgrades_and_downgrades_on_sqlite(tmp_path):
    _check_migration(f"sqlite:///{tmp_path / 'mig.sqlite'}")


@pytest.mark.postgres
def test_migration_upgrades_and_downgrades_on_postgres(postgres_server):
    _check_migration(postgres_server.create_database(f"mig_{uuid.uuid4().hex[:10]}"))
