"""``status``, ``history`` and ``list``: what the ledger and the strategy files hold."""

from __future__ import annotations

import json
import sys

from trading_pipelines.cli.common import CliError, _ledger_report, ensure_dagster_home


def cmd_status(args) -> int:
    ensure_dagster_home()
    rep = _ledger_report(args.strategy, args.book)
    if args.json:
        json.dump(rep, sys.stdout, indent=2, default=str)
        print()
    else:
        for k, v in rep.items():
            print(f"{k}: {len(v)}")
    return 0


def cmd_history(args) -> int:
    """Orders and intents of one mode (the live book unless --book), oldest first."""
    ensure_dagster_home()
    from trading_pipelines import operations
    from trading_pipelines.resources.dagster_resources import default_resources

    book = None if args.book == "all" else args.book
    try:
        rep = operations.history(default_resources()["trading"].ledger.engine(), args.mode, args.strategy, book)
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.json:
        json.dump(rep, sys.stdout, indent=2, default=str)
        print()
        return 0
    print(f"{rep['mode']} history{' of ' + args.strategy if args.strategy else ''} (book {args.book}): "
          f"{len(rep['intents'])} intents, {len(rep['orders'])} orders")
    for i in rep["intents"]:
        print(f"  {i['window_end']}  {i['intent_id']}  {i['strategy']:<20} {i['instrument']:<14} {i['kind']:<5} "
              f"{i['side'] or '':<4} {i['quantity']:.10g}  {i['status']:<21} {i['origin']:<8} orders {i['orders']}")
    for o in rep["orders"]:
        price = o["price"] if o["price"] is not None else o["trigger_price"]
        print(f"  {o['placed_at']}  {o['client_order_id']}  {o['strategy']:<20} {o['instrument']:<14} {o['role']:<11} "
              f"{o['side']:<4} {o['type']:<6} {o['quantity']:.10g} @ {price if price is not None else 'market'}  {o['status']}")
    return 0


def cmd_list(args) -> int:
    from trading_pipelines.config import load_strategies_report

    strategies, errors = load_strategies_report()
    for name, spec in strategies.items():
        print(f"{name:<24} {spec.mode.value:<8} {spec.timeframe:<3} {spec.venue.kind:<6} {', '.join(spec.instruments)}")
    for err in errors.values():
        print(f"error: {err}", file=sys.stderr)
    return 2 if errors else 0
