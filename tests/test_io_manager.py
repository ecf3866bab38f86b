"""ParquetIOManager: real bars and indicator frames materialized through Dagster, multi-partitioned
(instrument × 4h window), on the local filesystem and on a real S3 server (SeaweedFS); and the
FrameStore the strategies write their indicator chunks to (one Parquet object per instrument per
512-bar chunk under TRADING_FRAMES_PATH), on both as well."""

import io
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote

import dagster as dg
import pandas as pd
import pytest

from servers import in_ci

from trading_pipelines.config import IndicatorConfig
from trading_pipelines.domain.indicators import compute_indicators
from trading_pipelines.io_managers import (
    FrameStore,
    ParquetIOManager,
    ParquetUPathIOManager,
    frame_store_from_env,
    frames_io_manager_from_env,
    safe_segment,
)
from trading_pipelines.stores.market_data import CsvReplaySource

FMT = "%Y-%m-%d-%H:%M"
INSTRUMENTS = dg.DynamicPartitionsDefinition(name="io_test_instruments")
WINDOWS = dg.TimeWindowPartitionsDefinition(start="2026-03-01-00:00", end="2026-03-04-00:00", fmt=FMT,
                                            cron_schedule="0 */4 * * *", timezone="UTC")
REVIEW = dg.MultiPartitionsDefinition({"instrument": INSTRUMENTS, "window": WINDOWS})
KEYS = ["BTC/USDT|2026-03-03-16:00", "ETH/USDT|2026-03-03-12:00"]


def expected_bars(key: str) -> pd.DataFrame:
    instrument, window = key.split("|")
    end = datetime.strptime(window, FMT).replace(tzinfo=timezone.utc) + timedelta(hours=4)
    return CsvReplaySource().bars(instrument, "4h", end=end, limit=150)


@dg.asset(key=["strat", "ohlcv_bars"], partitions_def=REVIEW, io_manager_key="frames")
def ohlcv_bars(context: dg.AssetExecutionContext) -> pd.DataFrame:
    return expected_bars(str(context.partition_key))


@dg.asset(key=["strat", "indicator_frames"], partitions_def=REVIEW, io_manager_key="frames",
          ins={"bars": dg.AssetIn(["strat", "ohlcv_bars"])})
def indicator_frames(bars: pd.DataFrame) -> pd.DataFrame:
    return compute_indicators(bars, IndicatorConfig())


@dg.asset(key=["strat", "last_closes"], io_manager_key="frames",
          ins={"frames": dg.AssetIn(["strat", "indicator_frames"], metadata={"allow_missing_partitions": True})})
def last_closes(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Unpartitioned, reads every upstream partition at once (skipping the never materialized)."""
    return pd.DataFrame({"key": list(frames), "close": [f["close"].iloc[-1] for f in frames.values()]}).set_index("key")


def rel_path(key: str) -> str:
    instrument, window = key.split("|")
    return f"instrument={safe_segment(instrument)}/window={safe_segment(window)}.parquet"


def run_all(io_manager) -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(INSTRUMENTS.name, ["BTC/USDT", "ETH/USDT"])
    resources = {"frames": io_manager}
    for key in KEYS:
        result = dg.materialize([ohlcv_bars, indicator_frames], partition_key=key, instance=instance, resources=resources)
        assert result.success
        mats = result.asset_materializations_for_node("strat__indicator_frames")
        assert mats[0].metadata["path"].value.endswith(rel_path(key))
        assert mats[0].metadata["dagster/row_count"].value == 150
    return instance


def load_all_upstream(io_manager, instance) -> pd.DataFrame:
    """Materialize the unpartitioned asset that loads every indicator frame partition."""
    result = dg.materialize([indicator_frames.to_source_asset(), last_closes], instance=instance,
                            resources={"frames": io_manager}, selection=[last_closes])
    assert result.success
    return result.output_for_node("strat__last_closes")


def check_frame(stored: pd.DataFrame, key: str, indicators: bool) -> None:
    want = expected_bars(key)
    if indicators:
        want = compute_indicators(want, IndicatorConfig())
    pd.testing.assert_frame_equal(stored, want, check_freq=False)
    assert str(stored.index.tz) == "UTC" and stored.index.name == "open_time"


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize("value", ["BTC/USDT", "BTC/USDT:USDT", "2026-03-03-20:00", "..", ".", "a|b", "x%2Fy", "ünï code", "/abs"])
def test_safe_segment_is_one_reversible_segment(value):
    seg = safe_segment(value)
    assert "/" not in seg and ":" not in seg and "|" not in seg and seg not in (".", "..")
    assert unquote(seg) == value


def test_safe_segment_is_injective():
    values = ["BTC/USDT", "BTC-USDT", "BTC_USDT", "BTC%2FUSDT", "BTC/USDT:USDT", "BTC-USDT_USDT"]
    assert len({safe_segment(v) for v in values}) == len(values)


def test_multi_partition_key_becomes_safe_path(tmp_path):
    manager = ParquetUPathIOManager(ParquetIOManager(base_path=str(tmp_path)).upath())
    key = dg.MultiPartitionKey({"instrument": "BTC/USDT", "window": "2026-03-03-20:00"})
    assert str(key) == "BTC/USDT|2026-03-03-20:00"
    static = dg.MultiPartitionsDefinition({"instrument": dg.StaticPartitionsDefinition(["BTC/USDT"]), "window": WINDOWS})
    ctx = dg.build_output_context(asset_key=dg.AssetKey(["strat", "ohlcv_bars"]), partition_key=key,
                                  asset_partitions_def=static)
    (path,) = manager._get_paths_for_partitions(ctx).values()
    assert str(path) == str(tmp_path / "strat" / "ohlcv_bars" / "instrument=BTC%2FUSDT" / "window=2026-03-03-20%3A00.parquet")


# ---------------------------------------------------------------- local filesystem


def test_local_round_trip_of_real_bars_and_indicators(tmp_path):
    manager = ParquetIOManager(base_path=str(tmp_path / "frames"))
    instance = run_all(manager)
    for key in KEYS:
        for asset, indicators in (("ohlcv_bars", False), ("indicator_frames", True)):
            path = tmp_path / "frames" / "strat" / asset / rel_path(key)
            assert path.is_file(), path
            check_frame(pd.read_parquet(path), key, indicators)
    leftovers = [p for p in (tmp_path / "frames").rglob("*") if p.is_file() and not p.name.endswith(".parquet")]
    assert leftovers == []  # atomic writes leave no temp files
    closes = load_all_upstream(manager, instance)
    assert sorted(closes.index) == sorted(KEYS)
    assert closes.loc[KEYS[0], "close"] == expected_bars(KEYS[0])["close"].iloc[-1]
    assert (tmp_path / "frames" / "strat" / "last_closes.parquet").is_file()


def test_rerun_overwrites_in_place(tmp_path):
    manager = ParquetIOManager(base_path=str(tmp_path))
    run_all(manager)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet"))
    run_all(manager)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet")) == before
    assert len(before) == 2 * len(KEYS)


def test_non_frame_output_and_missing_partition_are_errors(tmp_path):
    @dg.asset(io_manager_key="frames")
    def not_a_frame() -> dict:
        return {"a": 1}

    with pytest.raises(dg.DagsterInvariantViolationError, match="stores pandas DataFrames"):
        dg.materialize([not_a_frame], resources={"frames": ParquetIOManager(base_path=str(tmp_path))})

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(INSTRUMENTS.name, ["BTC/USDT"])
    with pytest.raises(FileNotFoundError):  # upstream partition never materialized
        dg.materialize([ohlcv_bars.to_source_asset(), indicator_frames], partition_key=KEYS[0], instance=instance,
                       resources={"frames": ParquetIOManager(base_path=str(tmp_path))}, selection=[indicator_frames])


def test_from_env_defaults_to_local_and_switches_to_s3(tmp_path):
    local = frames_io_manager_from_env({"DAGSTER_HOME": str(tmp_path)})
    assert local.base_path == str(tmp_path / "frames") and local.upath().protocol == ""
    s3 = frames_io_manager_from_env({"TRADING_FRAMES_PATH": "s3://trading-frames/frames", "MINIO_SECURE": "true"})
    assert s3.base_path == "s3://trading-frames/frames" and s3.s3_secure
    with pytest.raises(dg.DagsterInvariantViolationError, match="local folder or s3://"):
        ParquetIOManager(base_path="gs://bucket/x").upath()


# ---------------------------------------------------------------- S3 (SeaweedFS, as MinIO)


@pytest.mark.s3
def test_s3_round_trip_through_seaweedfs(s3_server):
    if not in_ci():  # under CI a missing s3fs fails below
        pytest.importorskip("s3fs", reason="s3fs is needed for the Parquet IO manager on S3: pip install s3fs")
    bucket = f"frames-{uuid.uuid4().hex[:10]}"
    manager = ParquetIOManager(base_path=f"s3://{bucket}/prod", s3_endpoint=s3_server.endpoint,
                               s3_access_key=s3_server.access_key, s3_secret_key=s3_server.secret_key)
    client = s3_server.client()
    assert not client.bucket_exists(bucket_name=bucket)
    instance = run_all(manager)
    assert client.bucket_exists(bucket_name=bucket)  # created on first write

    names = sorted(o.object_name for o in client.list_objects(bucket_name=bucket, recursive=True))
    want = sorted(f"prod/strat/{asset}/{rel_path(k)}" for k in KEYS for asset in ("ohlcv_bars", "indicator_frames"))
    assert names == want
    for key in KEYS:  # read back with the minio client, exactly as any other S3 reader would
        resp = client.get_object(bucket_name=bucket, object_name=f"prod/strat/indicator_frames/{rel_path(key)}")
        try:
            check_frame(pd.read_parquet(io.BytesIO(resp.read())), key, indicators=True)
        finally:
            resp.close()
            resp.release_conn()

    closes = load_all_upstream(manager, instance)  # downstream loads every partition from S3
    assert sorted(closes.index) == sorted(KEYS)

    wrong = ParquetIOManager(base_path=f"s3://{bucket}/prod", s3_endpoint=f"http://{s3_server.endpoint}",
                             s3_access_key=s3_server.access_key, s3_secret_key="wrong")
    with pytest.raises(PermissionError):  # s3fs maps the 403
        load_all_upstream(wrong, instance)


def test_local_paths_are_plain_files(tmp_path):
    manager = ParquetIOManager(base_path=f"file://{tmp_path}")
    assert Path(str(manager.upath())) == tmp_path.resolve()


# ---------------------------------------------------------------- FrameStore (indicator chunks)

CHUNK_START = pd.Timestamp("2026-01-27T00:00", tz="UTC")
CHUNK_OBJECT = "strat/indicator_frames/instrument=BTC%2FUSDT/chunk=2026-01-27T00%3A00.parquet"


def chunk_frame() -> pd.DataFrame:
    bars = CsvReplaySource().bars("BTC/USDT", "4h", end=datetime(2026, 3, 4, tzinfo=timezone.utc), limit=500)
    return compute_indicators(bars, IndicatorConfig())


def test_frame_store_local_layout_round_trip_and_rewrite(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADING_FRAMES_PATH", str(tmp_path / "frames"))
    store = frame_store_from_env()
    assert isinstance(store, FrameStore)
    frame = chunk_frame()
    written = store.put("strat", "indicator_frames", "BTC/USDT", CHUNK_START, frame)
    path = tmp_path / "frames" / CHUNK_OBJECT
    assert Path(written) == path and path.is_file()
    pd.testing.assert_frame_equal(store.get("strat", "indicator_frames", "BTC/USDT", CHUNK_START), frame, check_freq=False)
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame, check_freq=False)  # plain Parquet, readable by anyone
    # a chunk computed for an earlier window (a prefix) never shrinks the stored one ...
    store.put("strat", "indicator_frames", "BTC/USDT", CHUNK_START, frame.iloc[:-1])
    assert len(store.get("strat", "indicator_frames", "BTC/USDT", CHUNK_START)) == len(frame)
    # ... a longer one replaces it in place, atomically (no temp files left)
    store.put("strat", "indicator_frames", "BTC/USDT", CHUNK_START, frame.iloc[:-2])
    path.unlink()
    store.put("strat", "indicator_frames", "BTC/USDT", CHUNK_START, frame.iloc[:-2])
    store.put("strat", "indicator_frames", "BTC/USDT", CHUNK_START, frame)
    assert [p.relative_to(tmp_path / "frames") for p in (tmp_path / "frames").rglob("*") if p.is_file()] == [Path(CHUNK_OBJECT)]
    assert len(store.get("strat", "indicator_frames", "BTC/USDT", CHUNK_START)) == len(frame)
    with pytest.raises(FileNotFoundError):
        store.get("strat", "indicator_frames", "ETH/USDT", CHUNK_START)


@pytest.mark.s3
def test_frame_store_on_s3_through_seaweedfs(s3_server, monkeypatch):
    if not in_ci():
        pytest.importorskip("s3fs", reason="s3fs is needed for the frame store on S3: pip install s3fs")
    bucket = f"frames-{uuid.uuid4().hex[:10]}"
    for var, value in {"TRADING_FRAMES_PATH": f"s3://{bucket}/prod", "MINIO_ENDPOINT": s3_server.endpoint,
                       "MINIO_ACCESS_KEY": s3_server.access_key, "MINIO_SECRET_KEY": s3_server.secret_key,
                       "MINIO_SECURE": "false"}.items():
        monkeypatch.setenv(var, value)
    store = frame_store_from_env()
    client = s3_server.client()
    assert not client.bucket_exists(bucket_name=bucket)
    frame = chunk_frame()
    written = store.put("strat", "indicator_frames", "BTC/USDT", CHUNK_START, frame)
    assert written.removeprefix("s3://") == f"{bucket}/prod/{CHUNK_OBJECT}"
    assert [o.object_name for o in client.list_objects(bucket_name=bucket, recursive=True)] == [f"prod/{CHUNK_OBJECT}"]
    resp = client.get_object(bucket_name=bucket, object_name=f"prod/{CHUNK_OBJECT}")
    try:  # read back with the minio client, as any other S3 reader would
        pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(resp.read())), frame, check_freq=False)
    finally:
        resp.close()
        resp.release_conn()
    pd.testing.assert_frame_equal(store.get("strat", "indicator_frames", "BTC/USDT", CHUNK_START), frame, check_freq=False)

    monkeypatch.setenv("MINIO_SECRET_KEY", "wrong")
    with pytest.raises(PermissionError):  # s3fs maps the 403
        frame_store_from_env().get("strat", "indicator_frames", "BTC/USDT", CHUNK_START)
