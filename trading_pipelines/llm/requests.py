"""What a signal provider is given and what it returns.

:class:`SignalRequest`: everything a provider sees for one (strategy, instrument, window).
:class:`ProviderResult`: one provider call, as the ledger records it. :class:`ProviderConfigError`:
a provider cannot be built.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trading_pipelines.domain.models import Mode, Signal
from trading_pipelines.llm.context import AccountContext


class ProviderConfigError(ValueError):
    """A provider cannot be built (missing API key, unknown template). The message names the cause."""


class SignalRequest(BaseModel):
    """Everything a provider sees for one (strategy, instrument, window).

    ``window_end``: timezone-aware, normalised to UTC (naive datetimes are rejected).
    ``summary``: last closed bar's indicators (see :mod:`trading_pipelines.domain.rules`); NaN
    during warm-up. ``chart_png``: PNG bytes or ``None``; ``chart_key``: where the chart is stored.
    ``recent_bars``: the last ~20 closed bars, oldest first, as dicts with ``open_time`` (ISO-8601
    UTC string) and ``o``, ``h``, ``l``, ``c`` (quote currency), ``v`` (base quantity).
    ``account``: what the book's venue reports (:class:`~trading_pipelines.llm.context.AccountContext`),
    for providers that read it (``reads_account``); ``None`` otherwise.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str
    instrument: str
    window_end: datetime
    mode: Mode
    timeframe: str
    summary: dict[str, float]
    chart_png: bytes | None = None
    chart_key: str | None = None
    recent_bars: list[dict[str, Any]] = Field(default_factory=list)
    account: AccountContext | None = None

    @field_validator("window_end")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("window_end must be timezone-aware (UTC)")
        return v.astimezone(timezone.utc)

    @property
    def chart_sha256(self) -> str | None:
        """Hex SHA-256 of ``chart_png``, or ``None`` without a chart."""
        return hashlib.sha256(self.chart_png).hexdigest() if self.chart_png is not None else None


class ProviderResult(BaseModel):
    """One provider call, as the ledger records it.

    ``prompt``: the exact rendered prompt text. ``response_text``: the model's raw answer (rules:
    the decision as JSON; ``None`` if no answer arrived). ``usage``: ``prompt_tokens``,
    ``completion_tokens``, ``total_tokens`` when the server reported them, else empty.
    ``latency_ms``: wall time of the whole ``generate`` call in milliseconds. ``request_json``:
    the exact chat-completions request body sent, with the chart data URI replaced by
    ``"<chart sha256=...>"`` (``None`` for the rules provider). ``signal.prompt_hash`` is
    :func:`prompt_hash` of (prompt, chart sha256, model, template name); ``chart_sha256`` is that
    of the chart actually sent (``None`` when it was left out or dropped on a refusal).
    ``dialect`` (OpenAI provider only): how the server was spoken to — ``response_format`` used,
    ``content`` (``"string"``/``"parts"``), ``token_param``, ``temperature`` (sent value or
    ``None``), ``image_detail``, ``chart`` (``"sent"``/``"none"``/``"off"``/``"dropped"``),
    ``http_calls`` (calls made by the provider, SDK retries not counted), ``step_downs`` (this
    call's: ``{"setting", "from", "to", "status", "message"}``) and ``learned_step_downs`` (from
    earlier calls of the same provider, applied from the start).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    signal: Signal
    prompt: str
    response_text: str | None = None
    usage: dict[str, int] = Field(default_factory=dict)
    latency_ms: float
    request_json: dict[str, Any] | None = None
    template_name: str
    chart_sha256: str | None = None
    dialect: dict[str, Any] | None = None

    @property
    def is_no_trade(self) -> bool:
        return self.signal.no_trade_reason is not None
