"""Guards that read portfolio state hold under concurrency: 12 instrument runs validate at once
(each sees an empty account, so all pass), then execute at once against ``max_open_positions: 3``.
The executor's re-check under the account lock must let exactly 3 through, in every trial.

The account lock is the book's ``books`` ledger row (``repo.lock_book``); the paper venue keeps its
own store: a SQLite file of its own beside the SQLite ledger, the same database as the ledger on
Postgres (separate sessions, separate tables).

Real Postgres (throwaway cluster) and real SQLite. The 12 instruments are catalogue aliases that
all replay the real BTC/USDT 4h candles: the race does not depend on prices, and the shipped
catalogue has only three spot crypto pairs.
"""

from __future__ import annotations

import threading

import pytest
import yaml
from sqlalchemy import func, select

from trading_pipelines.config import STRATEGIES_DIR, parse_strategy
from trading_pipelines.domain.models import IntentStatus, Mode, OrderRole, Signal
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.ledger.repo import Lineage
from trading_pipelines.llm.rules_provider import RulesSignalProvider
from trading_pipelines.stores.charts import LocalChartStore
from trading_pipelines.stores.market_data import CsvReplaySource
from trading_pipelines.venues import factory
from trading_pipelines.analysis import frames
from trading_pipelines import runtime
from trading_pipelines.account import window

N = 12
WINDOW = "2026-02-27-00:00"


@pytest.fixture()
def catalogue(tmp_path, monkeypatch):
    inst = {f"C{i:02d}/USDT": {"asset_class": "crypto", "market": "spot", "data_file": "BINANCE_BTC-USDT_{timeframe}.csv",
                              "lot_step": 0.00001, "min_qty": 0.00001, "tick_size": 0.01, "min_notional": 5}
            for i in range(N)}
    p = tmp_path / "instruments.yaml"
    p.write_text(yaml.safe_dump({"instruments": inst}))
    monkeypatch.setenv("TRADING_INSTRUMENTS_FILE", str(p))
    return sorted(inst)


def _spec(name, instruments):
    attrs = yaml.safe_load((STRATEGIES_DIR / "spot_4h_majors" / "defs.yaml").read_text())["attributes"]
    attrs.update(name=name, instruments=instruments)
    attrs["venue"]["starting_cash"] = 1_000_000
    attrs["risk"]["max_open_positions"] = 3
    return parse_strategy(attrs)


def _trial(engine, venue_engine, spec, tmp_path):
    from trading_pipelines.assets.partitions import window_end

    market = CsvReplaySource()
    rt = runtime.Runtime(spec=spec, engine=engine, market=market, charts=LocalChartStore(tmp_path / "charts"),
                          provider=RulesSignalProvider(spec.prompt_template),
                          venue=factory.make_paper_venue(spec, market, venue_engine))
    end = window_end(spec, WINDOW)
    frame = frames.indicator_frame(rt, spec.instruments[0], end)
    validated, errors = [], []
    barrier = threading.Barrier(N)

    def one(inst):
        try:
            lin = Lineage(spec.name, inst, f"{inst}|{WINDOW}", f"run-{inst}")
            sig = Signal(strategy=spec.name, instrument=inst, window_end=end, mode=Mode.SPOT, action="buy", confidence=0.9,
                         thesis="concurrency test", provider="test", model="none", prompt_hash="0" * 64)
            intent = window.plan(rt, lin, sig, frame)
            intent, _ = window.validate(rt, lin, intent)
            validated.append(intent.status)
            barrier.wait(timeout=60)  # everyone validated against the same empty account
            window.execute(rt, lin, intent)
        except Exception as e:  # pragma: no cover - surfaced below
            errors.append(repr(e))
            barrier.abort()

    threads = [threading.Thread(target=one, args=(i,)) for i in spec.instruments]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert validated.count(IntentStatus.VALIDATED) == N  # the race is real: all passed validation
    # what the venue holds: exactly three resting entries (the protocol's view of its own store)
    resting = [o for o in rt.venue.fetch_open_orders() if o.request.role is OrderRole.ENTRY]
    entries = len(resting)
    with session_scope(engine) as s:
        ledger_entries = s.execute(select(func.count()).select_from(m.OrderRow).where(
            m.OrderRow.strategy == spec.name, m.OrderRow.role == "entry")).scalar_one()
        submitted = s.execute(select(func.count()).select_from(m.IntentRow).where(
            m.IntentRow.strategy == spec.name, m.IntentRow.status == IntentStatus.SUBMITTED.value)).scalar_one()
        cancelled = s.execute(select(m.IntentRow).where(m.IntentRow.strategy == spec.name,
                                                        m.IntentRow.status == IntentStatus.CANCELLED.value)).scalars().all()
    assert entries == 3 and ledger_entries == 3 and submitted == 3
    assert len(rt.venue.fetch_open_orders()) == 3 * 3  # each entry with its two bracket legs, nothing else
    assert len(cancelled) == N - 3 and all("pre-submit position_limit: 3 open of max 3" in c.reason for c in cancelled)
    # the venue then fills exactly three positions on the next bar
    rt.venue.advance(spec.instruments, end + spec.bar_duration)
    positions = rt.venue.fetch_positions()
    assert len(positions) == 3 and {p.instrument for p in positions} == {o.request.instrument for o in resting}


@pytest.mark.parametrize("trial", range(3))
def test_position_limit_holds_under_concurrency_sqlite(tmp_path, catalogue, trial):
    engine = get_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    venue_engine = get_engine(f"sqlite:///{tmp_path / 'venue.sqlite'}")  # never the ledger's SQLite file
    _trial(engine, venue_engine, _spec(f"conc_sqlite_{trial}", catalogue), tmp_path)


@pytest.mark.postgres
@pytest.mark.parametrize("trial", range(5))
def test_position_limit_holds_under_concurrency_postgres(tmp_path, catalogue, postgres_server, trial):
    engine = get_engine(postgres_server.url)
    _trial(engine, engine, _spec(f"conc_pg_{trial}", catalogue), tmp_path)  # the venue's tables in the same database
