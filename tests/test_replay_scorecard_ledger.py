"""Issue 13, "The scorecard", through a real replay and its ledger: the report's trades, net of
their fills' fees, add up to the book's equity change (up to the open positions' unrealized P&L);
each trade's fees are its fills' fees, its R multiple uses the stop its entry intent planned; the
signals that could trade are those whose intent was an entry or exit the guards passed; the
buy-and-hold curve starts at the starting cash and ends at ``buy_and_hold_pct``.

Needs ``book_report`` (assets/account_assets.py) to pass ``fees``/``stop`` to each ``Trade``,
``could_trade`` to each ``SignalOutcome`` and ``closes`` to ``build_report`` (before that call
change, ``fees`` are all 0 and this fails). Nothing is mocked: the shipped rules strategy on the
shipped candles, a fresh embedded home."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest
from sqlalchemy import create_engine, text

from trading_pipelines.cli import main
from trading_pipelines.replay.report import intent_could_trade


def _replay(*args: str) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["replay", "spot_4h_majors", *args, "--no-charts", "--json", "--quiet"]) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_the_trades_net_of_fees_add_up_to_the_equity_change(embedded_home):
    # 2026-02-25 … 2026-02-26T20:00: SOL and ETH entries on 02-26 are still open at the last window
    rep = _replay("--start", "2026-02-25T00:00Z", "--end", "2026-02-26T20:00Z")
    book = rep["book"]
    with create_engine(f"sqlite:///{embedded_home / 'ledger.sqlite'}").connect() as c:
        fills = [dict(r._mapping) for r in c.execute(text(
            "select f.instrument, f.side, f.quantity, f.price, f.fee, f.time, o.role, i.stop from fills f "
            "join orders o on o.client_order_id = f.client_order_id join intents i on i.intent_id = o.intent_id "
            "where f.book = :b order by f.time"), {"b": book})]
        last = c.execute(text("select equity, unrealized_pnl from portfolio_snapshots where book = :b "
                              "order by as_of desc limit 1"), {"b": book}).one()
        intents = {(r.instrument, r.window_end): intent_could_trade(r.kind, r.status) for r in c.execute(text(
            "select instrument, window_end, kind, status from intents where book = :b"), {"b": book})}
    # two entries, both open at the last window (taker fee 0.1 %, marks at the 2026-02-27 00:00 close):
    #   SOL long 20.04 @ 87.99, stop 83.39: fee 1 763.3196 * .001 = 1.7633196; risk 4.60 * 20.04 = 92.184;
    #       unrealized (85.91 - 87.99) * 20.04 = -41.6832
    #   ETH long 0.9307 @ 2 054.39, stop 1 956.37: fee 1 912.020773 * .001 = 1.912020773;
    #       risk 98.02 * 0.9307 = 91.227214; unrealized (2 027.68 - 2 054.39) * 0.9307 = -24.858997
    #   net P&L -3.675340373 + unrealized -66.542197 = -70.217537 = 9 929.782463 - 10 000
    assert [(t["instrument"], t["quantity"], t["entry_price"], t["stop"], t["closed_at"]) for t in rep["trade_list"]] == [
        ("SOL/USDT", 20.04, 87.99, 83.39, None), ("ETH/USDT", 0.9307, 2054.39, 1956.37, None)]
    sol, eth = rep["trade_list"]
    assert (sol["fees"], sol["net_pnl"], sol["planned_risk"]) == (
        pytest.approx(1.7633196), pytest.approx(-1.7633196), pytest.approx(92.184))
    assert (eth["fees"], eth["planned_risk"]) == (pytest.approx(1.912020773), pytest.approx(91.227214))
    assert rep["fees"] == pytest.approx(3.675340373) == pytest.approx(sum(f["fee"] for f in fills))
    assert last.unrealized_pnl == pytest.approx(-66.542197, abs=1e-6)
    assert last.equity == pytest.approx(9_929.782463, abs=1e-6)
    # equity change = net P&L of the trades + the open positions' unrealized P&L
    assert rep["equity_curve"][-1][1] == pytest.approx(last.equity)
    assert rep["net_pnl"] + last.unrealized_pnl == pytest.approx(last.equity - 10_000.0, abs=1e-6)
    assert rep["net_pnl"] == pytest.approx(rep["realized_pnl"] - rep["fees"])
    for t in rep["trade_list"]:
        entry = next(f for f in fills if f["role"] == "entry" and f["instrument"] == t["instrument"]
                     and f["time"].replace(" ", "T").startswith(t["opened_at"][:19]))
        assert t["stop"] == entry["stop"]
        assert t["planned_risk"] == pytest.approx(abs(t["entry_price"] - entry["stop"]) * t["quantity"])
        if t["closed_at"] is None:
            assert t["r_multiple"] is None
        else:
            assert t["r_multiple"] == pytest.approx(t["net_pnl"] / t["planned_risk"])
    # the signals that could trade are those whose intent was an entry or exit the guards passed
    assert rep["tradable_directional"] is not None
    assert rep["tradable_directional"] <= rep["directional"]
    assert sum(intents.values()) >= rep["tradable_directional"]
    # buy-and-hold: one point per window, from the starting cash to buy_and_hold_pct
    assert len(rep["buy_and_hold_curve"]) == rep["windows"]
    assert rep["buy_and_hold_curve"][0][1] == pytest.approx(10_000.0)
    assert rep["buy_and_hold_curve"][-1][1] == pytest.approx(10_000.0 * (1 + rep["buy_and_hold_pct"] / 100))
