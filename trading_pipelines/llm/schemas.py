"""Response schemas: the JSON object a model must answer with, one schema per mode.

Spot and futures are separate end to end: separate response schemas
(:class:`SpotSignalResponse`, :class:`FuturesSignalResponse`) and separate prompt templates
(``prompts/spot_review.j2``, ``prompts/futures_review.j2``, see :mod:`trading_pipelines.llm.prompts`).
:func:`response_json_schema` is the JSON Schema sent to the server; the answer itself is parsed
and checked by :func:`trading_pipelines.llm.parsing.parse_signal_response`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trading_pipelines.domain.models import FuturesAction, Mode, SpotAction


_PRICE = Field(default=None, gt=0, description="quote currency")


class _ResponseBase(BaseModel):
    # strict: "0.7" (a string) is not a confidence; allow_inf_nan: NaN is not a price.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    confidence: float = Field(ge=0, le=1)
    entry: float | None = _PRICE
    stop: float | None = _PRICE
    take_profit: float | None = _PRICE
    thesis: str = Field(min_length=1, max_length=4000)
    # required, as in the schema sent to the server: a missing key is a broken answer, not one that
    # skips the instrument check; null stays allowed, as the prompt and the sent schema allow it
    instrument: str | None = Field(description="the instrument the answer is about; must be the reviewed one, or null")


class SpotSignalResponse(_ResponseBase):
    """The JSON object a model must answer with in spot mode (see ``prompts/spot_review.j2``)."""

    action: Literal["buy", "sell", "hold"]


class FuturesSignalResponse(_ResponseBase):
    """The JSON object a model must answer with in futures mode (see ``prompts/futures_review.j2``).
    ``leverage_hint`` is advisory only: the strategy's configured leverage applies."""

    action: Literal["long", "short", "close", "hold"]
    leverage_hint: float | None = Field(default=None, ge=1, le=125)


SignalResponse = SpotSignalResponse | FuturesSignalResponse


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
