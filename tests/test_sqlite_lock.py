"""A ledger (or paper-venue) transaction on SQLite waits out another writer instead of crashing
(issue 13, "SQLite lock": a 600-window replay at load 16 crashed once with
``sqlite3.OperationalError: database is locked`` in ``BEGIN IMMEDIATE`` inside ``analyze_many``).

Real SQLite files, real SQLAlchemy engines from :func:`get_engine`. The other writer is a plain
``sqlite3`` connection holding the write lock (``BEGIN IMMEDIATE``) for 1.5 s, far longer than the
busy timeout the test gives the engine's connections (100 ms, set by a ``connect`` listener that
runs after the engine's own pragmas): on the old code the ``BEGIN IMMEDIATE`` of
:func:`session_scope` failed after 100 ms. Now the transaction is retried (tenacity) until the lock
is free, and the block runs once: one row, never two.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from sqlalchemy import event, func, select

from trading_pipelines.ledger import db
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.ledger.models import PaperAccountRow

HOLD_S = 1.5
BUSY_MS = 100


def _engine(path):
    engine = get_engine(f"sqlite:///{path}")

    def short_busy(dbapi_conn, _record):  # test-shortened busy timeout (the engine's own is 30 s)
        dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")

    event.listen(engine, "connect", short_busy)
    engine.dispose()  # connections made from here on get the short timeout
    return engine


def _hold_write_lock(path, held: threading.Event, seconds: float) -> threading.Thread:
    def run() -> None:
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        con.execute("COMMIT")
        con.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_write_waits_out_a_writer_holding_the_lock_longer_than_the_busy_timeout(tmp_path):
    path = tmp_path / "ledger.sqlite"
    engine = _engine(path)
    with engine.connect() as c:  # the short timeout is in force
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_MS
    held = threading.Event()
    blocker = _hold_write_lock(path, held, HOLD_S)
    assert held.wait(5)
    runs = []
    t0 = time.perf_counter()
    with session_scope(engine) as s:
        runs.append(1)
        s.add(PaperAccountRow(account="a1", mode="spot", starting_cash=1000.0, cash=1000.0, realized_pnl=0.0,
                              fees_paid=0.0, state={}))
    waited = time.perf_counter() - t0
    blocker.join(5)
    assert runs == [1]  # the block ran once
    assert waited >= HOLD_S - 0.3  # it waited for the other writer (about 15 busy timeouts)
    with session_scope(engine) as s:
        assert s.execute(select(func.count()).select_from(PaperAccountRow)).scalar() == 1


def test_an_exception_inside_the_block_is_not_retried_and_rolls_back(tmp_path):
    engine = _engine(tmp_path / "ledger.sqlite")
    runs = []
    try:
        with session_scope(engine) as s:
            runs.append(1)
            s.add(PaperAccountRow(account="a1", mode="spot", starting_cash=1.0, cash=1.0, realized_pnl=0.0,
                                  fees_paid=0.0, state={}))
            s.flush()
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert runs == [1]
    with session_scope(engine) as s:
        assert s.execute(select(func.count()).select_from(PaperAccountRow)).scalar() == 0


def test_the_paper_venue_store_waits_too(tmp_path):
    """The paper venue's own SQLite store goes through the same helper (``PaperExchange.unit_of_work``)."""
    from datetime import timedelta

    import pandas as pd

    from trading_pipelines.domain.models import Mode
    from trading_pipelines.venues.paper import PaperExchange

    path = tmp_path / "venue.sqlite"
    engine = _engine(path)
    venue = PaperExchange("acct", Mode.SPOT, 1000.0, 0.001, 0.0, lambda *a: pd.DataFrame(), timedelta(hours=4), engine)
    held = threading.Event()
    blocker = _hold_write_lock(path, held, HOLD_S)
    assert held.wait(5)
    assert venue.fetch_balance().cash == 1000.0  # opens the account (an insert) while the lock is held elsewhere
    blocker.join(5)
    with session_scope(engine) as s:
        assert s.execute(select(func.count()).select_from(PaperAccountRow)).scalar() == 1


def test_only_lock_errors_are_retried():
    import sqlalchemy.exc as sa_exc

    locked = sa_exc.OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))
    other = sa_exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x"))
    assert db._is_locked(locked) and not db._is_locked(other) and not db._is_locked(RuntimeError("database is locked"))
