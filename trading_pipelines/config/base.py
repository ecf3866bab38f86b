"""What every part of the strategy configuration shares: the error type, the YAML reader that
refuses duplicate keys (:func:`read_yaml`), the strict model base (unknown fields are an error,
models are frozen, a boolean is never a number, only a boolean is a boolean, a number is never a
date) and the formatting of pydantic errors as ``<file>: <dotted.field.path>: <problem>`` lines."""

from __future__ import annotations

import re
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails


class StrategyConfigError(ValueError):
    """A strategy file is invalid. The message names the file and the field."""


# ---------------------------------------------------------------- YAML: one document, no duplicate keys

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives the same key twice (PyYAML alone keeps the last value silently).

    ``path``: the keys (and list indexes) from the document's root to the mapping holding the key,
    then the key; ``line`` and ``first_line``: 1-based lines of the second and the first occurrence."""

    def __init__(self, path: tuple, first_mark: yaml.Mark, mark: yaml.Mark):
        self.path, self.key = path, path[-1]
        self.line, self.first_line = mark.line + 1, first_mark.line + 1
        super().__init__("while constructing a mapping", first_mark, f"found duplicate key {self.key!r}", mark)

    def describe(self, file: Path | str) -> str:
        """``<file>:<line>: <dotted.path>: duplicate key '<key>' (first given on line <n>)``."""
        return f"{file}:{self.line}: {dotted(self.path)}: duplicate key {self.key!r} (first given on line {self.first_line})"


class UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # LibYAML's parser when PyYAML has it
    """``yaml.SafeLoader`` (same tags, same scalars) that refuses a key given twice in one mapping,
    at any depth, with :class:`DuplicateKeyError`. Merge keys (``<<: *anchor``) still work: a key
    given beside a merge overrides the merged one, as YAML specifies."""

    def construct_document(self, node: yaml.Node) -> Any:
        self._refuse_duplicates(node, (), set())
        return super().construct_document(node)

    def _refuse_duplicates(self, node: yaml.Node, path: tuple, seen: set[int]) -> None:
        if id(node) in seen:  # an alias of a node already checked (or a recursive one)
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Mark] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    self._refuse_duplicates(value_node, path, seen)
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:  # an unhashable key: SafeLoader's own error names it
                    continue
                if key in first:
                    raise DuplicateKeyError((*path, key), first[key], key_node.start_mark)
                first[key] = key_node.start_mark
                self._refuse_duplicates(value_node, (*path, key), seen)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._refuse_duplicates(item, (*path, i), seen)


def dotted(path: tuple | list) -> str:
    """``('attributes', 'risk', 'risk_per_trade_pct')`` → ``attributes.risk.risk_per_trade_pct``
    (list indexes as numbers: ``attributes.instruments.0``, as pydantic's locations)."""
    return ".".join(str(p) for p in path if p != "")


def read_yaml(path: Path, error: type[StrategyConfigError], what: str) -> Any:
    """The one YAML document in ``path`` (``yaml.safe_load``'s types), duplicate keys refused.

    Raises ``error`` naming the file: ``<file>: cannot read <what>: …`` (missing, unreadable),
    ``<file>: cannot read <what>: not valid YAML: … line L, column C …`` (syntax, several documents) or
    ``<file>:<line>: <dotted.key>: duplicate key '<key>' (first given on line <n>)``."""
    try:
        with open(path, encoding="utf-8") as stream:  # the stream's name: marks name the file
            loader = UniqueKeyLoader(stream)
            try:
                return loader.get_single_data()
            finally:
                loader.dispose()
    except DuplicateKeyError as e:
        raise error(e.describe(path)) from None
    except yaml.YAMLError as e:
        raise error(f"{path}: cannot read {what}: not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read {what}: {getattr(e, 'strerror', None) or e}") from None


# ---------------------------------------------------------------- the strict model base

def _accepts(annotation: Any, kind: type) -> bool:
    """Whether the type ``annotation`` (unions, ``Annotated``, ``Literal`` unwrapped) has ``kind`` as a member."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _accepts(typing.get_args(annotation)[0], kind)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, kind) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return any(isinstance(a, kind) for a in typing.get_args(annotation))
    return annotation is kind or annotation is Any


def _numbers(annotation: Any) -> bool:
    """Whether ``annotation`` is a number (``int``/``float``), optionally ``None``, or a tuple/list of numbers."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _numbers(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_numbers(a) for a in args)
    if origin in (tuple, list):
        return all(a is Ellipsis or _numbers(a) for a in typing.get_args(annotation))
    return annotation in (int, float)


def _is(annotation: Any, kind: type) -> bool:
    """Whether ``annotation`` is ``kind``, optionally ``None`` (``Annotated`` unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is(typing.get_args(annotation)[0], kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(args) == 1 and _is(args[0], kind)
    return annotation is kind


_NUMBER = re.compile(r"\s*[-+]?(\d[\d_]*)?(\.\d*)?([eE][-+]?\d+)?\s*")


def refuse_lax_scalars(annotation: Any, value: Any, loc: tuple = ()) -> list[tuple[tuple, str, Any]]:
    """``(loc, why, value)`` for each part of ``value`` that is the wrong type for a field of type
    ``annotation`` although pydantic's lax mode would convert it: a boolean for a number (``yes``
    would be 1, ``true`` 1.0 %), anything but ``true``/``false`` for a boolean (``0``, ``"no"``
    and ``off`` would turn ``dry_run`` off), and a number for a date/time (``windows_start: 2016``
    would be 1970-01-01T00:33:36Z, seconds since the epoch). List items get their index in ``loc``.
    Numbers written as strings (``1e6``, which YAML 1.1 reads as a string) are still converted."""
    if value is None:
        return []
    if _is(annotation, datetime):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        numeric_text = isinstance(value, str) and bool(_NUMBER.fullmatch(value)) and any(c.isdigit() for c in value)
        if number or numeric_text:
            return [(loc, "expected a date or time like 2026-03-01T00:00:00Z, not a number (seconds since 1970)", value)]
        return []
    if _accepts(annotation, bool) and not any(_accepts(annotation, t) for t in (int, float, str)):
        return [] if isinstance(value, bool) else [(loc, "expected true or false", value)]
    if _numbers(annotation):
        if isinstance(value, (list, tuple)):
            return [((*loc, i), "expected a number, not a boolean", v) for i, v in enumerate(value) if isinstance(v, bool)]
        if isinstance(value, bool):
            return [(loc, "expected a number, not a boolean", value)]
    return []


class _Strict(BaseModel):
    """Unknown fields are errors, models are frozen, and :func:`refuse_lax_scalars` holds for every
    field (a model-level check: pydantic refuses field validators on a union's ``kind`` field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_lax_scalars(cls, data: Any) -> Any:
        if isinstance(data, dict):
            # a built-in error type ("value_error"): Dagster re-raises a component's errors by type name
            errors = [InitErrorDetails(type="value_error", loc=loc, input=value, ctx={"error": why})
                      for name, field in cls.model_fields.items() if name in data
                      for loc, why, value in refuse_lax_scalars(field.annotation, data[name], (name,))]
            if errors:
                raise ValidationError.from_exception_data(cls.__name__, errors)
        return data


# ---------------------------------------------------------------- pydantic errors → lines

def _format_errors(path: Path, err: ValidationError, prefix: str) -> str:
    """One ``<file>: <prefix>.<dotted.loc>: <problem>[ (got <value>)]`` line per pydantic error.
    A discriminated union's tag errors name the tag field (``attributes.venue.kind: …``); a
    validator's message drops pydantic's ``Value error,`` prefix."""
    lines = []
    for e in err.errors():
        loc_parts: list = [prefix, *e["loc"]]
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc_parts.append(str((e.get("ctx") or {}).get("discriminator", "")).strip("'"))
        loc = dotted(loc_parts)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        got = e.get("input")
        got_s = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
        lines.append(f"{path}: {loc}: {msg}{got_s}")
    return "\n".join(lines)
