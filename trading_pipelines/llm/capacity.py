"""How many calls one OpenAI-compatible server is sent at once, process-wide, one
:class:`ServerCapacity` per base URL: the slot count the server reports (:func:`probe_slots`),
else an AIMD limit that backs off on timeouts and 429s. Used by
:class:`~trading_pipelines.llm.openai_provider.OpenAISignalProvider`."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import httpx2

from trading_pipelines.llm.calls import base_url_host
from trading_pipelines.llm.dialects import REPROBE_AFTER_S

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0
"""Seconds (at most; never more than ``timeout_s``) the capacity probe (``GET /props``, ``GET /slots``) waits."""
_NO_PROBE_HOSTS = ("api.openai.com",)  # a hosted API: no slot count to ask for


_mono = time.monotonic  # the capacity's clock (tests move it)


class ServerCapacity:
    """How many calls one server is sent at once: process-wide, one per base URL
    (:func:`server_capacity`).

    ``slots``: the count the server reports — llama.cpp's server: ``GET /props`` →
    ``total_slots`` (its ``--parallel``), else ``GET /slots`` (one entry a slot) — or ``None``
    when it reports none (llama-cpp-python, vLLM, Ollama, hosted APIs). The limit starts at
    ``ceiling`` (the providers' ``max_concurrent_calls``), no higher than ``slots``, and moves
    AIMD-style: a timeout or a 429 halves it (once per wave: only for a request sent at or after
    the last decrease); a timeout also caps it at one less than the requests in flight when it
    happened (at least 1; the cap is re-probed after
    :data:`~trading_pipelines.llm.dialects.REPROBE_AFTER_S`);
    each answer raises it by 1/limit (one a limit's worth of answers) up to the cap.

    A timed-out attempt is abandoned by the client, but the server may still compute it
    (llama-cpp-python's server finishes a non-streaming request whose client has gone): each
    one adds up to one timeout of work ahead of later requests, so later attempts get their
    timeout extended by that backlog (:meth:`extra_timeout`, seconds)."""

    def __init__(self, ceiling: int, slots: int | None) -> None:
        self.slots = slots
        self.ceiling = max(1, min(ceiling, slots) if slots else ceiling)
        self.limit = float(self.ceiling)
        self.cap = self.ceiling
        self._cap_at: float | None = None
        self.in_flight = 0
        self._last_decrease = -float("inf")
        self._backlog_until = 0.0
        self._cond = threading.Condition()

    def widen(self, ceiling: int) -> None:
        """Another provider of this server allows ``ceiling`` calls at once: the larger counts."""
        with self._cond:
            new = max(1, min(ceiling, self.slots) if self.slots else ceiling)
            if new > self.ceiling:
                if self.cap == self.ceiling:
                    self.cap = new
                self.ceiling = new
                self._cond.notify_all()

    def _allowed(self) -> int:
        if self._cap_at is not None and _mono() - self._cap_at >= REPROBE_AFTER_S:
            self.cap, self._cap_at = self.ceiling, None
        return max(1, min(int(self.limit), self.cap))

    def allowed(self) -> int:
        """Calls that may be in flight at once now."""
        with self._cond:
            return self._allowed()

    def acquire(self) -> float:
        """Wait for room; the send time (for :meth:`release`)."""
        with self._cond:
            while self.in_flight >= self._allowed():
                self._cond.wait(0.5)
            self.in_flight += 1
            return _mono()

    def extra_timeout(self) -> float:
        """Seconds of server work that attempts the client gave up on may still hold (≥ 0)."""
        with self._cond:
            return max(0.0, self._backlog_until - _mono())

    def release(self, sent_at: float, outcome: str, timeout_s: float) -> None:
        """The attempt sent at ``sent_at`` ended: ``ok`` (an answer), ``timeout``, ``overload``
        (429) or ``error`` (anything else: no change)."""
        with self._cond:
            in_flight_then = self.in_flight
            self.in_flight = max(0, self.in_flight - 1)
            self._settle(sent_at, outcome, timeout_s, in_flight_then)
            self._cond.notify_all()

    def overloaded(self, sent_at: float) -> None:
        """A 429 seen while the SDK retries it (the attempt stays in flight)."""
        with self._cond:
            self._settle(sent_at, "overload", 0.0, self.in_flight)

    def _settle(self, sent_at: float, outcome: str, timeout_s: float, in_flight_then: int) -> None:
        now = _mono()
        if outcome == "ok":
            if self.limit < self.cap:
                self.limit = min(float(self.cap), self.limit + 1.0 / max(1.0, self.limit))
        elif outcome in ("timeout", "overload"):
            if outcome == "timeout":
                self._backlog_until = max(self._backlog_until, now) + timeout_s
            if sent_at >= self._last_decrease:
                self.limit = max(1.0, self.limit / 2)
                self._last_decrease = now
                if outcome == "timeout":  # a 429 is often a rate, not a concurrency, limit: no cap
                    self.cap = max(1, min(self.cap, in_flight_then - 1))
                    self._cap_at = now


_CAPACITIES: dict[str, ServerCapacity] = {}
_CAPACITIES_LOCK = threading.Lock()


def server_capacity(base_url: str) -> ServerCapacity | None:
    """The capacity known for ``base_url`` in this process (None before its first call)."""
    with _CAPACITIES_LOCK:
        return _CAPACITIES.get(base_url)


def forget_capacity(base_url: str | None = None) -> None:
    """Forget the capacity known for ``base_url`` (every server: None); the next call probes again."""
    with _CAPACITIES_LOCK:
        if base_url is None:
            _CAPACITIES.clear()
        else:
            _CAPACITIES.pop(base_url, None)


def _server_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root[:-3] if root.endswith("/v1") else root


def probe_slots(base_url: str, api_key: str | None, timeout_s: float) -> int | None:
    """The slot count the server reports: llama.cpp's server ``GET /props`` → ``total_slots``,
    else ``GET /slots`` → its length (both at the server's root, beside ``/v1``); ``None`` when
    neither answers with one (any error, any other server)."""
    root = _server_root(base_url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    reads = (("/props", lambda j: j.get("total_slots") if isinstance(j, dict) else None),
             ("/slots", lambda j: len(j) if isinstance(j, list) and j else None))
    try:
        with httpx2.Client(timeout=timeout_s) as http:
            for path, read in reads:
                r = http.get(root + path, headers=headers)
                if r.status_code != 200:
                    continue
                try:
                    n = read(r.json())
                except ValueError:
                    continue
                if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
                    return n
    except httpx2.HTTPError as e:
        log.info("capacity probe of %s failed: %s", base_url_host(base_url), type(e).__name__)
    return None


def capacity_for(base_url: str, ceiling: int, probe: Callable[[], int | None] | None) -> ServerCapacity:
    """The :class:`ServerCapacity` of ``base_url``, made on its first call from the slot count
    ``probe()`` returns (no probe: ``None``); a later provider allowing a larger ``ceiling`` widens it."""
    with _CAPACITIES_LOCK:
        cap = _CAPACITIES.get(base_url)
        if cap is None:
            slots = probe() if probe else None
            if slots is not None:
                log.info("server %s reports %d slot(s)", base_url_host(base_url), slots)
            cap = _CAPACITIES[base_url] = ServerCapacity(ceiling, slots)
    cap.widen(ceiling)
    return cap
