"""The signal providers' common interface, and what a call is known by.

A :class:`SignalProvider` turns one window's indicators (+ chart) into a
:class:`~trading_pipelines.domain.models.Signal`. Two providers share this interface:

- :class:`~trading_pipelines.llm.rules_provider.RulesSignalProvider` — the deterministic rule of
  :mod:`trading_pipelines.domain.rules` (offline default, no key);
- :class:`~trading_pipelines.llm.openai_provider.OpenAISignalProvider` — any OpenAI-compatible
  chat-completions server, through the official ``openai`` SDK, with the chart attached as a
  base64 PNG data URI.

:func:`trading_pipelines.llm.providers.build_provider` builds the one a strategy's config describes.

Error as data: a provider never raises for a bad answer. An HTTP failure (after the SDK's own
retries), a refusal, empty content, invalid JSON, JSON that does not fit the mode's schema, an
action not allowed in the mode or a stop/take-profit on the wrong side of the entry all become a
``hold`` signal with confidence 0 and ``no_trade_reason`` saying what failed — a recorded
no-trade, never an order.

A call is known by :func:`call_cache_key` (the response cache's key), priced by
:func:`estimated_cost_usd` and its server named by :func:`base_url_host`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from trading_pipelines.domain.models import Signal
from trading_pipelines.llm.parsing import clean_text
from trading_pipelines.llm.prompts import _iso, prompt_hash, render_prompt
from trading_pipelines.llm.requests import ProviderResult, SignalRequest

log = logging.getLogger(__name__)


MODEL_PRICES_USD_PER_1M: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
}
"""USD per 1M (input, output) tokens, for the estimated cost of a call; other models: unknown (None)."""

_DATED_MODEL_RE = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def estimated_cost_usd(model: str, usage: Mapping[str, int] | None) -> float | None:
    """Estimated USD cost of a call's ``usage`` (``prompt_tokens``, ``completion_tokens``) at
    :data:`MODEL_PRICES_USD_PER_1M`; a dated snapshot name (``gpt-4o-2024-08-06``) is priced as
    its model. ``None`` for a model without a price or a call without reported usage."""
    price = MODEL_PRICES_USD_PER_1M.get(model) or MODEL_PRICES_USD_PER_1M.get(_DATED_MODEL_RE.sub("", model))
    if price is None or not usage or ("prompt_tokens" not in usage and "completion_tokens" not in usage):
        return None
    return (usage.get("prompt_tokens", 0) * price[0] + usage.get("completion_tokens", 0) * price[1]) / 1_000_000


def call_cache_key(provider: str, model: str, prompt_hash_: str, chart_sha256: str | None,
                   parameters: Mapping[str, Any] | None) -> str:
    """Hex SHA-256 over the canonical JSON of (provider, model, prompt hash, chart SHA-256,
    request parameters): the response cache's key of a call."""
    canonical = json.dumps({"provider": provider, "model": model, "prompt_hash": prompt_hash_, "chart_sha256": chart_sha256,
                            "parameters": dict(parameters or {})}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def base_url_host(base_url: str | None) -> str | None:
    """``host[:port]`` of ``base_url`` only: never the scheme's credentials, path or query."""
    if not base_url:
        return None
    from urllib.parse import urlsplit

    u = urlsplit(base_url)
    if not u.hostname:
        return None
    return f"{u.hostname}:{u.port}" if u.port else u.hostname


class SignalProvider(ABC):
    """Turns a :class:`SignalRequest` into a :class:`ProviderResult`. Never raises for a bad or
    missing answer: failures come back as a ``hold`` with ``no_trade_reason`` set."""

    provider_name: str
    model: str
    template_name: str
    reads_chart: bool = True  # the chart PNG is part of the request (and of the prompt hash)
    reads_account: bool = False  # the request carries the book's AccountContext (and the prompt shows it)
    agent: str | None = None  # the analyst (llm.agents) whose system text, template and schema the calls use

    @abstractmethod
    def generate(self, req: SignalRequest) -> ProviderResult: ...

    cacheable: bool = False  # answers worth serving from the response cache (a paid or slow call)
    base_url: str | None = None

    def call_parameters(self) -> dict[str, Any]:
        """The configured request parameters (part of the cache key; not the learned step-downs)."""
        return {}

    def _first_prompt(self, req: SignalRequest) -> tuple[SignalRequest, str]:
        """(the request as first sent, its rendered prompt)."""
        sent = req if (req.chart_png is not None and self.reads_chart) else req.model_copy(update={"chart_png": None})
        return sent, clean_text(render_prompt(self.template_name, sent), getattr(self, "_secret", None))

    def prompt_chars(self, req: SignalRequest) -> int:
        """Characters of the text ``generate(req)`` would first send: the rendered prompt plus the
        system text, if any (the budget's prompt estimate, see
        :func:`trading_pipelines.analysis.budget.prompt_token_estimate`)."""
        return len(self._first_prompt(req)[1]) + len(getattr(self, "system_text", None) or "")

    def cache_key(self, req: SignalRequest) -> str:
        """The response cache's key of the call ``generate(req)`` would make (see
        :func:`call_cache_key`): the prompt is rendered as the call would first send it."""
        sent, prompt = self._first_prompt(req)
        return call_cache_key(self.provider_name, self.model, prompt_hash(prompt, sent.chart_sha256, self.model, self.template_name),
                              sent.chart_sha256, self.call_parameters())

    def _signal(self, req: SignalRequest, prompt: str, **decision: Any) -> Signal:
        """A :class:`Signal` for ``req`` from this provider; ``decision`` holds action, confidence,
        thesis and the optional prices / no-trade reason."""
        return Signal(strategy=req.strategy, instrument=req.instrument, window_end=req.window_end, mode=req.mode,
                      provider=self.provider_name, model=self.model,
                      prompt_hash=prompt_hash(prompt, req.chart_sha256, self.model, self.template_name), **decision)

    def _no_trade(
        self,
        req: SignalRequest,
        reason: str,
        t0: float,
        *,
        prompt: str = "",
        response_text: str | None = None,
        usage: dict[str, int] | None = None,
        request_json: dict[str, Any] | None = None,
        dialect: dict[str, Any] | None = None,
    ) -> ProviderResult:
        log.warning("no trade for %s %s %s: %s", req.strategy, req.instrument, _iso(req.window_end), reason)
        signal = self._signal(req, prompt, action="hold", confidence=0.0, thesis=f"no trade: {reason}",
                              no_trade_reason=reason)
        return ProviderResult(
            signal=signal,
            prompt=prompt,
            response_text=response_text,
            usage=usage or {},
            latency_ms=(time.perf_counter() - t0) * 1000.0,
            request_json=request_json,
            template_name=self.template_name,
            chart_sha256=req.chart_sha256,
            dialect=dialect,
        )
