"""What every part of the strategy configuration shares: the error type, the strict model base
(unknown fields are an error, models are frozen) and the formatting of pydantic errors as
``<file>: <dotted.field.path>: <problem>`` lines."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError


class StrategyConfigError(ValueError):
    """A strategy file is invalid. The message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)



def _format_errors(path: Path, err: ValidationError, prefix: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        got = e.get("input")
        got_s = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
        lines.append(f"{path}: {loc}: {msg}{got_s}")
    return "\n".join(lines)
