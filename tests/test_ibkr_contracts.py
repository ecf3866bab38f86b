"""IB symbol search and contract resolution from the CLI and the launchpad (issue 8, IBKR).

TWS / IB Gateway cannot run here: ``FakeIB`` (tests/fake_ib.py) stands in for it, handed to the
real ``IbkrVenue`` through ``venues.factory.CLIENTS``; everything else is real — the user strategy
file (``TRADING_STRATEGIES_PATH``), the CLI's ``main``, the Dagster job, the SQLite ledger.
"""

from __future__ import annotations

import json

import dagster as dg
import pytest
import yaml
from fake_ib import FakeIB
from sqlalchemy import select

from trading_pipelines.cli import main
from trading_pipelines.config import STRATEGIES_DIR, load_strategies
from trading_pipelines.intent_jobs import CONTRACTS_JOB, build_intent_jobs, op_name
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.resources.dagster_resources import default_resources
from trading_pipelines.venues import factory

NAME = "equities_ibkr"


@pytest.fixture()
def ib(embedded_home, monkeypatch):
    attrs = yaml.safe_load((STRATEGIES_DIR / "equities_1d_spy_aapl" / "defs.yaml").read_text())["attributes"]
    attrs.update(name=NAME, venue={"kind": "ibkr", "host": "127.0.0.1", "port": 4002, "client_id": 17, "account": "DU1234567"})
    folder = embedded_home / "strategies" / NAME
    folder.mkdir(parents=True)
    (folder / "defs.yaml").write_text(yaml.safe_dump({"type": "trading_pipelines.components.StrategyComponent",
                                                      "attributes": attrs}))
    monkeypatch.setenv("TRADING_STRATEGIES_PATH", str(embedded_home / "strategies"))
    fake = FakeIB()
    monkeypatch.setattr(factory, "CLIENTS", {"ibkr": lambda: fake})
    return fake


def _recorded(home) -> list[dict]:
    with session_scope(get_engine(f"sqlite:///{home / 'ledger.sqlite'}")) as s:
        return [r.detail for r in s.execute(select(m.AuditRow).where(m.AuditRow.event == "contract_resolved")
                                            .order_by(m.AuditRow.id)).scalars()]


def test_cli_search_lists_the_conids(ib, capsys):
    assert main(["ibkr", "search", "AAPL", "--port", "4002", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0] == {"conid": 265598, "symbol": "AAPL", "sec_type": "STK", "primary_exchange": "NASDAQ", "currency": "USD",
                       "derivative_sec_types": ["CFD", "OPT", "IOPT", "WAR", "BAG"]}
    assert ib.connect_calls[0][:3] == ("127.0.0.1", 4002, 17)


def test_cli_contracts_resolves_and_records_each_instrument(ib, embedded_home, capsys):
    assert main(["ibkr", "contracts", NAME, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["instrument"], r["conid"], r["primary_exchange"]) for r in rows] == [("SPY", 756733, "ARCA"),
                                                                                   ("AAPL", 265598, "NASDAQ")]
    assert [(d["symbol"], d["conid"]) for d in _recorded(embedded_home)] == [("SPY", 756733), ("AAPL", 265598)]


def test_contracts_of_a_non_ibkr_strategy_are_refused(ib, capsys):
    assert main(["ibkr", "contracts", "spot_4h_majors"]) == 2
    assert "trades on 'paper', not ibkr" in capsys.readouterr().err


def test_the_launchpad_job_records_the_contracts(ib, embedded_home):
    defs = dg.Definitions(jobs=build_intent_jobs(list(load_strategies().values())), resources=default_resources())
    res = defs.resolve_job_def(CONTRACTS_JOB).execute_in_process(
        run_config={"ops": {op_name(CONTRACTS_JOB): {"config": {"strategy": NAME}}}})
    assert res.success
    assert res.output_for_node(op_name(CONTRACTS_JOB))[1]["conid"] == 265598
    assert [d["conid"] for d in _recorded(embedded_home)] == [756733, 265598]
