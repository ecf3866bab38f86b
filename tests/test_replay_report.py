"""Tests for trading_pipelines.replay.report, with the expected numbers worked by hand."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from trading_pipelines.replay.report import (
    REPORT_KEYS,
    EquityPoint,
    SignalOutcome,
    Trade,
    build_report,
    buy_and_hold_pct,
    equity_chart_png,
    hit_rate,
    max_drawdown_pct,
    report_markdown,
    wilson_interval,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _points(values: list[float]) -> list[EquityPoint]:
    return [EquityPoint(as_of=T0 + timedelta(hours=i), equity=v) for i, v in enumerate(values)]


def _outcome(action: str, close: float | None, nxt: float | None, inst: str = "A") -> SignalOutcome:
    return SignalOutcome(instrument=inst, window_end=T0, action=action, close_at_signal=close, next_close=nxt)


# --- Wilson -----------------------------------------------------------------------------------


def test_wilson_8_of_10():
    # Wilson (1927) score interval, z = 1.959963984540054 (norm.ppf(0.975)):
    #   p = 0.8, z^2 = 3.841459, z^2/n = 0.3841459, denom = 1.3841459
    #   centre = (0.8 + 3.841459/20) / 1.3841459 = 0.9920729 / 1.3841459 = 0.716739
    #   half   = z/denom * sqrt(0.8*0.2/10 + 3.841459/400)
    #          = 1.415996 * sqrt(0.016 + 0.009603647) = 1.415996 * 0.1600114 = 0.226576
    #   -> (0.490163, 0.943315); statsmodels proportion_confint(8, 10, method="wilson") agrees.
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_against_formula():
    z = 1.959963984540054
    for hits, n in [(0, 5), (3, 7), (5, 5), (50, 100), (1, 1000)]:
        p = hits / n
        d = 1 + z * z / n
        c = (p + z * z / (2 * n)) / d
        h = z / d * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        low, high = wilson_interval(hits, n)
        assert low == pytest.approx(max(0.0, c - h), abs=1e-12)
        assert high == pytest.approx(min(1.0, c + h), abs=1e-12)
        assert 0.0 <= low <= p <= high <= 1.0


def test_wilson_empty_and_bad():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


# --- drawdown, buy and hold ---------------------------------------------------------------------


def test_max_drawdown():
    # running peak 100,120,120,130,130; falls: 0, 0, 30/120=25%, 0, 13/130=10% -> max 25.0
    assert max_drawdown_pct(_points([100, 120, 90, 130, 117])) == pytest.approx(25.0)
    assert max_drawdown_pct(_points([100, 101, 102])) == 0.0
    assert max_drawdown_pct([]) == 0.0


def test_buy_and_hold():
    # A: 100 -> 110 = +10 %, B: 50 -> 45 = -10 %; equal weight mean = 0.0 %
    assert buy_and_hold_pct({"A": 100, "B": 50}, {"A": 110, "B": 45}) == pytest.approx(0.0, abs=1e-12)
    # single instrument 200 -> 250 = +25 %
    assert buy_and_hold_pct({"X": 200}, {"X": 250}) == pytest.approx(25.0)
    with pytest.raises(ValueError):
        buy_and_hold_pct({}, {})
    with pytest.raises(ValueError):
        buy_and_hold_pct({"A": 100}, {})


# --- hit rate -------------------------------------------------------------------------------


def test_hit_rate_counting():
    outcomes = [
        _outcome("buy", 100, 101),  # up call, next close up -> hit
        _outcome("sell", 100, 101),  # down call, next close up -> miss
        _outcome("hold", 100, 90),  # not directional -> excluded
        _outcome("long", 100, 100),  # unchanged -> miss
        _outcome("close", 100, 99),  # down call, next close down -> hit
        _outcome("short", 100, None),  # end of data -> excluded
    ]
    stats = hit_rate(outcomes)
    # directional scorable: buy, sell, long, close = 4; hits: buy, close = 2 -> 0.5
    assert stats.directional == 4
    assert stats.hits == 2
    assert stats.rate == pytest.approx(0.5)
    assert stats.ci95 == wilson_interval(2, 4)


def test_hit_rate_none_when_no_directional():
    stats = hit_rate([_outcome("hold", 1, 2)])
    assert stats.directional == 0 and stats.rate is None and stats.ci95 == (0.0, 1.0)


# --- the report -------------------------------------------------------------------------------


def _report(**overrides):
    trades = [
        Trade("A", "long", T0, T0 + timedelta(hours=2), 100.0, 104.0, 10.0, 40.0, "take_profit"),
        Trade("B", "short", T0 + timedelta(hours=1), None, 50.0, None, 2.0, 0.0, None),
    ]
    outcomes = [
        _outcome("buy", 100, 101, "A"),  # hit
        _outcome("sell", 100, 101, "A"),  # miss
        _outcome("hold", 50, 49, "B"),  # excluded
        _outcome("short", 50, 49, "B"),  # hit
    ]
    kwargs = dict(
        strategy="demo",
        book="paper-1",
        starting_cash=10_000.0,
        points=_points([10_000, 10_400, 9_880, 10_250]),
        trades=trades,
        outcomes=outcomes,
        first_close={"B": 50.0, "A": 100.0},
        last_close={"A": 110.0, "B": 45.0},
        signal_counts={"buy": 1, "sell": 1, "hold": 1, "short": 1},
        no_trade=2,
        elapsed_s=2.0,
    )
    kwargs.update(overrides)
    return build_report(**kwargs)


def test_report_keys_and_numbers():
    r = _report()
    assert list(r) == list(REPORT_KEYS)
    assert set(r) == {
        "strategy", "book", "windows", "instruments", "signals", "market_closed", "trades", "trade_list",
        "realized_pnl", "fees", "net_pnl", "return_pct", "buy_and_hold_pct", "max_drawdown_pct", "hit_rate",
        "hit_rate_ci95", "hit_horizon", "hit_rate_counts", "directional", "hits", "tradable_hit_rate",
        "tradable_hit_rate_ci95", "tradable_directional", "tradable_hits", "tradable_counts", "per_instrument",
        "equity_curve", "buy_and_hold_curve", "elapsed_s", "windows_per_s",
    }
    assert r["windows"] == 4
    assert r["instruments"] == ["A", "B"]
    assert r["signals"] == {"buy": 1, "sell": 1, "hold": 1, "short": 1, "no_trade": 2}
    assert r["trades"] == 2
    # 10000 -> 10250: (10250/10000 - 1) * 100 = 2.5
    assert r["return_pct"] == pytest.approx(2.5)
    assert r["buy_and_hold_pct"] == pytest.approx(0.0, abs=1e-12)
    # peak 10400 -> 9880: 520/10400 = 5.0 %
    assert r["max_drawdown_pct"] == pytest.approx(5.0)
    # directional: A buy hit, A sell miss, B short hit -> 2/3
    assert r["hit_rate"] == pytest.approx(2 / 3)
    assert r["hit_rate_ci95"] == pytest.approx(list(wilson_interval(2, 3)))
    assert r["hit_horizon"] == "1 bar"
    assert r["windows_per_s"] == pytest.approx(2.0)  # 4 windows / 2 s
    assert r["equity_curve"][0] == ["2024-01-01T00:00:00+00:00", 10_000]
    t0 = r["trade_list"][0]
    assert t0 == {
        "instrument": "A", "side": "long", "opened_at": "2024-01-01T00:00:00+00:00",
        "closed_at": "2024-01-01T02:00:00+00:00", "entry_price": 100.0, "exit_price": 104.0,
        "quantity": 10.0, "realized_pnl": 40.0, "exit_reason": "take_profit",
        # no fees or stop given: net = gross, no R multiple
        "fees": 0.0, "net_pnl": 40.0, "stop": None, "planned_risk": None, "r_multiple": None,
    }
    assert r["trade_list"][1]["closed_at"] is None
    a, b = r["per_instrument"]["A"], r["per_instrument"]["B"]
    assert (a["signals"], a["directional"], a["hits"], a["trades"]) == (2, 2, 1, 1)
    assert a["hit_rate"] == pytest.approx(0.5)
    assert a["realized_pnl"] == pytest.approx(40.0)
    assert a["buy_and_hold_pct"] == pytest.approx(10.0)  # 100 -> 110
    assert (b["signals"], b["directional"], b["hits"], b["trades"]) == (2, 1, 1, 1)
    assert b["buy_and_hold_pct"] == pytest.approx(-10.0)  # 50 -> 45
    assert set(a) == {"signals", "directional", "hits", "hit_rate", "hit_rate_ci95", "tradable_directional",
                      "tradable_hits", "tradable_hit_rate", "tradable_hit_rate_ci95", "trades", "realized_pnl",
                      "fees", "net_pnl", "buy_and_hold_pct"}
    json.dumps(r, allow_nan=False)


def test_report_degenerate_inputs_are_json_safe():
    r = _report(
        points=[],
        trades=[Trade("A", "long", T0, None, 100.0, float("nan"), 1.0, float("inf"), None)],
        outcomes=[_outcome("hold", 1, 2)],
        first_close={},
        last_close={},
        signal_counts={},
        no_trade=0,
        elapsed_s=0.0,
    )
    text = json.dumps(r, allow_nan=False)
    assert "NaN" not in text and "Infinity" not in text
    assert r["return_pct"] == 0.0
    assert r["hit_rate"] is None and r["hit_rate_ci95"] == [0.0, 1.0]
    assert r["buy_and_hold_pct"] is None
    assert r["windows_per_s"] is None
    assert r["trade_list"][0]["exit_price"] is None
    assert r["per_instrument"]["A"]["realized_pnl"] is None


def test_naive_datetimes_are_utc():
    r = _report(points=[EquityPoint(datetime(2024, 3, 1, 12, 0), 10_000.0)])
    assert r["equity_curve"] == [["2024-03-01T12:00:00+00:00", 10_000.0]]


# --- chart and markdown -------------------------------------------------------------------


def test_equity_chart_png_size_and_determinism():
    pts = _points([100, 120, 90, 130, 117])
    png1 = equity_chart_png(pts, "demo")
    png2 = equity_chart_png(pts, "demo")
    assert png1[:8] == b"\x89PNG\r\n\x1a\n"
    assert png1 == png2
    with Image.open(io.BytesIO(png1)) as im:
        assert im.size == (800, 450)
    with Image.open(io.BytesIO(equity_chart_png([], "empty"))) as im:
        assert im.size == (800, 450)


def test_report_markdown():
    r = _report()
    png = equity_chart_png(_points([10_000, 10_400, 9_880, 10_250]), "demo")
    md = report_markdown(r, png)
    assert "| return | 2.50% |" in md
    assert "| max drawdown | 5.00% |" in md
    assert "| A |" in md and "| B |" in md
    m = re.search(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert m
    with Image.open(io.BytesIO(base64.b64decode(m.group(1)))) as im:
        assert im.size == (600, 338)  # 450 * 600 / 800 = 337.5 -> 338
    assert "data:image" not in report_markdown(r, None)
