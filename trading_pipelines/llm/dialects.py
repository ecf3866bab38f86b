"""Server dialects of the OpenAI-compatible provider
(:class:`~trading_pipelines.llm.openai_provider.OpenAISignalProvider`) and their step-downs.

Plain-string content without an image, parts only with one; ``response_format`` per config
(``json_schema`` strict, llama.cpp's ``json_object``+``schema``, ``json_object``, none — see
:func:`response_format_body`) with an automatic, recorded step-down when a server refuses a
setting (:func:`_step_down`; at most :data:`MAX_STEP_DOWNS` per call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from trading_pipelines.domain.models import Mode
from trading_pipelines.llm.schemas import response_json_schema


MAX_STEP_DOWNS = 4  # per call: at most this many extra HTTP calls after refusals
ResponseFormat = Literal["json_schema", "llamacpp_schema", "json_object", "none"]
RESPONSE_FORMAT_CHAIN: tuple[str, ...] = ("json_schema", "llamacpp_schema", "json_object", "none")


def response_format_body(kind: str, mode: Mode) -> dict[str, Any] | None:
    """The ``response_format`` request value for ``kind`` (``None``: leave the key out)."""
    if kind == "json_schema":
        return {"type": "json_schema",
                "json_schema": {"name": f"{mode.value}_signal", "strict": True, "schema": response_json_schema(mode)}}
    if kind == "llamacpp_schema":
        return {"type": "json_object", "schema": response_json_schema(mode)}
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "none":
        return None
    raise ValueError(f"unknown response_format {kind!r} (one of {', '.join(RESPONSE_FORMAT_CHAIN)})")


@dataclass
class _Dialect:
    """The request settings of one call (mutable copy; step-downs lower them)."""

    response_format: str
    chart: bool
    image_detail: str | None
    token_param: str
    temperature: bool


_IMAGE_REFUSED = ("multimodal", "vision", "image input", "can only concatenate str")
_UNSUPPORTED = ("unsupported", "not supported", "does not support", "not support", "only the default", "not allowed",
                "extra inputs are not permitted", "unrecognized", "unknown")
_FORMAT_REFUSED = ("response_format", "json_schema", "json_object", "'json_schema' or 'text'", "schema", "grammar")


def _step_down(d: _Dialect, status: int, message: str, *, image_sent: bool) -> dict[str, Any] | None:
    """Lower the one setting the server's refusal names (mutates ``d``); the step record, or
    ``None`` when the refusal names nothing this provider can lower."""
    if not (status in (400, 415, 422) or status >= 500):
        return None
    m = message.lower()

    def step(setting: str, old: Any, new: Any) -> dict[str, Any]:
        return {"setting": setting, "from": old, "to": new, "status": status, "message": message[:300]}

    if image_sent and d.image_detail is not None and "detail" in m:
        old, d.image_detail = d.image_detail, None
        return step("image_detail", old, None)
    if image_sent and (any(k in m for k in _IMAGE_REFUSED) or ("image" in m and any(k in m for k in _UNSUPPORTED))):
        d.chart = False
        return step("chart", "sent", "dropped")
    if d.token_param == "max_tokens" and "max_tokens" in m and any(k in m for k in _UNSUPPORTED + ("max_completion_tokens",)):
        d.token_param = "max_completion_tokens"
        return step("token_param", "max_tokens", "max_completion_tokens")
    if d.temperature and "temperature" in m:
        d.temperature = False
        return step("temperature", "sent", "omitted")
    if d.response_format != "none" and any(k in m for k in _FORMAT_REFUSED):
        old = d.response_format
        if "'json_schema' or 'text'" in m or '"json_schema" or "text"' in m:
            new = "json_schema" if old != "json_schema" else "none"
        else:
            new = RESPONSE_FORMAT_CHAIN[RESPONSE_FORMAT_CHAIN.index(old) + 1]
        d.response_format = new
        return step("response_format", old, new)
    return None
