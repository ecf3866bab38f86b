"""A scripted, OpenAI-compatible chat-completions HTTP server for tests.

OpenAI cannot be reached from the test environment, so the "model" is this local server: a
stdlib ``http.server`` in a thread on 127.0.0.1 (port 0 → a free port) that answers
``POST /v1/chat/completions`` from a queue of scripted responses (status, JSON or raw body,
headers) and records every request it receives (path, headers, parsed JSON body). The real
``openai`` SDK talks to it over HTTP via ``base_url``, so request building, retries, response
parsing and error mapping are the SDK's own.

Scripted errors carry ``retry-after-ms`` so the SDK's retry back-off stays in milliseconds.
When the queue is empty the server answers 500 with ``x-should-retry: false`` and the message
``stub: no scripted response left``, so a test that under-scripts fails visibly.

Dialects (``OpenAIStubServer(dialect=...)``): before a scripted answer is used, the request is
checked the way a real server checks it, and a refusal is answered without consuming the
queue (messages as those servers word them):

- ``openai``: ``response_format`` ``json_schema`` with ``strict: true`` must be a schema strict
  mode accepts (every property required, ``additionalProperties: false``, no rejected keyword);
- ``openai-reasoning``: as ``openai``, plus 400 for ``max_tokens`` and for ``temperature``;
- ``lmstudio``: 400 for ``response_format`` ``json_object`` ("must be 'json_schema' or 'text'");
- ``vllm``: 400 for an ``image_url.detail`` key, 400 "… is not a multimodal model" for an image;
- ``llamacpp``: 500 for list content ("can only concatenate str (not "list") to str"), 400 for
  ``json_schema``, takes ``{"type": "json_object", "schema": …}``, 500 for a schema holding
  ``maxLength``;
- ``ollama``: 500 for an image sent to a text-only model.

``ScriptedResponse.delay_s`` delays an answer (slow servers, timeouts).

``OpenAIStubServer(slots=N)`` serves at most N chat requests at once, like a llama.cpp server
with N slots (``--parallel``): a request waits for a free slot, then takes its answer's
``delay_s`` to "compute" it. A request whose client gave up (timed out) is still computed to the
end, holding its slot, as llama-cpp-python's server does with a non-streaming request.
``held_max`` is the most requests held in slots at once. ``props`` (a dict) is served at
``GET /props`` (llama.cpp's server reports ``total_slots`` there); without it ``GET`` is a 404.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class ScriptedResponse:
    """``body``: a dict (sent as JSON) or a str (sent verbatim)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw text if it was not JSON


def completion_body(
    content: str | None,
    *,
    model: str = "gpt-4o-mini",
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    refusal: str | None = None,
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """A chat.completion response body in OpenAI's wire format."""
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1714564800,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def error_body(message: str, type_: str = "server_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": None}}


DIALECTS = ("openai", "openai-reasoning", "lmstudio", "vllm", "llamacpp", "ollama")

# keywords OpenAI's strict structured outputs refuse (kept conservative, as the provider must)
STRICT_REJECTED_KEYWORDS = frozenset({
    "maxLength", "minLength", "pattern", "format", "default", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties",
    "patternProperties", "propertyNames", "unevaluatedProperties", "contains", "if", "then", "else", "not",
})


def strict_schema_problems(schema: Any, path: str = "$") -> list[str]:
    """What OpenAI's strict mode would refuse in ``schema`` (empty list: accepted)."""
    problems: list[str] = []
    if isinstance(schema, dict):
        for k in schema:
            if k in STRICT_REJECTED_KEYWORDS:
                problems.append(f"{path}: '{k}' is not permitted")
        types = schema.get("type")
        types = types if isinstance(types, list) else [types]
        if "object" in types:
            props = schema.get("properties", {})
            if schema.get("additionalProperties") is not False:
                problems.append(f"{path}: 'additionalProperties' is required to be supplied and to be false")
            missing = [p for p in props if p not in schema.get("required", [])]
            if missing:
                problems.append(f"{path}: 'required' is required to include every property; missing {missing}")
            for name, sub in props.items():
                problems += strict_schema_problems(sub, f"{path}.{name}")
        if "items" in schema:
            problems += strict_schema_problems(schema["items"], f"{path}[]")
        for key in ("anyOf", "$defs", "definitions"):
            subs = schema.get(key)
            for i, sub in enumerate(subs.values() if isinstance(subs, dict) else subs or []):
                problems += strict_schema_problems(sub, f"{path}.{key}[{i}]")
    return problems


def _contains_key(v: Any, key: str) -> bool:
    if isinstance(v, dict):
        return key in v or any(_contains_key(x, key) for x in v.values())
    if isinstance(v, list):
        return any(_contains_key(x, key) for x in v)
    return False


def _image_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for msg in body.get("messages", []) if isinstance(msg.get("content"), list)
            for p in msg["content"] if isinstance(p, dict) and p.get("type") == "image_url"]


def dialect_refusal(dialect: str | None, body: Any) -> ScriptedResponse | None:
    """The error ``dialect``'s server answers to ``body``, or ``None`` when it would accept it."""
    if dialect is None or not isinstance(body, dict):
        return None

    def err(status: int, message: str, type_: str = "invalid_request_error") -> ScriptedResponse:
        return ScriptedResponse(status, error_body(message, type_), {"retry-after-ms": "1"})

    rf = body.get("response_format") or {}
    rf_type = rf.get("type") if isinstance(rf, dict) else None
    images = _image_parts(body)
    lists = any(isinstance(m.get("content"), list) for m in body.get("messages", []))
    model = body.get("model", "model")
    if dialect in ("openai", "openai-reasoning"):
        if dialect == "openai-reasoning":
            if "max_tokens" in body:
                return err(400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                "Use 'max_completion_tokens' instead.")
            if "temperature" in body and body["temperature"] != 1:
                return err(400, f"Unsupported value: 'temperature' does not support {body['temperature']} with this "
                                "model. Only the default (1) value is supported.")
        if rf_type == "json_schema":
            js = rf.get("json_schema") or {}
            if js.get("strict"):
                problems = strict_schema_problems(js.get("schema"))
                if problems:
                    return err(400, f"Invalid schema for response_format '{js.get('name')}': {problems[0]}")
        elif rf_type not in (None, "json_object", "text"):
            return err(400, f"Invalid value: '{rf_type}'. Supported values are: 'json_object', 'json_schema', and 'text'.")
    elif dialect == "lmstudio":
        if rf_type not in (None, "json_schema", "text"):
            return err(400, "'response_format.type' must be 'json_schema' or 'text'")
    elif dialect == "vllm":
        if any("detail" in (p.get("image_url") or {}) for p in images):
            return err(400, "[{'type': 'extra_forbidden', 'loc': ('body', 'messages', 0, 'content', 1, 'image_url', "
                            "'detail'), 'msg': 'Extra inputs are not permitted'}]", "BadRequestError")
        if images:
            return err(400, f"{model} is not a multimodal model", "BadRequestError")
    elif dialect == "llamacpp":
        if lists:
            return err(500, 'can only concatenate str (not "list") to str', "server_error")
        if rf_type == "json_schema":
            return err(400, 'response_format type must be one of "text" or "json_object", but got: json_schema')
        if _contains_key(rf, "maxLength"):
            return err(500, "std::runtime_error: JSON schema conversion failed (maxLength)", "server_error")
    elif dialect == "ollama":
        if images:
            return err(500, "this model is missing data required for image input", "api_error")
    else:
        raise ValueError(f"unknown stub dialect {dialect!r} (one of {DIALECTS})")
    return None


class OpenAIStubServer:
    """Use as a context manager; ``base_url`` is ``http://127.0.0.1:<port>/v1``. ``dialect``
    (see the module docstring) makes it refuse requests the way that server does; ``refusals``
    counts the requests it refused that way."""

    def __init__(self, dialect: str | None = None, slots: int | None = None, props: dict[str, Any] | None = None) -> None:
        if dialect is not None and dialect not in DIALECTS:
            raise ValueError(f"unknown stub dialect {dialect!r} (one of {DIALECTS})")
        self.dialect = dialect
        self.refusals = 0
        self.props = props
        self._slots = threading.Semaphore(slots) if slots else None
        self.held = self.held_max = 0
        self.abandoned = 0  # answers computed for a client that had gone
        self._queue: deque[ScriptedResponse] = deque()
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- scripting ----
    def push(self, response: ScriptedResponse) -> None:
        with self._lock:
            self._queue.append(response)

    def push_completion(self, content: str | None, **kwargs: Any) -> None:
        """Queue a 200 chat.completion whose message content is ``content`` (see :func:`completion_body`)."""
        self.push(ScriptedResponse(200, completion_body(content, **kwargs)))

    def push_json_answer(self, answer: dict[str, Any], **kwargs: Any) -> None:
        """Queue a 200 whose message content is ``json.dumps(answer)``."""
        self.push_completion(json.dumps(answer), **kwargs)

    def push_error(self, status: int = 500, message: str = "stub: internal server error") -> None:
        self.push(ScriptedResponse(status, error_body(message), {"retry-after-ms": "1"}))

    def push_rate_limit(self, retry_after_s: float = 0.2) -> None:
        """Queue a 429 with ``Retry-After: <seconds>`` (no ``retry-after-ms``)."""
        self.push(ScriptedResponse(429, error_body("Rate limit reached", "rate_limit_error"),
                                   {"retry-after": str(retry_after_s)}))

    def push_slow_json_answer(self, answer: dict[str, Any], delay_s: float, **kwargs: Any) -> None:
        """Queue a 200 JSON answer sent after ``delay_s`` seconds."""
        self.push(ScriptedResponse(200, completion_body(json.dumps(answer), **kwargs), delay_s=delay_s))

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == CHAT_PATH]

    # ---- lifecycle ----
    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> "OpenAIStubServer":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # silence stderr
                pass

            def _send(self, resp: ScriptedResponse) -> None:
                raw = resp.body if isinstance(resp.body, str) else json.dumps(resp.body)
                data = raw.encode("utf-8")
                self.send_response(resp.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in resp.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                with stub._lock:
                    stub.requests.append(RecordedRequest("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, None))
                if self.path == "/props" and stub.props is not None:
                    self._send(ScriptedResponse(200, stub.props))
                else:
                    self._send(ScriptedResponse(404, error_body(f"stub: no route {self.path}", "invalid_request_error")))

            def _compute(self, scripted: ScriptedResponse | None) -> None:
                if stub._slots is None:
                    if scripted is not None and scripted.delay_s:
                        time.sleep(scripted.delay_s)
                    return
                stub._slots.acquire()
                with stub._lock:
                    stub.held += 1
                    stub.held_max = max(stub.held_max, stub.held)
                try:
                    if scripted is not None and scripted.delay_s:
                        time.sleep(scripted.delay_s)
                finally:
                    with stub._lock:
                        stub.held -= 1

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8") if length else ""
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw
                headers = {k.lower(): v for k, v in self.headers.items()}
                refusal = dialect_refusal(stub.dialect, body) if self.path == CHAT_PATH else None
                with stub._lock:
                    stub.requests.append(RecordedRequest("POST", self.path, headers, body))
                    if refusal is not None:
                        stub.refusals += 1
                    scripted = (stub._queue.popleft() if refusal is None and stub._queue and self.path == CHAT_PATH
                                else None)
                self._compute(scripted)
                if stub._slots is not None:
                    try:
                        self._answer(refusal, scripted)
                    except OSError:  # the client gave up: computed for nobody
                        with stub._lock:
                            stub.abandoned += 1
                    finally:
                        stub._slots.release()
                    return
                self._answer(refusal, scripted)

            def _answer(self, refusal: ScriptedResponse | None, scripted: ScriptedResponse | None) -> None:
                if refusal is not None:
                    self._send(refusal)
                elif self.path != CHAT_PATH:
                    self._send(ScriptedResponse(404, error_body(f"stub: no route {self.path}", "invalid_request_error")))
                elif scripted is None:
                    self._send(
                        ScriptedResponse(500, error_body("stub: no scripted response left"), {"x-should-retry": "false"})
                    )
                else:
                    self._send(scripted)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="openai-stub", daemon=True)
        self._thread.start()
        # a new server at this URL (the OS reuses ports): nothing the provider learned about an
        # earlier one (step-downs, capacity; remembered per base URL for the process) applies
        from trading_pipelines.llm import capacity, dialects

        dialects.forget(self.base_url)
        capacity.forget_capacity(self.base_url)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> "OpenAIStubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
