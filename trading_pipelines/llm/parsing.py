"""Parsing a model's answer, market checks on its numbers, and the hygiene of what a provider stores.

The model's numbers are never trusted (:func:`parse_signal_response`): an entry far from the last
close, a stop or take-profit on the wrong side of the last close, another instrument named, or
duplicate JSON keys make the answer a no-trade (the planner computes its own technical stop
regardless).

Scrubbing (:func:`clean_text`, :func:`sanitize_result`, :func:`redact_request_body`): the API key
is scrubbed from everything a :class:`~trading_pipelines.llm.requests.ProviderResult` holds —
prompt, request, the raw answer (a server may echo it in a 200), thesis, no-trade reason, dialect
record. NUL and the other C0 control characters except ``\n`` and ``\t`` are removed from every
stored text (Postgres refuses NUL in text).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import ValidationError

from trading_pipelines.domain.models import FuturesAction, Mode, SpotAction
from trading_pipelines.domain.rules import fmt_num
from trading_pipelines.llm.requests import ProviderResult
from trading_pipelines.llm.schemas import SignalResponse, _allowed_actions, response_schema


_ENTRY_ACTIONS = {SpotAction.BUY.value: 1, FuturesAction.LONG.value: 1, FuturesAction.SHORT.value: -1}


class InvalidSignalResponse(ValueError):
    """A model answer that cannot become a signal. The message says what is wrong."""


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
