"""A window's signal call: the request, the response-cache lookup, the provider call (inline, or in
a pool whose calls leave in window order), and the append-only ``provider_calls`` row."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trading_pipelines.domain.indicators import indicator_summary
from trading_pipelines.domain.models import Signal
from trading_pipelines.ledger import repo
from trading_pipelines.llm.calls import base_url_host, call_cache_key, estimated_cost_usd
from trading_pipelines.llm.prompts import template_sha256
from trading_pipelines.llm.requests import ProviderResult, SignalRequest
from trading_pipelines.runtime import Runtime
from trading_pipelines.stores.charts import chart_key

if TYPE_CHECKING:
    from trading_pipelines.analysis.analyze import Analysis


def _call_workers(rt: Runtime) -> int:
    """Provider calls of one analysis in flight at once: the openai provider's
    ``max_concurrent_calls`` (its calls run in a thread pool, outside the ledger transaction), no
    more than the server takes now (``provider.concurrency()``: its reported slots or its AIMD
    limit, see :class:`~trading_pipelines.llm.capacity.ServerCapacity`); 0 (inline, no
    pool) for the rules provider or any other."""
    cfg = rt.spec.template.signal_provider
    if rt.provider is None or getattr(cfg, "kind", None) != "openai" or not getattr(rt.provider, "cacheable", False):
        return 0
    n = int(getattr(cfg, "max_concurrent_calls", 1) or 1)
    concurrency = getattr(rt.provider, "concurrency", None)
    if callable(concurrency):
        try:
            n = min(n, int(concurrency()))
        except Exception:  # noqa: BLE001 - the provider limits its own calls anyway
            pass
    return max(1, n)


def _admit_and_start(rt: Runtime, a: Analysis, prep: "_Prep", budget, pool, order: dict) -> None:
    """Start the window's call, or make it a pipeline no-trade ``budget: …`` when a limit is spent."""
    why = budget.admit(prep) if budget is not None else None
    if why:
        a.error = why
        prep.result, prep.final = _pipeline_no_trade(rt, a), True
        return
    _start_call(rt, prep, pool, order)
    if budget is not None:
        budget.started(prep)


@dataclass(eq=False)
class _Prep:
    """One window's signal between its cache lookup and its ledger write."""

    req: SignalRequest | None = None
    key: str | None = None
    hit: object | None = None
    t0: float = 0.0
    result: ProviderResult | None = None  # set: no call needed (a pipeline no-trade or a cache hit), or the call's answer
    final: bool = False  # a pipeline no-trade: nothing is recorded in provider_calls
    deferred: bool = False
    future: object | None = None
    crash: BaseException | None = None
    prompt_chars: int | None = None  # characters of the prompt (+ system text) the call sends: the budget's estimate
    reserve_tokens: int = 0  # what the budget holds for the call while it is in flight (tokens, USD)
    reserve_cost: float = 0.0

    @property
    def needs_call(self) -> bool:
        return self.result is None and self.future is None and not self.deferred


def _pipeline_no_trade(rt: Runtime, a: Analysis) -> ProviderResult:
    spec = rt.spec
    reason = a.error or "this runtime was built without a signal provider"
    sig = Signal(strategy=spec.name, instrument=a.instrument, window_end=a.window_end, mode=spec.mode, action="hold",
                 confidence=0.0, thesis=f"no trade: {reason}", provider="pipeline", model="none",
                 prompt_hash="0" * 64, no_trade_reason=reason)
    return ProviderResult(signal=sig, prompt="", response_text=None, latency_ms=0.0, template_name=spec.prompt_template)


def _prepare_signal(rt: Runtime, a: Analysis, s=None, skip_lookup: set | None = None) -> _Prep:
    """The window's request and its response-cache lookup (calling thread; no ledger write).
    ``skip_lookup``: keys an earlier queued window is still calling for (the lookup is deferred)."""
    spec = rt.spec
    a.call_id, a.cache_hit, a.http_calls = None, False, 0
    if a.error or rt.provider is None:
        return _Prep(result=_pipeline_no_trade(rt, a), final=True)
    frame = a.frame
    provider = rt.provider
    recent = [{"open_time": ts.isoformat(), "open": o, "high": h, "low": lo, "close": c, "volume": v}
              for ts, o, h, lo, c, v in zip(frame.index[-20:], *(frame[k].iloc[-20:] for k in ("open", "high", "low", "close", "volume")))]
    req = SignalRequest(strategy=spec.name, instrument=a.instrument, window_end=a.window_end, mode=spec.mode,
                        timeframe=spec.timeframe, summary=indicator_summary(frame),
                        chart_png=getattr(a, "_png", None) if getattr(provider, "reads_chart", True) else None,
                        chart_key=chart_key(spec.name, a.instrument, a.window_end) if a.chart or not getattr(provider, "reads_chart", True) else None,
                        recent_bars=recent, account=a.account if getattr(provider, "reads_account", False) else None)
    p = _Prep(req=req, t0=time.perf_counter())
    if s is not None and getattr(provider, "cacheable", False):
        try:
            p.key = provider.cache_key(req)
        except Exception:  # noqa: BLE001 - no key: the call is made (and its rendering error recorded)
            p.key = None
        if p.key and skip_lookup and p.key in skip_lookup:
            p.deferred = True
            return p
        p.hit = repo.cached_call(s, p.key) if p.key else None
    if p.hit is not None:
        hit = p.hit
        sig = Signal.model_validate({**hit.parsed_signal, "strategy": spec.name, "instrument": a.instrument,
                                     "window_end": a.window_end, "mode": spec.mode.value})
        usage = {k: v for k in ("prompt_tokens", "completion_tokens", "total_tokens") if (v := getattr(hit, k)) is not None}
        dialect = dict((hit.parameters or {}).get("dialect") or {}, http_calls=0, cache_hit=True, cached_from=hit.id)
        p.result = ProviderResult(signal=sig, prompt=hit.prompt, response_text=hit.response_text, usage=usage,
                                  latency_ms=(time.perf_counter() - p.t0) * 1000.0, request_json=hit.request_json,
                                  template_name=hit.template or hit.agent, chart_sha256=hit.chart_sha256, dialect=dialect)
    return p


def _generate(provider, req: SignalRequest):
    """``provider.generate(req)`` as (result, None), or (None, the exception) — the pool's task."""
    try:
        return provider.generate(req), None
    except Exception as e:  # noqa: BLE001 - a provider crash is this window's no-trade
        return None, e


_SENDING = threading.local()
ORDER_GAP_S = 0.01
"""Pooled calls leave in window order: each starts once the previous one's HTTP request is on its
way, plus this gap (servers that answer in arrival order — the test stub — see the serial order)."""


def _install_send_hook(provider) -> bool:
    """An httpx ``request`` event hook on the provider's HTTP client that marks the calling
    thread's call as sent (False: the client has none to hook; calls are then only staggered)."""
    http = getattr(getattr(provider, "_client", None), "_client", None)
    hooks = getattr(http, "event_hooks", None)
    if not isinstance(hooks, dict):
        return False
    if not getattr(http, "_trading_send_hook", False):
        def on_request(request) -> None:
            ev = getattr(_SENDING, "event", None)
            if ev is not None:
                ev.set()
        http.event_hooks = {**hooks, "request": [*hooks.get("request", []), on_request]}
        http._trading_send_hook = True
    return True


def _generate_in_order(provider, req: SignalRequest, prev: threading.Event | None, mine: threading.Event, hooked: bool):
    if prev is not None:
        prev.wait()
        time.sleep(ORDER_GAP_S)
    if not hooked:
        mine.set()
    _SENDING.event = mine
    try:
        return _generate(provider, req)
    finally:
        _SENDING.event = None
        mine.set()


def _start_call(rt: Runtime, p: _Prep, pool: ThreadPoolExecutor | None, order: dict | None = None) -> None:
    if pool is None:
        p.result, p.crash = _generate(rt.provider, p.req)
        return
    order = {} if order is None else order
    if "hooked" not in order:
        order["hooked"] = _install_send_hook(rt.provider)
    mine = threading.Event()
    p.future = pool.submit(_generate_in_order, rt.provider, p.req, order.get("last"), mine, order["hooked"])
    order["last"] = mine


def _wait_call(p: _Prep) -> None:
    if p.future is not None:
        p.result, p.crash = p.future.result()
        p.future = None


def _finish_signal(rt: Runtime, a: Analysis, s, lin: repo.Lineage | None, p: _Prep, budget=None) -> ProviderResult:
    """The window's signal once its call (if any) answered; with ``s`` and ``lin`` the call (cache
    hits included) is appended to ``provider_calls`` and ``a.call_id``/``a.cache_hit``/``a.http_calls`` set."""
    _wait_call(p)
    if budget is not None:
        budget.finished(p)
    if p.final:
        return p.result
    if p.crash is not None:
        a.error = f"provider error: {type(p.crash).__name__}: {p.crash}"
        return _pipeline_no_trade(rt, a)
    spec, provider, result, hit, key, req = rt.spec, rt.provider, p.result, p.hit, p.key, p.req
    if s is None or lin is None:
        return result
    http_calls = 0 if hit is not None else int((result.dialect or {}).get("http_calls", 0) or 0)
    # duck-typed providers (tests, user code) may lack the SignalProvider attributes
    pname = getattr(provider, "provider_name", result.signal.provider)
    model = getattr(provider, "model", result.signal.model)
    template = getattr(provider, "template_name", result.template_name)
    params = provider.call_parameters() if hasattr(provider, "call_parameters") else {}
    if key is None:
        key = call_cache_key(pname, model, result.signal.prompt_hash, result.chart_sha256, params)
    error = result.signal.no_trade_reason if result.response_text is None else None
    cost = estimated_cost_usd(model, result.usage)
    system = next((m.get("content") for m in (result.request_json or {}).get("messages", [])
                   if isinstance(m, dict) and m.get("role") == "system" and isinstance(m.get("content"), str)), None)
    call = repo.record_provider_call(
        s, lin, window_end=a.window_end, mode=spec.mode.value, provider=pname, model=model,
        agent=getattr(provider, "agent", None) or pname, template=template, template_sha256=template_sha256(template),
        base_url_host=base_url_host(getattr(provider, "base_url", None)),
        parameters={**params, "dialect": result.dialect}, system_text=system, prompt=result.prompt,
        prompt_hash=result.signal.prompt_hash, chart_key=req.chart_key, chart_sha256=result.chart_sha256,
        request_json=result.request_json, response_text=result.response_text,
        parsed_signal=result.signal.model_dump(mode="json"), error=error, usage=result.usage,
        latency_ms=result.latency_ms, http_calls=http_calls,
        estimated_cost_usd=(0.0 if cost is not None else None) if hit is not None else cost,
        cache_key=key, cache_hit=hit is not None, cached_from=hit.id if hit is not None else None)
    a.call_id, a.cache_hit, a.http_calls = call.id, hit is not None, http_calls
    return result


def _signal(rt: Runtime, a: Analysis, s=None, lin: repo.Lineage | None = None) -> ProviderResult:
    """The window's signal: a pipeline no-trade (bad data, no provider), a response-cache hit, or
    a provider call (serial; see :func:`analyze` for the concurrent path and budgets). With a
    session ``s`` and ``lin``, each provider call (cache hits included) is appended to
    ``provider_calls`` and ``a.call_id``/``a.cache_hit``/``a.http_calls`` set."""
    p = _prepare_signal(rt, a, s)
    if p.needs_call:
        _start_call(rt, p, None)
    return _finish_signal(rt, a, s, lin, p)


