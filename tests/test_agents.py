"""The two analysts, separate end to end (issue 7 item 1): spot_analyst and futures_analyst.

Real pipeline: ``analysis.analyze`` on the shipped strategies' real candles, the real ``openai``
SDK against tests/openai_stub_server.py over HTTP, the real paper venue holding a real position
opened through the venue protocol, the SQLite ledger. The paper venue simulates no funding, so
the futures test gives it the funding terms a real venue reports (ccxt's ``fetch_funding_rate``:
a rate per 8 h interval and the next funding time) by replacing its ``futures_terms`` — the one
stand-in here, named where it is made.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import yaml
from openai_stub_server import OpenAIStubServer
from sqlalchemy import select

from trading_pipelines.analysis import analyze as analysis
from trading_pipelines.venues import factory
from trading_pipelines.runtime import Runtime
from trading_pipelines.account import window
from trading_pipelines.assets.partitions import window_end, window_partitions
from trading_pipelines.config import STRATEGIES_DIR, parse_strategy
from trading_pipelines.domain.models import Mode, OrderRequest, OrderRole, OrderType, Side
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.llm.agents import FUTURES_ANALYST, SPOT_ANALYST, agent_for
from trading_pipelines.llm.parsing import InvalidSignalResponse
from trading_pipelines.llm.prompts import template_sha256
from trading_pipelines.resources.dagster_resources import default_resources
from trading_pipelines.venues.protocol import FuturesTerms

KEY = "sk-agents-test-key-000000000000"
HOLD = {"action": "hold", "confidence": 0.5, "thesis": "no edge", "instrument": None}


@pytest.fixture()
def env(embedded_home, monkeypatch):
    tmp_path = embedded_home
    stub = OpenAIStubServer().start()
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)

    def runtime(shipped: str, book: str = "live"):
        attrs = yaml.safe_load((STRATEGIES_DIR / shipped / "defs.yaml").read_text())["attributes"]
        attrs["name"] = f"{shipped}_llm"
        attrs["template"]["signal_provider"] = {"kind": "openai", "model": "gpt-4o-mini", "send_chart": False}
        spec = parse_strategy(attrs)
        rt = default_resources()["trading"].runtime(spec)
        if book != "live":
            rt = Runtime(spec=spec, engine=rt.engine, market=rt.market, charts=rt.charts, provider=rt.provider,
                                  venue=factory.make_paper_venue(spec, rt.market, get_engine(f"sqlite:///{tmp_path / 'v.sqlite'}"), book),
                                  book=book)
        return rt

    yield stub, runtime, get_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    stub.stop()


def _ends(rt) -> list[datetime]:
    return [window_end(rt.spec, k) for k in window_partitions(rt.spec).get_partition_keys()]


def _messages(stub) -> list[dict]:
    return stub.chat_requests[-1].body["messages"]


def _open_position(rt, instrument: str, qty: float, at: datetime, leverage: float = 1.0) -> None:
    """A market buy through the venue protocol, filled by advancing the venue one bar."""
    req = OrderRequest(client_order_id=f"manual-{instrument}", instrument=instrument, side=Side.BUY, type=OrderType.MARKET,
                       quantity=qty, role=OrderRole.ENTRY)
    rt.venue.create_order(req, placed_at=at, position_side="long", leverage=leverage)
    rt.venue.advance([instrument], at + rt.spec.bar_duration)


def test_the_mode_picks_the_agent_and_each_validates_its_own_schema():
    assert agent_for("spot") is SPOT_ANALYST and agent_for(Mode.FUTURES) is FUTURES_ANALYST
    assert SPOT_ANALYST.template == "spot_review.j2" and FUTURES_ANALYST.template == "futures_review.j2"
    assert SPOT_ANALYST.system != FUTURES_ANALYST.system and "long-only" in SPOT_ANALYST.system
    assert "funding" in FUTURES_ANALYST.system and "liquidation" in FUTURES_ANALYST.system
    # the futures agent's actions are not the spot agent's, and the other way round
    with pytest.raises(InvalidSignalResponse, match="not allowed in futures mode"):
        FUTURES_ANALYST.parse('{"action": "buy", "confidence": 0.9, "thesis": "x"}')
    with pytest.raises(InvalidSignalResponse, match="not allowed in spot mode"):
        SPOT_ANALYST.parse('{"action": "short", "confidence": 0.9, "thesis": "x"}')
    assert FUTURES_ANALYST.parse('{"action": "short", "confidence": 0.9, "thesis": "x", "instrument": null}').action == "short"
    assert FUTURES_ANALYST.version() == template_sha256("futures_review.j2") and len(FUTURES_ANALYST.version()) == 64
    with pytest.raises(ValueError, match="no analyst for mode 'options'"):
        agent_for("options")


def test_the_futures_prompt_carries_wallet_positions_funding_and_leverage_from_the_venue(env):
    stub, runtime, engine = env
    rt = runtime("futures_1h_btc_eth")
    ends = _ends(rt)
    t0, t = ends[-4], ends[-1]
    _open_position(rt, "BTC/USDT:USDT", 0.05, t0, leverage=3.0)
    pos = rt.venue.fetch_positions()[0]
    bal = rt.venue.fetch_balance()
    # worked: isolated long, 3x, mmr 0.4 % → liquidation at entry × (1 − 1/3 + 0.004)
    assert pos.liquidation_price == pytest.approx(pos.entry_price * (1 - 1 / 3 + 0.004)) and pos.margin_mode == "isolated"
    fill = rt.venue.fetch_my_trades()[0].price
    # worked: 0.05 BTC at the fill, 3x isolated: margin = 0.05 × fill / 3; fee 0.05 % of notional
    assert pos.margin == pytest.approx(0.05 * fill / 3)
    assert bal.cash == pytest.approx(10_000 - 0.05 * fill / 3 - 0.05 * fill * 0.0005)
    nft = datetime(2026, 4, 16, 0, 0, tzinfo=timezone.utc)
    # the stand-in (see the module doc): the terms a real venue reports for this perpetual
    rt.venue.futures_terms = lambda inst: FuturesTerms(inst, None, 0.000125, nft, 125.0, "isolated")
    stub.push_json_answer(HOLD, prompt_tokens=900)
    out = analysis.analyze(rt, "ETH/USDT:USDT", [t], "run-futures")
    assert not out[0].signal.no_trade_reason, out[0].signal.no_trade_reason
    system, user = _messages(stub)
    assert system == {"role": "system", "content": FUTURES_ANALYST.system}
    prompt = user["content"]
    assert isinstance(prompt, str)  # no chart: plain-string content
    from trading_pipelines.llm.prompts import _num  # the prompt's own number format

    assert f"Wallet balance: {_num(bal.cash)}; available (not reserved): {_num(bal.free)}; equity" in prompt
    row = (f"| BTC/USDT:USDT | long | 0.05 | {_num(pos.entry_price)} | {_num(pos.mark_price)} | "
           f"{_num(pos.unrealized_pnl)} | {_num(pos.liquidation_price)} | 3x | isolated |")
    assert row in prompt, prompt
    assert "Funding rate (ETH/USDT:USDT): 0.0125% per funding interval, next funding 2026-04-16T00:00:00+00:00" in prompt
    assert "the strategy uses 3x (its limit 5x); the venue allows up to 125x. Margin mode: isolated." in prompt
    with session_scope(engine) as s:
        call = s.execute(select(m.ProviderCallRow)).scalars().one()
        assert (call.mode, call.agent, call.template) == ("futures", "futures_analyst", "futures_review.j2")
        assert call.template_sha256 == template_sha256("futures_review.j2")
        assert call.system_text == FUTURES_ANALYST.system and call.prompt == prompt


def test_the_spot_prompt_carries_balances_last_price_and_open_orders(env):
    stub, runtime, engine = env
    rt = runtime("spot_4h_majors")
    ends = _ends(rt)
    t0, t = ends[-4], ends[-1]
    _open_position(rt, "ETH/USDT", 0.5, t0)
    # a resting stop-loss on the holding (reduce-only), as a bracket leaves it
    rt.venue.create_order(OrderRequest(client_order_id="manual-stop", instrument="ETH/USDT", side=Side.SELL, type=OrderType.STOP,
                                       quantity=0.5, trigger_price=1500.0, role=OrderRole.STOP_LOSS, reduce_only=True),
                          placed_at=ends[-3], position_side="long")
    bal, pos = rt.venue.fetch_balance(), rt.venue.fetch_positions()[0]
    stub.push_json_answer(HOLD, prompt_tokens=900)
    out = analysis.analyze(rt, "ETH/USDT", [t], "run-spot")
    assert not out[0].signal.no_trade_reason, out[0].signal.no_trade_reason
    system, user = _messages(stub)
    assert system["content"] == SPOT_ANALYST.system
    prompt = user["content"]
    from trading_pipelines.llm.prompts import _num

    close = float(out[0].frame["close"].iloc[-1])
    assert f"Last price (close of the last closed bar): {_num(close)}" in prompt
    assert f"Cash: {_num(bal.cash)}; free (not reserved by resting orders): {_num(bal.free)}; equity: {_num(bal.equity)}" in prompt
    assert f"Holding 0.5 ETH/USDT bought at {_num(pos.entry_price)}" in prompt
    assert "| stop_loss | sell | stop | 0.5 | n/a | 1500 |" in prompt
    assert "Funding" not in prompt and "Wallet" not in prompt  # spot shows no futures terms
    with session_scope(engine) as s:
        call = s.execute(select(m.ProviderCallRow)).scalars().one()
        assert (call.mode, call.agent, call.template) == ("spot", "spot_analyst", "spot_review.j2")


def test_a_replay_prompt_says_the_book_is_not_known_at_analysis_time(env):
    stub, runtime, _ = env
    rt = runtime("futures_1h_btc_eth", book="replay-test")
    stub.push_json_answer(HOLD, prompt_tokens=900)
    analysis.analyze(rt, "BTC/USDT:USDT", [_ends(rt)[-1]], "run-replay")
    prompt = _messages(stub)[1]["content"]
    assert "This is a replay: the book's wallet and positions at this window are not known to you." in prompt
    assert "Wallet balance" not in prompt
    assert "the strategy uses 3x (its limit 5x). Margin mode: isolated." in prompt  # config-known terms stay


def test_an_unreadable_venue_is_a_recorded_no_trade_and_no_call(env):
    stub, runtime, engine = env
    rt = runtime("spot_4h_majors")

    def down():
        raise ConnectionError("venue at 127.0.0.1:1 refused the connection")

    rt.venue.fetch_balance = down  # the venue cannot be read: the analyst would see no account
    out = analysis.analyze(rt, "BTC/USDT", [_ends(rt)[-1]], "run-down")
    assert out[0].signal.no_trade_reason.startswith("venue unreadable for the analyst's account view: ConnectionError")
    assert stub.chat_requests == []


DIALECTS = ("openai", "openai-reasoning", "lmstudio", "vllm", "llamacpp", "ollama")
ANSWERS = {"spot_4h_majors": {"action": "hold", "confidence": 0.6, "thesis": "EMA20 under EMA50, no entry",
                               "instrument": None},
           "futures_1h_btc_eth": {"action": "hold", "confidence": 0.6, "thesis": "funding flat, range-bound",
                                  "instrument": None}}


@pytest.mark.parametrize("shipped", ["spot_4h_majors", "futures_1h_btc_eth"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_each_mode_runs_end_to_end_against_each_server_dialect(dialect, shipped, embedded_home, monkeypatch):
    """Analysis → plan → validate → snapshot of the live book, through each stub dialect (the way
    OpenAI, its reasoning models, LM Studio, vLLM, llama.cpp's server and Ollama refuse requests):
    every window ends with a valid signal, the step-downs it took recorded with its call — never an
    unexplained no-trade."""
    tmp_path = embedded_home
    with OpenAIStubServer(dialect=dialect) as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        attrs = yaml.safe_load((STRATEGIES_DIR / shipped / "defs.yaml").read_text())["attributes"]
        attrs["name"] = f"{shipped}_llm"
        attrs["template"]["signal_provider"] = {"kind": "openai", "model": "gpt-4o-mini"}  # defaults: chart, json_schema
        spec = parse_strategy(attrs)
        rt = default_resources()["trading"].runtime(spec)
        end = _ends(rt)[-1]
        for _ in range(8):  # one answer per HTTP call, step-downs included
            stub.push_json_answer(ANSWERS[shipped], prompt_tokens=900)
        out = analysis.analyze_many(rt, list(spec.instruments), [end], "run-dialect")
        for inst, (a,) in out.items():
            assert a.signal.no_trade_reason is None, (inst, a.signal.no_trade_reason)
            assert a.signal.action == "hold" and a.signal.thesis == ANSWERS[shipped]["thesis"]
        outcome = window.account_window(rt, end, {i: a.signal for i, (a,) in out.items()},
                                          {i: a.market for i, (a,) in out.items()}, "pk", "run-dialect")
        assert {i.reason for i in outcome.intents.values()} == {f"hold: {ANSWERS[shipped]['thesis']}"}
        with session_scope(get_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")) as s:
            calls = s.execute(select(m.ProviderCallRow).order_by(m.ProviderCallRow.id)).scalars().all()
        assert len(calls) == len(spec.instruments)
        assert {(c.mode, c.agent) for c in calls} == {(spec.mode.value, f"{spec.mode.value}_analyst")}
        expected = {"openai": set(), "openai-reasoning": {"token_param", "temperature"}, "lmstudio": set(),
                    "vllm": {"chart"}, "llamacpp": {"chart", "response_format"}, "ollama": {"chart"}}[dialect]
        for c in calls:
            d = c.parameters["dialect"]
            own = {st["setting"] for st in d["step_downs"]}
            learned = {st["setting"] for st in d["learned_step_downs"]}
            # instruments run side by side: a call steps down itself or starts from what an
            # earlier call of the provider learned — together exactly the dialect's refusals
            assert own | learned == expected and own <= expected, (c.instrument, own, learned)
            assert all(st["status"] in (400, 500) and st["message"] for st in d["step_downs"])
        assert any(c.parameters["dialect"]["step_downs"] for c in calls) == bool(expected)


def test_the_futures_prompt_reads_a_real_venue_binance_usdm_through_ccxt(env):
    """The account view from ``CcxtVenue`` on ``binanceusdm``: ccxt for real, Binance's HTTP transport
    answered by ``FakeBinance`` (test_venue_ccxt: recorded positionRisk and futures account, the
    premiumIndex and leverageBracket shapes of Binance's docs). Worked values from those answers:
    wallet 31.022612 USDT, a BTC/USDT:USDT position at 80x cross with liquidation 64846.78939917,
    funding 0.0001 (0.01 %) next at 2024-07-28 16:00 UTC, Binance's limit 125x."""
    from test_venue_ccxt import KEY as BKEY
    from test_venue_ccxt import SECRET as BSECRET
    from test_venue_ccxt import FakeBinance, exchange_factory

    from trading_pipelines.venues import factory

    stub, runtime, engine = env
    mp = pytest.MonkeyPatch()
    mp.setattr(factory, "CLIENTS", {"ccxt": exchange_factory(FakeBinance())})
    mp.setenv("BINANCE_API_KEY", BKEY)
    mp.setenv("BINANCE_SECRET", BSECRET)
    try:
        attrs = yaml.safe_load((STRATEGIES_DIR / "futures_1h_btc_eth" / "defs.yaml").read_text())["attributes"]
        attrs.update(name="futures_ccxt_llm", instruments=["BTC/USDT:USDT"],
                     venue={"kind": "ccxt", "exchange": "binanceusdm", "fee_rate": 0.0005, "slippage_bps": 3})
        attrs["template"]["signal_provider"] = {"kind": "openai", "model": "gpt-4o-mini", "send_chart": False}
        spec = parse_strategy(attrs)
        rt = default_resources()["trading"].runtime(spec)
        stub.push_json_answer(HOLD, prompt_tokens=900)
        [a] = analysis.analyze(rt, "BTC/USDT:USDT", [_ends(rt)[-1]], "run-ccxt")
    finally:
        mp.undo()
    assert a.signal.no_trade_reason is None, a.signal.no_trade_reason
    prompt = _messages(stub)[1]["content"]
    assert "Venue: ccxt" in prompt and "Wallet balance: 31.0226; available (not reserved): 31.0226" in prompt
    assert "| BTC/USDT:USDT | long | 0.009 | 67445.9 | 67582.2 | 1.2267 | 64846.79 | 80x | cross |" in prompt
    assert "Funding rate (BTC/USDT:USDT): 0.01% per funding interval, next funding 2024-07-28T16:00:00+00:00" in prompt
    assert "the venue allows up to 125x" in prompt
