"""Server dialects of the OpenAI-compatible provider
(:class:`~trading_pipelines.llm.openai_provider.OpenAISignalProvider`) and their step-downs.

Plain-string content without an image, parts only with one; ``response_format`` per config
(``json_schema`` strict, llama.cpp's ``json_object``+``schema``, ``json_object``, none — see
:func:`response_format_body`) with an automatic, recorded step-down when a server refuses a
setting (:func:`_step_down`; at most :data:`MAX_STEP_DOWNS` per call).

Only a refusal that names the setting steps it down: a 400/415/422 whose message names it. A 5xx
is a server failure, retried by the SDK and never a reason to lower a setting — one exception: a
5xx that says the server cannot take an image or list content (llama-cpp-python's string-only
chat templates, Ollama's text-only models) drops the chart.

A step-down is remembered per (base URL, model) for the process — one Dagster run (its run
worker or step process) or one CLI command — by every provider of that server and model
(:func:`remember`, :func:`learned`), with its record (setting, from, to, status, message,
``learned_at``); the record goes with every call into ``provider_calls.parameters.dialect``
(``step_downs`` of the call that learned it, ``learned_step_downs`` of the calls after). It is
re-probed: a later run (a new process) starts from the configured settings, and so does this
process once the record is :data:`REPROBE_AFTER_S` old.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from trading_pipelines.domain.models import Mode
from trading_pipelines.llm.schemas import response_json_schema


MAX_STEP_DOWNS = 4  # per call: at most this many extra HTTP calls after refusals
REPROBE_AFTER_S = 3600.0
"""A remembered step-down older than this (seconds) is re-probed: calls start from the configured setting again."""
STEP_DOWN_STATUSES = (400, 415, 422)
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
    ``None`` when the refusal names nothing this provider can lower. Only a 400/415/422 steps a
    setting down; a 5xx only drops the chart, and only when it says images or list content cannot
    be taken (see the module doc)."""
    client_refusal = status in STEP_DOWN_STATUSES
    if not (client_refusal or status >= 500):
        return None
    m = message.lower()

    def step(setting: str, old: Any, new: Any) -> dict[str, Any]:
        return {"setting": setting, "from": old, "to": new, "status": status, "message": message[:300]}

    if client_refusal and image_sent and d.image_detail is not None and "detail" in m:
        old, d.image_detail = d.image_detail, None
        return step("image_detail", old, None)
    if image_sent and (any(k in m for k in _IMAGE_REFUSED) or ("image" in m and any(k in m for k in _UNSUPPORTED))):
        d.chart = False
        return step("chart", "sent", "dropped")
    if not client_refusal:
        return None  # a server failure: retried by the SDK, never a reason to lower a setting
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


# ---- what was learned, per (base URL, model), for this process ------------------------------------

_now = time.time  # the clock of the records (tests move it)
_LEARNED: dict[tuple[str, str], list[dict[str, Any]]] = {}
_LEARNED_LOCK = threading.Lock()


def _host(base_url: str) -> str:
    from urllib.parse import urlsplit

    u = urlsplit(base_url)
    return f"{u.hostname}:{u.port}" if u.port else (u.hostname or "")


def remember(base_url: str, model: str, step: dict[str, Any]) -> dict[str, Any]:
    """Remember a step-down for (``base_url``, ``model``); the record as stored (the step plus
    ``base_url_host``, ``model``, ``learned_at`` ISO-8601 UTC). A record for the same setting and
    starting value replaces the older one."""
    t = _now()
    record = {**step, "base_url_host": _host(base_url), "model": model,
              "learned_at": datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds"), "_t": t}
    with _LEARNED_LOCK:
        kept = [r for r in _LEARNED.get((base_url, model), []) if (r["setting"], r["from"]) != (step["setting"], step["from"])]
        _LEARNED[(base_url, model)] = [*kept, record]
    return {k: v for k, v in record.items() if k != "_t"}


def learned(base_url: str, model: str) -> list[dict[str, Any]]:
    """The step-downs remembered for (``base_url``, ``model``) that are younger than
    :data:`REPROBE_AFTER_S`, oldest first (older ones are forgotten: re-probed)."""
    t = _now()
    with _LEARNED_LOCK:
        fresh = [r for r in _LEARNED.get((base_url, model), []) if t - r["_t"] < REPROBE_AFTER_S]
        if fresh:
            _LEARNED[(base_url, model)] = fresh
        else:
            _LEARNED.pop((base_url, model), None)
    return [{k: v for k, v in r.items() if k != "_t"} for r in fresh]


def forget(base_url: str | None = None, model: str | None = None) -> None:
    """Forget what was learned: for one server and model, for every model of one server
    (``model`` None), or everything (both None)."""
    with _LEARNED_LOCK:
        for key in [k for k in _LEARNED if base_url is None or (k[0] == base_url and model in (None, k[1]))]:
            del _LEARNED[key]


def apply_learned(d: _Dialect, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lower ``d`` (mutated) by each record whose setting still has the value it was refused at;
    the records applied."""
    applied = []
    for r in records:
        setting, old, new = r["setting"], r["from"], r["to"]
        if setting == "image_detail" and d.image_detail is not None and d.image_detail == old:
            d.image_detail = None
        elif setting == "chart" and d.chart:
            d.chart = False
        elif setting == "token_param" and d.token_param == old:
            d.token_param = new
        elif setting == "temperature" and d.temperature:
            d.temperature = False
        elif setting == "response_format" and d.response_format == old:
            d.response_format = new
        else:
            continue
        applied.append(r)
    return applied
