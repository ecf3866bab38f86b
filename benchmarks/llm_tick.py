"""The LLM signal step of one tick, and a replay served from the response cache (issue 7).

    .venv/bin/python benchmarks/llm_tick.py

20 instruments: catalogue aliases (TRADING_INSTRUMENTS_PATH) that all replay the shipped BTC/USDT
4h candles; a user strategy (TRADING_STRATEGIES_PATH) with provider ``openai`` whose base URL is
``tests/openai_stub_server.py`` started in this process on 127.0.0.1, every answer 1 s late.
Text-only (``send_chart: false``): the step measured is the signal step, not chart rendering.

1. The signal step of one tick: ``analysis.analyze_many`` (what the analysis asset and the replay
   op call) over the 20 instruments' newest window: the instruments side by side, bounded by
   ``max_concurrent_calls`` (20), each call made outside the ledger transaction. The live book's
   account view (the paper venue's balance, positions and open orders) is read per instrument.
   Target: ≤ 4 s wall (serial would be ≥ 20 s).
2. A replay of 100 windows of one instrument, twice (``max_concurrent_calls`` 20): the second
   pass is served from the response cache. Target: 0 HTTP calls.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from user_data import alias_catalogue, user_strategy

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
NAME = "bench_llm_tick_20"
N = 20
LATENCY_S = 1.0
HOLD = {"action": "hold", "confidence": 0.5, "thesis": "no edge in this window"}


def _setup(root: Path, base_url: str) -> None:
    catalogue, symbols = alias_catalogue(root, "L", N)
    strategies = user_strategy(root, NAME, symbols, "benchmark: 20 aliases of BTC/USDT 4h, LLM signals",
                               template={"signal_provider": {"kind": "openai", "model": "gpt-4o-mini", "send_chart": False,
                                                             "max_concurrent_calls": 20}})
    home = root / "home"
    home.mkdir()
    os.environ.update({"DAGSTER_HOME": str(home), "TRADING_STRATEGIES_PATH": str(strategies),
                       "TRADING_INSTRUMENTS_PATH": str(catalogue), "TRADING_CHART_DIR": str(home / "charts"),
                       "TRADING_LEDGER_URL": f"sqlite:///{home / 'ledger.sqlite'}", "OPENAI_BASE_URL": base_url,
                       "OPENAI_API_KEY": "sk-bench-not-a-real-key"})
    os.environ.pop("TRADING_VENUE_URL", None)


def main() -> int:
    from openai_stub_server import OpenAIStubServer

    with tempfile.TemporaryDirectory() as tmp, OpenAIStubServer() as stub:
        _setup(Path(tmp), stub.base_url)
        from trading_pipelines.analysis import analyze as analysis
        from trading_pipelines.analysis import frames
        from trading_pipelines.assets.partitions import window_end, window_partitions
        from trading_pipelines.config import load_strategies
        from trading_pipelines.resources.dagster_resources import default_resources

        spec = load_strategies()[NAME]
        rt = default_resources()["trading"].runtime(spec)
        keys = window_partitions(spec).get_partition_keys()
        ends = [window_end(spec, k) for k in keys]
        for inst in spec.instruments:  # warm the market-data cache: the tick's data is already loaded
            frames.indicator_frame(rt, inst, ends[-1])

        # 1. the signal step of one tick
        for _ in spec.instruments:
            stub.push_slow_json_answer(HOLD, LATENCY_S, prompt_tokens=900, completion_tokens=40)
        t0 = time.perf_counter()
        tick = list(analysis.analyze_many(rt, list(spec.instruments), [ends[-1]], "bench-tick", charts=False).values())
        wall = time.perf_counter() - t0
        calls = len(stub.chat_requests)
        usable = sum(1 for out in tick for a in out if not a.error and not a.signal.no_trade_reason)
        print(f"tick signal step: {N} instruments × 1 window, stub latency {LATENCY_S:.0f} s: {wall:.2f} s wall "
              f"(target ≤ 4 s; serial ≥ {N * LATENCY_S:.0f} s), {calls} HTTP calls, {usable}/{N} usable signals")

        # 2. a replay of 100 windows, twice
        inst, window = spec.instruments[0], ends[-101:-1]
        for _ in window:
            stub.push_slow_json_answer(HOLD, LATENCY_S, prompt_tokens=900, completion_tokens=40)
        before = len(stub.chat_requests)
        t0 = time.perf_counter()
        first = analysis.analyze(rt, inst, window, "bench-replay-1", charts=False)
        w1 = time.perf_counter() - t0
        mid = len(stub.chat_requests)
        t0 = time.perf_counter()
        second = analysis.analyze(default_resources()["trading"].runtime(spec), inst, window, "bench-replay-2", charts=False)
        w2 = time.perf_counter() - t0
        after = len(stub.chat_requests)
        same = [a.signal for a in first] == [a.signal for a in second]
        print(f"replay 1: {len(window)} windows, {mid - before} HTTP calls, {w1:.2f} s wall (max_concurrent_calls 20)")
        print(f"replay 2: {len(window)} windows, {after - mid} HTTP calls (target 0), "
              f"{sum(a.cache_hit for a in second)} cache hits, {w2:.2f} s wall, identical signals: {same}")
    print(f"loadavg: {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
