"""Ledger database: engine creation, Alembic migration, and sessions.

The URL comes from ``TRADING_LEDGER_URL`` (any SQLAlchemy URL, e.g.
``postgresql+psycopg2://user@host/db``); the default is a SQLite file under ``DAGSTER_HOME``
(``$DAGSTER_HOME/ledger.sqlite``), so the CLI and ``dagster dev`` share one ledger.

SQLite (the ledger and the paper venue's own store): WAL, ``busy_timeout`` of
:data:`SQLITE_BUSY_TIMEOUT_MS`, and every transaction takes the write lock up front
(``BEGIN IMMEDIATE``). When another writer holds it longer than the busy timeout ("database is
locked"), :func:`session_scope` and :func:`migrate` retry the ``BEGIN`` (tenacity, exponential
back-off with jitter, for up to :data:`LOCK_RETRY_S` seconds) before the caller's block runs, so a
busy ledger makes a run wait, never crash, and the block is never run twice.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
from tenacity import Retrying, before_sleep_log, retry_if_exception, stop_after_delay, wait_random_exponential

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
LEDGER_URL_ENV = "TRADING_LEDGER_URL"

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""SQLite's own wait for another writer's lock, per statement (``PRAGMA busy_timeout``)."""
LOCK_RETRY_S = 600.0
"""How long a transaction keeps retrying its ``BEGIN`` on "database is locked" (each try itself
waits up to the busy timeout); past that the error is raised."""

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
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_MS)}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def get_engine(url: str) -> Engine:
    """One engine per URL per process, migrated to the newest Alembic revision on first use."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
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


def _is_locked(e: BaseException) -> bool:
    """SQLite's "database is locked" (SQLITE_BUSY: another connection holds the write lock)."""
    return isinstance(e, OperationalError) and "database is locked" in str(getattr(e, "orig", "") or "")


def _lock_retrying() -> Retrying:
    return Retrying(retry=retry_if_exception(_is_locked), stop=stop_after_delay(LOCK_RETRY_S),
                    wait=wait_random_exponential(multiplier=0.05, max=2.0), reraise=True,
                    before_sleep=before_sleep_log(log, logging.WARNING))


def migrate(engine: Engine, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` on ``engine`` (one transaction; retried while
    SQLite reports "database is locked", see the module doc)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    for attempt in _lock_retrying():
        with attempt:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)


def _begin(factory: sessionmaker) -> tuple[Session, SessionTransaction]:
    """A new session with its transaction begun on a connection (SQLite: the write lock held),
    retried while the database is locked by another writer."""
    for attempt in _lock_retrying():
        with attempt:
            session = factory()
            try:
                tx = session.begin()
                session.connection()  # BEGIN (IMMEDIATE on SQLite) now, before the caller's block runs
            except BaseException:
                session.close()
                raise
    return session, tx


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A transaction: commits on success, rolls back on any exception (all or nothing).

    The transaction is begun before the block runs: on SQLite that takes the write lock, and
    "database is locked" (another writer held it past the busy timeout) is retried for up to
    :data:`LOCK_RETRY_S` seconds, then raised (``sqlalchemy.exc.OperationalError``). An error
    raised inside the block is never retried: the block runs at most once."""
    session, tx = _begin(sessionmaker(engine, expire_on_commit=False))
    with session, tx:
        yield session
