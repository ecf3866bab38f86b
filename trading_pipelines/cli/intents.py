"""``confirm``/``cancel`` and ``intent create|show|execute|cancel``: one intent's lifecycle
(trading_pipelines.operations)."""

from __future__ import annotations

import json
import os
import sys

from trading_pipelines.cli.common import CliError, _strategy, ensure_dagster_home


def cmd_decide(args) -> int:
    """confirm / cancel one intent, by id (see ``status --json``)."""
    ensure_dagster_home()
    from trading_pipelines.account import window
    from trading_pipelines.ledger.db import session_scope
    from trading_pipelines.ledger.models import IntentRow
    from trading_pipelines.resources.dagster_resources import default_resources

    trading = default_resources()["trading"]
    engine = trading.ledger.engine()
    with session_scope(engine) as s:
        row = s.get(IntentRow, args.intent_id)
        strategy, book = (row.strategy, row.book) if row else (None, None)
    if strategy is None:
        print(f"error: unknown intent {args.intent_id!r}", file=sys.stderr)
        return 2
    try:
        spec = _strategy(strategy)
        rt = trading.runtime(spec, book=book)
        fn = window.confirm if args.cmd == "confirm" else window.cancel
        intent, orders = fn(rt, args.intent_id, run_id=f"cli:{args.cmd}:{os.environ.get('USER', 'unknown')}")
    except (ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"intent_id": intent.intent_id, "status": intent.status.value, "orders": orders}, indent=2, default=str))
    return 0


def _who() -> str:
    return f"cli:{os.environ.get('USER', 'unknown')}"


def _print_intent(rep: dict) -> None:
    print(f"{rep['intent_id']}  {rep['strategy']}  {rep['instrument']}  {rep['mode']}  window ending {rep['window_end']}"
          f"  ({rep['origin']}, book {rep['book']})")
    print(f"status {rep['status']}: {rep['reason']}")
    if rep["kind"] == "entry":
        print(f"{rep['side']} {rep['quantity']:.10g} @ {rep['entry']:.10g}  stop {rep['stop']:.10g}  "
              f"take-profit {rep['take_profit']:.10g}  risk {rep['risk_amount']:.2f} on equity {rep['equity']:.2f}")
    elif rep["kind"] == "exit":
        print(f"exit the {rep['instrument']} position (the venue's size at execution)")
    if rep["guards"]:
        print("guards:")
        for g in rep["guards"]:
            print(f"  {'PASS' if g['passed'] else 'FAIL'}  {g['guard']:<26} {g['message']}")
    if rep["orders"]:
        print("orders:")
        for o in rep["orders"]:
            price = o["price"] if o["price"] is not None else o["trigger_price"]
            fills = "".join(f"  filled {f['quantity']:.10g} @ {f['price']:.10g}" for f in o.get("fills", []))
            print(f"  {o['client_order_id']}  {o['role']:<11} {o['side']:<4} {o['type']:<6} {o['quantity']:.10g} @ "
                  f"{price if price is not None else 'market'}  {o['status']}{fills}")
    print("transitions:")
    for h in rep["transitions"]:
        print(f"  {h['at']}  {h['from'] or '-':>21} -> {h['to']:<21} {h['reason']}  [{h['run_id']}]")
    if rep["audit"]:
        print("audit:")
        for a in rep["audit"]:
            d = a["detail"]
            what = ", ".join(f"{k}={d[k]}" for k in ("who", "mode", "from_status", "to_status", "role", "kind", "status",
                                                      "previous_status", "reason") if d.get(k) not in (None, ""))
            print(f"  {a['at']}  {a['event']:<20} {what}  [{a['run_id']}]")


def _emit(rep: dict, as_json: bool) -> None:
    if as_json:
        json.dump(rep, sys.stdout, indent=2, default=str)
        print()
    else:
        _print_intent(rep)


def _intent_runtime(trading, intent_id: str):
    from trading_pipelines import operations

    strategy, _book = operations.intent_owner(trading.ledger.engine(), intent_id)
    return operations.runtime_for(trading, _strategy(strategy))


def cmd_intent(args) -> int:
    """``intent create|show|execute|cancel``: the lifecycle of one intent (see trading_pipelines.operations).
    Refusals exit 2 with the reason (nothing changed). ``create``/``execute`` exit 1 when the intent
    did not come out VALIDATED / executed (rejected by a guard, no trade, cancelled by the re-check)."""
    ensure_dagster_home()
    from trading_pipelines import operations
    from trading_pipelines.resources.dagster_resources import default_resources

    trading = default_resources()["trading"]
    run_id = f"cli:intent-{args.action}:{os.environ.get('USER', 'unknown')}"[:64]
    try:
        if args.action == "create":
            rt = operations.runtime_for(trading, _strategy(args.strategy))
            rep = operations.plan_manual(rt, args.instrument, args.side, args.capital, who=_who(), run_id=run_id)
            ok = rep["status"] in ("VALIDATED", "AWAITING_CONFIRMATION")
        elif args.action == "show":
            rep, ok = operations.show_intent(trading.ledger.engine(), args.intent_id), True
        elif args.action == "execute":
            rt = _intent_runtime(trading, args.intent_id)
            rep = operations.execute_intent(rt, args.intent_id, args.mode, args.acknowledge_risk, who=_who(), run_id=run_id)
            ok = rep["status"] not in ("CANCELLED", "FAILED")
        else:
            rt = _intent_runtime(trading, args.intent_id)
            rep, ok = operations.cancel_intent(rt, args.intent_id, args.reason, who=_who(), run_id=run_id), True
    except (ValueError, KeyError) as e:  # operations.Refused is a ValueError
        raise CliError(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)) from None
    _emit(rep, args.json)
    return 0 if ok else 1
