"""Killing a review mid-way and re-running the same partitions leaves no duplicate ledger rows,
orders or chart objects. The review is the real CLI in a subprocess, killed with SIGKILL (no
cleanup runs), on the embedded defaults (SQLite ledger and instance, local chart folder)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import func, select

from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope

ARGS = ["review", "spot_4h_majors", "--start", "2026-02-27-00:00", "--end", "2026-02-27-20:00", "--quiet"]
WINDOWS, INSTRUMENTS = 6, 3


def _cli(env, timeout=None, kill_after_rows=None, ledger=None):
    p = subprocess.Popen([sys.executable, "-m", "trading_pipelines.cli", *ARGS], env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_after_rows is None:
        return p.wait(timeout=timeout)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and p.poll() is None:
        if ledger.exists():
            try:
                with session_scope(get_engine(f"sqlite:///{ledger}")) as s:
                    if s.execute(select(func.count()).select_from(m.OrderRow)).scalar_one() >= kill_after_rows:
                        break
            except Exception:
                pass
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    return p.wait(timeout=30)


def _counts(engine):
    with session_scope(engine) as s:
        c = {mdl.__tablename__: s.execute(select(func.count()).select_from(mdl)).scalar_one()
             for mdl in (m.SignalRow, m.IntentRow, m.OrderRow, m.FillRow, m.PaperOrderRow, m.PaperFillRow,
                         m.SnapshotRow, m.GuardResultRow, m.IntentStatusRow)}
        c["distinct_order_intents"] = s.execute(select(func.count(func.distinct(m.OrderRow.intent_id)))).scalar_one()
    return c


def test_kill_mid_review_then_rerun(tmp_path):
    ledger = tmp_path / "ledger.sqlite"
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"), TRADING_LEDGER_URL=f"sqlite:///{ledger}",
               TRADING_CHART_DIR=str(tmp_path / "charts"))
    rc = _cli(env, kill_after_rows=1, ledger=ledger)
    assert rc == -signal.SIGKILL
    engine = get_engine(f"sqlite:///{ledger}")
    partial = _counts(engine)
    assert 0 < partial["signals"] < WINDOWS * INSTRUMENTS  # killed in the middle

    assert _cli(env, timeout=600) == 0
    first = _counts(engine)
    assert first["signals"] == first["intents"] == first["portfolio_snapshots"] == WINDOWS * INSTRUMENTS
    charts = sorted(p.relative_to(tmp_path / "charts") for p in (tmp_path / "charts").rglob("*") if p.is_file())
    assert len(charts) == WINDOWS * INSTRUMENTS and all(p.suffix == ".png" for p in charts)

    assert _cli(env, timeout=600) == 0  # and once more, whole: nothing changes
    assert _counts(engine) == first
    assert sorted(p.relative_to(tmp_path / "charts") for p in (tmp_path / "charts").rglob("*") if p.is_file()) == charts
    with session_scope(engine) as s:
        # one order per (intent, role): client order ids derive from the intent id
        dup = s.execute(select(m.OrderRow.intent_id, m.OrderRow.role, func.count()).group_by(
            m.OrderRow.intent_id, m.OrderRow.role).having(func.count() > 1)).all()
    assert dup == []
