"""The end-to-end review on production storage: Dagster's storage (deploy/dagster.yaml), the ledger
and the paper venue's own store on a real PostgreSQL server, chart images and Parquet indicator
frames on a real S3 server (SeaweedFS standing in for MinIO, spoken to only through the `minio`
client and s3fs). One run of ``review_spot_4h_majors`` covers three windows on the live book."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import urllib.request
import uuid

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy import func, inspect, select

from trading_pipelines.assets.partitions import range_tags, window_end
from trading_pipelines.assets.review import BOOK_TAG
from trading_pipelines.config import load_strategies
from trading_pipelines.io_managers import safe_segment
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.ledger.repo import status_report
from trading_pipelines.stores.market_data import CsvReplaySource

pytestmark = [pytest.mark.postgres, pytest.mark.s3]
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
SPOT, WINDOWS = "spot_4h_majors", ["2026-02-27-00:00", "2026-02-27-04:00", "2026-02-27-08:00"]
INSTRUMENTS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
# indicator chunks are 512 4h bars aligned on the UTC epoch: 2026-02-27 falls in the one of 2026-01-27
CHUNK = "2026-01-27T00:00"
STEPS = ("ohlcv_bars", "indicator_frames", "chart_images", "signals", "trade_intents", "validated_intents", "orders",
         "portfolio_snapshots")


@pytest.fixture()
def prod(dagster_home_on_postgres, postgres_server, s3_server, monkeypatch):
    home = dagster_home_on_postgres
    ledger_url = postgres_server.create_database(f"ledger_{uuid.uuid4().hex[:8]}")
    bucket = f"charts-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TRADING_LEDGER_URL", ledger_url)
    monkeypatch.delenv("TRADING_VENUE_URL", raising=False)  # the venue defaults to the ledger's server
    monkeypatch.setenv("TRADING_CHART_STORE", "minio")
    monkeypatch.setenv("MINIO_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("MINIO_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("MINIO_SECRET_KEY", s3_server.secret_key)
    monkeypatch.setenv("MINIO_BUCKET", bucket)
    monkeypatch.setenv("MINIO_SECURE", "false")
    monkeypatch.setenv("TRADING_FRAMES_PATH", f"s3://frames-{uuid.uuid4().hex[:8]}/frames")
    from trading_pipelines.definitions import defs as build

    defs = build()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield defs, instance, bucket, s3_server, ledger_url


def test_review_on_postgres_and_s3(prod):
    defs, instance, bucket, s3, ledger_url = prod
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    job = defs.resolve_job_def(f"review_{SPOT}")
    res = job.execute_in_process(instance=instance, run_config=QUIET,
                                 tags={**range_tags(WINDOWS[0], WINDOWS[-1]), BOOK_TAG: "live"})
    assert res.success
    # the run and its events are in Postgres: every step materialized every window in that one run
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=f"review_{SPOT}"))
    assert [r.run_id for r in runs] == [res.run_id] and runs[0].status == dg.DagsterRunStatus.SUCCESS
    for step in STEPS:
        recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey([SPOT, step])), limit=100).records
        assert sorted(r.partition_key for r in recs if r.run_id == res.run_id) == WINDOWS, step

    engine = get_engine(ledger_url)
    assert engine.dialect.name == "postgresql"
    with session_scope(engine) as s:
        rep = status_report(s, SPOT)
        assert s.execute(select(func.count()).select_from(m.SignalRow)).scalar_one() == len(WINDOWS) * len(INSTRUMENTS)
        assert s.execute(select(func.count()).select_from(m.IntentRow).where(m.IntentRow.book == "live")).scalar_one() \
            == len(WINDOWS) * len(INSTRUMENTS)
        snaps = s.execute(select(m.SnapshotRow).order_by(m.SnapshotRow.as_of)).scalars().all()
        assert [(r.partition_key, r.book) for r in snaps] == [(w, "live") for w in WINDOWS]  # one per window
        assert {r.run_id for r in s.execute(select(m.SignalRow)).scalars()} == {res.run_id}
        # the paper venue keeps its own tables, on the ledger's Postgres server (TRADING_VENUE_URL unset)
        account = s.execute(select(m.PaperAccountRow)).scalar_one()
        assert account.account == SPOT and account.mode == "spot"
        venue_orders = set(s.execute(select(m.PaperOrderRow.client_order_id)).scalars())
        venue_orders |= {o["client_order_id"] for o in (account.state or {}).get("orders", [])}
        venue_fills = set(s.execute(select(m.PaperFillRow.fill_id)).scalars())
    assert not os.path.exists(os.path.join(os.environ["DAGSTER_HOME"], "paper_venue.sqlite"))
    assert {o["book"] for o in rep["orders"]} == {"live"}
    assert any(o["fills"] for o in rep["orders"]), "ETH/SOL entries of 2026-02-27 00:00 fill at 04:00"
    assert {o["client_order_id"] for o in rep["orders"]} == venue_orders  # the ledger mirrors the venue
    assert {f["fill_id"] for o in rep["orders"] for f in o["fills"]} == venue_fills

    # every chart is in the bucket, byte-identical through the minio client and its presigned URL
    client = s3.client()
    assert len(rep["signals"]) == len(WINDOWS) * len(INSTRUMENTS)
    assert all(sig["chart_key"] and sig["chart_sha256"] for sig in rep["signals"])
    for sig in rep["signals"]:
        assert sig["chart_key"].startswith(f"{SPOT}/") and sig["chart_key"].endswith(".png")
        data = client.get_object(bucket, sig["chart_key"]).read()
        assert hashlib.sha256(data).hexdigest() == sig["chart_sha256"]
        stat = client.stat_object(bucket, sig["chart_key"])
        assert stat.content_type == "image/png"
    assert sorted(o.object_name for o in client.list_objects(bucket, recursive=True)) == \
        sorted(sig["chart_key"] for sig in rep["signals"])
    key = rep["signals"][0]["chart_key"]
    url = client.presigned_get_object(bucket, key)
    with urllib.request.urlopen(url) as r:
        assert hashlib.sha256(r.read()).hexdigest() == rep["signals"][0]["chart_sha256"]
    with pytest.raises(urllib.error.HTTPError) as e:  # the bucket is private
        urllib.request.urlopen(f"{s3.endpoint_url}/{bucket}/{key}")
    assert e.value.code in (401, 403)

    # indicator frames are Parquet objects in the frames bucket: one per instrument per indicator chunk
    frames_bucket, prefix = os.environ["TRADING_FRAMES_PATH"].removeprefix("s3://").split("/", 1)
    names = sorted(o.object_name for o in client.list_objects(frames_bucket, recursive=True))
    want = {i: f"{prefix}/{SPOT}/indicator_frames/instrument={safe_segment(i)}/chunk={safe_segment(CHUNK)}.parquet"
            for i in INSTRUMENTS}
    assert names == sorted(want.values())
    with pytest.raises(urllib.error.HTTPError) as e:  # private too
        urllib.request.urlopen(f"{s3.endpoint_url}/{frames_bucket}/{names[0]}")
    assert e.value.code in (401, 403)
    # the indicator_frames materialization names the objects it wrote
    mat = instance.fetch_materializations(dg.AssetKey([SPOT, "indicator_frames"]), limit=1).records[0]
    assert mat.run_id == res.run_id
    stored = mat.asset_materialization.metadata["chunk_objects"].value
    assert sorted(p.removeprefix("s3://") for p in stored) == sorted(f"{frames_bucket}/{n}" for n in names)

    spec = load_strategies()[SPOT]
    csv = CsvReplaySource()
    signals = {(sig["instrument"], sig["window_end"]): sig for sig in rep["signals"]}
    for inst, name in want.items():
        frame = pd.read_parquet(io.BytesIO(client.get_object(frames_bucket, name).read()))
        assert {"open", "high", "low", "close", "volume", "rsi", "macd_hist", "atr"} <= set(frame.columns)
        assert str(frame.index.tz) == "UTC" and frame.index.is_monotonic_increasing
        assert frame.index[-1] == pd.Timestamp(window_end(spec, WINDOWS[-1]) - spec.bar_duration)  # nothing after the run's last window
        for w in WINDOWS:  # each window's point-in-time frame is a slice of its chunk
            end = window_end(spec, w)
            pit = frame.loc[:pd.Timestamp(end - spec.bar_duration)].tail(spec.template.lookback_bars)
            assert len(pit) == spec.template.lookback_bars == 150
            assert pit.index[-1] + spec.bar_duration == pd.Timestamp(end)
            bars = csv.bars(inst, "4h", end=end, limit=150)
            pd.testing.assert_frame_equal(pit[["open", "high", "low", "close", "volume"]], bars, check_freq=False)
            sig = signals[(inst, end.isoformat())]
            assert sig["market"]["last_close"] == pit["close"].iloc[-1]
            assert sig["market"]["atr"] == pytest.approx(pit["atr"].iloc[-1], rel=1e-12)
    # nothing of the frames went to the ledger database
    assert not {t for t in inspect(engine).get_table_names() if "frame" in t or "bar" in t}
