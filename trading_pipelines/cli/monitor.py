"""``monitor``: one position-monitor tick on a strategy's live book, from the command line."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from trading_pipelines.cli.common import _strategy, ensure_dagster_home


def cmd_monitor(args) -> int:
    """One tick of the position monitor on the strategy's live book: exactly what
    ``position_monitor_job`` runs for it (:func:`~trading_pipelines.sensors.position_monitor.monitor_strategy`
    with the code location's ``trading`` resource): the venue advanced to "now" (fills of resting
    orders, stop-loss and take-profit hits, liquidations), the ledger reconciled.

    Prints the venue events (instrument, kind, role, quantity in base units, price in quote
    currency, time UTC), then the intents the tick watched — those with a non-terminal order leg
    before or after it — with their status and reason as the ledger now has them (an intent the
    tick closed shows as CLOSED). ``--json``: one object ``{strategy, book, events, intents}``.
    Exit 0 (nothing to watch is not an error); an unknown strategy exits 2."""
    ensure_dagster_home()
    from sqlalchemy import select

    from trading_pipelines.ledger.db import session_scope
    from trading_pipelines.ledger.legs import open_intent_ids
    from trading_pipelines.ledger.models import LIVE_BOOK, IntentRow
    from trading_pipelines.resources.dagster_resources import default_resources
    from trading_pipelines.sensors.position_monitor import monitor_strategy

    spec = _strategy(args.strategy)
    trading = default_resources()["trading"]
    engine = trading.ledger.engine()
    with session_scope(engine) as s:
        watched = set(open_intent_ids(s, spec.name, LIVE_BOOK))
    events = monitor_strategy(spec, trading, run_id=f"cli:monitor:{os.environ.get('USER', 'unknown')}"[:64])
    with session_scope(engine) as s:
        watched |= set(open_intent_ids(s, spec.name, LIVE_BOOK))
        rows = s.execute(select(IntentRow).where(IntentRow.strategy == spec.name, IntentRow.book == LIVE_BOOK,
                                                 IntentRow.intent_id.in_(watched))
                         .order_by(IntentRow.window_end, IntentRow.instrument)).scalars().all() if watched else []
        intents = [{"intent_id": r.intent_id, "instrument": r.instrument, "window_end": r.window_end.isoformat(),
                    "kind": r.kind, "side": r.side, "quantity": r.quantity, "status": r.status, "reason": r.reason}
                   for r in rows]
    if args.json:
        rep = {"strategy": spec.name, "book": LIVE_BOOK, "events": [dataclasses.asdict(e) for e in events],
               "intents": intents}
        json.dump(rep, sys.stdout, indent=2, default=str)
        print()
        return 0
    print(f"{spec.name}: position monitor on the live book, {len(events)} venue events, "
          f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
    for e in events:
        print(f"  {e.instrument:<14} {e.kind:<8} {e.role:<11} {e.quantity:.10g} @ {e.price:.10g}  {e.time.isoformat()}"
              + (f"  {e.reason}" if e.reason else ""))
    print(f"intents watched: {len(intents)}")
    for i in intents:
        print(f"  {i['intent_id']}  {i['instrument']:<14} {i['kind']:<5} {i['side'] or '':<4} {i['quantity']:.10g}  "
              f"{i['status']:<21} {i['reason']}")
    return 0
