"""Where charts are stored: :class:`ChartStore` keeps PNGs by key (:func:`chart_key`):
:class:`LocalChartStore` on disk, :class:`MinioChartStore` in an S3-compatible bucket.

The charts themselves (candlestick PNGs) are drawn by :mod:`trading_pipelines.stores.chart_render`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

_SAFE_KEY_PART = re.compile(r"^[A-Za-z0-9_.-]+$")


def _sanitize(part: str, what: str) -> str:
    clean = part.replace("/", "-").replace(":", "_")
    if not _SAFE_KEY_PART.match(clean) or clean in (".", ".."):
        raise ValueError(f"chart_key: {what} {part!r} has characters other than letters, digits, '_', '.', '-', '/', ':'")
    return clean


def chart_key(strategy: str, instrument: str, window_end: datetime) -> str:
    """``<strategy>/<instrument>/<window_end>.png``: instrument "/" → "-" and ":" → "_"
    (``BTC/USDT:USDT`` → ``BTC-USDT_USDT``), window end as UTC ``%Y%m%dT%H%MZ``.

    Example: ``chart_key("btc_swing", "BTC/USDT", 2025-06-01 08:00Z)`` →
    ``"btc_swing/BTC-USDT/20250601T0800Z.png"``. Raises ValueError for a naive ``window_end``
    or unsafe characters.
    """
    if window_end.tzinfo is None or window_end.utcoffset() is None:
        raise ValueError(f"chart_key: window_end must be timezone-aware (UTC), got naive {window_end.isoformat()}")
    stamp = window_end.astimezone(timezone.utc).strftime("%Y%m%dT%H%MZ")
    return f"{_sanitize(strategy, 'strategy')}/{_sanitize(instrument, 'instrument')}/{stamp}.png"


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(not _SAFE_KEY_PART.match(p) or p in (".", "..") for p in parts):
        raise ValueError(f"invalid chart key {key!r}: use '/'-separated parts of letters, digits, '_', '.', '-'")
    return key


@dataclass(frozen=True)
class ChartRef:
    """A stored chart: its ``key``, hex ``sha256`` and ``size`` (bytes) of the PNG, and ``uri``
    (``file://`` for local, ``s3://bucket/key`` for object stores)."""

    key: str
    sha256: str
    size: int
    uri: str


class ChartStore(ABC):
    """PNG charts by key (see :func:`chart_key`)."""

    @abstractmethod
    def put(self, key: str, png: bytes) -> ChartRef:
        """Store ``png`` under ``key``. Idempotent: the same bytes under the same key again is a
        no-op returning an equal ref; different bytes replace the old ones (the ref's sha256 tells)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The stored bytes. Raises KeyError if ``key`` is absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def url(self, key: str) -> str | None:
        """A URL to view the chart (file:// or presigned), or None if ``key`` is absent."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalChartStore(ChartStore):
    """Charts as files under ``root`` (``root/<key>``), written atomically (temp file + os.replace)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _ref(self, key: str, sha: str, size: int) -> ChartRef:
        return ChartRef(key=key, sha256=sha, size=size, uri=self.path(key).resolve().as_uri())

    def put(self, key: str, png: bytes) -> ChartRef:
        path = self.path(key)
        sha = _sha256(png)
        if path.is_file() and _sha256(path.read_bytes()) == sha:
            return self._ref(key, sha, len(png))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(png)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._ref(key, sha, len(png))

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"chart {key!r} not in {self.root}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def url(self, key: str) -> str | None:
        return self.path(key).resolve().as_uri() if self.exists(key) else None


class MinioChartStore(ChartStore):
    """Charts as objects in an S3-compatible bucket through the ``minio`` client.

    The bucket is created on first use if missing. Objects are written with content type
    ``image/png`` and user metadata ``sha256`` (the put is skipped when the stored object already
    has that sha256). :meth:`url` is a presigned GET URL valid for ``url_expiry`` (default 7 days).
    Pass ``client`` to reuse a configured :class:`minio.Minio`.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = True,
        region: str | None = None,
        url_expiry: timedelta = timedelta(days=7),
        client=None,
        public_endpoint: str | None = None,
    ) -> None:
        from minio import Minio

        self.bucket = bucket
        self.url_expiry = url_expiry
        self.client = client or Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)
        # Presigned URLs must name the host the *browser* uses (in compose the server is
        # "minio:9000", which only containers resolve). Signing is offline when a region is set.
        self._presign_client = self.client
        if public_endpoint:
            self._presign_client = Minio(public_endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
                                         region=region or "us-east-1")
        self._bucket_ready = False

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        from minio.error import S3Error

        if not self.client.bucket_exists(bucket_name=self.bucket):
            try:
                self.client.make_bucket(bucket_name=self.bucket)
            except S3Error as e:  # another writer created it first
                if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        self._bucket_ready = True

    def _stat(self, key: str):
        from minio.error import S3Error

        try:
            return self.client.stat_object(bucket_name=self.bucket, object_name=_check_key(key))
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject", "NotFound", "NoSuchBucket"):
                return None
            raise

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put(self, key: str, png: bytes) -> ChartRef:
        _check_key(key)
        self._ensure_bucket()
        sha = _sha256(png)
        ref = ChartRef(key=key, sha256=sha, size=len(png), uri=self._uri(key))
        stat = self._stat(key)
        if stat is not None and (stat.metadata or {}).get("x-amz-meta-sha256") == sha and stat.size == len(png):
            return ref
        self.client.put_object(
            bucket_name=self.bucket,
            object_name=key,
            data=io.BytesIO(png),
            length=len(png),
            content_type="image/png",
            metadata={"sha256": sha},
        )
        return ref

    def get(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self.client.get_object(bucket_name=self.bucket, object_name=_check_key(key))
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject", "NotFound", "NoSuchBucket"):
                raise KeyError(f"chart {key!r} not in bucket {self.bucket}") from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        return self._stat(key) is not None

    def url(self, key: str) -> str | None:
        if not self.exists(key):
            return None
        return self._presign_client.presigned_get_object(bucket_name=self.bucket, object_name=key, expires=self.url_expiry)
