"""Parquet IO manager for pandas frames (bars, indicator frames), on the local filesystem or in an
S3-compatible bucket (MinIO, SeaweedFS, AWS), built on Dagster's :class:`dagster.UPathIOManager`.

Layout under ``base_path`` (a folder or ``s3://bucket/prefix``)::

    <asset key parts...>.parquet                                   # unpartitioned
    <asset key parts...>/<key>.parquet                             # one partition dimension
    <asset key parts...>/instrument=BTC%2FUSDT/window=2026-03-03-20%3A00.parquet   # multi-partition

Partition values are percent-encoded (everything but letters, digits, ``_ . - ~``), so
``BTC/USDT`` stays one path segment, ``:`` never reaches a file name, ``.``/``..`` cannot climb
out, and distinct keys always map to distinct paths. Multi-partition dimensions are sorted by
name (as in Dagster's keys), each as ``<dimension>=<value>``.

Frames round-trip with their index (a tz-aware ``open_time`` index comes back tz-aware) and
dtypes, via pyarrow. Local writes are atomic (temp file + ``os.replace``); an S3 PUT is atomic
by nature. For S3 the bucket is created on first write if missing; ``s3fs`` must be installed.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
from upath import UPath

__all__ = ["ParquetIOManager", "ParquetUPathIOManager", "frames_io_manager_from_env", "safe_segment"]

_LOCAL_PROTOCOLS = ("", "file", "local")


def safe_segment(value: str) -> str:
    """``value`` as one safe, reversible path segment (``urllib.parse.unquote`` gives it back):
    percent-encode all but ``A-Za-z0-9_.-~``; ``.`` and ``..`` are encoded too."""
    encoded = quote(str(value), safe="")
    if encoded in ("", ".", ".."):
        encoded = "".join(f"%{b:02X}" for b in str(value).encode()) or "%00"
    return encoded


class ParquetUPathIOManager(dg.UPathIOManager):
    """Stores each output :class:`pandas.DataFrame` as one Parquet file (see the module doc)."""

    extension = ".parquet"

    def __init__(self, base_path: UPath, compression: str = "zstd") -> None:
        super().__init__(base_path=base_path)
        self.compression = compression
        self._bucket_lock = threading.Lock()
        self._bucket_ready = False
        self._dims_cache: tuple[tuple[str, ...], dict[str, list[tuple[str, str]]]] | None = None

    @property
    def is_local(self) -> bool:
        return self._base_path.protocol in _LOCAL_PROTOCOLS

    # ------------------------------------------------------------ paths

    def make_safe_partition_path(self, base_path: UPath, partition: str) -> UPath:
        return base_path / safe_segment(partition)

    def get_path_for_partition(self, context, path: UPath, partition: str) -> UPath:
        dims = self._dimensions(context, partition)
        if dims is None:
            return self.make_safe_partition_path(path, partition)
        return path.joinpath(*(f"{safe_segment(name)}={safe_segment(value)}" for name, value in dims))

    def _dimensions(self, context, formatted: str) -> list[tuple[str, str]] | None:
        """The (dimension, value) pairs, sorted by dimension, of the multi-partition key whose
        slash-joined form (what UPathIOManager passes) is ``formatted``; None if not multi."""
        partitions_def = context.asset_partitions_def if context.has_asset_partitions else None
        if not isinstance(partitions_def, dg.MultiPartitionsDefinition):
            return None
        keys = tuple(context.asset_partition_keys)
        cached = self._dims_cache
        if cached is None or cached[0] != keys:  # one mapping per step, not one scan per partition
            mapping = {}
            for key in keys:
                if not isinstance(key, dg.MultiPartitionKey):
                    key = partitions_def.get_partition_key_from_str(key)
                dims = sorted(key.keys_by_dimension.items())
                mapping["/".join(v for _, v in dims)] = dims
            self._dims_cache = cached = (keys, mapping)
        try:
            return cached[1][formatted]
        except KeyError:
            raise dg.DagsterInvariantViolationError(f"partition {formatted!r} is not one of this step's partitions") from None

    # ------------------------------------------------------------ storage

    def make_directory(self, path: UPath) -> None:
        if self.is_local:
            path.mkdir(parents=True, exist_ok=True)
            return
        # object stores have no directories; make sure the bucket exists (once)
        with self._bucket_lock:
            if self._bucket_ready:
                return
            fs = self._base_path.fs
            bucket = self._base_path.path.split("/", 1)[0]
            if not fs.exists(bucket):
                try:
                    fs.mkdir(bucket)
                except FileExistsError:  # another writer created it first
                    pass
            self._bucket_ready = True

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise dg.DagsterInvariantViolationError(
                f"{type(self).__name__} stores pandas DataFrames; {context.asset_key if context.has_asset_key else 'output'} "
                f"returned {type(obj).__name__}")
        buf = io.BytesIO()
        obj.to_parquet(buf, engine="pyarrow", index=True, compression=self.compression)
        data = buf.getvalue()
        if self.is_local:
            target = Path(path.path)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        else:
            path.write_bytes(data)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(path.read_bytes()), engine="pyarrow")  # FileNotFoundError if absent

    def get_metadata(self, context: dg.OutputContext, obj: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {"dagster/row_count": dg.MetadataValue.int(len(obj)),
                                "columns": dg.MetadataValue.text(", ".join(map(str, obj.columns)))}
        if isinstance(obj.index, pd.DatetimeIndex) and len(obj):
            meta["first_index"] = dg.MetadataValue.text(obj.index[0].isoformat())
            meta["last_index"] = dg.MetadataValue.text(obj.index[-1].isoformat())
        return meta


class ParquetIOManager(dg.ConfigurableIOManagerFactory):
    """Pandas frames as Parquet under ``base_path``: a local folder (default) or
    ``s3://bucket/prefix`` on any S3-compatible server.

    For S3: ``s3_endpoint`` is ``host:port`` (as ``MINIO_ENDPOINT``; ``s3_secure`` picks
    https/http) or a full ``http(s)://`` URL; empty means AWS. Keys/secret empty fall back to
    the usual AWS credential chain. Pass secrets as ``dg.EnvVar``.
    """

    base_path: str
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str | None = None
    s3_secure: bool = False
    compression: str = "zstd"

    def endpoint_url(self) -> str | None:
        if not self.s3_endpoint:
            return None
        if "://" in self.s3_endpoint:
            return self.s3_endpoint
        return f"{'https' if self.s3_secure else 'http'}://{self.s3_endpoint}"

    def upath(self) -> UPath:
        if self.base_path.startswith(("s3://", "s3a://")):
            options: dict[str, Any] = {}
            if self.endpoint_url():
                options["endpoint_url"] = self.endpoint_url()
            if self.s3_access_key:
                options["key"] = self.s3_access_key
            if self.s3_secret_key:
                options["secret"] = self.s3_secret_key
            if self.s3_region:
                options["client_kwargs"] = {"region_name": self.s3_region}
            try:
                import s3fs  # noqa: F401
            except ImportError as e:
                raise dg.DagsterInvariantViolationError(
                    f"ParquetIOManager on {self.base_path} needs s3fs: pip install s3fs") from e
            return UPath(self.base_path.replace("s3a://", "s3://", 1), **options)
        if "://" in self.base_path and not self.base_path.startswith("file://"):
            raise dg.DagsterInvariantViolationError(
                f"ParquetIOManager base_path {self.base_path!r}: use a local folder or s3://bucket/prefix")
        return UPath(Path(self.base_path.removeprefix("file://")).expanduser().resolve())

    def create_io_manager(self, context) -> ParquetUPathIOManager:
        return ParquetUPathIOManager(self.upath(), compression=self.compression)


def frames_io_manager_from_env(environ: os._Environ | dict = os.environ) -> ParquetIOManager:
    """``TRADING_FRAMES_PATH`` (default ``$DAGSTER_HOME/frames``); when it is ``s3://...`` the
    endpoint and credentials come from ``MINIO_ENDPOINT``, ``MINIO_ACCESS_KEY``,
    ``MINIO_SECRET_KEY`` (resolved by Dagster at run time) and ``MINIO_SECURE``."""
    base = environ.get("TRADING_FRAMES_PATH") or str(
        Path(environ.get("DAGSTER_HOME") or Path.cwd() / "var" / "dagster_home") / "frames")
    if base.startswith(("s3://", "s3a://")):
        return ParquetIOManager(base_path=base, s3_endpoint=dg.EnvVar("MINIO_ENDPOINT"),
                                s3_access_key=dg.EnvVar("MINIO_ACCESS_KEY"), s3_secret_key=dg.EnvVar("MINIO_SECRET_KEY"),
                                s3_secure=environ.get("MINIO_SECURE", "false").lower() == "true")
    return ParquetIOManager(base_path=base)


class FrameStore:
    """Indicator frames as Parquet, one object per instrument per indicator chunk (512 bars, see
    :mod:`trading_pipelines.analysis.frames`): every window of a chunk slices the same frame, so a window's
    point-in-time frame is ``frame.loc[:window_end - bar].tail(lookback_bars)`` of its chunk's object.
    Storing chunks instead of windows keeps a year of 4h windows at 5 objects per instrument.

    Layout under ``base`` (a folder or ``s3://bucket/prefix``, from :class:`ParquetIOManager`)::

        <strategy>/indicator_frames/instrument=BTC%2FUSDT/chunk=2026-01-01T00%3A00.parquet

    Writes are atomic (local: temp file + ``os.replace``; S3: one PUT). Re-writing a chunk with
    the same content is harmless (the frame is a pure function of the data and the strategy)."""

    def __init__(self, manager: ParquetUPathIOManager):
        self._m = manager

    def path(self, strategy: str, step: str, instrument: str, chunk_start: pd.Timestamp) -> UPath:
        return (self._m._base_path / safe_segment(strategy) / step / f"instrument={safe_segment(instrument)}"
                / f"chunk={safe_segment(chunk_start.strftime('%Y-%m-%dT%H:%M'))}.parquet")

    def put(self, strategy: str, step: str, instrument: str, chunk_start: pd.Timestamp, frame: pd.DataFrame) -> str:
        """Store ``frame`` unless the stored chunk already reaches as far (a chunk computed for an
        earlier window is a prefix of the one computed for a later window: never shrink it)."""
        path = self.path(strategy, step, instrument, chunk_start)
        try:
            stored = pq.read_metadata(io.BytesIO(path.read_bytes())).num_rows
        except (FileNotFoundError, OSError):
            stored = -1
        if stored >= len(frame):
            return str(path)
        self._m.make_directory(path.parent)
        self._m.dump_to_path(None, frame, path)  # type: ignore[arg-type]
        return str(path)

    def get(self, strategy: str, step: str, instrument: str, chunk_start: pd.Timestamp) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.path(strategy, step, instrument, chunk_start).read_bytes()), engine="pyarrow")


def frame_store_from_env(environ: os._Environ | dict = os.environ) -> FrameStore:
    """The :class:`FrameStore` at ``TRADING_FRAMES_PATH`` (see :func:`frames_io_manager_from_env`)."""
    factory = frames_io_manager_from_env(environ)
    for field in ("s3_endpoint", "s3_access_key", "s3_secret_key"):
        value = getattr(factory, field)
        if isinstance(value, dg.EnvVar):
            factory = factory.model_copy(update={field: environ.get(value.env_var_name)})
    return FrameStore(ParquetUPathIOManager(factory.upath(), compression=factory.compression))
