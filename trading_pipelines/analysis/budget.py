"""Token and cost budgets of an analysis (``template.signal_provider.budget``)."""

from __future__ import annotations

import math
from datetime import datetime

from trading_pipelines.analysis.calls import _Prep, _wait_call
from trading_pipelines.ledger import repo
from trading_pipelines.llm.calls import estimated_cost_usd
from trading_pipelines.runtime import Runtime


class _Budget:
    """The provider budget of one :func:`analyze` call (``template.signal_provider.budget``).

    Usage so far is read from ``provider_calls`` once (the run's and the strategy's UTC-day tokens
    and estimated cost, cache hits excluded) plus this analysis's calls as they answer. A call is
    admitted only while every limit is unspent *as the serial path would see it*: calls still in
    flight count at an upper bound (``max_tokens`` plus 1.5× the largest prompt seen in this
    analysis; unbounded until one call has answered), and when that bound leaves the decision
    open the calling thread waits for the oldest call in flight. So parallel calls admit exactly
    the calls the serial path would, and never more than a limit allows."""

    def __init__(self, rt: Runtime, cfg, run_id: str, day: datetime, run_tokens: int, day_tokens: int, day_cost: float):
        self.rt, self.cfg, self.run_id, self.day = rt, cfg, run_id, day
        self.run_tokens, self.day_tokens, self.day_cost = run_tokens, day_tokens, day_cost
        self.inflight: list[_Prep] = []
        self.max_prompt: int | None = None
        self.model = getattr(rt.provider, "model", "")
        self.max_tokens = int(getattr(rt.provider, "max_tokens", 0) or 0)

    @classmethod
    def start(cls, rt: Runtime, s, run_id: str) -> "_Budget | None":
        cfg = getattr(rt.spec.template.signal_provider, "budget", None)
        if cfg is None or not cfg.limited or rt.provider is None:
            return None
        from trading_pipelines.ledger.models import utcnow

        now = utcnow()
        run_tokens, _ = repo.provider_usage(s, rt.spec.name, run_id=run_id)
        day_tokens, day_cost = repo.provider_usage(s, rt.spec.name, day=now)
        return cls(rt, cfg, run_id, now, run_tokens, day_tokens, day_cost)

    def _bound(self) -> tuple[float, float]:
        if self.max_prompt is None:
            return math.inf, math.inf
        prompt = math.ceil(1.5 * self.max_prompt)
        cost = estimated_cost_usd(self.model, {"prompt_tokens": prompt, "completion_tokens": self.max_tokens}) or 0.0
        return prompt + self.max_tokens, cost

    def _spent(self) -> str | None:
        c, day = self.cfg, f"{self.day:%Y-%m-%d} UTC"
        if c.max_tokens_per_run is not None and self.run_tokens >= c.max_tokens_per_run:
            return (f"budget: max_tokens_per_run {c.max_tokens_per_run} spent ({self.run_tokens} tokens used by run "
                    f"{self.run_id}); no call made")
        if c.max_tokens_per_day is not None and self.day_tokens >= c.max_tokens_per_day:
            return (f"budget: max_tokens_per_day {c.max_tokens_per_day} spent ({self.day_tokens} tokens used by "
                    f"{self.rt.spec.name} on {day}); no call made")
        if c.max_cost_usd_per_day is not None and self.day_cost >= c.max_cost_usd_per_day:
            return (f"budget: max_cost_usd_per_day {c.max_cost_usd_per_day:g} spent (${self.day_cost:.6f} estimated for "
                    f"{self.rt.spec.name} on {day}); no call made")
        return None

    def _open(self) -> bool:
        """Whether calls in flight could still spend a limit (the decision waits for them)."""
        if not self.inflight:
            return False
        tokens, cost = self._bound()
        n = len(self.inflight)
        c = self.cfg
        return ((c.max_tokens_per_run is not None and self.run_tokens + n * tokens >= c.max_tokens_per_run)
                or (c.max_tokens_per_day is not None and self.day_tokens + n * tokens >= c.max_tokens_per_day)
                or (c.max_cost_usd_per_day is not None and self.day_cost + n * cost >= c.max_cost_usd_per_day))

    def admit(self, p: _Prep) -> str | None:
        """None: make the call; else the no-trade reason ``budget: …``."""
        while True:
            why = self._spent()
            if why is not None:
                while self.inflight:  # the reason names what the serial path would have seen
                    self.finished(self.inflight[0])
                return self._spent()
            if not self._open():
                return None
            self.finished(self.inflight[0])

    def started(self, p: _Prep) -> None:
        if p.future is None:
            self._count(p)
        else:
            self.inflight.append(p)

    def finished(self, p: _Prep) -> None:
        """Count a call's usage once it answered (waits for it)."""
        if p in self.inflight:
            self.inflight.remove(p)
            _wait_call(p)
            self._count(p)

    def _count(self, p: _Prep) -> None:
        if p.result is None or p.hit is not None:
            return
        usage = p.result.usage or {}
        tokens = int(usage.get("total_tokens") or (usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)) or 0)
        self.run_tokens += tokens
        self.day_tokens += tokens
        self.day_cost += estimated_cost_usd(self.model, usage) or 0.0
        if usage.get("prompt_tokens") is not None:
            self.max_prompt = max(self.max_prompt or 0, int(usage["prompt_tokens"]))
