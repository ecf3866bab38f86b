"""The analysis step's metadata helpers: what the ``signals`` materialization shows of the run's
provider calls (usage counters, the calls table, per-instrument prompt and answer)."""


import dagster as dg

from trading_pipelines.assets.common import _TABLE_ROWS, _md_table
from trading_pipelines.assets.partitions import window_key
from trading_pipelines.config import StrategySpec
from trading_pipelines.stores.chart_render import thumbnail_markdown


_PROMPT_CHARS = 6000  # per signal in the UI; the whole prompt is in the ledger (provider_calls)


def signal_call_metadata(spec: StrategySpec, instruments: list[str], results: dict, single: bool) -> dict:
    """What the UI shows of the run's provider calls on the ``signals`` materialization.

    Usage counters under dagster-openai's keys (``openai.calls`` = HTTP calls made, cache hits
    excluded; ``openai.prompt_tokens``, ``openai.completion_tokens``, ``openai.total_tokens``; as
    ``dagster_openai.with_usage_metadata`` records them) plus ``openai.cache_hits`` and
    ``openai.estimated_cost_usd`` (list prices, see ``llm.calls.estimated_cost_usd``); a
    ``calls`` table (window, instrument, agent, action, tokens, cost, latency, cache hit, ledger
    call id); and for a single-window run, per instrument ``signal/<instrument>``: the chart, the
    exact prompt, the raw answer, tokens and cost. Rules signals record no HTTP usage."""
    from trading_pipelines.llm.calls import estimated_cost_usd

    analyses = [a for i in instruments for a in results[i] if a.result is not None]
    http = [a for a in analyses if a.http_calls and not a.cache_hit]

    def tok(a, key: str) -> int:
        return int((a.result.usage or {}).get(key) or 0)

    def cost(a) -> float:
        return 0.0 if a.cache_hit else (estimated_cost_usd(a.signal.model, a.result.usage) or 0.0)

    meta: dict = {}
    if any(a.result.usage for a in analyses) or http:
        meta.update({"openai.calls": sum(a.http_calls for a in http),
                     "openai.prompt_tokens": sum(tok(a, "prompt_tokens") for a in http),
                     "openai.completion_tokens": sum(tok(a, "completion_tokens") for a in http),
                     "openai.total_tokens": sum(tok(a, "total_tokens") for a in http),
                     "openai.cache_hits": sum(1 for a in analyses if a.cache_hit),
                     "openai.estimated_cost_usd": round(sum(cost(a) for a in analyses), 6)})
    agent = getattr(spec.template.signal_provider, "kind", "rules")
    rows = [[window_key(spec, a.window_end), a.instrument, a.signal.action, tok(a, "prompt_tokens"), tok(a, "completion_tokens"),
             f"{cost(a):.6f}", f"{a.result.latency_ms:.0f}", "yes" if a.cache_hit else "no", a.call_id or ""]
            for a in analyses[-_TABLE_ROWS:]]
    meta["calls"] = dg.MetadataValue.md(f"agent: {_agent_name(spec) if agent == 'openai' else 'rules'}\n\n" + _md_table(
        ["window", "instrument", "action", "prompt tokens", "completion tokens", "est. cost USD", "latency ms", "cache hit",
         "ledger call id"], rows))
    if single:
        for a in analyses:
            chart = thumbnail_markdown(a._png, max_width=480, alt=a.instrument) if getattr(a, "_png", None) else (
                f"chart: `{a.chart.key}`" if a.chart else "no chart")
            prompt = a.result.prompt if len(a.result.prompt) <= _PROMPT_CHARS else (
                a.result.prompt[:_PROMPT_CHARS] + f"\n… ({len(a.result.prompt)} characters; whole prompt in provider_calls)")
            body = (f"**{a.instrument}** {a.signal.action} ({a.signal.confidence:.2f}) — "
                    f"{a.signal.no_trade_reason or a.signal.thesis}\n\n{chart}\n\n"
                    f"tokens: {tok(a, 'prompt_tokens')} prompt + {tok(a, 'completion_tokens')} completion; "
                    f"est. cost ${cost(a):.6f}; latency {a.result.latency_ms:.0f} ms; cache hit: {a.cache_hit}; "
                    f"ledger call id: {a.call_id}\n\n**Prompt**\n\n```\n{prompt}\n```\n\n"
                    f"**Raw answer**\n\n```\n{a.result.response_text or '(none)'}\n```")
            meta[f"signal/{a.instrument}"] = dg.MetadataValue.md(body)
    return meta


def _agent_name(spec: StrategySpec) -> str:
    from trading_pipelines.llm.agents import agent_for

    return agent_for(spec.mode).name
