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
"""

from __future__ import annotations

import json
import threading
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


class OpenAIStubServer:
    """Use as a context manager; ``base_url`` is ``http://127.0.0.1:<port>/v1``."""

    def __init__(self) -> None:
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

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8") if length else ""
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw
                headers = {k.lower(): v for k, v in self.headers.items()}
                with stub._lock:
                    stub.requests.append(RecordedRequest("POST", self.path, headers, body))
                    scripted = stub._queue.popleft() if stub._queue and self.path == CHAT_PATH else None
                if self.path != CHAT_PATH:
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
