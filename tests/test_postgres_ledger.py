"""The ledger on a real PostgreSQL 15 server (tests/servers.py): Alembic migration through
``get_engine``, the schema, and tz-aware UTC datetimes surviving a round trip."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import StatementError

from trading_pipelines.ledger.db import MIGRATIONS_DIR, get_engine, session_scope
from trading_pipelines.ledger.models import AuditRow, Base

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def ledger_url(postgres_server) -> str:
    return postgres_server.create_database(f"ledger_{uuid.uuid4().hex[:10]}")


def alembic_head() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


def test_get_engine_migrates_to_head_on_postgres(ledger_url):
    engine = get_engine(ledger_url)
    assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg2"
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == alembic_head()
        # datetimes are stored as timestamptz
        kind = conn.execute(text("SELECT data_type FROM information_schema.columns "
                                 "WHERE table_name = 'audit_log' AND column_name = 'at'")).scalar_one()
    assert kind == "timestamp with time zone"
    # the paper venue's own tables migrate with the chain; the rows of a book say which book
    insp = inspect(engine)
    assert {"books", "paper_accounts", "paper_orders", "paper_fills"} <= tables
    for table in ("intents", "orders", "fills", "positions", "portfolio_snapshots", "audit_log"):
        book = {c["name"]: c for c in insp.get_columns(table)}.get("book")
        assert book is not None and not book["nullable"] and "'live'" in str(book["default"]), (table, book)
    assert get_engine(ledger_url) is engine  # one engine per URL; migrating again is a no-op


def test_utc_datetime_round_trip_is_tz_aware(ledger_url):
    engine = get_engine(ledger_url)
    local = datetime(2026, 3, 3, 22, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(engine) as s:
        row = AuditRow(at=local, strategy="btc_swing", instrument="BTC/USDT", partition_key="2026-03-03-20:00",
                       run_id="r1", book="replay-0123456789ab", event="roundtrip", detail={"n": 1, "k": "v"})
        s.add(row)
        s.flush()
        row_id = row.id
    with session_scope(engine) as s:
        back = s.execute(select(AuditRow).where(AuditRow.id == row_id)).scalar_one()
        assert back.at.tzinfo is not None and back.at.utcoffset() == timedelta(0)
        assert back.at == local and back.at == datetime(2026, 3, 3, 20, 0, 0, 123456, tzinfo=timezone.utc)
        assert back.detail == {"n": 1, "k": "v"} and back.partition_key == "2026-03-03-20:00"
        assert back.book == "replay-0123456789ab"
    # the server holds the instant, whatever the session time zone
    with engine.connect() as conn:
        conn.execute(text("SET TIME ZONE 'America/New_York'"))
        raw = conn.execute(text("SELECT at FROM audit_log WHERE id = :i"), {"i": row_id}).scalar_one()
    assert raw == local
    with session_scope(engine) as s:  # a row without a book is the live book's
        s.add(AuditRow(at=datetime.now(timezone.utc), strategy="s", event="default-book", detail={}))
    with session_scope(engine) as s:
        assert s.execute(select(AuditRow.book).where(AuditRow.event == "default-book")).scalar_one() == "live"


def test_naive_datetime_is_refused_and_rolled_back(ledger_url):
    engine = get_engine(ledger_url)
    with pytest.raises(StatementError, match="naive datetime"):
        with session_scope(engine) as s:
            s.add(AuditRow(at=datetime.now(timezone.utc), strategy="s", event="kept?", detail={}))
            s.add(AuditRow(at=datetime(2026, 1, 1), strategy="s", event="naive", detail={}))
    with session_scope(engine) as s:  # all or nothing: the valid row of that transaction is gone too
        assert s.execute(select(AuditRow).where(AuditRow.event.in_(["kept?", "naive"]))).all() == []
