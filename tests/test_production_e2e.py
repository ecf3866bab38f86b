"""The end-to-end review on production storage: Dagster's storage (deploy/dagster.yaml) and the
ledger on a real PostgreSQL server, chart images and Parquet frames on a real S3 server
(SeaweedFS standing in for MinIO, spoken to only through the `minio` client and s3fs)."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
import uuid

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy import func, select

from trading_pipelines.assets.partitions import INSTRUMENT_DIM, WINDOW_DIM
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.ledger.repo import status_report

pytestmark = [pytest.mark.postgres, pytest.mark.s3]
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
SPOT, WINDOWS = "spot_4h_majors", ["2026-02-27-00:00", "2026-02-27-04:00", "2026-02-27-08:00"]


@pytest.fixture()
def prod(dagster_home_on_postgres, postgres_server, s3_server, monkeypatch):
    home = dagster_home_on_postgres
    ledger_url = postgres_server.create_database(f"ledger_{uuid.uuid4().hex[:8]}")
    bucket = f"charts-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TRADING_LEDGER_URL", ledger_url)
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
        yield defs, instance, bucket, s3_server


def test_review_on_postgres_and_s3(prod):
    defs, instance, bucket, s3 = prod
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    defs.resolve_job_def(f"universe_{SPOT}").execute_in_process(instance=instance, run_config=QUIET)
    job = defs.resolve_job_def(f"review_{SPOT}")
    for w in WINDOWS:
        for inst in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):
            res = job.execute_in_process(instance=instance, run_config=QUIET,
                                         partition_key=dg.MultiPartitionKey({INSTRUMENT_DIM: inst, WINDOW_DIM: w}))
            assert res.success
    # runs and their events are in Postgres
    assert len(instance.get_runs(filters=dg.RunsFilter(job_name=f"review_{SPOT}"))) == 9
    engine = get_engine(str(__import__("os").environ["TRADING_LEDGER_URL"]))
    assert engine.dialect.name == "postgresql"
    with session_scope(engine) as s:
        rep = status_report(s, SPOT)
        assert s.execute(select(func.count()).select_from(m.SignalRow)).scalar_one() == 9
    assert any(o["fills"] for o in rep["orders"]), "ETH/SOL entries of 2026-02-27 00:00 fill at 04:00"
    # every chart is in the bucket, byte-identical through the minio client and its presigned URL
    client = s3.client()
    for sig in rep["signals"]:
        data = client.get_object(bucket, sig["chart_key"]).read()
        assert hashlib.sha256(data).hexdigest() == sig["chart_sha256"]
        stat = client.stat_object(bucket, sig["chart_key"])
        assert stat.content_type == "image/png"
    key = rep["signals"][0]["chart_key"]
    url = client.presigned_get_object(bucket, key)
    with urllib.request.urlopen(url) as r:
        assert hashlib.sha256(r.read()).hexdigest() == rep["signals"][0]["chart_sha256"]
    with pytest.raises(urllib.error.HTTPError) as e:  # the bucket is private
        urllib.request.urlopen(f"{s3.endpoint_url}/{bucket}/{key}")
    assert e.value.code in (401, 403)
    # bars and indicator frames are Parquet objects in the frames bucket
    frames_bucket = __import__("os").environ["TRADING_FRAMES_PATH"].split("/")[2]
    names = [o.object_name for o in client.list_objects(frames_bucket, recursive=True)]
    assert sum("ohlcv_bars" in n for n in names) == 9 and sum("indicator_frames" in n for n in names) == 9
    obj = next(n for n in names if "indicator_frames" in n)
    frame = pd.read_parquet(io.BytesIO(client.get_object(frames_bucket, obj).read()))
    assert len(frame) == 150 and {"rsi", "macd_hist", "atr"} <= set(frame.columns)
    assert str(frame.index.tz) == "UTC"
