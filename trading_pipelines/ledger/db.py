"""Ledger database: engine creation, Alembic migration, and sessions.

The URL comes from ``TRADING_LEDGER_URL`` (any SQLAlchemy URL, e.g.
``postgresql+psycopg2://user@host/db``); the default is a SQLite file under ``DAGSTER_HOME``
(``$DAGSTER_HOME/ledger.sqlite``), so the CLI and ``dagster dev`` share one ledger.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
LEDGER_URL_ENV = "TRADING_LEDGER_URL"

_lock = threading.Lock()
_migrated: set[str] = set()
_engines: dict[str, Engine] = {}


def default_ledger_url(environ: os._Environ | dict = os.environ) -> str:
    """``TRADING_LEDGER_URL`` if set, else ``sqlite:///$DAGSTER_HOME/ledger.sqlite`` (or ``./var``)."""
    if environ.get(LEDGER_URL_ENV):
        return environ[LEDGER_URL_ENV]
    home = Path(environ.get("DAGSTER_HOME") or Path.cwd() / "var" / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'ledger.sqlite'}"


VENUE_URL_ENV = "TRADING_VENUE_URL"


def default_venue_url(environ: os._Environ | dict = os.environ) -> str:
    """The paper venue's own store: ``TRADING_VENUE_URL`` if set; else the ledger's URL when that
    is a server database (separate sessions, separate tables); else a SQLite file of its own,
    ``$DAGSTER_HOME/paper_venue.sqlite`` (one SQLite file cannot serve two writers' transactions
    at once: the venue commits inside the ledger's step)."""
    if environ.get(VENUE_URL_ENV):
        return environ[VENUE_URL_ENV]
    ledger = default_ledger_url(environ)
    if not ledger.startswith("sqlite"):
        return ledger
    home = Path(environ.get("DAGSTER_HOME") or Path.cwd() / "var" / "dagster_home")
    return f"sqlite:///{home / 'paper_venue.sqlite'}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # let the "begin" listener issue BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a commit is safe against a crashed process (no fsync per commit, the WAL is
    # synced at checkpoints); a power cut may lose the last commits, never corrupt the file.
    # Production ledgers run on Postgres.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def get_engine(url: str) -> Engine:
    """One engine per URL per process, migrated to the newest Alembic revision on first use."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
                # Every transaction takes SQLite's write lock up front (BEGIN IMMEDIATE): concurrent
                # runs then queue on busy_timeout instead of failing when a read turns into a write.
                event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        if url not in _migrated:
            migrate(engine)
            _migrated.add(url)
        return engine


def migrate(engine: Engine, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` on ``engine``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A transaction: commits on success, rolls back on any exception (all or nothing)."""
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        with session.begin():
            yield session
