"""The rules provider: the deterministic rule of :mod:`trading_pipelines.domain.rules` behind the
:class:`~trading_pipelines.llm.calls.SignalProvider` interface (offline default, no key)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from trading_pipelines.domain.rules import rules_signal
from trading_pipelines.llm.calls import SignalProvider
from trading_pipelines.llm.parsing import _ENTRY_ACTIONS, clean_text, sanitize_result
from trading_pipelines.llm.prompts import _check_template, render_prompt
from trading_pipelines.llm.requests import ProviderResult, SignalRequest


RULES_PROVIDER = "rules"
RULES_MODEL = "rules-v1"


class RulesSignalProvider(SignalProvider):
    """The deterministic rule (:func:`~trading_pipelines.domain.rules.rules_signal`).

    ``ema_fast``/``ema_slow`` are summary keys; by default the smallest and the largest
    ``ema_<n>`` window present in the summary. The prompt is rendered from the same template as
    the LLM provider so the audit trail looks the same; ``response_text`` is the decision as JSON.
    Entries carry ``entry`` = the last close; no stop (the planner computes its own).
    Raises :class:`ProviderConfigError` at construction for an unknown template.
    """

    provider_name = RULES_PROVIDER
    model = RULES_MODEL
    reads_chart = False  # the rule reads indicators only: charts are rendered for people, not for it

    def __init__(self, template_name: str, ema_fast: str | None = None, ema_slow: str | None = None) -> None:
        _check_template(template_name)
        self.template_name = template_name
        self.ema_fast = ema_fast
        self.ema_slow = ema_slow

    def __repr__(self) -> str:
        return f"RulesSignalProvider(template_name={self.template_name!r})"

    def _emas(self, summary: Mapping[str, float]) -> tuple[str, str]:
        if self.ema_fast and self.ema_slow:
            return self.ema_fast, self.ema_slow
        windows = sorted(int(k[4:]) for k in summary if k.startswith("ema_") and k[4:].isdigit())
        if len(windows) < 2:
            raise ValueError(f"the rule needs two EMAs in the summary, got {[f'ema_{w}' for w in windows]}")
        return self.ema_fast or f"ema_{windows[0]}", self.ema_slow or f"ema_{windows[-1]}"

    def generate(self, req: SignalRequest) -> ProviderResult:
        return sanitize_result(self._generate(req))

    def _generate(self, req: SignalRequest) -> ProviderResult:
        t0 = time.perf_counter()
        try:
            prompt = clean_text(render_prompt(self.template_name, req))
        except Exception as e:  # noqa: BLE001 - error as data
            return self._no_trade(req, f"prompt rendering failed (template {self.template_name!r}): {type(e).__name__}: {e}", t0)
        try:
            fast, slow = self._emas(req.summary)
            decision = rules_signal(req.summary, req.mode, fast, slow)
        except ValueError as e:
            return self._no_trade(req, f"rules provider cannot decide: {e}", t0, prompt=prompt)
        entry = float(req.summary["close"]) if decision.action in _ENTRY_ACTIONS else None
        response_text = json.dumps(
            {
                "action": decision.action,
                "confidence": decision.confidence,
                "ema_fast": fast,
                "ema_slow": slow,
                "entry": entry,
                "thesis": decision.thesis,
            },
            sort_keys=True,
        )
        signal = self._signal(req, prompt, action=decision.action, confidence=decision.confidence, entry=entry,
                              thesis=decision.thesis)
        return ProviderResult(
            signal=signal,
            prompt=prompt,
            response_text=response_text,
            latency_ms=(time.perf_counter() - t0) * 1000.0,
            template_name=self.template_name,
            chart_sha256=req.chart_sha256,
        )
