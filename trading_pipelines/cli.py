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
    trading-pipelines ibkr search AAPL [--host 127.0.0.1 --port 4002 --client-id 17] [--json]
    trading-pipelines ibkr contracts STRATEGY [--json]      # resolve and record each instrument's conid

Runs go through the same Dagster instance (``DAGSTER_HOME``) and the same ledger as
``dagster dev``, so everything a CLI review did is there to inspect in the UI afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from trading_pipelines.config import REPO_DIR


def ensure_dagster_home() -> Path:
    """``DAGSTER_HOME`` (default ``./var/dagster_home``), created, with the repo's ``dagster.yaml``
    copied in when it has none."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / "var" / "dagster_home"))).resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists() and (REPO_DIR / "dagster.yaml").exists():
        shutil.copy(REPO_DIR / "dagster.yaml", cfg)
    return home


# Console logging of in-process runs at WARNING: the event log (UI) keeps every event anyway.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _ledger_report(strategy: str | None, book: str | None = None) -> dict[str, list[dict]]:
    """The ledger's :func:`~trading_pipelines.ledger.repo.status_report`, through the same resource the runs use."""
    from trading_pipelines.ledger.db import session_scope
    from trading_pipelines.ledger.repo import status_report
    from trading_pipelines.resources.dagster_resources import default_resources

    with session_scope(default_resources()["trading"].ledger.engine()) as s:
        return status_report(s, strategy, book)


class CliError(Exception):
    """Bad input on the command line: printed as ``error: …``, exit status 2, nothing changed."""


def _strategy(name: str):
    """The strategy ``name``; other strategies' broken files are reported on stderr and skipped."""
    from trading_pipelines.config import load_strategies_report

    strategies, errors = load_strategies_report()
    for path, err in errors.items():
        if name not in Path(path).parts:
            print(f"warning: skipped a broken strategy file: {err}", file=sys.stderr)
    spec = strategies.get(name)
    if spec is None:
        own = [e for p, e in errors.items() if name in Path(p).parts]
        raise CliError((own[0] if own else f"unknown strategy {name!r} (known: {', '.join(sorted(strategies))})"))
    return spec


def _windows(spec, args) -> list[str]:
    """Window keys from ``--start/--end`` (ISO-8601 window starts, inclusive) or ``--last N``."""
    from trading_pipelines.assets.partitions import window_key_of_start, window_partitions
    from trading_pipelines.config import parse_window_bound

    keys = window_partitions(spec).get_partition_keys()
    if args.start or args.end:
        try:
            lo = window_key_of_start(spec, parse_window_bound(spec, args.start, what="--start")) if args.start else keys[0]
            hi = window_key_of_start(spec, parse_window_bound(spec, args.end, what="--end")) if args.end else keys[-1]
        except ValueError as e:
            raise CliError(str(e)) from None
        sel = [k for k in keys if lo <= k <= hi]
        if not sel:
            raise CliError(f"--start {args.start} is after --end {args.end}")
        return sel
    return keys[-args.last:]


def _strategy_defs(spec):
    """The one strategy's definitions with the code location's resources and executor: the same
    jobs the UI runs, without loading every other strategy (≈2 s on these machines)."""
    import dagster as dg

    from trading_pipelines.components import build_strategy_defs
    from trading_pipelines.resources.dagster_resources import default_resources

    return dg.Definitions.merge(build_strategy_defs(spec), dg.Definitions(resources=default_resources(),
                                                                          executor=dg.in_process_executor))


def _run(spec, windows: list[str], instruments: list[str], book: str, charts: bool = True):
    """One in-process run of the strategy's job over ``windows`` × ``instruments`` on ``book``."""
    import dagster as dg

    from trading_pipelines.assets.partitions import range_tags
    from trading_pipelines.assets.review import BOOK_TAG, CHARTS_TAG, INSTRUMENTS_TAG
    from trading_pipelines.components import review_job_name

    job = _strategy_defs(spec).resolve_job_def(review_job_name(spec.name))
    tags = {**range_tags(windows[0], windows[-1]), BOOK_TAG: book, INSTRUMENTS_TAG: ",".join(instruments),
            CHARTS_TAG: "on" if charts else "off", "strategy": spec.name, "source": "cli"}
    return job.execute_in_process(instance=dg.DagsterInstance.get(), tags=tags, raise_on_error=False, run_config=_QUIET)


def _replay(spec, windows: list[str], instruments: list[str], charts: bool = True):
    """One in-process run of ``replay_<strategy>`` (the launchpad job) over ``windows`` × ``instruments``."""
    import dagster as dg

    from trading_pipelines.assets.partitions import window_end
    from trading_pipelines.components import replay_job_name

    job = _strategy_defs(spec).resolve_job_def(replay_job_name(spec.name))
    first = window_end(spec, windows[0]) - spec.bar_duration
    last = window_end(spec, windows[-1]) - spec.bar_duration
    config = {"start": first.isoformat(), "end": last.isoformat(), "instruments": instruments, "charts": charts}
    run_config = {**_QUIET, "ops": {f"{spec.name}__replay": {"config": config}}}
    return job.execute_in_process(instance=dg.DagsterInstance.get(), run_config=run_config, raise_on_error=False,
                                  tags={"strategy": spec.name, "source": "cli"})


def _instruments(spec, args) -> list[str]:
    instruments = args.instruments or list(spec.instruments)
    unknown = [i for i in instruments if i not in spec.instruments]
    if unknown:
        raise CliError(f"{spec.name} does not trade {unknown} (instruments: {list(spec.instruments)})")
    return instruments


class _Progress:
    """A progress bar on stderr while the account walks its windows (tqdm; quiet when not a tty)."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=label, unit="window", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def cmd_review(args) -> int:
    """The live book over a window range, in time order (one run)."""
    ensure_dagster_home()
    from trading_pipelines import runtime

    spec = _strategy(args.strategy)
    instruments, windows = _instruments(spec, args), _windows(spec, args)
    print(f"{spec.name}: live book, {len(windows)} windows ({windows[0]} … {windows[-1]}) × {len(instruments)} instruments, "
          f"{spec.mode.value}, {spec.venue.kind} venue, DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
    t0 = time.monotonic()
    bar = _Progress(len(windows), "live", not args.quiet)
    runtime.PROGRESS.append(bar)
    try:
        result = _run(spec, windows, instruments, "live")
    finally:
        runtime.PROGRESS.remove(bar)
        bar.close()
    rep = _ledger_report(spec.name, "live")
    _print_summary(spec, instruments, rep, [] if result.success else [result.run_id], time.monotonic() - t0)
    return 0 if result.success else 1


def cmd_replay(args) -> int:
    """A replay book over a window range: what the strategy would have done, with its report."""
    ensure_dagster_home()
    from trading_pipelines import runtime
    from trading_pipelines.assets.partitions import window_end
    spec = _strategy(args.strategy)
    instruments, windows = _instruments(spec, args), _windows(spec, args)
    ends = [window_end(spec, w) for w in windows]
    book = runtime.replay_book_id(spec, instruments, ends[0], ends[-1])
    if not args.json:
        print(f"{spec.name}: replay book {book}, {len(windows)} windows ({windows[0]} … {windows[-1]}) × "
              f"{len(instruments)} instruments, {spec.mode.value}, DAGSTER_HOME={os.environ['DAGSTER_HOME']}", flush=True)
    t0 = time.monotonic()
    bar = _Progress(len(windows), book, not args.quiet and sys.stderr.isatty())
    runtime.PROGRESS.append(bar)
    try:
        result = _replay(spec, windows, instruments, charts=not args.no_charts)
    finally:
        runtime.PROGRESS.remove(bar)
        bar.close()
    elapsed = time.monotonic() - t0
    if not result.success:
        print(f"error: run {result.run_id} failed (see the UI: make ui)", file=sys.stderr)
        return 1
    rep = result.output_for_node(f"{spec.name}__replay")
    rep.update(elapsed_s=elapsed, windows_per_s=len(windows) / elapsed if elapsed > 0 else None)  # the command's wall time
    if args.json:
        json.dump(rep, sys.stdout, default=str, allow_nan=False)
        print()
    else:
        _print_summary(spec, instruments, _ledger_report(spec.name, book), [], elapsed)
        ci = rep["hit_rate_ci95"]
        hr = "n/a" if rep["hit_rate"] is None else f"{rep['hit_rate']:.1%} (95% CI {ci[0]:.1%}–{ci[1]:.1%}, {rep['hit_horizon']})"
        bh = "n/a" if rep["buy_and_hold_pct"] is None else f"{rep['buy_and_hold_pct']:+.2f}%"
        print(f"return {rep['return_pct']:+.2f}%  buy-and-hold {bh}  max drawdown {rep['max_drawdown_pct']:.2f}%  "
              f"trades {rep['trades']}  hit rate {hr}  ({rep['windows_per_s'] or 0:.1f} windows/s)")
    return 0


def _print_summary(spec, instruments, rep, failures, elapsed) -> None:
    print(f"\nSummary: {spec.name} ({elapsed:.0f}s)")
    header = (f"{'instrument':<15}{'signals':>8}{'buy/long':>9}{'sell/short':>11}{'hold':>6}{'no-trade':>9}{'validated':>10}"
              f"{'rejected':>9}{'orders':>7}{'fills':>6}")
    print(header)
    print("-" * len(header))
    reasons: Counter = Counter()
    for inst in instruments:
        sigs = [x for x in rep["signals"] if x["instrument"] == inst]
        sig = Counter(x["action"] for x in sigs if not x["no_trade_reason"])
        nt = [x for x in sigs if x["no_trade_reason"]]
        reasons.update(x["no_trade_reason"].split(":")[0] for x in nt)
        ints = [x for x in rep["intents"] if x["instrument"] == inst]
        st = Counter(x["status"] for x in ints)
        validated = sum(1 for x in ints for h in x["status_history"] if h["to"] == "VALIDATED")
        ords = [o for o in rep["orders"] if o["instrument"] == inst]
        fills = sum(len(o["fills"]) for o in ords)
        print(f"{inst:<15}{len(sigs):>8}{sig['buy'] + sig['long']:>9}{sig['sell'] + sig['short'] + sig['close']:>11}"
              f"{sig['hold']:>6}{len(nt):>9}{validated:>10}{st['REJECTED']:>9}{len(ords):>7}{fills:>6}")
    if reasons:
        print("no-trade reasons: " + ", ".join(f"{r} ×{n}" for r, n in reasons.most_common()))
    snaps = rep["snapshots"]
    if snaps:
        last = snaps[-1]
        print(f"equity {last['equity']:.2f}  cash {last['cash']:.2f}  realized {last['realized_pnl']:+.2f}  "
              f"unrealized {last['unrealized_pnl']:+.2f}  open positions {len(last['positions'])}  (as of {last['as_of']})")
    print(f"runs failed: {len(failures)}" + "".join(f"\n  run {r}" for r in failures))
    print("inspect: trading-pipelines status --json   |   UI: make ui (dagster dev)")


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


# ---------------------------------------------------------------- the intent lifecycle (trading_pipelines.operations)


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


def cmd_ibkr(args) -> int:
    """``ibkr search`` / ``ibkr contracts``: a connection error or an unresolvable symbol → exit 2."""
    from trading_pipelines import operations
    from trading_pipelines.resources.dagster_resources import default_resources
    from trading_pipelines.venues import factory
    from trading_pipelines.venues.protocol import VenueError

    try:
        if args.action == "search":
            venue = factory.ibkr_venue(host=args.host, port=args.port, client_id=args.client_id, account="")
            rows = operations.search_contracts(venue, args.pattern)
        else:
            ensure_dagster_home()
            trading = default_resources()["trading"]
            rows = operations.resolve_contracts(operations.runtime_for(trading, _strategy(args.strategy)), run_id="cli:ibkr")
    except (VenueError, ValueError) as e:
        raise CliError(str(e)) from None
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        for r in rows:
            print("  ".join(f"{k}={v}" for k, v in r.items()))
    return 0


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
    args = p.parse_args(argv)
    if getattr(args, "last", 1) is not None and getattr(args, "last", 1) < 1:
        p.error("--last must be >= 1")
    try:
        return args.fn(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
