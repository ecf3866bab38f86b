"""Signal providers: turn one window's indicators (+ chart) into a :class:`Signal`.

Two providers share one interface, :class:`SignalProvider`:

- :class:`RulesSignalProvider` — the deterministic rule of :mod:`trading_pipelines.domain.rules`
  (offline default, no key);
- :class:`OpenAISignalProvider` — any OpenAI-compatible chat-completions server, through the
  official ``openai`` SDK, with the chart attached as a base64 PNG data URI.

Error as data: a provider never raises for a bad answer. An HTTP failure (after the SDK's own
retries), a refusal, empty content, invalid JSON, JSON that does not fit the mode's schema, an
action not allowed in the mode or a stop/take-profit on the wrong side of the entry all become a
``hold`` signal with confidence 0 and ``no_trade_reason`` saying what failed — a recorded
no-trade, never an order.

Spot and futures are separate end to end: separate prompt templates
(``prompts/spot_review.j2``, ``prompts/futures_review.j2``) and separate response schemas
(:class:`SpotSignalResponse`, :class:`FuturesSignalResponse`).

The API key is read from the environment by :func:`build_provider`; it is never logged and is
scrubbed from everything a :class:`ProviderResult` holds — prompt, request, the raw answer (a
server may echo it in a 200), thesis, no-trade reason, dialect record. NUL and the other C0
control characters except ``\n`` and ``\t`` are removed from every stored text (Postgres refuses
NUL in text).

Dialects (see :class:`OpenAISignalProvider`): plain-string content without an image, parts only
with one; ``response_format`` per config (``json_schema`` strict, llama.cpp's
``json_object``+``schema``, ``json_object``, none) with an automatic, recorded step-down when a
server refuses a setting.

The model's numbers are never trusted: an entry far from the last close, a stop or take-profit
on the wrong side of the last close, another instrument named, or duplicate JSON keys make the
answer a no-trade (the planner computes its own technical stop regardless).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import httpx2
import jinja2
import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trading_pipelines.config import OpenAIProviderConfig, RulesProviderConfig
from trading_pipelines.domain.models import FuturesAction, Mode, Signal, SpotAction
from trading_pipelines.domain.rules import fmt_num, rules_signal
from trading_pipelines.llm.context import AccountContext

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
RULES_PROVIDER = "rules"
RULES_MODEL = "rules-v1"
OPENAI_PROVIDER = "openai"
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_ENTRY_DEVIATION_PCT = 2.0
DEFAULT_MIN_PROMPT_TOKENS = 50
MAX_STEP_DOWNS = 4  # per call: at most this many extra HTTP calls after refusals
ResponseFormat = Literal["json_schema", "llamacpp_schema", "json_object", "none"]
RESPONSE_FORMAT_CHAIN: tuple[str, ...] = ("json_schema", "llamacpp_schema", "json_object", "none")
_ENTRY_ACTIONS = {SpotAction.BUY.value: 1, FuturesAction.LONG.value: 1, FuturesAction.SHORT.value: -1}
_INDICATOR_ORDER = (
    "close", "rsi", "macd", "macd_signal", "macd_hist", "atr",
    "bb_upper", "bb_middle", "bb_lower", "adx", "adx_pos", "adx_neg",
)  # fmt: skip


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


@lru_cache(maxsize=32)
def template_sha256(template_name: str) -> str | None:
    """Hex SHA-256 of the prompt template file's text (the template's version), ``None`` if absent."""
    path = PROMPTS_DIR / template_name
    try:
        return hashlib.sha256(path.read_text(encoding="utf-8").encode("utf-8")).hexdigest()
    except OSError:
        return None


def base_url_host(base_url: str | None) -> str | None:
    """``host[:port]`` of ``base_url`` only: never the scheme's credentials, path or query."""
    if not base_url:
        return None
    from urllib.parse import urlsplit

    u = urlsplit(base_url)
    if not u.hostname:
        return None
    return f"{u.hostname}:{u.port}" if u.port else u.hostname


class ProviderConfigError(ValueError):
    """A provider cannot be built (missing API key, unknown template). The message names the cause."""


# ---------------------------------------------------------------------------------------------
# Request / result
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Response schemas (one per mode)
# ---------------------------------------------------------------------------------------------

_PRICE = Field(default=None, gt=0, description="quote currency")


class _ResponseBase(BaseModel):
    # strict: "0.7" (a string) is not a confidence; allow_inf_nan: NaN is not a price.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    confidence: float = Field(ge=0, le=1)
    entry: float | None = _PRICE
    stop: float | None = _PRICE
    take_profit: float | None = _PRICE
    thesis: str = Field(min_length=1, max_length=4000)
    instrument: str | None = Field(default=None, description="the instrument the answer is about; must be the reviewed one")


class SpotSignalResponse(_ResponseBase):
    """The JSON object a model must answer with in spot mode (see ``prompts/spot_review.j2``)."""

    action: Literal["buy", "sell", "hold"]


class FuturesSignalResponse(_ResponseBase):
    """The JSON object a model must answer with in futures mode (see ``prompts/futures_review.j2``).
    ``leverage_hint`` is advisory only: the strategy's configured leverage applies."""

    action: Literal["long", "short", "close", "hold"]
    leverage_hint: float | None = Field(default=None, ge=1, le=125)


SignalResponse = SpotSignalResponse | FuturesSignalResponse


class InvalidSignalResponse(ValueError):
    """A model answer that cannot become a signal. The message says what is wrong."""


def response_schema(mode: Mode) -> type[SpotSignalResponse] | type[FuturesSignalResponse]:
    return SpotSignalResponse if mode is Mode.SPOT else FuturesSignalResponse


def _allowed_actions(mode: Mode) -> list[str]:
    return [a.value for a in (SpotAction if mode is Mode.SPOT else FuturesAction)]


def response_json_schema(mode: Mode) -> dict[str, Any]:
    """The JSON Schema sent to the server for ``mode`` (OpenAI ``json_schema`` strict mode and
    llama.cpp's ``json_object``+``schema`` alike).

    OpenAI's strict mode accepts it: every property is listed in ``required``,
    ``additionalProperties`` is false, optional values are ``type: [..., "null"]`` and no keyword
    strict mode rejects (``maxLength``, ``minLength``, ``pattern``, ``format``, ``default``,
    ``minimum``…) appears — bounds are checked after parsing by :func:`parse_signal_response`
    (``maxLength`` also crashes llama.cpp's grammar converter).
    """
    nullable_price = {"type": ["number", "null"], "description": "quote currency, or null"}
    props: dict[str, Any] = {
        "instrument": {"type": ["string", "null"], "description": "the instrument reviewed, or null"},
        "action": {"type": "string", "enum": _allowed_actions(mode)},
        "confidence": {"type": "number", "description": "0 to 1"},
        "entry": dict(nullable_price),
        "stop": dict(nullable_price),
        "take_profit": dict(nullable_price),
    }
    if mode is Mode.FUTURES:
        props["leverage_hint"] = {"type": ["number", "null"], "description": "advisory, 1 to 125, or null"}
    props["thesis"] = {"type": "string", "description": "one to three sentences"}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


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


_FENCE_RE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise _DuplicateKey(k)
        seen[k] = v
    return seen


def _reject_constant(name: str) -> Any:
    raise InvalidSignalResponse(f"response JSON contains {name}, which is not a number")


def _same_instrument(named: str, reviewed: str) -> bool:
    """``named`` equals ``reviewed`` ignoring case and spaces; a futures symbol's settle suffix
    (``BTC/USDT:USDT`` → ``BTC/USDT``) may be left out."""
    def norm(x: str) -> str:
        return "".join(x.split()).upper()

    n, r = norm(named), norm(reviewed)
    return n == r or (":" in r and n == r.split(":", 1)[0])


def parse_signal_response(
    mode: Mode,
    text: str | None,
    close: float | None = None,
    *,
    instrument: str | None = None,
    max_entry_deviation_pct: float | None = None,
) -> SignalResponse:
    """Parse and check a model's answer for ``mode``; the model's numbers are not trusted.

    Accepts one JSON object (optionally wrapped in a single ```json fence). Checks, in order:
    non-empty, valid JSON without a duplicate key at any depth (``"action":"hold", …,
    "action":"buy"`` is refused, not read as its last value) and without NaN/Infinity, an object,
    ``action`` allowed in ``mode``, the mode's schema (``extra="forbid"``, confidence 0..1,
    positive finite prices), the ``instrument`` named (if any) equal to ``instrument``, then for
    entries the price sides against ``entry`` (buy/long: ``stop < entry < take_profit``; short:
    ``take_profit < entry < stop``); ``entry`` (any action) within ``max_entry_deviation_pct``
    percent of ``close``; and the same sides against ``close`` — the last close, quote currency.
    Checks needing ``close``/``instrument``/the deviation are skipped when those are ``None``
    (or ``close`` is not finite).

    Raises :class:`InvalidSignalResponse` with a message naming the failed check.
    """
    if text is None or not text.strip():
        raise InvalidSignalResponse("empty response content")
    m = _FENCE_RE.match(text)
    body = m.group(1) if m else text
    try:
        obj = json.loads(body, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)
    except _DuplicateKey as e:
        raise InvalidSignalResponse(f"response JSON repeats the key {e.args[0]!r} (duplicate keys are ambiguous)") from None
    except json.JSONDecodeError as e:
        raise InvalidSignalResponse(f"response is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise InvalidSignalResponse("response JSON is nested too deeply") from None
    if not isinstance(obj, dict):
        raise InvalidSignalResponse(f"response JSON is a {type(obj).__name__}, expected an object")
    allowed = _allowed_actions(mode)
    if "action" in obj and obj["action"] not in allowed:
        raise InvalidSignalResponse(f"action {obj['action']!r} is not allowed in {mode.value} mode (allowed: {', '.join(allowed)})")
    schema = response_schema(mode)
    try:
        resp = schema.model_validate(obj)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "<root>"
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{loc}: {msg}")
        raise InvalidSignalResponse(f"response does not fit the {mode.value} schema: {'; '.join(problems)}") from None
    if instrument is not None and resp.instrument is not None and not _same_instrument(resp.instrument, instrument):
        raise InvalidSignalResponse(f"answer names instrument {resp.instrument!r}, but {instrument!r} was reviewed")
    market = close if close is not None and math.isfinite(close) and close > 0 else None
    if resp.entry is not None:
        _check_sides(resp, resp.entry, "entry")
    if market is not None and resp.entry is not None and max_entry_deviation_pct is not None:
        deviation = abs(resp.entry - market) / market * 100.0
        if not deviation <= max_entry_deviation_pct:
            raise InvalidSignalResponse(
                f"entry {fmt_num(resp.entry)} is {deviation:.4g}% from the last close {fmt_num(market)} "
                f"(max {fmt_num(max_entry_deviation_pct)}%)"
            )
    if market is not None:
        _check_sides(resp, market, "close")
    return resp


def _check_sides(resp: SignalResponse, ref: float, ref_name: str) -> None:
    direction = _ENTRY_ACTIONS.get(resp.action)
    if direction is None:
        return
    below, above = ("stop", "take_profit") if direction > 0 else ("take_profit", "stop")
    for name in (below, above):
        value = getattr(resp, name)
        if value is None:
            continue
        must_be_below = name == below
        if (must_be_below and not value < ref) or (not must_be_below and not value > ref):
            where = "below" if must_be_below else "above"
            raise InvalidSignalResponse(
                f"{name} {fmt_num(value)} must be {where} {ref_name} {fmt_num(ref)} for a {resp.action}"
            )


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------


def _num(x: Any) -> str:
    if x is None:
        return "n/a"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "n/a (warming up)" if math.isnan(f) else fmt_num(f)


@lru_cache(maxsize=1)
def _jinja_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PROMPTS_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = _num
    return env


def _indicator_order(key: str) -> tuple[int, int, str]:
    if key in _INDICATOR_ORDER:
        return (0 if key == "close" else 2, _INDICATOR_ORDER.index(key), key)
    for i, prefix in enumerate(("ema_", "sma_")):
        if key.startswith(prefix) and key[len(prefix) :].isdigit():
            return (1, i * 1000 + int(key[len(prefix) :]), key)
    return (3, 0, key)


def _iso(v: Any) -> str:
    if isinstance(v, datetime):
        v = v.astimezone(timezone.utc) if v.tzinfo else v.replace(tzinfo=timezone.utc)
        return v.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(v)


def _bar(b: Mapping[str, Any]) -> dict[str, Any]:
    def pick(short: str, long: str) -> Any:
        return b.get(short, b.get(long))

    return {
        "open_time": _iso(pick("open_time", "time")),
        "open": pick("o", "open"),
        "high": pick("h", "high"),
        "low": pick("l", "low"),
        "close": pick("c", "close"),
        "volume": pick("v", "volume"),
    }


def render_prompt(template_name: str, req: SignalRequest) -> str:
    """Render ``prompts/<template_name>`` for ``req`` with Jinja2 (``StrictUndefined``).

    Template variables: ``strategy``, ``instrument``, ``timeframe``, ``mode`` (str),
    ``window_end`` (``YYYY-MM-DDTHH:MM:SSZ``), ``indicators`` (list of ``(name, value)`` with
    formatted values, NaN → ``"n/a (warming up)"``), ``bars`` (list of dicts ``open_time``,
    ``open``, ``high``, ``low``, ``close``, ``volume``), ``chart_sha256``, ``chart_key``,
    ``close``, ``account`` (an ``AccountContext`` or ``None``); filter ``num`` formats a number. Raises ``jinja2.TemplateNotFound`` /
    ``jinja2.UndefinedError`` on a missing template or variable.
    """
    tpl = _jinja_env().get_template(template_name)
    indicators = [(k, _num(req.summary[k])) for k in sorted(req.summary, key=_indicator_order)]
    return tpl.render(
        strategy=req.strategy,
        instrument=req.instrument,
        timeframe=req.timeframe,
        mode=req.mode.value,
        window_end=_iso(req.window_end),
        indicators=indicators,
        bars=[_bar(b) for b in req.recent_bars],
        chart_sha256=req.chart_sha256,
        chart_key=req.chart_key,
        close=req.summary.get("close"),
        account=req.account,
    )


def prompt_hash(prompt: str, chart_sha256: str | None, model: str, template_name: str) -> str:
    """Hex SHA-256 over the canonical JSON of (prompt text, chart SHA-256, model, template name):
    identical inputs give the identical hash, so a call can be found, compared and replayed."""
    canonical = json.dumps(
        {"chart_sha256": chart_sha256, "model": model, "prompt": prompt, "template": template_name},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_template(template_name: str) -> None:
    try:
        _jinja_env().get_template(template_name)
    except jinja2.TemplateNotFound:
        raise ProviderConfigError(f"prompt template {template_name!r} not found in {PROMPTS_DIR}") from None


# ---------------------------------------------------------------------------------------------
# Providers
# ---------------------------------------------------------------------------------------------


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

    def cache_key(self, req: SignalRequest) -> str:
        """The response cache's key of the call ``generate(req)`` would make (see
        :func:`call_cache_key`): the prompt is rendered as the call would first send it."""
        sent = req if (req.chart_png is not None and self.reads_chart) else req.model_copy(update={"chart_png": None})
        prompt = clean_text(render_prompt(self.template_name, sent), getattr(self, "_secret", None))
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


class OpenAISignalProvider(SignalProvider):
    """An OpenAI-compatible chat-completions model, through the official ``openai`` SDK.

    One user message per call: the rendered prompt as a **plain string** when no image is sent
    (string-only chat templates answer 500 to a list; llama.cpp's built-in formats drop it), or
    a list of parts — text, then an ``image_url`` part with ``data:image/png;base64,...`` (and
    ``detail`` only when ``image_detail`` is set: vLLM rejects the key) — when the chart is sent
    (``send_chart``, default on). ``response_format`` per ``response_format``:
    ``json_schema`` (strict, :func:`response_json_schema`), ``llamacpp_schema``
    (``{"type": "json_object", "schema": …}``), ``json_object`` or ``none`` (key left out).
    ``reasoning``: ``max_completion_tokens`` instead of ``max_tokens`` and no ``temperature``.

    Step-downs: when the server refuses a setting (400/415/422, or a 5xx after the SDK's retries)
    with a recognisable message, the call is repeated once per step with that setting lowered —
    ``image_detail`` left out; the chart dropped (``… is not a multimodal model``, image/vision
    not supported, list content refused; the prompt is re-rendered without it);
    ``max_tokens`` → ``max_completion_tokens``; ``temperature`` left out; ``response_format``
    down the chain json_schema → llamacpp_schema → json_object → none (``must be 'json_schema'
    or 'text'`` — LM Studio — goes to json_schema). At most :data:`MAX_STEP_DOWNS` per call;
    each is recorded in ``ProviderResult.dialect`` and remembered by this provider, so later
    calls start from the lowered settings (recorded as ``learned_step_downs``).

    Retries: transient HTTP errors (408/409/429/5xx, connection errors) are retried by the SDK
    (``max_retries``, exponential back-off with jitter, honours ``Retry-After``/``retry-after-ms``);
    other 4xx are never retried. A timed-out attempt (``timeout_s`` per attempt) is retried only
    with ``retry_timeouts`` — a one-request-at-a-time local server would still be computing it.
    ``base_url`` ``None`` means OpenAI's public endpoint. With ``client`` given, that client (and
    its timeout/retry settings) is used as is.

    Answers: ``finish_reason=length``, a reported ``prompt_tokens`` below ``min_prompt_tokens``
    (the server dropped or truncated the prompt), an empty answer, a refusal, or an answer
    :func:`parse_signal_response` refuses (numbers checked against the last close and the
    reviewed instrument) are no-trades with their reason.

    The API key is used only to build the client; it is scrubbed from everything returned (see
    :func:`sanitize_result`), and is not in the repr or logs. Raises :class:`ProviderConfigError`
    at construction for an empty key (without ``client``), an unknown template or an unknown
    ``response_format``.
    """

    provider_name = OPENAI_PROVIDER

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None,
        api_key: str,
        temperature: float = 0.0,
        max_tokens: int = 600,
        timeout_s: float = 60.0,
        template_name: str,
        client: openai.OpenAI | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_timeouts: bool = False,
        send_chart: bool = True,
        image_detail: Literal["auto", "low", "high"] | None = None,
        response_format: ResponseFormat = "json_schema",
        reasoning: bool = False,
        min_prompt_tokens: int = DEFAULT_MIN_PROMPT_TOKENS,
        max_entry_deviation_pct: float = DEFAULT_MAX_ENTRY_DEVIATION_PCT,
        agent: str | None = None,
        system_text: str | None = None,
    ) -> None:
        _check_template(template_name)
        if client is None and not api_key:
            raise ProviderConfigError("OpenAISignalProvider needs a non-empty api_key")
        if response_format not in RESPONSE_FORMAT_CHAIN:
            raise ProviderConfigError(f"unknown response_format {response_format!r} (one of {', '.join(RESPONSE_FORMAT_CHAIN)})")
        if image_detail not in (None, "auto", "low", "high"):
            raise ProviderConfigError(f"unknown image_detail {image_detail!r} (auto, low, high or None)")
        self.model = model
        self.base_url = base_url or DEFAULT_OPENAI_BASE_URL
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.template_name = template_name
        self.reads_chart = send_chart  # without it the pipeline passes no chart (nor hashes one)
        self.min_prompt_tokens = min_prompt_tokens
        self.max_entry_deviation_pct = max_entry_deviation_pct
        self.retry_timeouts = retry_timeouts if client is None else True
        self.agent = agent
        self.system_text = system_text
        self.reads_account = agent is not None
        self._secret = api_key
        self._client = client or openai.OpenAI(
            api_key=api_key, base_url=self.base_url, timeout=timeout_s, max_retries=max_retries,
            http_client=None if retry_timeouts else openai.DefaultHttpxClient(transport=_TimeoutIsFinal()),
        )
        self.max_retries = self._client.max_retries
        self._lock = threading.Lock()
        self._dialect = _Dialect(
            response_format=response_format,
            chart=send_chart,
            image_detail=image_detail,
            token_param="max_completion_tokens" if reasoning else "max_tokens",
            temperature=not reasoning,
        )
        self._learned: list[dict[str, Any]] = []
        self._configured = replace(self._dialect)

    cacheable = True

    def call_parameters(self) -> dict[str, Any]:
        d = self._configured
        params = {"temperature": self.temperature if d.temperature else None, "token_param": d.token_param,
                  "max_tokens": self.max_tokens, "response_format": d.response_format, "image_detail": d.image_detail,
                  "send_chart": d.chart}
        if self.agent is not None:  # the system message is part of the request: another one is another call
            params["agent"] = self.agent
            params["system_sha256"] = hashlib.sha256((self.system_text or "").encode("utf-8")).hexdigest()
        return params

    def __repr__(self) -> str:
        return f"OpenAISignalProvider(model={self.model!r}, base_url={self.base_url!r}, template_name={self.template_name!r})"

    def _scrub(self, text: str) -> str:
        return clean_text(text, self._secret)

    @property
    def dialect(self) -> dict[str, Any]:
        """The settings the next call starts from (after step-downs learned so far)."""
        with self._lock:
            return asdict(self._dialect)

    def request_body(self, prompt: str, chart_png: bytes | None, mode: Mode = Mode.SPOT,
                     dialect: _Dialect | None = None) -> dict[str, Any]:
        """The chat-completions request body (keyword arguments of ``chat.completions.create``,
        identical to the JSON sent) for ``dialect`` (default: the current one)."""
        d = dialect or self.dialect_state()
        content: str | list[dict[str, Any]]
        if chart_png is not None and d.chart:
            image: dict[str, Any] = {"url": "data:image/png;base64," + base64.b64encode(chart_png).decode("ascii")}
            if d.image_detail is not None:
                image["detail"] = d.image_detail
            content = [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": image}]
        else:
            content = prompt
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system_text}] if self.system_text else []
        body: dict[str, Any] = {"model": self.model, "messages": [*messages, {"role": "user", "content": content}]}
        if d.temperature:
            body["temperature"] = self.temperature
        body[d.token_param] = self.max_tokens
        rf = response_format_body(d.response_format, mode)
        if rf is not None:
            body["response_format"] = rf
        return body

    def dialect_state(self) -> _Dialect:
        with self._lock:
            return replace(self._dialect)

    def _learn(self, d: _Dialect, step: dict[str, Any]) -> None:
        with self._lock:
            self._dialect = replace(d)
            self._learned.append(step)

    def generate(self, req: SignalRequest) -> ProviderResult:
        return sanitize_result(self._generate(req), self._secret)

    def _generate(self, req: SignalRequest) -> ProviderResult:
        t0 = time.perf_counter()
        with self._lock:
            d = replace(self._dialect)
            learned = list(self._learned)
        sent_req = req if (req.chart_png is not None and d.chart) else req.model_copy(update={"chart_png": None})
        try:
            prompt = self._scrub(render_prompt(self.template_name, sent_req))
        except Exception as e:  # noqa: BLE001 - error as data
            return self._no_trade(req, f"prompt rendering failed (template {self.template_name!r}): {type(e).__name__}: {e}", t0)
        where = f"chat.completions (model {self.model})"
        steps: list[dict[str, Any]] = []
        calls = 0

        def record(chart: str) -> dict[str, Any]:
            return {**asdict(d), "content": "parts" if chart == "sent" else "string", "chart": chart,
                    "temperature": self.temperature if d.temperature else None,
                    "http_calls": calls, "step_downs": list(steps), "learned_step_downs": learned}

        chart_state = "none" if req.chart_png is None else ("sent" if d.chart else "off")
        while True:
            body = self.request_body(prompt, sent_req.chart_png, req.mode, d)
            request_json = redact_request_body(body, sent_req.chart_sha256)
            calls += 1
            try:
                completion = self._client.chat.completions.create(**body)
                break
            except openai.APIStatusError as e:
                msg = self._scrub(str(e.message))[:500]
                step = _step_down(d, e.status_code, msg, image_sent=sent_req.chart_png is not None and d.chart)
                if step is not None and len(steps) < MAX_STEP_DOWNS:
                    steps.append(step)
                    self._learn(d, step)
                    if step["setting"] == "chart":
                        chart_state = "dropped"
                        sent_req = req.model_copy(update={"chart_png": None})
                        prompt = self._scrub(render_prompt(self.template_name, sent_req))
                    continue
                if step is not None:
                    msg += f" (no step-down left: {MAX_STEP_DOWNS} per call)"
                retried = f"after up to {self.max_retries} retries" if _sdk_retries(e.status_code) else "not retried"
                return self._no_trade(sent_req, f"HTTP {e.status_code} from {where} {retried}: {msg}", t0, prompt=prompt,
                                      request_json=request_json, dialect=record(chart_state))
            except openai.APITimeoutError:
                retried = f"after up to {self.max_retries} retries" if self.retry_timeouts else "not retried (retry_timeouts off)"
                return self._no_trade(sent_req, f"timeout ({self.timeout_s}s per attempt) calling {where}, {retried}", t0,
                                      prompt=prompt, request_json=request_json, dialect=record(chart_state))
            except openai.APIConnectionError as e:
                msg = self._scrub(f"{e}; cause: {e.__cause__!r}" if e.__cause__ else str(e))[:500]
                return self._no_trade(sent_req, f"connection error calling {where} after up to {self.max_retries} retries: {msg}",
                                      t0, prompt=prompt, request_json=request_json, dialect=record(chart_state))
            except Exception as e:  # noqa: BLE001 - error as data
                msg = self._scrub(f"{type(e).__name__}: {e}")[:500]
                return self._no_trade(sent_req, f"{where} failed: {msg}", t0, prompt=prompt, request_json=request_json,
                                      dialect=record(chart_state))

        ctx = {"prompt": prompt, "request_json": request_json, "dialect": record(chart_state)}
        usage: dict[str, int] = {}
        if getattr(completion, "usage", None) is not None:
            u = completion.usage
            usage = {
                k: int(getattr(u, k))
                for k in ("prompt_tokens", "completion_tokens", "total_tokens")
                if isinstance(getattr(u, k, None), int)
            }
        choices = getattr(completion, "choices", None) or []
        if not choices:
            return self._no_trade(sent_req, f"{where} returned no choices", t0, usage=usage, **ctx)
        choice = choices[0]
        message = choice.message
        # the answer as stored: cleaned (control characters, the key) before parsing, so the stored
        # raw text and the parsed signal can never disagree
        raw = message.content
        text = None if raw is None else self._scrub(raw if isinstance(raw, str) else str(raw))
        ctx["response_text"] = text
        pt = usage.get("prompt_tokens")
        if pt is not None and pt < self.min_prompt_tokens:
            return self._no_trade(
                sent_req, f"{where} reported prompt_tokens={pt} for a {len(prompt)}-character prompt (below min_prompt_tokens "
                f"{self.min_prompt_tokens}): the server dropped or truncated the prompt", t0, usage=usage, **ctx)
        refusal = getattr(message, "refusal", None)
        if refusal:
            return self._no_trade(sent_req, f"model refused in {where}: {self._scrub(str(refusal))[:500]}", t0, usage=usage, **ctx)
        if text is None or not text.strip():
            return self._no_trade(
                sent_req, f"empty response content from {where} (finish_reason={choice.finish_reason})", t0, usage=usage, **ctx)
        if choice.finish_reason == "length":
            return self._no_trade(sent_req, f"answer truncated at {d.token_param}={self.max_tokens} "
                                  f"(finish_reason=length) in {where}", t0, usage=usage, **ctx)
        close = req.summary.get("close")
        try:
            resp = parse_signal_response(req.mode, text, close, instrument=req.instrument,
                                         max_entry_deviation_pct=self.max_entry_deviation_pct)
        except InvalidSignalResponse as e:
            return self._no_trade(sent_req, f"model answer rejected: {self._scrub(str(e))}", t0, usage=usage, **ctx)

        signal = self._signal(sent_req, prompt, action=resp.action, confidence=resp.confidence, entry=resp.entry,
                              stop=resp.stop, take_profit=resp.take_profit, thesis=self._scrub(resp.thesis))
        result = ProviderResult(
            signal=signal,
            prompt=prompt,
            response_text=text,
            usage=usage,
            latency_ms=(time.perf_counter() - t0) * 1000.0,
            request_json=request_json,
            template_name=self.template_name,
            chart_sha256=sent_req.chart_sha256,
            dialect=ctx["dialect"],
        )
        log.info(
            "signal %s %s %s: %s conf=%.2f model=%s latency_ms=%.0f tokens=%s step_downs=%d",
            req.strategy, req.instrument, _iso(req.window_end), resp.action, resp.confidence,
            self.model, result.latency_ms, usage.get("total_tokens"), len(steps),
        )  # fmt: skip
        return result


@dataclass
class _Dialect:
    """The request settings of one call (mutable copy; step-downs lower them)."""

    response_format: str
    chart: bool
    image_detail: str | None
    token_param: str
    temperature: bool


class _TimeoutIsFinal(httpx2.HTTPTransport):
    """Turns a timeout into :class:`openai.APITimeoutError` inside the transport: the SDK
    propagates its own errors without retrying, so a timed-out attempt is not sent again."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return super().handle_request(request)
        except httpx2.TimeoutException as e:
            raise openai.APITimeoutError(request=request) from e


def _sdk_retries(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


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


_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: str, secret: str | None = None) -> str:
    """``text`` without NUL and the other C0 control characters (and DEL) except ``\\n`` and
    ``\\t``, with every occurrence of ``secret`` replaced by ``***``."""
    out = _CONTROL_RE.sub("", text)
    if secret:
        out = out.replace(secret, "***")
        if _CONTROL_RE.sub("", secret) != secret:
            out = out.replace(_CONTROL_RE.sub("", secret), "***")
    return out


def _clean_deep(v: Any, secret: str | None) -> Any:
    if isinstance(v, str):
        return clean_text(v, secret)
    if isinstance(v, dict):
        return {(clean_text(k, secret) if isinstance(k, str) else k): _clean_deep(x, secret) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean_deep(x, secret) for x in v]
    return v


def sanitize_result(res: ProviderResult, secret: str | None = None) -> ProviderResult:
    """``res`` with every stored text cleaned by :func:`clean_text` — prompt, raw answer,
    request body, dialect record, the signal's thesis and no-trade reason (``secret`` scrubbed)."""
    sig = res.signal
    signal = sig.model_copy(update={
        "thesis": clean_text(sig.thesis, secret),
        "no_trade_reason": None if sig.no_trade_reason is None else clean_text(sig.no_trade_reason, secret),
    })
    return res.model_copy(update={
        "signal": signal,
        "prompt": clean_text(res.prompt, secret),
        "response_text": None if res.response_text is None else clean_text(res.response_text, secret),
        "request_json": None if res.request_json is None else _clean_deep(res.request_json, secret),
        "dialect": None if res.dialect is None else _clean_deep(res.dialect, secret),
    })


def redact_request_body(body: dict[str, Any], chart_sha256: str | None) -> dict[str, Any]:
    """A deep copy of ``body`` with every ``data:image/...`` URL replaced by
    ``"<chart sha256=...>"``, so the ledger stores the exact request minus the image bytes."""
    placeholder = f"<chart sha256={chart_sha256}>"

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str) and v.startswith("data:image/"):
            return placeholder
        return v

    return walk(body)


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
            from trading_pipelines.llm.agents import agent_for

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
        )
    raise TypeError(f"unknown signal provider config {type(cfg).__name__}")
