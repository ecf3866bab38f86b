"""The replay report as markdown (the Dagster UI's ``report`` metadata), chart inline."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from trading_pipelines.replay.metrics import REPORT_KEYS

#: At most this many rows in the trade table (the most recent trades; the JSON report has all).
TRADE_ROWS = 20
#: At most this many rows in the per-instrument and failed-instrument tables.
TABLE_ROWS = 40
_CELL_CHARS = 300


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


def _cell(x: Any, limit: int = _CELL_CHARS) -> str:
    """One table cell: ``|`` cannot end the cell early, a newline cannot end the row; at most
    ``limit`` characters (``…`` marks a cut)."""
    text = str(x).replace("|", "/").replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(x: Any, spec: str) -> str:
    return "n/a" if x is None else f"{x:{spec}}"


def _when(iso: str | None) -> str:
    if not iso:
        return "open"
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return _cell(iso, 40)


def _hit_cell(rate: float | None, hits: int | None, n: int | None, ci: Sequence[float] | None) -> str:
    if n is None:
        return "not known (the intents were not read)"
    if not n:
        return "n/a (no scorable directional signal)"
    return f"{_fmt_rate(rate)} ({hits} of {n}; 95% CI {_fmt_ci(ci)})"


def _elapsed(report: dict[str, Any]) -> tuple[str, str]:
    e = report.get("elapsed_s")
    if not isinstance(e, (int, float)) or e <= 0:
        return "not measured", "not measured"
    return _fmt(float(e), ".2f", " s"), _fmt(report.get("windows_per_s"), ".2f")


def _failed_section(report: dict[str, Any]) -> list[str]:
    failed = report.get("failed_instruments") or []
    if not failed:
        return []
    lines = [f"### Failed instruments ({len(failed)})", "", "| instrument | reason |", "|---|---|"]
    for f in failed[:TABLE_ROWS]:
        f = f if isinstance(f, dict) else {"instrument": "?", "reason": f}
        lines.append(f"| {_cell(f.get('instrument'), 40)} | {_cell(f.get('reason'))} |")
    if len(failed) > TABLE_ROWS:
        lines.append(f"| … | {len(failed) - TABLE_ROWS} more in the JSON report |")
    return [*lines, ""]


def _trade_section(report: dict[str, Any]) -> list[str]:
    trades = report.get("trade_list") or []
    if not trades:
        return []
    shown = trades[-TRADE_ROWS:]
    head = (f"### Trades (the last {len(shown)} of {len(trades)} trades; the JSON report lists them all)"
            if len(shown) < len(trades) else f"### Trades ({len(trades)})")
    lines = [head, "",
             "P&L (net) is after the entry and exit fees; R = P&L (net) ÷ the risk planned at entry "
             "(|entry − stop| × quantity).", "",
             "| instrument | side | entry time | entry | exit time | exit | quantity | fees | P&L (net) | R | exit |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for t in shown:
        is_open = t.get("closed_at") is None
        lines.append(
            f"| {_cell(t.get('instrument'), 40)} | {_cell(t.get('side'), 8)} | {_when(t.get('opened_at'))} | "
            f"{_num(t.get('entry_price'), '.10g')} | {_when(t.get('closed_at'))} | {_num(t.get('exit_price'), '.10g')} | "
            f"{_num(t.get('quantity'), '.10g')} | {_num(t.get('fees'), '.2f')} | {_num(t.get('net_pnl'), '+.2f')} | "
            f"{_num(t.get('r_multiple'), '+.2f')} | {'open' if is_open else _cell(t.get('exit_reason') or 'n/a', 20)} |")
    return [*lines, ""]


def _other_rows(report: dict[str, Any]) -> list[str]:
    """Rows for keys a caller added that this renderer does not know: never dropped."""
    rows = []
    for key, value in report.items():
        if key in REPORT_KEYS or key == "failed_instruments":
            continue
        if isinstance(value, (dict, list, tuple)):
            value = json.dumps(value, default=str, separators=(",", ":"))
        rows.append(f"| {_cell(key, 60)} | {_cell(value, 200)} |")
    return rows


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
    """A compact markdown summary of a :func:`build_report` dict (or one a caller added keys to).

    In order: the failed instruments (``report["failed_instruments"]``, ``[{instrument, reason},
    ...]``, when non-empty; at most :data:`TABLE_ROWS` rows); a headline table (signals, no-trades
    and market-closed windows apart, trades, P&L before fees, fees and net of fees in quote
    currency, returns and drawdown in percent, both hit rates in percent with their counts and
    Wilson 95 % intervals, the elapsed time — "not measured" when ``elapsed_s`` is missing or not
    positive — and a row for every key it does not know); what each hit rate counts; a
    per-instrument table (at most :data:`TABLE_ROWS` rows); the trade table (the last
    :data:`TRADE_ROWS` trades: times UTC, prices, quantity, fees, net P&L, R multiple); and, when
    ``png`` is given, the chart inline as a base64 ``data:image/png`` URI downscaled with PIL to
    at most 600 px wide. Table cells cannot break the table (``|`` becomes ``/``).
    """
    sig = dict(report.get("signals") or {})
    no_trade = sig.pop("no_trade", None)
    sig_text = ", ".join(f"{k} {v}" for k, v in sig.items()) or "none"
    horizon = report.get("hit_horizon")
    elapsed, per_s = _elapsed(report)
    lines = [f"## Replay: {report.get('strategy')} / {report.get('book')}", "", *_failed_section(report)]
    lines += [
        "| metric | value |",
        "|---|---|",
        f"| windows | {report.get('windows')} |",
        f"| instruments | {_cell(', '.join(report.get('instruments', [])) or 'none')} |",
        f"| signals | {_cell(sig_text)} |",
        f"| no-trade | {_fmt(no_trade)} |",
        f"| market closed | {_fmt(report.get('market_closed'))} |",
        f"| trades | {report.get('trades')} |",
        f"| P&L before fees | {_num(report.get('realized_pnl'), '+.2f')} |",
        f"| fees | {_num(report.get('fees'), '.2f')} |",
        f"| P&L net of fees | {_num(report.get('net_pnl'), '+.2f')} |",
        f"| return | {_fmt(report.get('return_pct'), '.2f', '%')} |",
        f"| buy and hold (equal weight) | {_fmt(report.get('buy_and_hold_pct'), '.2f', '%')} |",
        f"| max drawdown | {_fmt(report.get('max_drawdown_pct'), '.2f', '%')} |",
        f"| hit rate, every directional call ({horizon}) | "
        f"{_hit_cell(report.get('hit_rate'), report.get('hits'), report.get('directional'), report.get('hit_rate_ci95'))} |",
        f"| hit rate, signals that could trade ({horizon}) | "
        f"{_hit_cell(report.get('tradable_hit_rate'), report.get('tradable_hits'), report.get('tradable_directional'), report.get('tradable_hit_rate_ci95'))} |",
        f"| elapsed | {elapsed} |",
        f"| windows/s | {per_s} |",
        *_other_rows(report),
        "",
    ]
    counts = [(label, report.get(key)) for label, key in (("every directional call", "hit_rate_counts"),
                                                          ("signals that could trade", "tradable_counts"))]
    if any(text for _, text in counts):
        lines += ["What the hit rates count:", "",
                  *(f"- {label}: {_cell(text, 600)}" for label, text in counts if text), ""]
    per = report.get("per_instrument") or {}
    if per:
        lines += [
            "| instrument | signals | directional | hits | hit rate | 95% CI | could trade | hits | hit rate | "
            "trades | P&L before fees | fees | P&L net | buy and hold |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in list(per.items())[:TABLE_ROWS]:
            lines.append(
                f"| {_cell(name, 40)} | {row.get('signals')} | {row.get('directional')} | {row.get('hits')} | "
                f"{_fmt_rate(row.get('hit_rate'))} | {_fmt_ci(row.get('hit_rate_ci95'))} | "
                f"{_fmt(row.get('tradable_directional'))} | {_fmt(row.get('tradable_hits'))} | "
                f"{_fmt_rate(row.get('tradable_hit_rate'))} | {row.get('trades')} | "
                f"{_num(row.get('realized_pnl'), '+.2f')} | {_num(row.get('fees'), '.2f')} | "
                f"{_num(row.get('net_pnl'), '+.2f')} | {_fmt(row.get('buy_and_hold_pct'), '.2f', '%')} |"
            )
        if len(per) > TABLE_ROWS:
            lines.append(f"| … {len(per) - TABLE_ROWS} more instruments in the JSON report |")
        lines.append("")
    lines += _trade_section(report)
    if png:
        lines += [f"![equity beside buy and hold, and drawdown]({_png_data_uri(png)})", ""]
    return "\n".join(lines)
