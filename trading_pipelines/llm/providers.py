"""Building a strategy's signal provider: :func:`build_provider`.

The API key is read from the environment by :func:`build_provider`; it is never logged and is
scrubbed from everything a :class:`~trading_pipelines.llm.requests.ProviderResult` holds (see
:mod:`trading_pipelines.llm.parsing`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from trading_pipelines.config import OpenAIProviderConfig, RulesProviderConfig
from trading_pipelines.domain.models import Mode
from trading_pipelines.llm.agents import agent_for
from trading_pipelines.llm.calls import SignalProvider
from trading_pipelines.llm.openai_provider import OpenAISignalProvider
from trading_pipelines.llm.requests import ProviderConfigError
from trading_pipelines.llm.rules_provider import RulesSignalProvider


def build_provider(
    cfg: RulesProviderConfig | OpenAIProviderConfig,
    template_name: str,
    environ: Mapping[str, str] = os.environ,
    mode: Mode | None = None,
) -> SignalProvider:
    """Build the provider a strategy's ``template.signal_provider`` block describes.

    ``mode`` picks the analyst (:func:`trading_pipelines.llm.agents.agent_for`): its system text
    goes with every OpenAI call and its name is recorded with each; ``None`` builds a provider
    with no agent (no system message, no account context).

    OpenAI: the key comes from ``environ[cfg.api_key_env]`` and the base URL from
    ``environ[cfg.base_url_env]`` (unset/empty → OpenAI's public endpoint). Raises
    :class:`ProviderConfigError` naming the env var when the key is unset or empty, or naming the
    template when it does not exist; ``TypeError`` for an unknown config type.
    """
    if isinstance(cfg, RulesProviderConfig):
        return RulesSignalProvider(template_name)
    if isinstance(cfg, OpenAIProviderConfig):
        key = (environ.get(cfg.api_key_env) or "").strip()
        if not key:
            raise ProviderConfigError(
                f"signal provider 'openai' needs an API key in the environment variable {cfg.api_key_env} (unset or empty)"
            )
        base_url = (environ.get(cfg.base_url_env) or "").strip() or None
        agent = None
        if mode is not None:
            agent = agent_for(mode)
        return OpenAISignalProvider(
            agent=agent.name if agent else None,
            system_text=agent.system if agent else None,
            model=cfg.model,
            base_url=base_url,
            api_key=key,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            timeout_s=cfg.timeout_s,
            template_name=template_name,
            max_retries=cfg.max_retries,
            retry_timeouts=cfg.retry_timeouts,
            send_chart=cfg.send_chart,
            image_detail=cfg.image_detail,
            response_format=cfg.response_format,
            reasoning=cfg.reasoning,
            min_prompt_tokens=cfg.min_prompt_tokens,
            max_entry_deviation_pct=cfg.max_entry_deviation_pct,
            max_concurrent_calls=cfg.max_concurrent_calls,
        )
    raise TypeError(f"unknown signal provider config {type(cfg).__name__}")
