"""``trading-pipelines``: run reviews and read the ledger from the command line.

    trading-pipelines list
    trading-pipelines review spot_4h_majors --last 30
    trading-pipelines review futures_1h_btc_eth --start 2026-04-01-00:00 --end 2026-04-02-00:00
    trading-pipelines status --json [--strategy NAME]
    trading-pipelines confirm it-…   |   trading-pipelines cancel it-…

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

from trading_pipelines.config import REPO_DIR, StrategyConfigError, load_strategies


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


def _ledger_report(strategy: str | None) -> dict[str, list[dict]]:
    """The ledger's :func:`~trading_pipelines.ledger.repo.status_report`, through the same resource the runs use."""
    from trading_pipelines.ledger.db import session_scope
    from trading_pipelines.ledger.repo import status_report
    from trading_pipelines.resources.dagster_resources import default_resources

    with session_scope(default_resources()["trading"].ledger.engine()) as s:
        return status_report(s, strategy)


def _windows(spec, args) -> list[str]:
    from trading_pipelines.assets.partitions import window_partitions

    keys = window_partitions(spec).get_partition_keys()
    if args.start or args.end:
        sel = [k for k in keys if (not args.start or k >= args.start) and (not args.end or k <= args.end)]
        if not sel:
            raise SystemExit(f"no windows of {spec.name} between {args.start} and {args.end} "
                             f"(windows run {keys[0]} … {keys[-1]})")
        return sel
    return keys[-args.last:]


def cmd_review(args) -> int:
    ensure_dagster_home()
    import dagster as dg

    from trading_pipelines.assets.partitions import INSTRUMENT_DIM, WINDOW_DIM
    from trading_pipelines.components import review_job_name, universe_job_name
    from trading_pipelines.definitions import defs as build_defs
    try:
        strategies = load_strategies()
    except StrategyConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    spec = strategies.get(args.strategy)
    if spec is None:
        print(f"error: unknown strategy {args.strategy!r} (known: {', '.join(sorted(strategies))})", file=sys.stderr)
        return 2
    instruments = args.instruments or list(spec.instruments)
    unknown = [i for i in instruments if i not in spec.instruments]
    if unknown:
        print(f"error: {spec.name} does not trade {unknown} (instruments: {list(spec.instruments)})", file=sys.stderr)
        return 2
    windows = _windows(spec, args)
    defs = build_defs()
    instance = dg.DagsterInstance.get()
    res = defs.resolve_job_def(universe_job_name(spec.name)).execute_in_process(instance=instance, run_config=_QUIET)
    if not res.success:
        print("error: symbol_universe failed", file=sys.stderr)
        return 1
    job = defs.resolve_job_def(review_job_name(spec.name))
    total, failures, t0 = len(windows) * len(instruments), [], time.monotonic()
    print(f"{spec.name}: {len(windows)} windows ({windows[0]} … {windows[-1]}) × {len(instruments)} instruments, "
          f"{spec.mode.value}, {spec.venue.kind} venue, DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
    n = 0
    for w in windows:  # window-major: the account sees windows in time order across instruments
        for inst in instruments:
            n += 1
            key = dg.MultiPartitionKey({INSTRUMENT_DIM: inst, WINDOW_DIM: w})
            r = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False, run_config=_QUIET,
                                       tags={"strategy": spec.name, "source": "cli"})
            if not r.success:
                failures.append((w, inst, r.run_id))
            if not args.quiet:
                print(f"[{n:>4}/{total}] {w} {inst:<14} {'ok ' if r.success else 'FAILED'} run {r.run_id[:8]} "
                      f"({time.monotonic() - t0:.0f}s)", flush=True)
    rep = _ledger_report(spec.name)
    _print_summary(spec, instruments, rep, failures, time.monotonic() - t0)
    return 1 if failures else 0


def _print_summary(spec, instruments, rep, failures, elapsed) -> None:
    print(f"\nSummary: {spec.name} ({elapsed:.0f}s)")
    header = f"{'instrument':<15}{'signals':>8}{'buy/long':>9}{'sell/short':>11}{'hold':>6}{'validated':>10}{'rejected':>9}{'orders':>7}{'fills':>6}"
    print(header)
    print("-" * len(header))
    for inst in instruments:
        sig = Counter(x["action"] for x in rep["signals"] if x["instrument"] == inst)
        ints = [x for x in rep["intents"] if x["instrument"] == inst]
        st = Counter(x["status"] for x in ints)
        validated = sum(1 for x in ints for h in x["status_history"] if h["to"] == "VALIDATED")
        ords = [o for o in rep["orders"] if o["instrument"] == inst]
        fills = sum(len(o["fills"]) for o in ords)
        print(f"{inst:<15}{sum(sig.values()):>8}{sig['buy'] + sig['long']:>9}{sig['sell'] + sig['short'] + sig['close']:>11}"
              f"{sig['hold']:>6}{validated:>10}{st['REJECTED']:>9}{len(ords):>7}{fills:>6}")
    snaps = rep["snapshots"]
    if snaps:
        last = snaps[-1]
        print(f"equity {last['equity']:.2f}  cash {last['cash']:.2f}  realized {last['realized_pnl']:+.2f}  "
              f"unrealized {last['unrealized_pnl']:+.2f}  open positions {len(last['positions'])}  (as of {last['as_of']})")
    print(f"runs failed: {len(failures)}" + "".join(f"\n  {w} {i} run {r}" for w, i, r in failures))
    print("inspect: trading-pipelines status --json   |   UI: make ui (dagster dev)")


def cmd_status(args) -> int:
    ensure_dagster_home()
    rep = _ledger_report(args.strategy)
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
    from trading_pipelines import services
    from trading_pipelines.ledger.db import session_scope
    from trading_pipelines.ledger.models import IntentRow
    from trading_pipelines.resources.dagster_resources import default_resources

    trading = default_resources()["trading"]
    engine = trading.ledger.engine()
    with session_scope(engine) as s:
        row = s.get(IntentRow, args.intent_id)
        strategy = row.strategy if row else None
    if strategy is None:
        print(f"error: unknown intent {args.intent_id!r}", file=sys.stderr)
        return 2
    try:
        spec = load_strategies()[strategy]
        rt = trading.runtime(spec)
        fn = services.confirm if args.cmd == "confirm" else services.cancel
        intent, orders = fn(rt, args.intent_id, run_id=f"cli:{args.cmd}:{os.environ.get('USER', 'unknown')}")
    except (ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"intent_id": intent.intent_id, "status": intent.status.value, "orders": orders}, indent=2, default=str))
    return 0


def cmd_list(args) -> int:
    try:
        for name, spec in load_strategies().items():
            print(f"{name:<24} {spec.mode.value:<8} {spec.timeframe:<3} {spec.venue.kind:<6} {', '.join(spec.instruments)}")
    except StrategyConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trading-pipelines", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("review", help="materialize a strategy's review for its latest N windows or a window range")
    r.add_argument("strategy")
    r.add_argument("--last", type=int, default=30, help="latest N windows (default 30)")
    r.add_argument("--start", help="first window key, e.g. 2026-03-01-00:00 (1h/4h) or 2017-06-01 (1d)")
    r.add_argument("--end", help="last window key (inclusive)")
    r.add_argument("--instruments", nargs="+", help="a subset of the strategy's instruments")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(fn=cmd_review)
    s = sub.add_parser("status", help="the ledger: signals, intents with guards, orders with fills, positions, snapshots")
    s.add_argument("--json", action="store_true")
    s.add_argument("--strategy")
    s.set_defaults(fn=cmd_status)
    for name, text in (("confirm", "send a validated intent that waits for manual confirmation"),
                       ("cancel", "cancel an intent that has not traded (and its resting orders)")):
        c = sub.add_parser(name, help=text)
        c.add_argument("intent_id")
        c.set_defaults(fn=cmd_decide)
    ls = sub.add_parser("list", help="the strategies")
    ls.set_defaults(fn=cmd_list)
    args = p.parse_args(argv)
    if getattr(args, "last", 1) is not None and getattr(args, "last", 1) < 1:
        p.error("--last must be >= 1")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
