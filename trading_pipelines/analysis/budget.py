"""Token and cost budgets of an analysis (``template.signal_provider.budget``).

A call is admitted only if it fits: the tokens used so far, plus the call's prompt estimate, plus
the provider's ``max_tokens`` (the most it may answer), stay within every token limit, and their
estimated cost within the cost limit. So the call that would cross a limit is not made, and a
limit is overshot only by what the prompt estimate missed.

The prompt estimate (:func:`prompt_token_estimate`): the project has no tokenizer dependency, so
it is the prompt's characters (rendered prompt plus system text) ÷ :data:`CHARS_PER_TOKEN`,
OpenAI's rule of thumb for English; once the server has reported ``prompt_tokens`` for a call of
this analysis, the largest reported tokens-per-character ratio times the characters (never below
characters ÷ 4). That ratio also covers what characters do not show: an attached chart's image
tokens, number-heavy indicator tables (fewer characters a token) and the chat template.
"""

from __future__ import annotations

import math
from datetime import datetime

from trading_pipelines.analysis.calls import _Prep, _wait_call
from trading_pipelines.ledger import repo
from trading_pipelines.llm.calls import estimated_cost_usd
from trading_pipelines.runtime import Runtime

CHARS_PER_TOKEN = 4
"""Characters a token, for the prompt estimate before the server has reported any ``prompt_tokens``."""
INFLIGHT_MARGIN = 1.5
"""A call in flight is held at this many times its prompt estimate plus ``max_tokens`` until it answers."""


def prompt_token_estimate(chars: int, tokens_per_char: float | None) -> int:
    """Estimated prompt tokens of a prompt of ``chars`` characters: ``ceil(chars / 4)``, or
    ``ceil(chars × tokens_per_char)`` when that is larger (``tokens_per_char``: the largest
    ratio a server reported in this analysis, ``None`` before any)."""
    base = math.ceil(chars / CHARS_PER_TOKEN)
    if tokens_per_char is None:
        return base
    return max(base, math.ceil(chars * tokens_per_char))


class _Budget:
    """The provider budget of one :func:`analyze` call (``template.signal_provider.budget``).

    Usage so far is read from ``provider_calls`` once (the run's and the strategy's UTC-day tokens
    and estimated cost, cache hits excluded) plus this analysis's calls as they answer. A call is
    admitted only if it fits (see the module doc). Calls still in flight are held at an upper bound
    (:data:`INFLIGHT_MARGIN` × their prompt estimate + ``max_tokens``); when the call does not fit
    beside them the calling thread waits for the oldest call in flight and decides again with its
    real usage, so parallel calls admit the calls the serial path would, never more."""

    def __init__(self, rt: Runtime, cfg, run_id: str, day: datetime, run_tokens: int, day_tokens: int, day_cost: float):
        self.rt, self.cfg, self.run_id, self.day = rt, cfg, run_id, day
        self.run_tokens, self.day_tokens, self.day_cost = run_tokens, day_tokens, day_cost
        self.inflight: list[_Prep] = []
        self.tokens_per_char: float | None = None
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

    def _cost(self, prompt_tokens: int) -> float:
        return estimated_cost_usd(self.model, {"prompt_tokens": prompt_tokens, "completion_tokens": self.max_tokens}) or 0.0

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

    def _no_room(self, est: int, held_tokens: int = 0, held_cost: float = 0.0) -> str | None:
        """The reason the call (prompt estimate ``est``) does not fit beside ``held`` in-flight
        reservations, or None when it fits every limit."""
        c, day, mt = self.cfg, f"{self.day:%Y-%m-%d} UTC", self.max_tokens
        held = f" + {held_tokens} held for calls in flight" if held_tokens else ""
        call = f"prompt ~{est} tokens estimated + max_tokens {mt}"
        if c.max_tokens_per_run is not None and (total := self.run_tokens + held_tokens + est + mt) > c.max_tokens_per_run:
            return (f"budget: max_tokens_per_run {c.max_tokens_per_run} leaves no room for this call ({self.run_tokens} "
                    f"tokens used by run {self.run_id}{held} + {call} = {total} > {c.max_tokens_per_run}); no call made")
        if c.max_tokens_per_day is not None and (total := self.day_tokens + held_tokens + est + mt) > c.max_tokens_per_day:
            return (f"budget: max_tokens_per_day {c.max_tokens_per_day} leaves no room for this call ({self.day_tokens} "
                    f"tokens used by {self.rt.spec.name} on {day}{held} + {call} = {total} > {c.max_tokens_per_day}); "
                    f"no call made")
        if c.max_cost_usd_per_day is not None:
            cost = self._cost(est)
            if (total := self.day_cost + held_cost + cost) > c.max_cost_usd_per_day:
                held_c = f" + ${held_cost:.6f} held for calls in flight" if held_cost else ""
                return (f"budget: max_cost_usd_per_day {c.max_cost_usd_per_day:g} leaves no room for this call "
                        f"(${self.day_cost:.6f} estimated for {self.rt.spec.name} on {day}{held_c} + ${cost:.6f} for "
                        f"{call} = ${total:.6f} > ${c.max_cost_usd_per_day:g}); no call made")
        return None

    def admit(self, p: _Prep) -> str | None:
        """None: make the call (it is then held at its upper bound until it answers); else the
        no-trade reason ``budget: …``."""
        if p.prompt_chars is None:
            try:
                p.prompt_chars = int(self.rt.provider.prompt_chars(p.req))
            except Exception:  # noqa: BLE001 - a provider without it (duck-typed) or a prompt that fails to render
                p.prompt_chars = 0
        while True:
            why = self._spent()
            if why is not None:
                while self.inflight:  # the reason names what the serial path would have seen
                    self.finished(self.inflight[0])
                return self._spent()
            est = prompt_token_estimate(p.prompt_chars, self.tokens_per_char)
            held_tokens = sum(q.reserve_tokens for q in self.inflight)
            held_cost = sum(q.reserve_cost for q in self.inflight)
            why = self._no_room(est, held_tokens, held_cost)
            if why is None:
                hold = math.ceil(INFLIGHT_MARGIN * est)
                p.reserve_tokens, p.reserve_cost = hold + self.max_tokens, self._cost(hold)
                return None
            if not self.inflight:
                return why
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
        pt = usage.get("prompt_tokens")
        if pt is not None and p.prompt_chars:
            self.tokens_per_char = max(self.tokens_per_char or 0.0, int(pt) / p.prompt_chars)
