"""Killing a review mid-way and re-running the same partitions leaves no duplicate ledger rows,
orders or objects. The review is the real CLI in a subprocess, killed with SIGKILL (no cleanup
runs), once on the embedded defaults (SQLite, local chart folder) and once on production storage
(Dagster and the ledger on Postgres, charts and Parquet frames on the S3 server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import func, select

from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope

ARGS = ["review", "spot_4h_majors", "--start", "2026-02-27-00:00", "--end", "2026-02-27-20:00", "--quiet"]
WINDOWS, INSTRUMENTS = 6, 3


def _cli(env, ledger_url, timeout=600, kill_after_orders=None):
    p = subprocess.Popen([sys.executable, "-m", "trading_pipelines.cli", *ARGS], env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after_orders is None:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err.decode()[-3000:]
        return p.returncode
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and p.poll() is None:
        try:
            with session_scope(get_engine(ledger_url)) as s:
                if s.execute(select(func.count()).select_from(m.OrderRow)).scalar_one() >= kill_after_orders:
                    break
        except Exception:
            pass  # the ledger may not exist yet
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    return p.wait(timeout=30)


def _counts(engine):
    with session_scope(engine) as s:
        c = {mdl.__tablename__: s.execute(select(func.count()).select_from(mdl)).scalar_one()
             for mdl in (m.SignalRow, m.IntentRow, m.OrderRow, m.FillRow, m.PaperOrderRow, m.PaperFillRow,
                         m.SnapshotRow, m.GuardResultRow, m.IntentStatusRow, m.PositionRow)}
        c["duplicate_orders"] = len(s.execute(select(m.OrderRow.intent_id, m.OrderRow.role).group_by(
            m.OrderRow.intent_id, m.OrderRow.role).having(func.count() > 1)).all())
    return c


def _kill_rerun(env, ledger_url, list_objects):
    assert _cli(env, ledger_url, kill_after_orders=1) == -signal.SIGKILL
    engine = get_engine(ledger_url)
    partial = _counts(engine)
    assert 0 < partial["signals"] < WINDOWS * INSTRUMENTS  # killed in the middle

    _cli(env, ledger_url)
    first = _counts(engine)
    assert first["signals"] == first["intents"] == first["portfolio_snapshots"] == WINDOWS * INSTRUMENTS
    assert first["orders"] > 0 and first["duplicate_orders"] == 0
    objects = list_objects()
    charts = [o for o in objects if o.endswith(".png")]
    assert len(charts) == WINDOWS * INSTRUMENTS

    _cli(env, ledger_url)  # and once more, whole: nothing changes
    assert _counts(engine) == first
    assert list_objects() == objects


def test_kill_mid_review_then_rerun_embedded(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"), TRADING_LEDGER_URL=ledger,
               TRADING_CHART_DIR=str(tmp_path / "charts"), TRADING_FRAMES_PATH=str(tmp_path / "frames"))
    env.pop("TRADING_CHART_STORE", None)

    def objects():
        return sorted(str(p.relative_to(tmp_path)) for d in ("charts", "frames") for p in (tmp_path / d).rglob("*") if p.is_file())

    _kill_rerun(env, ledger, objects)
    assert sum(o.endswith(".parquet") for o in objects()) == 2 * WINDOWS * INSTRUMENTS


@pytest.mark.postgres
@pytest.mark.s3
def test_kill_mid_review_then_rerun_production(dagster_home_on_postgres, postgres_server, s3_server):
    ledger = postgres_server.create_database(f"ledger_{uuid.uuid4().hex[:8]}")
    charts, frames = f"charts-{uuid.uuid4().hex[:8]}", f"frames-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, TRADING_LEDGER_URL=ledger, TRADING_CHART_STORE="minio", MINIO_ENDPOINT=s3_server.endpoint,
               MINIO_ACCESS_KEY=s3_server.access_key, MINIO_SECRET_KEY=s3_server.secret_key, MINIO_BUCKET=charts,
               MINIO_SECURE="false", TRADING_FRAMES_PATH=f"s3://{frames}/frames")
    client = s3_server.client()

    def objects():
        return sorted(f"{b}/{o.object_name}" for b in (charts, frames) if client.bucket_exists(b)
                      for o in client.list_objects(b, recursive=True))

    _kill_rerun(env, ledger, objects)
    assert sum(o.endswith(".parquet") for o in objects()) == 2 * WINDOWS * INSTRUMENTS
