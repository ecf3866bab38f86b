"""Prompt rendering: the Jinja2 templates in ``trading_pipelines/prompts/`` (:data:`PROMPTS_DIR`,
found relative to this package; packaged as ``prompts/*.j2``).

Spot and futures have separate prompt templates (``prompts/spot_review.j2``,
``prompts/futures_review.j2``). :func:`render_prompt` renders one for a
:class:`~trading_pipelines.llm.requests.SignalRequest`; :func:`prompt_hash` identifies a call's
input; :func:`template_sha256` is a template's version.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from trading_pipelines.domain.rules import fmt_num
from trading_pipelines.llm.requests import ProviderConfigError, SignalRequest


PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
_INDICATOR_ORDER = (
    "close", "rsi", "macd", "macd_signal", "macd_hist", "atr",
    "bb_upper", "bb_middle", "bb_lower", "adx", "adx_pos", "adx_neg",
)  # fmt: skip


@lru_cache(maxsize=32)
def template_sha256(template_name: str) -> str | None:
    """Hex SHA-256 of the prompt template file's text (the template's version), ``None`` if absent."""
    path = PROMPTS_DIR / template_name
    try:
        return hashlib.sha256(path.read_text(encoding="utf-8").encode("utf-8")).hexdigest()
    except OSError:
        return None


def _num(x: Any) -> str:
    if x is None:
        return "n/a"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "n/a (warming up)" if math.isnan(f) else fmt_num(f)


@lru_cache(maxsize=1)
def _jinja_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PROMPTS_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = _num
    return env


def _indicator_order(key: str) -> tuple[int, int, str]:
    if key in _INDICATOR_ORDER:
        return (0 if key == "close" else 2, _INDICATOR_ORDER.index(key), key)
    for i, prefix in enumerate(("ema_", "sma_")):
        if key.startswith(prefix) and key[len(prefix) :].isdigit():
            return (1, i * 1000 + int(key[len(prefix) :]), key)
    return (3, 0, key)


def _iso(v: Any) -> str:
    if isinstance(v, datetime):
        v = v.astimezone(timezone.utc) if v.tzinfo else v.replace(tzinfo=timezone.utc)
        return v.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(v)


def _bar(b: Mapping[str, Any]) -> dict[str, Any]:
    def pick(short: str, long: str) -> Any:
        return b.get(short, b.get(long))

    return {
        "open_time": _iso(pick("open_time", "time")),
        "open": pick("o", "open"),
        "high": pick("h", "high"),
        "low": pick("l", "low"),
        "close": pick("c", "close"),
        "volume": pick("v", "volume"),
    }


def render_prompt(template_name: str, req: SignalRequest) -> str:
    """Render ``prompts/<template_name>`` for ``req`` with Jinja2 (``StrictUndefined``).

    Template variables: ``strategy``, ``instrument``, ``timeframe``, ``mode`` (str),
    ``window_end`` (``YYYY-MM-DDTHH:MM:SSZ``), ``indicators`` (list of ``(name, value)`` with
    formatted values, NaN → ``"n/a (warming up)"``), ``bars`` (list of dicts ``open_time``,
    ``open``, ``high``, ``low``, ``close``, ``volume``), ``chart_sha256``, ``chart_key``,
    ``close``, ``account`` (an ``AccountContext`` or ``None``); filter ``num`` formats a number. Raises ``jinja2.TemplateNotFound`` /
    ``jinja2.UndefinedError`` on a missing template or variable.
    """
    tpl = _jinja_env().get_template(template_name)
    indicators = [(k, _num(req.summary[k])) for k in sorted(req.summary, key=_indicator_order)]
    return tpl.render(
        strategy=req.strategy,
        instrument=req.instrument,
        timeframe=req.timeframe,
        mode=req.mode.value,
        window_end=_iso(req.window_end),
        indicators=indicators,
        bars=[_bar(b) for b in req.recent_bars],
        chart_sha256=req.chart_sha256,
        chart_key=req.chart_key,
        close=req.summary.get("close"),
        account=req.account,
    )


def prompt_hash(prompt: str, chart_sha256: str | None, model: str, template_name: str) -> str:
    """Hex SHA-256 over the canonical JSON of (prompt text, chart SHA-256, model, template name):
    identical inputs give the identical hash, so a call can be found, compared and replayed."""
    canonical = json.dumps(
        {"chart_sha256": chart_sha256, "model": model, "prompt": prompt, "template": template_name},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_template(template_name: str) -> None:
    try:
        _jinja_env().get_template(template_name)
    except jinja2.TemplateNotFound:
        raise ProviderConfigError(f"prompt template {template_name!r} not found in {PROMPTS_DIR}") from None
