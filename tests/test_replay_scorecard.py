"""Issue 13, "The scorecard": what the hit rate counts, the hit rate of the signals that could
trade, P&L net of fees, the trade list (fees, net P&L, R multiple) in the JSON and the markdown,
buy-and-hold beside the equity curve, market-closed windows counted apart, and the failed
instruments another step adds to the report. Every expected number is worked by hand in a comment.
Nothing is mocked: these are pure functions over plain records."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from trading_pipelines.replay.chart import _equity_figure
from trading_pipelines.replay.report import (
    MARKET_CLOSED_PREFIX,
    REPORT_KEYS,
    EquityPoint,
    SignalOutcome,
    Trade,
    build_report,
    buy_and_hold_curve,
    equity_chart_png,
    intent_could_trade,
    is_market_closed,
    report_chart_png,
    report_markdown,
    wilson_interval,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def _pts(values):
    return [EquityPoint(T0 + i * H, v) for i, v in enumerate(values)]


def _o(action, close, nxt, could_trade=None, inst="ADA/USDT"):
    return SignalOutcome(inst, T0, action, close, nxt, could_trade=could_trade)


def _build(**kw):
    args = dict(strategy="s", book="b", starting_cash=10_000.0, points=_pts([10_000.0]), trades=[], outcomes=[],
                first_close={}, last_close={}, signal_counts={}, no_trade=0, elapsed_s=1.0)
    args.update(kw)
    return build_report(**args)


# --- 1. what the hit rate counts; the hit rate of signals that could trade ----------------------


def test_a_spot_sell_with_nothing_held_counts_as_a_call_but_not_as_a_signal_that_could_trade():
    """The ADA case in small: three spot sells with nothing held (their intents were holds), one
    sell with a position held, one buy."""
    outcomes = [
        _o("buy", 100, 101, True),    # up, next close up: hit; an entry intent the guards passed
        _o("sell", 100, 99, False),   # down, next close down: hit; nothing held -> planned a hold
        _o("sell", 100, 101, False),  # down, up: miss; nothing held
        _o("sell", 100, 99, False),   # down, down: hit; nothing held
        _o("sell", 100, 101, True),   # down, up: miss; a position held -> an exit intent
        _o("hold", 100, 120, False),  # not directional
    ]
    r = _build(outcomes=outcomes)
    # every directional call: 5, hits buy + 2 sells = 3 -> 0.6 (as before)
    assert (r["directional"], r["hits"]) == (5, 3)
    assert r["hit_rate"] == pytest.approx(0.6)
    # the signals that could trade: the buy (hit) and the held sell (miss) -> 1 of 2 = 0.5
    assert (r["tradable_directional"], r["tradable_hits"]) == (2, 1)
    assert r["tradable_hit_rate"] == pytest.approx(0.5)
    # Wilson(1, 2): p = .5, z^2/n = 1.920729, denom 2.920729, centre = .5,
    #   half = 1.959964/2.920729 * sqrt(.25/2 + 3.841459/16) = 0.671053 * sqrt(.365091) = 0.671053 * 0.604228
    #   = 0.405469 -> (0.094531, 0.905469)
    assert r["tradable_hit_rate_ci95"] == pytest.approx([0.094531, 0.905469], abs=1e-6)
    assert r["tradable_hit_rate_ci95"] == pytest.approx(list(wilson_interval(1, 2)))
    # the report says exactly what each rate counts
    assert r["hit_rate_counts"].startswith("directional signals: buy/long calls up and sell/short/close calls down")
    assert "close 1 bar later" in r["hit_rate_counts"]
    assert "entry or an exit" in r["tradable_counts"] and "nothing held" in r["tradable_counts"]
    a = r["per_instrument"]["ADA/USDT"]
    assert (a["directional"], a["hits"], a["tradable_directional"], a["tradable_hits"]) == (5, 3, 2, 1)
    assert a["tradable_hit_rate"] == pytest.approx(0.5)
    md = report_markdown(r, None)
    assert "| hit rate, every directional call (1 bar) | 60.0% (3 of 5; 95% CI [23.1%, 88.2%]) |" in md
    assert "| hit rate, signals that could trade (1 bar) | 50.0% (1 of 2; 95% CI [9.5%, 90.5%]) |" in md
    assert r["hit_rate_counts"] in md and r["tradable_counts"] in md
    json.dumps(r, allow_nan=False)


def test_without_the_intents_the_tradable_rate_is_unknown_not_zero():
    r = _build(outcomes=[_o("buy", 100, 101), _o("sell", 100, 99)])
    assert (r["directional"], r["hits"]) == (2, 2)
    assert r["tradable_hit_rate"] is None and r["tradable_directional"] is None and r["tradable_hits"] is None
    assert r["tradable_hit_rate_ci95"] is None
    assert "| hit rate, signals that could trade (1 bar) | not known" in report_markdown(r, None)


@pytest.mark.parametrize(("kind", "status", "could"), [
    ("entry", "VALIDATED", True), ("entry", "MONITORING", True), ("exit", "CLOSED", True),
    ("entry", "SUBMITTED", True), ("entry", "REJECTED", False),  # a guard refused it (a position already held, the risk cap)
    ("none", "NO_TRADE", False),  # a hold: a spot sell with nothing held, or a recorded no-trade
    (None, None, False),  # no intent on record for the window
])
def test_intent_could_trade(kind, status, could):
    assert intent_could_trade(kind, status) is could


# --- 2. fees; 3. the trade list -------------------------------------------------------------


def _book_with_fees():
    """A 10 000 book, taker fee 0.1 %:

    A long 10 @ 100, stop 95, exits @ 110: gross +100.00, fees 1.00 + 1.10 = 2.10, net +97.90;
        risk |100 - 95| * 10 = 50 -> R = 97.90 / 50 = 1.958
    B short 4 @ 50, stop 52, stopped @ 53 (slipped): gross (50 - 53) * 4 = -12.00,
        fees 0.20 + 0.212 = 0.412, net -12.412; risk 2 * 4 = 8 -> R = -1.5515
    A long 2 @ 120, stop 114, still open at mark 125: entry fee 0.24, net so far -0.24 (R not yet),
        unrealized (125 - 120) * 2 = +10.00
    final equity = 10 000 + 97.90 - 12.412 - 0.24 + 10.00 = 10 095.248
    """
    trades = [
        Trade("A", "long", T0, T0 + 2 * H, 100.0, 110.0, 10.0, 100.0, "take_profit", fees=2.10, stop=95.0),
        Trade("B", "short", T0 + H, T0 + 3 * H, 50.0, 53.0, 4.0, -12.0, "stop_loss", fees=0.412, stop=52.0),
        Trade("A", "long", T0 + 3 * H, None, 120.0, None, 2.0, 0.0, None, fees=0.24, stop=114.0),
    ]
    points = _pts([10_000.0, 9_999.0, 10_096.9, 10_095.248])
    return trades, points


def test_trades_net_of_fees_sum_to_the_equity_change_up_to_the_open_positions():
    trades, points = _book_with_fees()
    r = _build(trades=trades, points=points)
    a, b, open_a = r["trade_list"]
    assert (a["fees"], a["realized_pnl"]) == (pytest.approx(2.10), pytest.approx(100.0))  # gross kept, named as such
    assert a["net_pnl"] == pytest.approx(97.90)
    assert a["planned_risk"] == pytest.approx(50.0) and a["r_multiple"] == pytest.approx(1.958)
    assert b["net_pnl"] == pytest.approx(-12.412) and b["r_multiple"] == pytest.approx(-1.5515)
    assert open_a["net_pnl"] == pytest.approx(-0.24) and open_a["r_multiple"] is None
    assert open_a["planned_risk"] == pytest.approx(12.0)  # |120 - 114| * 2
    # the totals: gross 88.00, fees 2.752, net 85.248; the open position's +10.00 makes the change
    assert r["realized_pnl"] == pytest.approx(88.0)
    assert r["fees"] == pytest.approx(2.752)
    assert r["net_pnl"] == pytest.approx(85.248)
    unrealized = (125.0 - 120.0) * 2
    assert r["net_pnl"] + unrealized == pytest.approx(points[-1].equity - 10_000.0)  # 95.248
    # the old report's sum (before fees, 88.00) does not match the equity change
    assert sum(t["realized_pnl"] for t in r["trade_list"]) + unrealized != pytest.approx(95.248)
    pa, pb = r["per_instrument"]["A"], r["per_instrument"]["B"]
    assert (pa["realized_pnl"], pa["fees"], pa["net_pnl"]) == (pytest.approx(100.0), pytest.approx(2.34),
                                                               pytest.approx(97.66))
    assert (pb["fees"], pb["net_pnl"]) == (pytest.approx(0.412), pytest.approx(-12.412))
    json.dumps(r, allow_nan=False)


def test_the_trade_list_in_the_markdown():
    trades, points = _book_with_fees()
    md = report_markdown(_build(trades=trades, points=points), None)
    assert "### Trades" in md
    assert ("| instrument | side | entry time | entry | exit time | exit | quantity | fees | P&L (net) | R | exit |"
            in md)
    assert ("| A | long | 2024-01-01 00:00 | 100 | 2024-01-01 02:00 | 110 | 10 | 2.10 | +97.90 | +1.96 | take_profit |"
            in md)
    assert "| B | short | 2024-01-01 01:00 | 50 | 2024-01-01 03:00 | 53 | 4 | 0.41 | -12.41 | -1.55 | stop_loss |" in md
    assert "| A | long | 2024-01-01 03:00 | 120 | open | n/a | 2 | 0.24 | -0.24 | n/a | open |" in md
    assert "| P&L before fees | +88.00 |" in md and "| fees | 2.75 |" in md and "| P&L net of fees | +85.25 |" in md


def test_the_markdown_trade_table_is_bounded():
    trades = [Trade("A", "long", T0 + i * H, T0 + (i + 1) * H, 100.0, 101.0, 1.0, 1.0, "exit", fees=0.2, stop=99.0)
              for i in range(30)]
    md = report_markdown(_build(trades=trades), None)
    rows = [ln for ln in md.splitlines() if ln.startswith("| A | long |")]
    assert len(rows) == 20
    assert rows[0].startswith("| A | long | 2024-01-01 10:00 |")  # the last 20 of 30: trades 10 … 29
    assert "the last 20 of 30 trades" in md
    assert len(_build(trades=trades)["trade_list"]) == 30  # the JSON keeps every trade


def test_a_trade_without_a_stop_has_no_r_multiple():
    r = _build(trades=[Trade("A", "long", T0, T0 + H, 100.0, 101.0, 1.0, 1.0, "exit")])
    t = r["trade_list"][0]
    assert t["fees"] == 0.0 and t["net_pnl"] == pytest.approx(1.0)
    assert t["stop"] is None and t["planned_risk"] is None and t["r_multiple"] is None


# --- 4. buy-and-hold beside the equity curve ------------------------------------------------


def test_buy_and_hold_curve_equal_weight_from_the_same_starting_equity():
    # A 100, 110, 105, 120; B 50, 45, (no bar: 45 carried), 55
    # 10 000 * mean(A_t / 100, B_t / 50): 10 000, 10 000 * (1.1 + .9) / 2 = 10 000,
    #   10 000 * (1.05 + .9) / 2 = 9 750, 10 000 * (1.2 + 1.1) / 2 = 11 500
    closes = {"A": {T0: 100.0, T0 + H: 110.0, T0 + 2 * H: 105.0, T0 + 3 * H: 120.0},
              "B": {T0: 50.0, T0 + H: 45.0, T0 + 3 * H: 55.0}}
    points = _pts([10_000.0, 10_100.0, 10_050.0, 10_200.0])
    curve = buy_and_hold_curve(points, closes, {"A": 100.0, "B": 50.0}, 10_000.0)
    assert [e for _, e in curve] == pytest.approx([10_000.0, 10_000.0, 9_750.0, 11_500.0])
    r = _build(points=points, closes=closes, first_close={"A": 100.0, "B": 50.0}, last_close={"A": 120.0, "B": 55.0})
    assert r["buy_and_hold_curve"][0] == ["2024-01-01T00:00:00+00:00", 10_000.0]
    assert r["buy_and_hold_curve"][-1][1] == pytest.approx(11_500.0)
    # its end agrees with buy_and_hold_pct: (20 % + 10 %) / 2 = 15 % of 10 000
    assert r["buy_and_hold_pct"] == pytest.approx(15.0)
    assert _build(points=points)["buy_and_hold_curve"] == []  # no closes given: no line, nothing invented


def test_the_chart_draws_buy_and_hold_labelled_beside_the_equity():
    points = _pts([10_000.0, 10_100.0, 10_050.0, 10_200.0])
    bh = [(p.as_of, e) for p, e in zip(points, [10_000.0, 10_000.0, 9_750.0, 11_500.0])]
    fig = _equity_figure(points, "demo", buy_and_hold=bh)
    ax_eq = fig.axes[0]
    assert [t.get_text() for t in ax_eq.get_legend().get_texts()] == ["strategy", "buy and hold (equal weight)"]
    assert [list(line.get_ydata()) for line in ax_eq.get_lines()] == [[10_000.0, 10_100.0, 10_050.0, 10_200.0],
                                                                      [10_000.0, 10_000.0, 9_750.0, 11_500.0]]
    with_bh = equity_chart_png(points, "demo", buy_and_hold=bh)
    assert with_bh != equity_chart_png(points, "demo")
    assert with_bh == equity_chart_png(points, "demo", buy_and_hold=bh)  # deterministic
    with Image.open(io.BytesIO(with_bh)) as im:
        assert im.size == (800, 450)
        rgb = im.convert("RGB")
        # tab:orange (255, 127, 14) is the buy-and-hold line's colour
        assert any(abs(r - 255) < 8 and abs(g - 127) < 8 and b < 30 for _, (r, g, b) in rgb.getcolors(800 * 450))


def test_report_chart_png_reads_both_curves_from_the_report():
    closes = {"A": {T0 + i * H: c for i, c in enumerate([100.0, 110.0, 105.0, 120.0])}}
    points = _pts([10_000.0, 10_100.0, 10_050.0, 10_200.0])
    r = _build(points=points, closes=closes, first_close={"A": 100.0}, last_close={"A": 120.0})
    bh = [(T0 + i * H, e) for i, e in enumerate([10_000.0, 11_000.0, 10_500.0, 12_000.0])]
    assert report_chart_png(r, "demo") == equity_chart_png(points, "demo", buy_and_hold=bh)


# --- 5. market-closed windows counted apart ---------------------------------------------------


def test_market_closed_windows_are_counted_apart_from_no_trades():
    assert MARKET_CLOSED_PREFIX == "market closed"
    assert is_market_closed("market closed: XNYS holiday 2024-12-25")
    assert not is_market_closed("stale data: 3 bars missing") and not is_market_closed(None)
    r = _build(no_trade=3, market_closed=2, signal_counts={"buy": 1})
    assert r["signals"] == {"buy": 1, "no_trade": 3}
    assert r["market_closed"] == 2
    md = report_markdown(r, None)
    assert "| no-trade | 3 |" in md and "| market closed | 2 |" in md
    assert _build()["market_closed"] == 0


# --- 6. keys added after build_report: failed instruments and the rest ---------------------------


def test_failed_instruments_and_unknown_keys_are_rendered_not_dropped():
    r = _build()
    r["failed_instruments"] = [{"instrument": "ETH/USDT", "reason": "data/ohlcv/ETH_USDT_4h.csv line 7: high 9 < low 10 | x"}]
    r["note_from_elsewhere"] = "kept"
    md = report_markdown(r, None)
    assert "### Failed instruments" in md
    assert "| ETH/USDT | data/ohlcv/ETH_USDT_4h.csv line 7: high 9 < low 10 / x |" in md  # a | in a reason cannot break the table
    assert "| note_from_elsewhere | kept |" in md
    assert md.index("### Failed instruments") < md.index("| windows |")  # read first
    assert "Failed instruments" not in report_markdown(_build(), None)
    assert tuple(_build()) == REPORT_KEYS


def test_elapsed_not_measured_is_said_not_shown_as_zero():
    md = report_markdown(_build(elapsed_s=0.0), None)
    assert "| elapsed | not measured |" in md and "| windows/s | not measured |" in md
    assert "| elapsed | 2.00 s |" in report_markdown(_build(elapsed_s=2.0), None)


# --- the golden replay: fees and net P&L on 1 656 real windows ---------------------------------


def test_the_golden_replay_trades_net_of_fees_add_up_to_its_equity_change():
    """tests/fixtures/golden/replay_spot_4h_majors.json (spot_4h_majors over its whole shipped range,
    no position open at the end): the 66 trades made +295.72 before fees, paid 377.74 in fees (the
    132 fills' fees), so net -82.02, which is the equity change 9 917.98 - 10 000. The report's old
    per-trade ``realized_pnl`` summed to +295.72 against that -82.02 change."""
    from pathlib import Path

    g = json.loads((Path(__file__).parent / "fixtures" / "golden" / "replay_spot_4h_majors.json").read_text())
    trades = g["trade_list"]
    assert all(t["closed_at"] is not None for t in trades)
    assert sum(t["realized_pnl"] for t in trades) == pytest.approx(295.7191399, abs=1e-6)
    assert sum(t["fees"] for t in trades) == pytest.approx(sum(f["fee"] for f in g["fills"])) == pytest.approx(377.7411495)
    assert all(t["net_pnl"] == pytest.approx(t["realized_pnl"] - t["fees"]) for t in trades)
    change = g["equity_curve"][-1][1] - 10_000.0
    assert change == pytest.approx(-82.0220096, abs=1e-6)
    assert sum(t["net_pnl"] for t in trades) == pytest.approx(change, abs=1e-6)
    # the first trade, by hand: ETH long 0.9419 @ 2626.5 -> 2588.15, taker 0.1 %:
    #   gross (2588.15 - 2626.5) * 0.9419 = -36.121865; fees 2473.90035 * .001 + 2437.778485 * .001 = 4.911678835
    #   net -41.0335438; the entry intent's stop 2532.12: risk (2626.5 - 2532.12) * 0.9419 = 94.38 * 0.9419
    #   = 88.896522 -> R = -41.0335438 / 88.896522 = -0.4615877
    t = trades[0]
    assert t["fees"] == pytest.approx(4.911678835) and t["net_pnl"] == pytest.approx(-41.0335438)
    assert t["stop"] == 2532.12 and t["planned_risk"] == pytest.approx(88.896522)
    assert t["r_multiple"] == pytest.approx(-0.4615877, abs=1e-7)
