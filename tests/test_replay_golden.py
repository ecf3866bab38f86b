"""The execution engine changed how every order travels (legs written ahead, one sync, aggregated
positions) but not what a strategy decides: the replay of ``spot_4h_majors`` over its whole shipped
range gives the same fills, equity curve and trade list as on 39841a4, the commit before the engine
(recorded in tests/fixtures/golden/replay_spot_4h_majors.json by
``trading-pipelines replay spot_4h_majors --last 100000 --no-charts --json`` on a fresh DAGSTER_HOME)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

from sqlalchemy import create_engine, text

from trading_pipelines.cli import main

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "replay_spot_4h_majors.json"


def test_the_shipped_replay_is_unchanged_by_the_engine(embedded_home):
    golden = json.loads(GOLDEN.read_text())
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["replay", "spot_4h_majors", "--last", "100000", "--no-charts", "--json", "--quiet"]) == 0
    rep = json.loads(out.getvalue().strip().splitlines()[-1])
    assert (rep["windows"], rep["trades"]) == (golden["windows"], golden["trades"]) == (1656, 66)
    assert rep["trade_list"] == golden["trade_list"]
    assert rep["equity_curve"] == golden["equity_curve"]
    assert rep["return_pct"] == golden["return_pct"] and rep["max_drawdown_pct"] == golden["max_drawdown_pct"]
    with create_engine(f"sqlite:///{embedded_home / 'ledger.sqlite'}").connect() as c:
        fills = [dict(r._mapping) for r in c.execute(text(
            "select client_order_id, instrument, side, quantity, price, fee, time from fills where book = :b "
            "order by time, fill_id"), {"b": rep["book"]})]
    # the book's id hashes the whole strategy spec (it gained execution.protection), so the intents' and
    # client order ids differ: the leg each fill belongs to is its id's role suffix
    def same(f):
        return (f["client_order_id"][-2:], f["instrument"], f["side"], f["quantity"], f["price"], f["fee"], str(f["time"]))
    assert sorted(map(same, fills)) == sorted(map(same, golden["fills"])) and len(fills) == 132
