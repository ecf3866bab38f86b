"""The OpenAI-compatible provider: any OpenAI-compatible chat-completions server, through the
official ``openai`` SDK, with the chart attached as a base64 PNG data URI
(:class:`OpenAISignalProvider`).

How it speaks to a server and steps down when a setting is refused:
:mod:`trading_pipelines.llm.dialects`. Its answers are checked by
:func:`~trading_pipelines.llm.parsing.parse_signal_response`; the API key is never logged and is
scrubbed from everything it returns (:func:`~trading_pipelines.llm.parsing.sanitize_result`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from dataclasses import asdict, replace
from typing import Any, Literal

import httpx2
import openai

from trading_pipelines.domain.models import Mode
from trading_pipelines.llm.calls import SignalProvider, base_url_host
from trading_pipelines.llm.capacity import _NO_PROBE_HOSTS, PROBE_TIMEOUT_S, ServerCapacity, capacity_for, probe_slots
from trading_pipelines.llm import dialects
from trading_pipelines.llm.dialects import (
    MAX_STEP_DOWNS,
    RESPONSE_FORMAT_CHAIN,
    ResponseFormat,
    _Dialect,
    _step_down,
    apply_learned,
    response_format_body,
)
from trading_pipelines.llm.parsing import (
    InvalidSignalResponse,
    clean_text,
    parse_signal_response,
    redact_request_body,
    sanitize_result,
)
from trading_pipelines.llm.prompts import _check_template, _iso, render_prompt
from trading_pipelines.llm.requests import ProviderConfigError, ProviderResult, SignalRequest

log = logging.getLogger(__name__)


DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_PROVIDER = "openai"
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_ENTRY_DEVIATION_PCT = 2.0
DEFAULT_MIN_PROMPT_TOKENS = 50
DEFAULT_MAX_CONCURRENT_CALLS = 4

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

    Step-downs: when the server refuses a setting with a 400/415/422 whose message names it, the
    call is repeated once per step with that setting lowered — ``image_detail`` left out; the
    chart dropped (``… is not a multimodal model``, image/vision not supported, list content
    refused — also on a 5xx saying so; the prompt is re-rendered without it);
    ``max_tokens`` → ``max_completion_tokens``; ``temperature`` left out; ``response_format``
    down the chain json_schema → llamacpp_schema → json_object → none (``must be 'json_schema'
    or 'text'`` — LM Studio — goes to json_schema). Any other 5xx is retried by the SDK and never
    lowers a setting. At most :data:`MAX_STEP_DOWNS` per call; each is recorded in
    ``ProviderResult.dialect`` and remembered per (base URL, model) for the process
    (:func:`trading_pipelines.llm.dialects.remember`), so later calls of every provider of that
    server and model start from the lowered settings (recorded as ``learned_step_downs``) until
    the record is re-probed (a later run, or :data:`~trading_pipelines.llm.dialects.REPROBE_AFTER_S`).

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
        max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS,
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
        self.max_concurrent_calls = max(1, int(max_concurrent_calls))
        self._probe = client is None and base_url_host(self.base_url) not in _NO_PROBE_HOSTS
        self._client = client or openai.OpenAI(
            api_key=api_key, base_url=self.base_url, timeout=timeout_s, max_retries=max_retries,
            http_client=openai.DefaultHttpxClient(transport=_Transport(final_timeouts=not retry_timeouts)),
        )
        self.max_retries = self._client.max_retries
        self._lock = threading.Lock()
        self._configured = _Dialect(
            response_format=response_format,
            chart=send_chart,
            image_detail=image_detail,
            token_param="max_completion_tokens" if reasoning else "max_tokens",
            temperature=not reasoning,
        )

    cacheable = True

    def capacity(self) -> ServerCapacity:
        """This server's :class:`ServerCapacity` (process-wide; the first call to a server asks it
        for its slot count, see :func:`probe_slots`, unless ``client`` was given or the server is
        OpenAI's API)."""
        probe = (lambda: probe_slots(self.base_url, self._secret, min(PROBE_TIMEOUT_S, self.timeout_s))) if self._probe else None
        return capacity_for(self.base_url, self.max_concurrent_calls, probe)

    def concurrency(self) -> int:
        """Calls to send this server at once now: ``max_concurrent_calls``, no more than the
        server's reported slots or its current AIMD limit (see :class:`ServerCapacity`)."""
        return min(self.max_concurrent_calls, self.capacity().allowed())

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
        """The settings the next call starts from (after the step-downs remembered for this
        server and model)."""
        return asdict(self.dialect_state())

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
        return self._start_state()[0]

    def _start_state(self) -> tuple[_Dialect, list[dict[str, Any]]]:
        """(the configured settings lowered by what is remembered for this server and model, the
        records applied)."""
        d = replace(self._configured)
        return d, apply_learned(d, dialects.learned(self.base_url, self.model))

    def generate(self, req: SignalRequest) -> ProviderResult:
        return sanitize_result(self._generate(req), self._secret)

    def _generate(self, req: SignalRequest) -> ProviderResult:
        t0 = time.perf_counter()
        d, learned = self._start_state()
        sent_req = req if (req.chart_png is not None and d.chart) else req.model_copy(update={"chart_png": None})
        try:
            prompt = self._scrub(render_prompt(self.template_name, sent_req))
        except Exception as e:  # noqa: BLE001 - error as data
            return self._no_trade(req, f"prompt rendering failed (template {self.template_name!r}): {type(e).__name__}: {e}", t0)
        where = f"chat.completions (model {self.model})"
        steps: list[dict[str, Any]] = []
        calls = 0
        cap = self.capacity()
        timeout_retried = False
        extra = 0.0
        concurrency = cap.allowed()

        def record(chart: str) -> dict[str, Any]:
            return {**asdict(d), "content": "parts" if chart == "sent" else "string", "chart": chart,
                    "temperature": self.temperature if d.temperature else None,
                    "http_calls": calls, "step_downs": list(steps), "learned_step_downs": learned,
                    "server_slots": cap.slots, "concurrency": concurrency, "timeout_retried": timeout_retried}

        chart_state = "none" if req.chart_png is None else ("sent" if d.chart else "off")
        while True:
            body = self.request_body(prompt, sent_req.chart_png, req.mode, d)
            request_json = redact_request_body(body, sent_req.chart_sha256)
            calls += 1
            sent_at = cap.acquire()
            concurrency, extra = cap.allowed(), cap.extra_timeout()
            outcome = "error"
            _CALL.sent = (cap, sent_at)
            try:
                # the server may still be computing attempts given up on: their work is ahead of this one
                completion = self._client.chat.completions.create(**body, **({"timeout": self.timeout_s + extra} if extra else {}))
                outcome = "ok"
                break
            except openai.APIStatusError as e:
                outcome = "overload" if e.status_code == 429 else "error"
                msg = self._scrub(str(e.message))[:500]
                step = _step_down(d, e.status_code, msg, image_sent=sent_req.chart_png is not None and d.chart)
                if step is not None and len(steps) < MAX_STEP_DOWNS:
                    steps.append(dialects.remember(self.base_url, self.model, step))
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
                outcome = "timeout"
                if not self.retry_timeouts and not timeout_retried:
                    timeout_retried = True  # once, at the concurrency the timeout lowers (released below)
                    continue
                retried = (f"after up to {self.max_retries} retries" if self.retry_timeouts
                           else f"retried once at concurrency {concurrency}")
                per = f"{self.timeout_s}s per attempt" + (f", +{extra:.1f}s for the server's backlog" if extra else "")
                return self._no_trade(sent_req, f"timeout ({per}) calling {where}, {retried}", t0,
                                      prompt=prompt, request_json=request_json, dialect=record(chart_state))
            except openai.APIConnectionError as e:
                msg = self._scrub(f"{e}; cause: {e.__cause__!r}" if e.__cause__ else str(e))[:500]
                return self._no_trade(sent_req, f"connection error calling {where} after up to {self.max_retries} retries: {msg}",
                                      t0, prompt=prompt, request_json=request_json, dialect=record(chart_state))
            except Exception as e:  # noqa: BLE001 - error as data
                msg = self._scrub(f"{type(e).__name__}: {e}")[:500]
                return self._no_trade(sent_req, f"{where} failed: {msg}", t0, prompt=prompt, request_json=request_json,
                                      dialect=record(chart_state))
            finally:
                _CALL.sent = None
                cap.release(sent_at, outcome, self.timeout_s)

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
        # parsed as received: a control character inside a token is a broken answer, never one to
        # repair ("b\u0000uy" is not "buy"); only the stored copy is cleaned (control characters, the key)
        raw = message.content
        received = None if raw is None else (raw if isinstance(raw, str) else str(raw))
        text = None if received is None else self._scrub(received)
        reasoning = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
        reasoning = reasoning if isinstance(reasoning, str) else None
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
            resp = parse_signal_response(req.mode, received, close, instrument=req.instrument,
                                         max_entry_deviation_pct=self.max_entry_deviation_pct, reasoning=reasoning)
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


_CALL = threading.local()  # (capacity, send time) of the attempt this thread is making


class _Transport(httpx2.HTTPTransport):
    """The provider's HTTP transport. ``final_timeouts``: a timeout becomes
    :class:`openai.APITimeoutError` inside the transport (the SDK propagates its own errors
    without retrying, so the SDK does not send a timed-out attempt again; the provider decides).
    Every 429 the SDK is about to retry lowers the server's :class:`ServerCapacity`."""

    def __init__(self, *, final_timeouts: bool) -> None:
        super().__init__()
        self.final_timeouts = final_timeouts

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = super().handle_request(request)
        except httpx2.TimeoutException as e:
            if not self.final_timeouts:
                raise
            raise openai.APITimeoutError(request=request) from e
        sent = getattr(_CALL, "sent", None)
        if response.status_code == 429 and sent is not None:
            sent[0].overloaded(sent[1])
        return response


def _sdk_retries(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500
