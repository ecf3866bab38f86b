"""Dagster resources: thin configurable wrappers that build the adapters. Secrets come from the
environment (``dg.EnvVar``), never from files, logs or metadata."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from sqlalchemy import Engine

from trading_pipelines.config import DEFAULT_DATA_DIR, StrategySpec
from trading_pipelines.io_managers import frame_store_from_env, frames_io_manager_from_env
from trading_pipelines.ledger.db import default_ledger_url, default_venue_url, get_engine
from trading_pipelines.ledger.models import LIVE_BOOK
from trading_pipelines.llm.providers import build_provider
from trading_pipelines.runtime import Runtime
from trading_pipelines.stores.charts import ChartStore, LocalChartStore, MinioChartStore
from trading_pipelines.stores.market_data import CcxtSource, CsvReplaySource, MarketDataError, MarketDataSource
from trading_pipelines.venues.factory import make_venue


def _value(v):
    """A config value that may still be an unresolved ``dg.EnvVar`` (resources used outside a run,
    e.g. by the CLI): read it from the environment."""
    return v.get_value() if isinstance(v, dg.EnvVar) else v


class LedgerResource(dg.ConfigurableResource):
    """The ledger database. ``url`` empty → ``TRADING_LEDGER_URL`` or SQLite under DAGSTER_HOME.
    ``venue_url``: the paper venue's own store (empty → :func:`~trading_pipelines.ledger.db.default_venue_url`)."""

    url: str | None = None
    venue_url: str | None = None

    def engine(self) -> Engine:
        return get_engine(_value(self.url) or default_ledger_url())

    def venue_engine(self) -> Engine:
        return get_engine(_value(self.venue_url) or default_venue_url())


class ChartStoreResource(dg.ConfigurableResource):
    """Where chart PNGs go: ``local`` (a folder; default ``$DAGSTER_HOME/charts``) or ``minio``
    (any S3-compatible server through the ``minio`` client)."""

    kind: str = "local"
    local_dir: str | None = None
    endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    bucket: str = "trading-charts"
    secure: bool = False
    public_endpoint: str | None = None

    def store(self) -> ChartStore:
        if self.kind == "local":
            root = Path(self.local_dir) if self.local_dir else Path(os.environ.get("DAGSTER_HOME") or "var/dagster_home") / "charts"
            return LocalChartStore(root)
        if self.kind == "minio":
            endpoint, access_key, secret_key = _value(self.endpoint), _value(self.access_key), _value(self.secret_key)
            if not (endpoint and access_key and secret_key):
                raise dg.DagsterInvariantViolationError("minio chart store needs endpoint, access_key and secret_key")
            return MinioChartStore(endpoint=endpoint, access_key=access_key, secret_key=secret_key,
                                   bucket=self.bucket, secure=self.secure, public_endpoint=self.public_endpoint)
        raise dg.DagsterInvariantViolationError(f"unknown chart store kind {self.kind!r} (local | minio)")


class MarketDataResource(dg.ConfigurableResource):
    """Bars: the strategy's ``data.source`` picks replay (CSV files in ``data_dir``) or ccxt."""

    data_dir: str | None = None

    def source(self, spec: StrategySpec) -> MarketDataSource:
        if spec.data.source == "replay":
            return CsvReplaySource(Path(self.data_dir) if self.data_dir else DEFAULT_DATA_DIR)
        return CcxtSource(spec.data.exchange)


class TradingResource(dg.ConfigurableResource):
    """Builds a strategy's :class:`~trading_pipelines.runtime.Runtime` from the other resources.
    ``chart_workers``: processes rendering charts in parallel (0 = one per core)."""

    ledger: LedgerResource
    charts: ChartStoreResource
    market_data: MarketDataResource
    chart_workers: int = 0

    def chart_renderer(self):
        """``jobs -> pngs`` for :func:`trading_pipelines.analysis.analyze.analyze`, rendering in a process
        pool (:func:`~trading_pipelines.stores.chart_render.render_charts`)."""
        from trading_pipelines.stores.chart_render import ChartJob, render_charts

        def render(jobs):
            return render_charts([ChartJob.from_frame(f, t, o, b) for f, t, o, b in jobs], workers=self.chart_workers or None)
        return render

    def chart_submitter(self):
        """``jobs -> Future[pngs]``: :meth:`chart_renderer` in the background (the pool's processes
        render while the caller goes on; one waiting thread per call)."""
        from concurrent.futures import ThreadPoolExecutor

        render = self.chart_renderer()

        def submit(jobs):
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="charts")
            future = pool.submit(render, jobs)
            pool.shutdown(wait=False)
            return future
        return submit

    def runtime(self, spec: StrategySpec, signals: bool = True, book: str = LIVE_BOOK) -> Runtime:
        """The steps' runtime for ``book`` (the live book by default). ``signals=False`` skips
        building the signal provider (the position monitor never asks for a signal, so it must not
        need, say, an OpenAI key)."""
        market = self.market_data.source(spec)
        return Runtime(spec=spec, engine=self.ledger.engine(), market=market, charts=self.charts.store(),
                       provider=build_provider(spec.template.signal_provider, spec.prompt_template, mode=spec.mode) if signals else None,
                       venue=make_venue(spec, market, self.ledger.venue_engine(), book, unreadable=(MarketDataError,)),
                       book=book,  # a paper instrument whose bars cannot be read is frozen alone (venues.paper)
                       frames=frame_store_from_env())


def chart_store_from_env() -> ChartStoreResource:
    """``TRADING_CHART_STORE=minio`` switches to MinIO with ``MINIO_ENDPOINT``, ``MINIO_ACCESS_KEY``,
    ``MINIO_SECRET_KEY`` (secrets resolved by Dagster at run time), ``MINIO_BUCKET``, ``MINIO_SECURE``, and
    ``MINIO_PUBLIC_ENDPOINT`` (host:port the browser reaches, for presigned URLs in the UI)."""
    if os.environ.get("TRADING_CHART_STORE", "local") == "minio":
        return ChartStoreResource(kind="minio", endpoint=dg.EnvVar("MINIO_ENDPOINT"), access_key=dg.EnvVar("MINIO_ACCESS_KEY"),
                                  secret_key=dg.EnvVar("MINIO_SECRET_KEY"), bucket=os.environ.get("MINIO_BUCKET", "trading-charts"),
                                  secure=os.environ.get("MINIO_SECURE", "false").lower() == "true",
                                  public_endpoint=os.environ.get("MINIO_PUBLIC_ENDPOINT") or None)
    return ChartStoreResource(kind="local", local_dir=os.environ.get("TRADING_CHART_DIR"))


def default_resources() -> dict:
    # the ledger URL may carry a password: pass it as an EnvVar so it is resolved at run time, never stored in config
    ledger = LedgerResource(url=dg.EnvVar("TRADING_LEDGER_URL") if os.environ.get("TRADING_LEDGER_URL") else None,
                            venue_url=dg.EnvVar("TRADING_VENUE_URL") if os.environ.get("TRADING_VENUE_URL") else None)
    trading = TradingResource(ledger=ledger, charts=chart_store_from_env(),
                              market_data=MarketDataResource(data_dir=os.environ.get("TRADING_DATA_DIR")))
    return {"trading": trading, "frames_io_manager": frames_io_manager_from_env()}
