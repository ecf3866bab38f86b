"""Crash injection on the IBKR route (TWS / IB Gateway cannot run here: tests/fake_ib.py stands in,
shared by the killed run and the re-run as the real TWS would be).

The pipeline's account step for one window (a forced buy of AAPL on the shipped equities file with
``venue: {kind: ibkr}``) is killed, then run again in a new runtime (a new ib_async session that
has forgotten what the killed one placed, ``FakeIB.forget_session``):

* at every 3rd ledger statement: an exception raised just before the N-th statement reaches the
  ledger, so the transaction in progress is lost as under SIGKILL, while IB keeps what it was sent
  (the Binance routes are killed with a real SIGKILL in tests/test_crash_harness.py);
* right after each accepted ``placeOrder`` (``FakeIB.crash_after_placements``).

Between the two runs the entry fills at IB (the position exists while nobody watches). After the
re-run: no ``orderRef`` placed twice, every order IB holds is in the ledger, the intent is there,
and the 363 shares have a working stop for all of them.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from fake_ib import FakeIB, SimulatedCrash
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from test_venues_e2e import AAPL_END, forced_buy, run, spec_with

from trading_pipelines import runtime
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.resources.dagster_resources import default_resources
from trading_pipelines.venues import factory


class Killed(BaseException):
    """The process dies before this ledger statement."""


def kill_at(ledger_db: str, n: int | None):
    state = {"n": 0}

    def before(conn, cursor, statement, parameters, context, executemany):
        if conn.engine.url.database != ledger_db:
            return
        state["n"] += 1
        if n is not None and state["n"] == n:
            raise Killed(f"killed before ledger statement {n}: {statement[:60]}")

    event.listen(Engine, "before_cursor_execute", before)
    return state, lambda: event.remove(Engine, "before_cursor_execute", before)


def ib_env(monkeypatch, tmp, ib: FakeIB):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(tmp / "charts"))
    monkeypatch.setenv("TRADING_PIPELINES_LIVE", "1")
    monkeypatch.setattr(factory, "CLIENTS", {"ibkr": lambda: ib})
    monkeypatch.setattr(runtime, "WALL_CLOCK", lambda: AAPL_END + timedelta(hours=1))


def new_ib() -> FakeIB:
    ib = FakeIB()
    ib.set_account_values({"NetLiquidation": 100_000.0, "TotalCashValue": 100_000.0, "UnrealizedPnL": 0.0, "RealizedPnL": 0.0})
    return ib


SPEC = spec_with("equities_1d_spy_aapl", {"kind": "ibkr", "account": "DU1234567"})


def one_point(monkeypatch, tmp, stmt: int | None = None, after_place: int | None = None) -> tuple[list[str], int]:
    """Kill, fill at IB, re-run; the problems found, and the ledger statements of the killed run."""
    tmp.mkdir()
    ib = new_ib()
    ib_env(monkeypatch, tmp, ib)
    rt = default_resources()["trading"].runtime(SPEC)
    sig, market = forced_buy(rt, "AAPL", AAPL_END)
    ib.crash_after_placements = after_place
    state, remove = kill_at(str(tmp / "ledger.sqlite"), stmt)
    try:
        run(rt, "AAPL", AAPL_END, sig, market)
    except (Killed, SimulatedCrash):
        pass
    finally:
        remove()
    ib.crash_after_placements = None
    entry = next((o for _, o in ib.placed if o.orderRef.endswith("-en")), None)
    if entry is not None:
        ib.fill(entry.orderRef, 149.0)  # filled while nobody watched
    ib.forget_session()
    run(default_resources()["trading"].runtime(SPEC), "AAPL", AAPL_END, sig, market)  # the re-run, a new session
    problems = []
    refs = Counter(o.orderRef for _, o in ib.placed)
    problems += [f"{r} placed {k} times" for r, k in refs.items() if k > 1]
    with session_scope(rt.engine) as s:
        ledger = set(s.execute(select(m.OrderRow.client_order_id)).scalars())
        intents = s.execute(select(m.IntentRow).where(m.IntentRow.kind == "entry")).scalars().all()
    problems += [f"{r} at IB, not in the ledger" for r in refs if r.startswith("tp-") and r not in ledger]
    if not intents:
        problems.append("the intent is lost")
    for pos in ib.positions():
        stops = [t for t in ib.openTrades() if t.order.orderType == "STP" and t.order.action == "SELL"
                 and t.orderStatus.status in ("Submitted", "PreSubmitted")]
        covered = sum(float(t.order.totalQuantity) for t in stops)
        if covered < float(pos.position):
            problems.append(f"{pos.position} shares held, working stops cover {covered}")
    return problems, state["n"]


def test_ibkr_crash_at_every_third_ledger_statement_and_after_every_placement(tmp_path, monkeypatch):
    clean, total = one_point(monkeypatch, tmp_path / "clean")
    assert clean == [] and total > 20
    results = {}
    points = [("stmt", n) for n in range(1, total + 1, 3)] + [("place", k) for k in (1, 2, 3)]
    for kind, n in points:
        with monkeypatch.context() as mp:
            problems, _ = one_point(mp, tmp_path / f"{kind}{n}", **({"stmt": n} if kind == "stmt" else {"after_place": n}))
        results[f"{kind} {n}"] = problems
    print(f"IBKR crash points: {len(points)} ({total} ledger statements in a clean run)")
    failing = {k: v for k, v in results.items() if v}
    assert len(points) >= 20
    assert failing == {}, failing
