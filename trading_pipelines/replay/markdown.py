"""The replay report as markdown (the Dagster UI's ``report`` metadata), chart inline."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any


def _fmt(x: Any, spec: str = ".2f", suffix: str = "") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:{spec}}{suffix}"
    return f"{x}{suffix}"


def _fmt_ci(ci: Sequence[float] | None) -> str:
    if not ci:
        return "n/a"
    return f"[{ci[0] * 100:.1f}%, {ci[1] * 100:.1f}%]"


def _fmt_rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def _png_data_uri(png: bytes, max_width: int = 600) -> str:
    """Downscale (keeping aspect) to at most ``max_width`` px wide with PIL; base64 data URI."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im.load()
        if im.width > max_width:
            height = max(1, round(im.height * max_width / im.width))
            im = im.resize((max_width, height), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        im.save(out, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def report_markdown(report: dict[str, Any], png: bytes | None) -> str:
    """A compact markdown summary of a :func:`build_report` dict.

    A headline table (returns and drawdown in percent, hit rate in percent with its Wilson 95 %
    interval, one-bar horizon), a per-instrument table (realized P&L in quote currency), and, when
    ``png`` is given, the chart inline as a base64 ``data:image/png`` URI downscaled with PIL to at
    most 600 px wide.
    """
    sig = report.get("signals", {})
    sig_text = ", ".join(f"{k} {v}" for k, v in sig.items()) or "none"
    lines = [
        f"## Replay: {report.get('strategy')} / {report.get('book')}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| windows | {report.get('windows')} |",
        f"| instruments | {', '.join(report.get('instruments', [])) or 'none'} |",
        f"| signals | {sig_text} |",
        f"| trades | {report.get('trades')} |",
        f"| return | {_fmt(report.get('return_pct'), '.2f', '%')} |",
        f"| buy and hold (equal weight) | {_fmt(report.get('buy_and_hold_pct'), '.2f', '%')} |",
        f"| max drawdown | {_fmt(report.get('max_drawdown_pct'), '.2f', '%')} |",
        f"| hit rate ({report.get('hit_horizon')}) | {_fmt_rate(report.get('hit_rate'))} "
        f"(95% CI {_fmt_ci(report.get('hit_rate_ci95'))}) |",
        f"| elapsed | {_fmt(report.get('elapsed_s'), '.2f', ' s')} |",
        f"| windows/s | {_fmt(report.get('windows_per_s'), '.2f')} |",
        "",
    ]
    per = report.get("per_instrument") or {}
    if per:
        lines += [
            "| instrument | signals | directional | hits | hit rate | 95% CI | trades | realized P&L | buy and hold |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for name, row in per.items():
            lines.append(
                f"| {name} | {row['signals']} | {row['directional']} | {row['hits']} | "
                f"{_fmt_rate(row['hit_rate'])} | {_fmt_ci(row['hit_rate_ci95'])} | {row['trades']} | "
                f"{_fmt(row['realized_pnl'], '.2f')} | {_fmt(row['buy_and_hold_pct'], '.2f', '%')} |"
            )
        lines.append("")
    if png:
        lines += [f"![equity and drawdown]({_png_data_uri(png)})", ""]
    return "\n".join(lines)
