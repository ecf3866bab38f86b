"""``trading-pipelines``: run reviews and read the ledger from the command line.

    trading-pipelines list
    trading-pipelines replay spot_4h_majors --last 30 [--json]
    trading-pipelines replay futures_1h_btc_eth --start 2026-04-01T00:00Z --end 2026-04-02T00:00Z
    trading-pipelines review spot_4h_majors --last 1          # the live book
    trading-pipelines status --json [--strategy NAME]
    trading-pipelines confirm it-…   |   trading-pipelines cancel it-…
    trading-pipelines intent create spot_4h_majors ETH/USDT buy [--capital 5000] [--json]
    trading-pipelines intent show it-… [--json]
    trading-pipelines intent execute it-… --mode DRY_RUN|LIVE [--acknowledge-risk] [--json]
    trading-pipelines intent cancel it-… [--reason "…"] [--json]
    trading-pipelines history --mode spot|futures [--strategy NAME] [--json]
    trading-pipelines monitor spot_4h_majors [--json]       # one position-monitor tick on the live book
    trading-pipelines ibkr search AAPL [--host 127.0.0.1 --port 4002 --client-id 17] [--json]
    trading-pipelines ibkr contracts STRATEGY [--json]      # resolve and record each instrument's conid

Exit status: 0 done (a replay that finished is 0 even when some instruments' market data could
not be read: they are listed in its ``failed_instruments`` with the reason, file and line); 1 a
Dagster run failed (its id is printed; see the UI); 2 bad input (arguments, a strategy or
catalogue file, a window that is no window start or lies outside the data), nothing run.

Runs go through the same Dagster instance (``DAGSTER_HOME``) and the same ledger as
``dagster dev``, so everything a CLI review did is there to inspect in the UI afterwards.
"""
# (the docstring above is the parser's --help description)
# The subcommands live in trading_pipelines.cli.runs (replay, review), .intents (confirm, cancel,
# intent), .ledger_views (status, history, list), .monitor (monitor) and .ibkr (ibkr); .common holds
# what they share. Their names are re-exported here; main() builds the parser.

from __future__ import annotations

import argparse
import sys

# the helpers are re-exported too (benchmarks/replay.py calls ensure_dagster_home and _replay)
from trading_pipelines.cli.common import CliError, _ledger_report, _strategy, ensure_dagster_home  # noqa: F401
from trading_pipelines.cli.ibkr import cmd_ibkr
from trading_pipelines.cli.intents import _emit, _intent_runtime, _print_intent, _who, cmd_decide, cmd_intent  # noqa: F401
from trading_pipelines.cli.ledger_views import cmd_history, cmd_list, cmd_status
from trading_pipelines.cli.monitor import cmd_monitor
from trading_pipelines.cli.runs import (  # noqa: F401
    _QUIET,
    _instruments,
    _print_summary,
    _Progress,
    _replay,
    _run,
    _strategy_defs,
    _windows,
    cmd_replay,
    cmd_review,
)

__all__ = ["CliError", "cmd_decide", "cmd_history", "cmd_ibkr", "cmd_intent", "cmd_list", "cmd_monitor", "cmd_replay",
           "cmd_review", "cmd_status", "ensure_dagster_home", "main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trading-pipelines", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd, fn, text in (("replay", cmd_replay, "replay a window range on a fresh replay book and report what the strategy would have done"),
                          ("review", cmd_review, "review a window range on the strategy's live book, in time order")):
        r = sub.add_parser(cmd, help=text)
        r.add_argument("strategy")
        r.add_argument("--last", type=int, default=30, help="latest N windows (default 30)")
        r.add_argument("--start", help="first window start, ISO-8601 UTC: 2026-03-01, 2026-03-01T04:00Z")
        r.add_argument("--end", help="last window start (inclusive), ISO-8601 UTC")
        r.add_argument("--instruments", nargs="+", help="a subset of the strategy's instruments")
        r.add_argument("--quiet", action="store_true")
        if cmd == "replay":
            r.add_argument("--json", action="store_true", help="print the replay report as one JSON object")
            r.add_argument("--no-charts", action="store_true", help="skip chart rendering (rules signals do not read them)")
        r.set_defaults(fn=fn)
    s = sub.add_parser("status", help="the ledger: signals, intents with guards, orders with fills, positions, snapshots")
    s.add_argument("--json", action="store_true")
    s.add_argument("--strategy")
    s.add_argument("--book", help="one book (live, or a replay book id)")
    s.set_defaults(fn=cmd_status)
    for name, text in (("confirm", "send a validated intent that waits for manual confirmation"),
                       ("cancel", "cancel an intent that has not traded (and its resting orders)")):
        c = sub.add_parser(name, help=text)
        c.add_argument("intent_id")
        c.set_defaults(fn=cmd_decide)
    it = sub.add_parser("intent", help="the lifecycle of one intent: create (a manual plan), show, execute, cancel")
    isub = it.add_subparsers(dest="action", required=True)
    c = isub.add_parser("create", help="plan and validate a manual intent for the strategy's latest closed window")
    c.add_argument("strategy")
    c.add_argument("instrument")
    c.add_argument("side", help="buy | sell (spot); long | short | close (futures)")
    c.add_argument("--capital", type=float, help="quote currency the 1%% risk is taken on (default: the book's equity)")
    c = isub.add_parser("show", help="status, guards with their messages, orders, and the audit trail of transitions")
    c.add_argument("intent_id")
    c = isub.add_parser("execute", help="execute a validated intent once: DRY_RUN records the orders, LIVE sends them")
    c.add_argument("intent_id")
    c.add_argument("--mode", required=True, type=str.upper, choices=["DRY_RUN", "LIVE"])
    c.add_argument("--acknowledge-risk", action="store_true", help="required for LIVE (with TRADING_PIPELINES_LIVE=1)")
    c = isub.add_parser("cancel", help="cancel an intent that has not traded (a submitted entry: at the venue)")
    c.add_argument("intent_id")
    c.add_argument("--reason", help="why (recorded with the transition)")
    for c in isub.choices.values():
        c.add_argument("--json", action="store_true", help="print the intent report as one JSON object")
    it.set_defaults(fn=cmd_intent)
    h = sub.add_parser("history", help="intents and orders of one mode (spot | futures)")
    h.add_argument("--mode", required=True, type=str.lower, choices=["spot", "futures"])
    h.add_argument("--strategy")
    h.add_argument("--book", default="live", help="live (default), a replay book id, or all")
    h.add_argument("--json", action="store_true")
    h.set_defaults(fn=cmd_history)
    ib = sub.add_parser("ibkr", help="Interactive Brokers: symbol search and contract resolution (TWS / IB Gateway)")
    ibsub = ib.add_subparsers(dest="action", required=True)
    c = ibsub.add_parser("search", help="IB's symbol search (reqMatchingSymbols): conids and listings")
    c.add_argument("pattern")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=4002, help="Gateway 4002 paper / 4001 live; TWS 7497 / 7496")
    c.add_argument("--client-id", type=int, default=17)
    c = ibsub.add_parser("contracts", help="resolve an ibkr strategy's instruments (qualifyContracts) and record them")
    c.add_argument("strategy")
    for c in ibsub.choices.values():
        c.add_argument("--json", action="store_true")
    ib.set_defaults(fn=cmd_ibkr)
    ls = sub.add_parser("list", help="the strategies")
    ls.set_defaults(fn=cmd_list)
    mo = sub.add_parser("monitor", help="one position-monitor tick on the strategy's live book: fills, stop-loss and "
                                        "take-profit hits, exits (what position_monitor_job does)")
    mo.add_argument("strategy")
    mo.add_argument("--json", action="store_true", help="print the events and intents as one JSON object")
    mo.set_defaults(fn=cmd_monitor)
    args = p.parse_args(argv)
    if getattr(args, "last", 1) is not None and getattr(args, "last", 1) < 1:
        p.error("--last must be >= 1")
    try:
        return args.fn(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
