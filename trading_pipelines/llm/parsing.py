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
# a fenced block anywhere: ``` or ```json, up to the next ``` (the body may not hold a fence)
_ANY_FENCE_RE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
# the reasoning block a reasoning model writes before its answer (DeepSeek-R1, Qwen3, QwQ…)
_REASONING_TAGS = ("think", "thinking", "reasoning")
_OPEN_TAG_RE = re.compile(r"^\s*<(think|thinking|reasoning)>", re.IGNORECASE)
# trailing prose after a fenced block that could change what the block says: a brace or a digit
# (another object or another price), an action word, or a correction
_MEANINGFUL_TAIL_RE = re.compile(
    r"[{}\[\]0-9]|\b(?:buy|buying|bought|sell|selling|sold|hold|holding|long|short|shorting|close|closing|exit"
    r"|actually|instead|rather|correction|corrected|ignore|disregard|scratch|wait|update|updated|revise|revised"
    r"|changed?|mistake|wrong|not|no)\b|n't\b",
    re.IGNORECASE,
)
# prose before a fenced block that says the block is not the answer
_DISOWNING_HEAD_RE = re.compile(r"\b(?:ignore|disregard|not the answer|do not use|don't use|example)\b", re.IGNORECASE)


# JSON's whitespace (RFC 8259): not Python's, which also counts \x0b, \x0c and \x1c-\x1f
_JSON_WS = " \t\n\r"


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
    reasoning: str | None = None,
) -> SignalResponse:
    """Parse and check a model's answer for ``mode``; the model's numbers are not trusted.

    ``text`` is the message content **as received** (not cleaned: a control character inside a
    token is a broken answer, not one to repair — strict JSON refuses it); ``reasoning`` the
    message's separate reasoning (``reasoning_content``), if the server sent one. The JSON text is
    found by :func:`answer_json_text` (one object; or the one object after a reasoning block; or
    the single fenced block). Checks, in order:
    non-empty, valid JSON without a duplicate key at any depth (``"action":"hold", …,
    "action":"buy"`` is refused, not read as its last value) and without NaN/Infinity, an object,
    ``action`` allowed in ``mode``, the mode's schema (``extra="forbid"``, confidence 0..1,
    positive finite prices, the ``instrument`` key present), the ``instrument`` named (if not
    null) equal to ``instrument``, then for
    entries the price sides against ``entry`` (buy/long: ``stop < entry < take_profit``; short:
    ``take_profit < entry < stop``); ``entry`` (any action) within ``max_entry_deviation_pct``
    percent of ``close``; and the same sides against ``close`` — the last close, quote currency.
    Checks needing ``close``/``instrument``/the deviation are skipped when those are ``None``
    (or ``close`` is not finite).

    Raises :class:`InvalidSignalResponse` with a message naming the failed check.
    """
    body = answer_json_text(text, reasoning)
    decoder = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)
    start = len(body) - len(body.lstrip(_JSON_WS))
    try:
        obj, end = decoder.raw_decode(body, start)
    except _DuplicateKey as e:
        raise InvalidSignalResponse(f"response JSON repeats the key {e.args[0]!r} (duplicate keys are ambiguous)") from None
    except json.JSONDecodeError as e:
        raise InvalidSignalResponse(f"response is not valid JSON ({e.msg.removesuffix(' at')} at line {e.lineno} "
                                    f"column {e.colno})") from None
    except RecursionError:
        raise InvalidSignalResponse("response JSON is nested too deeply") from None
    rest = body[end:]
    if rest.strip(_JSON_WS):
        line = body.count("\n", 0, end) + 1
        after = rest.lstrip(_JSON_WS)
        if after[:1] in ("{", "["):
            raise InvalidSignalResponse(f"response holds more than one JSON value (another starts after line {line}): "
                                        "ambiguous")
        raise InvalidSignalResponse(f"response is not valid JSON (text after the object at line {line}: "
                                    f"{after[:40]!r})")
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


def _strip_reasoning(text: str, reasoning: str | None) -> str:
    """``text`` without a leading reasoning block: ``<think>…</think>`` (also ``<thinking>``,
    ``<reasoning>``); the reasoning up to a ``</think>`` whose opening tag the chat template wrote
    (DeepSeek-R1 distills); or ``reasoning`` itself repeated at the start. A text that starts with
    ``{`` has no reasoning block (a tag inside its strings is not one)."""
    if text.lstrip(_JSON_WS).startswith("{"):
        return text
    m = _OPEN_TAG_RE.match(text)
    if m is not None:
        tag = m.group(1).lower()
        close = re.search(rf"</{tag}>", text[m.end():], re.IGNORECASE)
        if close is None:
            raise InvalidSignalResponse(f"the reasoning block <{m.group(1)}> is never closed: no answer after it "
                                        "(truncated?)")
        return text[m.end() + close.end():]
    for tag in _REASONING_TAGS:
        close = re.search(rf"</{tag}>", text, re.IGNORECASE)
        if close is not None and not re.search(rf"<{tag}>", text[:close.start()], re.IGNORECASE):
            return text[close.end():]
    if reasoning and reasoning.strip() and text.lstrip().startswith(reasoning.strip()):
        return text.lstrip()[len(reasoning.strip()):]
    return text


def answer_json_text(text: str | None, reasoning: str | None = None) -> str:
    """The JSON text of a model's answer ``text`` (as received; ``reasoning``: the message's separate
    reasoning, if any). One of, after a leading reasoning block (see :func:`_strip_reasoning`) if
    there is one:

    - the whole text (one JSON object; the parser refuses anything after it, or a second object);
    - a single fenced block (```` ```json … ``` ```` or ```` ``` … ``` ````) that is the whole text;
    - a single fenced block with prose around it: prose before it is the model's analysis (unless
      it disowns the block: "ignore", "disregard", "example"…); prose after it may not hold a
      digit, a brace or bracket, an action word (buy, sell, hold, long, short, close, exit…), a
      negation or a correction (actually, instead, wait…) — such a tail could change what the
      block says, so the answer is refused; nor may the prose hold a control character.

    Raises :class:`InvalidSignalResponse`: empty content (or nothing after the reasoning), an
    unclosed reasoning block, two or more fenced blocks, prose around a fence as above.
    """
    if text is None or not text.strip():
        if reasoning and reasoning.strip():
            raise InvalidSignalResponse(f"empty response content (the separate reasoning, {len(reasoning)} characters, "
                                        "is not an answer)")
        raise InvalidSignalResponse("empty response content")
    rest = _strip_reasoning(text, reasoning)
    if not rest.strip():
        raise InvalidSignalResponse("no answer after the reasoning block")
    if rest.lstrip(_JSON_WS).startswith(("{", "[")):  # an object first: the decoder refuses what follows it
        return rest
    whole = _FENCE_RE.match(rest)
    if whole is not None and "```" not in whole.group(1):
        return whole.group(1)
    fences = list(_ANY_FENCE_RE.finditer(rest))
    if not fences:
        return rest  # not JSON: the decoder says so
    if len(fences) > 1:
        raise InvalidSignalResponse(f"response holds {len(fences)} fenced blocks: ambiguous, expected one JSON object")
    fence = fences[0]
    head, tail = rest[:fence.start()], rest[fence.end():]
    if _CONTROL_RE.search(head + tail):
        raise InvalidSignalResponse("the text around the fenced block holds a control character: a corrupted answer")
    if _DISOWNING_HEAD_RE.search(head):
        word = _DISOWNING_HEAD_RE.search(head).group(0)  # type: ignore[union-attr]
        raise InvalidSignalResponse(f"the text before the fenced block says {word!r}: it may not be the answer")
    hit = _MEANINGFUL_TAIL_RE.search(tail)
    if hit is not None:
        raise InvalidSignalResponse(f"text after the fenced block could change its meaning ({hit.group(0)!r} in "
                                    f"{tail.strip()[:60]!r})")
    return fence.group(1)


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
