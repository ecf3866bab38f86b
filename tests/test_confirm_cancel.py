"""Manual confirmation and cancel, end to end through the CLI on real candles (SQLite, paper venue).

A copy of spot_4h_majors with ``execution.confirm: manual`` reviews ETH/USDT for the window that
closes 2026-02-27 04:00, where the rules provider buys: the intent waits for confirmation.

Partitions are windows; a run covers the instruments of its ``trading/instruments`` tag (here
ETH/USDT alone) on the live book. The paper venue keeps its own SQLite store under DAGSTER_HOME,
beside (never inside) the ledger's file."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import yaml
from sqlalchemy import select

from trading_pipelines.account import window
from trading_pipelines.assets.review import INSTRUMENTS_TAG
from trading_pipelines.components import build_strategy_defs
from trading_pipelines.config import STRATEGIES_DIR, parse_strategy
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.resources.dagster_resources import default_resources

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture()
def manual(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(tmp_path / "charts"))
    monkeypatch.delenv("TRADING_VENUE_URL", raising=False)  # the venue's default store: its own file under DAGSTER_HOME
    attrs = yaml.safe_load((STRATEGIES_DIR / "spot_4h_majors" / "defs.yaml").read_text())["attributes"]
    attrs["execution"]["confirm"] = "manual"
    spec = parse_strategy(attrs)
    defs = dg.Definitions.merge(build_strategy_defs(spec), dg.Definitions(resources=default_resources()))
    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    job = defs.resolve_job_def("review_spot_4h_majors")

    def review(window, inst="ETH/USDT"):
        assert job.execute_in_process(instance=instance, partition_key=window, tags={INSTRUMENTS_TAG: inst},
                                      run_config=QUIET).success

    engine = get_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    rt = default_resources()["trading"].runtime(spec)
    return review, engine, rt


def _intent(engine):
    with session_scope(engine) as s:
        return s.execute(select(m.IntentRow).where(m.IntentRow.instrument == "ETH/USDT",
                                                   m.IntentRow.partition_key == "2026-02-27-00:00")).scalars().one()


def test_manual_intent_waits_then_confirm_sends_the_bracket(manual):
    review, engine, rt = manual
    review("2026-02-27-00:00")
    intent = _intent(engine)
    assert intent.status == "AWAITING_CONFIRMATION"
    with session_scope(engine) as s:
        assert s.execute(select(m.OrderRow)).scalars().all() == []
    assert rt.venue.fetch_open_orders() == []             # nothing reached the venue either
    confirmed, orders = window.confirm(rt, intent.intent_id, run_id="test")
    assert confirmed.status.value == "SUBMITTED" and {o["role"] for o in orders} == {"entry", "stop_loss", "take_profit"}
    with pytest.raises(ValueError, match="not AWAITING_CONFIRMATION"):
        window.confirm(rt, intent.intent_id)        # a second confirm sends nothing
    review("2026-02-27-04:00")                        # the next bar fills the entry
    assert _intent(engine).status == "MONITORING"  # entry filled: position open, brackets resting
    assert _intent(engine).reason.startswith("entry filled at ") and "stop-loss and take-profit resting" in _intent(engine).reason
    with pytest.raises(ValueError, match="is MONITORING: already executed, it cannot be cancelled"):
        window.cancel(rt, intent.intent_id)


def test_confirmation_expires_after_one_bar(manual):
    review, engine, rt = manual
    review("2026-02-27-00:00")
    review("2026-02-27-04:00")  # the venue moves to 08:00: past the bar the signal was for
    intent = _intent(engine)
    confirmed, orders = window.confirm(rt, intent.intent_id)
    assert confirmed.status.value == "CANCELLED" and orders == []
    assert "expired" in _intent(engine).reason


def test_cancel_through_the_cli(manual, capsys):
    from trading_pipelines.cli import main

    review, engine, rt = manual
    review("2026-02-27-00:00")
    intent = _intent(engine)
    assert main(["cancel", intent.intent_id]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "CANCELLED"
    with session_scope(engine) as s:
        audit = s.execute(select(m.AuditRow).where(m.AuditRow.event == "cancel")).scalars().one()
        history = [h.to_status for h in s.execute(select(m.IntentStatusRow).where(
            m.IntentStatusRow.intent_id == intent.intent_id).order_by(m.IntentStatusRow.id)).scalars()]
    assert audit.detail["previous_status"] == "AWAITING_CONFIRMATION"
    assert history == ["PENDING", "VALIDATED", "AWAITING_CONFIRMATION", "CANCELLED"]
    assert main(["cancel", intent.intent_id]) == 2       # nothing left to cancel
    assert main(["confirm", "it-unknown"]) == 2


def test_cancel_a_submitted_entry_cancels_its_bracket_at_the_venue(manual):
    review, engine, rt = manual
    review("2026-02-27-00:00")
    intent = _intent(engine)
    window.confirm(rt, intent.intent_id)
    cancelled, orders = window.cancel(rt, intent.intent_id)
    assert cancelled.status.value == "CANCELLED"
    assert {o["role"]: o["status"] for o in orders} == {"entry": "CANCELED", "stop_loss": "CANCELED", "take_profit": "CANCELED"}
    assert rt.venue.fetch_open_orders() == []                       # cancelled at the venue, not only in the ledger
    review("2026-02-27-04:00")
    with session_scope(engine) as s:
        assert s.execute(select(m.FillRow)).scalars().all() == []  # nothing filled after the cancel
    assert rt.venue.fetch_my_trades() == [] and rt.venue.fetch_positions() == []
