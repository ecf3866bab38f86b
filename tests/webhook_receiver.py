"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 (a free port) in a thread.

It does what a careful production receiver does, with its own code (not the venue's
:func:`~trading_pipelines.venues.webhook.verify`, so a bug in the venue's signing cannot hide
behind the same bug here):

1. reads the exact body bytes and checks ``X-Signature: sha256=<hex>`` = HMAC-SHA256(secret,
   ``X-Timestamp`` + ``"."`` + body) and that the timestamp is within ``tolerance_s`` of now;
   else **401** ``{"error": "bad signature"}``, nothing recorded;
2. checks ``Idempotency-Key`` equals the body's ``client_order_id``; else **400**;
3. deduplicates on the key: a key it already holds is answered ``duplicate_status`` (200 or 409)
   with the original ``id`` (and the legs' ids), ``"duplicate": true``; a new key is recorded in
   :attr:`WebhookReceiver.orders` and answered ``accept_status`` with a fresh ``id``
   (``wh-000001``, …) and, for a bracket, ``legs: [{"client_order_id", "id"}]``.

Faults for tests are scripted with :meth:`WebhookReceiver.push` (consumed one per request, in
order): ``Scripted(status, body, headers, delay_s, accept=False)`` answers that instead of step 3
(a 500, a 429 with ``Retry-After``, …); with ``accept=True`` the order is processed and recorded
first and the scripted answer (after ``delay_s``: a slow receiver, a timeout) replaces the normal
one, i.e. "delivered but the answer got lost". Every request is kept in
:attr:`WebhookReceiver.requests` with its raw bytes, headers and the status answered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Scripted:
    """``body``: a dict (sent as JSON) or a str (sent verbatim)."""

    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    accept: bool = False


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names
    raw: bytes
    status: int  # what the receiver answered
    at: float  # time.monotonic() at arrival

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


@dataclass(frozen=True)
class Accepted:
    key: str
    id: str
    raw: bytes
    body: dict[str, Any]
    leg_ids: dict[str, str]


class WebhookReceiver:
    """Use as a context manager; ``url`` is ``http://127.0.0.1:<port>/orders``."""

    PATH = "/orders"

    def __init__(self, secret: str, *, tolerance_s: float = 300, duplicate_status: int = 200,
                 accept_status: int = 200) -> None:
        self.secret = secret
        self.tolerance_s = tolerance_s
        self.duplicate_status = duplicate_status
        self.accept_status = accept_status
        self.orders: dict[str, Accepted] = {}
        self.requests: list[Received] = []
        self.refused: list[Received] = []  # signature failures
        self._queue: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._seq = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- scripting ----
    def push(self, *responses: Scripted) -> None:
        with self._lock:
            self._queue.extend(responses)

    def push_status(self, status: int, body: Any = None, *, times: int = 1, **kwargs: Any) -> None:
        self.push(*[Scripted(status, body if body is not None else {"error": f"scripted {status}"}, **kwargs)] * times)

    # ---- checks ----
    def signature_ok(self, headers: dict[str, str], raw: bytes) -> bool:
        ts, sig = headers.get("x-timestamp", ""), headers.get("x-signature", "")
        if not ts.isdigit() or abs(time.time() - int(ts)) > self.tolerance_s or not sig.startswith("sha256="):
            return False
        expected = hmac.new(self.secret.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, sig[len("sha256="):])

    def _accept(self, key: str, raw: bytes, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Record a new key or find the original; (status, answer). Caller holds the lock."""
        known = self.orders.get(key)
        if known is None:
            self._seq += 1
            oid = f"wh-{self._seq:06d}"
            leg_ids = {leg["client_order_id"]: f"{oid}-{i + 1}" for i, leg in enumerate(body.get("legs") or [])}
            known = self.orders[key] = Accepted(key, oid, raw, body, leg_ids)
            status, duplicate = self.accept_status, False
        else:
            status, duplicate = self.duplicate_status, True
        answer: dict[str, Any] = {"id": known.id, "duplicate": duplicate}
        if known.leg_ids:
            answer["legs"] = [{"client_order_id": c, "id": i} for c, i in known.leg_ids.items()]
        return status, answer

    # ---- lifecycle ----
    @property
    def url(self) -> str:
        assert self._httpd is not None, "receiver not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{self.PATH}"

    def start(self) -> "WebhookReceiver":
        rx = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # silence stderr
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                at = time.monotonic()
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}

                def answer(status: int, body: Any, extra: dict[str, str] | None = None, delay_s: float = 0.0,
                           refused: bool = False) -> None:
                    rec = Received(self.path, headers, raw, status, at)
                    with rx._lock:
                        rx.requests.append(rec)
                        if refused:
                            rx.refused.append(rec)
                    if delay_s:
                        time.sleep(delay_s)
                    self._send(status, body, extra)

                if self.path != rx.PATH:
                    return answer(404, {"error": f"no route {self.path}"})
                if not rx.signature_ok(headers, raw):
                    return answer(401, {"error": "bad signature"}, refused=True)
                try:
                    body = json.loads(raw)
                    key = headers.get("idempotency-key")
                    if not isinstance(body, dict) or not key or body.get("client_order_id") != key:
                        raise ValueError("Idempotency-Key must equal the body's client_order_id")
                except ValueError as e:
                    return answer(400, {"error": str(e)})
                with rx._lock:
                    scripted = rx._queue.popleft() if rx._queue else None
                    if scripted is None or scripted.accept:
                        status, normal = rx._accept(key, raw, body)
                if scripted is None:
                    return answer(status, normal)
                return answer(scripted.status, scripted.body, scripted.headers, scripted.delay_s)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:  # a client that timed out and left
                pass

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="webhook-receiver", daemon=True)
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

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
