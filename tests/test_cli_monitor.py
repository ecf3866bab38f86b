"""``trading-pipelines monitor STRATEGY``: one position-monitor tick on the live book from the CLI,
against the embedded defaults (SQLite ledger, the paper venue's store under DAGSTER_HOME). The
position is placed on the live book as tests/test_cadence.py does; the numbers are worked there."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from trading_pipelines.account.requests import order_requests
from trading_pipelines.assets.partitions import window_end
from trading_pipelines.cli import main
from trading_pipelines.config import load_strategies
from trading_pipelines.domain.models import IntentKind, IntentStatus, Mode, OrderRole, PositionSide, Side, TradeIntent
from trading_pipelines.domain.paper import entry_reserve
from trading_pipelines.ledger import models as m
from trading_pipelines.ledger.db import get_engine, session_scope
from trading_pipelines.ledger.legs import record_reported
from trading_pipelines.ledger.repo import Lineage, record_intent, set_intent_status

SPOT = "spot_4h_majors"
INTENT_ID = "it-" + "a" * 24


@pytest.fixture()
def live_btc_long(embedded_home):
    """A BTC long bracket (0.01 at 119 018.98, stop 110 000, take-profit 130 000) resting on the live
    book from the 2025-10-10 16:00 window end, the account's clock moved a day on by an ETH review."""
    from trading_pipelines.resources.dagster_resources import default_resources

    engine = get_engine(f"sqlite:///{embedded_home / 'ledger.sqlite'}")
    spec = load_strategies()[SPOT]
    rt = default_resources()["trading"].runtime(spec)
    assert rt.book == "live"
    placed = window_end(spec, "2025-10-10-12:00")  # 16:00Z
    intent = TradeIntent(intent_id=INTENT_ID, strategy=SPOT, instrument="BTC/USDT", window_end=placed, mode=Mode.SPOT,
                         kind=IntentKind.ENTRY, side=Side.BUY, position_side=PositionSide.LONG, quantity=0.01, entry=119018.98,
                         stop=110000.0, take_profit=130000.0, risk_amount=90.19, notional=1190.19, margin=1190.19, equity=10000.0)
    rt.venue.advance(["ETH/USDT"], placed.replace(day=11))
    lin = Lineage(SPOT, intent.instrument, "2025-10-10-12:00", "test-run", rt.book)
    venue = rt.venue
    with session_scope(engine) as s:
        record_intent(s, lin, intent)
        set_intent_status(s, lin, intent.intent_id, IntentStatus.VALIDATED)
        reserve = entry_reserve(intent.quantity, intent.entry, 1.0, False, spec.venue.fee_rate, spec.venue.slippage_bps)
        with venue.unit_of_work():
            orders = [venue.create_order(r, placed_at=placed, position_side="long", leverage=1.0,
                                         reserve=reserve if r.role is OrderRole.ENTRY else 0.0)
                      for r in order_requests(intent)]
        record_reported(s, lin, intent.intent_id, "spot", venue.name, orders)
        set_intent_status(s, lin, intent.intent_id, IntentStatus.SUBMITTED)
    with session_scope(engine) as s:
        assert s.get(m.IntentRow, INTENT_ID).status == "SUBMITTED"
    return engine


def test_monitor_json_fills_the_entry_and_the_stop_and_closes_the_intent(live_btc_long, capsys):
    """Entry at the 16:00 open 119 018.99 × 1.0005 = 119 078.50; the 20:00 crash bar (low 102 000)
    hits the 110 000 stop, filled at 110 000 × (1 − 5 bps) = 109 945.00; the intent is CLOSED with
    0.01 × (109 945.00 − 119 078.50) = −91.34 realized before fees (2.29), net −93.63."""
    assert main(["monitor", SPOT, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["strategy"], out["book"]) == (SPOT, "live")
    events = [(e["instrument"], e["kind"], e["role"], e["quantity"], e["price"]) for e in out["events"]]
    assert events == [("BTC/USDT", "fill", "entry", 0.01, 119078.5), ("BTC/USDT", "fill", "stop_loss", 0.01, 109945.0)]
    assert [e["time"][:16] for e in out["events"]] == ["2025-10-10 16:00", "2025-10-10 20:00"]
    [intent] = out["intents"]
    assert (intent["intent_id"], intent["instrument"], intent["status"]) == (INTENT_ID, "BTC/USDT", "CLOSED")
    assert intent["reason"] == ("position closed by its stop_loss at 109945.0: realized P&L -91.34 (quote currency, "
                                "before fees); fees 2.29, net -93.63")
    with session_scope(live_btc_long) as s:
        pos = s.execute(select(m.PositionRow)).scalar_one()
        legs = {o.role: o.status for o in s.execute(select(m.OrderRow)).scalars()}
    assert (pos.status, pos.exit_reason, pos.entry_price, pos.exit_price) == ("closed", "stop_loss", 119078.5, 109945.0)
    assert legs == {"entry": "FILLED", "stop_loss": "FILLED", "take_profit": "CANCELED"}
    # a second tick: nothing new, nothing left to watch
    assert main(["monitor", SPOT, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == []


def test_monitor_text_lists_the_events_then_the_intents(live_btc_long, capsys):
    assert main(["monitor", SPOT]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{SPOT}: position monitor on the live book, 2 venue events")
    assert lines[1].split() == ["BTC/USDT", "fill", "entry", "0.01", "@", "119078.5", "2025-10-10T16:00:00+00:00"]
    assert lines[2].split() == ["BTC/USDT", "fill", "stop_loss", "0.01", "@", "109945", "2025-10-10T20:00:00+00:00"]
    assert lines[3] == "intents watched: 1"
    assert lines[4].split()[:6] == [INTENT_ID, "BTC/USDT", "entry", "buy", "0.01", "CLOSED"]
    assert len(lines) == 5


def test_monitor_with_nothing_to_watch_and_an_unknown_strategy(embedded_home, capsys):
    assert main(["monitor", SPOT]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["intents watched: 0"]
    assert main(["monitor", "no_such_strategy"]) == 2
    assert "unknown strategy 'no_such_strategy'" in capsys.readouterr().err
