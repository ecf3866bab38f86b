"""MinioChartStore against a real S3 server (SeaweedFS from tests/servers.py), through the
``minio`` client only, with a real chart rendered from the BTC/USDT 4h sample data."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

import pytest

from trading_pipelines.config import IndicatorConfig
from trading_pipelines.domain.indicators import compute_indicators
from trading_pipelines.stores.chart_render import PNG_SIGNATURE, render_chart
from trading_pipelines.stores.charts import ChartRef, MinioChartStore, chart_key
from trading_pipelines.stores.market_data import CsvReplaySource

pytestmark = pytest.mark.s3

WINDOW_END = datetime(2025, 10, 11, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def png() -> bytes:
    bars = CsvReplaySource().bars("BTC/USDT", "4h", end=WINDOW_END, limit=150)
    return render_chart(compute_indicators(bars, IndicatorConfig()), "BTC/USDT 4h")


@pytest.fixture()
def bucket() -> str:
    return f"charts-{uuid.uuid4().hex[:12]}"


def make_store(s3_server, bucket: str) -> MinioChartStore:
    return MinioChartStore(endpoint=s3_server.endpoint, access_key=s3_server.access_key,
                           secret_key=s3_server.secret_key, bucket=bucket, secure=False, region=s3_server.region)


def http_get(url: str) -> tuple[int, dict, bytes]:
    """Plain GET with no credentials: (status, headers, body); HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_put_creates_bucket_and_round_trips_byte_identical(s3_server, bucket, png):
    client = s3_server.client()
    store = make_store(s3_server, bucket)
    key = chart_key("btc_swing", "BTC/USDT", WINDOW_END)
    assert png.startswith(PNG_SIGNATURE)
    assert not client.bucket_exists(bucket_name=bucket)
    assert not store.exists(key) and store.url(key) is None

    ref = store.put(key, png)

    sha = hashlib.sha256(png).hexdigest()
    assert ref == ChartRef(key=key, sha256=sha, size=len(png), uri=f"s3://{bucket}/{key}")
    assert client.bucket_exists(bucket_name=bucket)
    assert store.exists(key) and store.get(key) == png
    stat = client.stat_object(bucket_name=bucket, object_name=key)
    assert stat.content_type == "image/png"
    assert stat.size == len(png)
    assert stat.metadata["x-amz-meta-sha256"] == sha

    resp = client.get_object(bucket_name=bucket, object_name=key)
    try:
        assert resp.read() == png
    finally:
        resp.close()
        resp.release_conn()


def test_presigned_url_serves_the_same_bytes(s3_server, bucket, png):
    store = make_store(s3_server, bucket)
    key = chart_key("btc_swing", "BTC/USDT:USDT", WINDOW_END)
    store.put(key, png)
    url = store.url(key)
    assert url and url.startswith(f"{s3_server.endpoint_url}/{bucket}/{key}?") and "X-Amz-Signature=" in url
    status, headers, body = http_get(url)
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(png).hexdigest() and body == png
    # a tampered signature is refused
    status, _, _ = http_get(url[:-8] + ("0" * 8 if not url.endswith("0" * 8) else "1" * 8))
    assert status == 403


def test_put_is_idempotent_and_replaces_changed_bytes(s3_server, bucket, png, monkeypatch):
    store = make_store(s3_server, bucket)
    key = chart_key("btc_swing", "ETH/USDT", WINDOW_END)
    first = store.put(key, png)
    before = store.client.stat_object(bucket_name=bucket, object_name=key)

    calls = []
    real_put = store.client.put_object
    monkeypatch.setattr(store.client, "put_object", lambda **kw: calls.append(kw) or real_put(**kw))
    assert store.put(key, png) == first
    assert calls == []  # same bytes: no second upload
    after = store.client.stat_object(bucket_name=bucket, object_name=key)
    assert (after.etag, after.last_modified) == (before.etag, before.last_modified)

    other = png + b"\x00"  # different bytes under the same key replace the object
    ref = store.put(key, other)
    assert len(calls) == 1 and ref.sha256 == hashlib.sha256(other).hexdigest() != first.sha256
    assert store.get(key) == other
    assert store.client.stat_object(bucket_name=bucket, object_name=key).metadata["x-amz-meta-sha256"] == ref.sha256


def test_bucket_is_private_anonymous_get_refused(s3_server, bucket, png):
    store = make_store(s3_server, bucket)
    key = chart_key("btc_swing", "SOL/USDT", WINDOW_END)
    store.put(key, png)
    client = s3_server.client()

    for url in (f"{s3_server.endpoint_url}/{bucket}/{key}",  # the object, path style
                f"{s3_server.endpoint_url}/{bucket}",  # listing the bucket
                f"{s3_server.endpoint_url}/"):  # listing buckets
        status, _, body = http_get(url)
        assert status in (401, 403), (url, status)
        assert png[:64] not in body
    from minio.error import S3Error

    with pytest.raises(S3Error) as exc:
        client.get_bucket_policy(bucket_name=bucket)
    assert exc.value.code == "NoSuchBucketPolicy"


def test_anonymous_check_detects_a_public_bucket(s3_server, bucket, png):
    """Control: the server does honour bucket policies, so the 403 above means private."""
    store = make_store(s3_server, bucket)
    key = chart_key("btc_swing", "BTC/USDT", WINDOW_END)
    store.put(key, png)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": ["*"]},
                                                      "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{bucket}/*"]}]}
    s3_server.client().set_bucket_policy(bucket_name=bucket, policy=json.dumps(policy))
    status, _, body = http_get(f"{s3_server.endpoint_url}/{bucket}/{key}")
    assert status == 200 and body == png


def test_missing_key_and_wrong_credentials(s3_server, bucket, png):
    store = make_store(s3_server, bucket)
    key = chart_key("btc_swing", "BTC/USDT", WINDOW_END)
    store.put(key, png)
    with pytest.raises(KeyError):
        store.get(chart_key("btc_swing", "BTC/USDT", datetime(2020, 1, 1, tzinfo=timezone.utc)))
    from minio.error import S3Error

    intruder = MinioChartStore(endpoint=s3_server.endpoint, access_key=s3_server.access_key, secret_key="wrong-secret",
                               bucket=bucket, secure=False, region=s3_server.region)
    with pytest.raises(S3Error):
        intruder.get(key)


def test_presigned_url_names_the_public_endpoint(s3_server, bucket, png):
    """In compose the server is `minio:9000` for containers but the browser reaches 127.0.0.1:9000:
    URLs are signed for the public endpoint (here `localhost:<port>`, the same server by another name)."""
    port = s3_server.endpoint.rsplit(":", 1)[1]
    store = MinioChartStore(endpoint=s3_server.endpoint, access_key=s3_server.access_key, secret_key=s3_server.secret_key,
                            bucket=bucket, secure=False, public_endpoint=f"localhost:{port}")
    key = chart_key("strat", "ETH/USDT", datetime(2026, 3, 3, 20, tzinfo=timezone.utc))
    ref = store.put(key, png)
    url = store.url(key)
    assert url.startswith(f"http://localhost:{port}/{bucket}/")
    with urllib.request.urlopen(url) as r:
        assert hashlib.sha256(r.read()).hexdigest() == ref.sha256
