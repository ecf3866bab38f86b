"""Killing a review mid-way and re-running the same command leaves no duplicate ledger rows,
venue orders or objects. The review is the real CLI in a subprocess (``trading-pipelines review
spot_4h_majors --last 30``: one in-process run of ``review_spot_4h_majors`` over 30 windows on the
live book), killed with SIGKILL (no cleanup runs) twice: once in the analysis step (some
instruments' signals recorded, no account window yet) and once in the account step (the book has
orders, some windows' snapshots are missing). Then it is re-run whole, and once more: the second
full run changes nothing. Once on the embedded defaults (SQLite ledger, the paper venue's own
SQLite store, local chart and frame folders) and once on production storage (Dagster, the ledger
and the venue on Postgres, charts and Parquet frames on the S3 server).

The embedded run is also compared with a run of the same command that was never killed: the
crashes must not change a single decision."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from trading_pipelines.io_managers import safe_segment
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope

SPOT = "spot_4h_majors"
INSTRUMENTS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
ARGS = ["review", SPOT, "--last", "30", "--quiet"]
WINDOWS = 30  # 2026-02-27-00:00 … 2026-03-03-20:00, the strategy's last 30 windows
FIRST_WINDOW, LAST_WINDOW = "2026-02-27-00:00", "2026-03-03-20:00"
# Indicator chunks are 512 4h bars aligned on the UTC epoch; every window above falls in the one
# starting 2026-01-27 00:00 (epoch + 240 × 512 × 4h), so one frame object per instrument.
FRAME_OBJECTS = {f"{SPOT}/indicator_frames/instrument={safe_segment(i)}/chunk={safe_segment('2026-01-27T00:00')}.parquet"
                 for i in INSTRUMENTS}
LEDGER_MODELS = (m.SignalRow, m.IntentRow, m.OrderRow, m.FillRow, m.SnapshotRow, m.GuardResultRow, m.IntentStatusRow,
                 m.PositionRow, m.BookRow)
VENUE_MODELS = (m.PaperAccountRow, m.PaperOrderRow, m.PaperFillRow)


def _ledger_counts(engine) -> dict[str, int]:
    try:
        with session_scope(engine) as s:
            return {t: s.execute(select(func.count()).select_from(mdl)).scalar_one()
                    for t, mdl in (("signals", m.SignalRow), ("orders", m.OrderRow), ("snapshots", m.SnapshotRow))}
    except Exception:  # noqa: BLE001 - the ledger may not exist yet
        return {"signals": 0, "orders": 0, "snapshots": 0}


def _cli(env, ledger_url, timeout=600, kill_when=None, cwd=None):
    """Run the CLI to completion (asserting success), or SIGKILL its process group as soon as
    ``kill_when(ledger counts)`` holds; returns the exit status."""
    err = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would stall the CLI while we poll
    p = subprocess.Popen([sys.executable, "-m", "trading_pipelines.cli", *ARGS], env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=err, cwd=cwd)
    if kill_when is None:
        p.wait(timeout=timeout)
        err.seek(0)
        assert p.returncode == 0, err.read().decode(errors="replace")[-3000:]
        return p.returncode
    # a plain engine, read-only on SQLite: get_engine would migrate the database the CLI is creating
    url = ledger_url.replace("sqlite:///", "sqlite:///file:", 1) + "?mode=ro&uri=true" if ledger_url.startswith("sqlite") else ledger_url
    engine = create_engine(url)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and p.poll() is None:
            if kill_when(_ledger_counts(engine)):
                break
            time.sleep(0.005)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        engine.dispose()
    err.close()
    return p.wait(timeout=30)


def _counts(engine, venue_engine) -> dict:
    with session_scope(engine) as s:
        c = {mdl.__tablename__: s.execute(select(func.count()).select_from(mdl)).scalar_one() for mdl in LEDGER_MODELS}
        c["duplicate_orders"] = len(s.execute(select(m.OrderRow.intent_id, m.OrderRow.role).group_by(
            m.OrderRow.intent_id, m.OrderRow.role).having(func.count() > 1)).all())
        c["ledger_order_ids"] = sorted(s.execute(select(m.OrderRow.client_order_id)).scalars())
        c["ledger_fill_ids"] = sorted(s.execute(select(m.FillRow.fill_id)).scalars())
        c["books"] = sorted((b.book_id, b.strategy, b.windows_done) for b in s.execute(select(m.BookRow)).scalars())
        c["snapshot_windows"] = sorted(s.execute(select(m.SnapshotRow.partition_key)).scalars())
        c["charts"] = sorted((r.chart_key, r.chart_sha256) for r in s.execute(select(m.SignalRow)).scalars())
    with session_scope(venue_engine) as s:
        for mdl in VENUE_MODELS:
            c[f"venue_{mdl.__tablename__}"] = s.execute(select(func.count()).select_from(mdl)).scalar_one()
        accounts = s.execute(select(m.PaperAccountRow)).scalars().all()
        resting = [o["client_order_id"] for a in accounts for o in (a.state or {}).get("orders", [])]
        done = list(s.execute(select(m.PaperOrderRow.client_order_id)).scalars())
        c["venue_resting"] = len(resting)
        c["venue_order_ids"] = sorted(resting + done)  # a duplicate would show twice here
        c["venue_fill_ids"] = sorted(s.execute(select(m.PaperFillRow.fill_id)).scalars())
        c["venue_accounts"] = sorted((a.account, a.cash, a.realized_pnl, a.fees_paid) for a in accounts)
    return c


def _decisions(engine) -> dict:
    """What the book decided and did, free of run ids and wall-clock times."""
    with session_scope(engine) as s:
        return {
            "intents": sorted((r.intent_id, r.instrument, r.partition_key, r.kind, r.status, r.quantity)
                              for r in s.execute(select(m.IntentRow)).scalars()),
            "orders": sorted((r.client_order_id, r.role, r.status, r.quantity, r.filled_quantity, r.average_price)
                             for r in s.execute(select(m.OrderRow)).scalars()),
            "fills": sorted((r.fill_id, r.price, r.quantity, r.fee, r.time) for r in s.execute(select(m.FillRow)).scalars()),
            "snapshots": sorted((r.partition_key, r.cash, r.equity, r.realized_pnl) for r in s.execute(select(m.SnapshotRow)).scalars()),
        }


def _kill_rerun(env, ledger_url, venue_url, list_objects, read_object, cwd=None):
    # 1. killed in the analysis step: some instruments' signals are in, the account has not started
    assert _cli(env, ledger_url, cwd=cwd, kill_when=lambda c: c["signals"] > 0) == -signal.SIGKILL
    engine = get_engine(ledger_url)
    partial = _ledger_counts(engine)
    assert 0 < partial["signals"] < WINDOWS * len(INSTRUMENTS), partial  # killed in the middle
    assert partial["snapshots"] == 0 and partial["orders"] == 0, partial

    # 2. re-run, killed in the account step: the book has traded, some windows are not done yet (the
    #    engine writes a window's legs ahead, before its snapshot: wait for both)
    assert _cli(env, ledger_url, cwd=cwd, kill_when=lambda c: c["orders"] > 0 and c["snapshots"] > 0) == -signal.SIGKILL
    partial = _ledger_counts(engine)
    assert partial["signals"] == WINDOWS * len(INSTRUMENTS) and partial["orders"] > 0, partial
    assert 0 < partial["snapshots"] < WINDOWS, partial  # killed in the middle of the account walk

    # 3. re-run whole
    _cli(env, ledger_url, cwd=cwd)
    venue_engine = get_engine(venue_url)
    first = _counts(engine, venue_engine)
    assert first["signals"] == first["intents"] == WINDOWS * len(INSTRUMENTS)
    assert first["portfolio_snapshots"] == WINDOWS  # one snapshot of the book per window
    assert first["snapshot_windows"][0] == FIRST_WINDOW and first["snapshot_windows"][-1] == LAST_WINDOW
    assert len(set(first["snapshot_windows"])) == WINDOWS
    assert first["books"] == [("live", SPOT, WINDOWS)]
    assert first["orders"] > 0 and first["duplicate_orders"] == 0 and first["fills"] > 0
    # the venue holds each order once, and the ledger mirrors exactly the venue's orders and fills
    assert len(set(first["venue_order_ids"])) == len(first["venue_order_ids"]) == first["orders"]
    assert first["venue_order_ids"] == first["ledger_order_ids"]
    assert first["venue_fill_ids"] == first["ledger_fill_ids"] and first["venue_paper_fills"] == first["fills"]
    assert first["venue_paper_accounts"] == 1
    objects = list_objects()
    charts = [o for o in objects if o.endswith(".png")]
    frames = [o for o in objects if o.endswith(".parquet")]
    assert len(charts) == WINDOWS * len(INSTRUMENTS)
    assert sorted(frames) == sorted(FRAME_OBJECTS)  # one object per instrument per indicator chunk
    assert len(objects) == len(charts) + len(frames)  # no temp or partial leftovers of the killed runs
    # every signal's chart is an object of the store, with the bytes the ledger recorded
    assert {k for k, _ in first["charts"]} == set(charts)
    for key, sha in first["charts"]:
        assert hashlib.sha256(read_object(key)).hexdigest() == sha, key

    _cli(env, ledger_url, cwd=cwd)  # and once more, whole: nothing changes
    assert _counts(engine, venue_engine) == first
    assert list_objects() == objects
    return first


def test_kill_mid_review_then_rerun_embedded(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    def setup(root: Path):
        root.mkdir()
        ledger = f"sqlite:///{root / 'ledger.sqlite'}"
        env = dict(os.environ, DAGSTER_HOME=str(root / "home"), TRADING_LEDGER_URL=ledger,
                   TRADING_CHART_DIR=str(root / "charts"), TRADING_FRAMES_PATH=str(root / "frames"))
        for var in ("TRADING_CHART_STORE", "TRADING_VENUE_URL"):
            env.pop(var, None)
        return env, ledger, f"sqlite:///{root / 'home' / 'paper_venue.sqlite'}"

    env, ledger, venue = setup(killed)

    def objects():
        return sorted(str(p.relative_to(killed / d)) for d in ("charts", "frames") for p in (killed / d).rglob("*")
                      if p.is_file())

    def read(key: str) -> bytes:
        return (killed / "charts" / key).read_bytes()

    first = _kill_rerun(env, ledger, venue, objects, read, cwd=killed)
    assert (killed / "home" / "paper_venue.sqlite").is_file()  # the venue's own store, not the ledger
    with session_scope(get_engine(ledger)) as s:
        assert s.execute(select(func.count()).select_from(m.PaperAccountRow)).scalar_one() == 0

    # the same command, never killed, decides exactly the same
    env2, ledger2, venue2 = setup(clean)
    _cli(env2, ledger2, cwd=clean)
    assert _decisions(get_engine(ledger2)) == _decisions(get_engine(ledger))
    again = _counts(get_engine(ledger2), get_engine(venue2))
    assert {k: v for k, v in again.items() if k != "charts"} == {k: v for k, v in first.items() if k != "charts"}
    assert [sha for _, sha in again["charts"]] == [sha for _, sha in first["charts"]]


@pytest.mark.postgres
@pytest.mark.s3
def test_kill_mid_review_then_rerun_production(dagster_home_on_postgres, postgres_server, s3_server, tmp_path):
    ledger = postgres_server.create_database(f"ledger_{uuid.uuid4().hex[:8]}")
    charts, frames = f"charts-{uuid.uuid4().hex[:8]}", f"frames-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, TRADING_LEDGER_URL=ledger, TRADING_CHART_STORE="minio", MINIO_ENDPOINT=s3_server.endpoint,
               MINIO_ACCESS_KEY=s3_server.access_key, MINIO_SECRET_KEY=s3_server.secret_key, MINIO_BUCKET=charts,
               MINIO_SECURE="false", TRADING_FRAMES_PATH=f"s3://{frames}/frames")
    env.pop("TRADING_VENUE_URL", None)  # the venue on the ledger's Postgres server (its own tables)
    client = s3_server.client()

    def objects():
        out = [o.object_name for o in client.list_objects(charts, recursive=True)] if client.bucket_exists(charts) else []
        if client.bucket_exists(frames):
            out += [o.object_name.removeprefix("frames/") for o in client.list_objects(frames, recursive=True)]
        return sorted(out)

    def read(key: str) -> bytes:
        resp = client.get_object(charts, key)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    _kill_rerun(env, ledger, ledger, objects, read, cwd=tmp_path)
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home_on_postgres)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs(filters=dg.RunsFilter(job_name=f"review_{SPOT}"))
        # two killed runs (never finished: their status stays as SIGKILL left it) and two that succeeded
        assert len(runs) == 4
        assert sum(r.status == dg.DagsterRunStatus.SUCCESS for r in runs) == 2
