"""``replay`` and ``review``: in-process runs of a strategy's jobs over a window range, with a
progress bar and a summary of what the ledger recorded."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter

from trading_pipelines.cli.common import CliError, _ledger_report, _strategy, ensure_dagster_home

# Console logging of in-process runs at WARNING: the event log (UI) keeps every event anyway.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
_MARKET_CLOSED = "market closed"  # the no-trade reason of an exchange holiday (counted apart: column "closed")


def _windows(spec, args) -> list[str]:
    """Window keys from ``--start/--end`` (ISO-8601 window starts, inclusive) or ``--last N``: the
    strategy's window partitions whose bar has closed (Dagster's partitions definition, so a daily
    equity strategy has weekday windows only) and, for replay data, by the data's last bar
    (:func:`_data_end`; an omitted ``--end`` and ``--last`` stop there). Raises :class:`CliError`
    for a bound that is no window start (:func:`~trading_pipelines.config.parse_window_bound`), a
    reversed range, or a bound whose window closes after the data's last bar."""
    from trading_pipelines.assets.partitions import window_end, window_key_of_start, window_keys
    from trading_pipelines.config import parse_window_bound

    keys = window_keys(spec)
    if not keys:
        raise CliError(f"{spec.name} has no window whose bar has closed yet (data.windows_start "
                       f"{spec.data.windows_start.isoformat()})")
    bounds = {}
    try:
        for flag, value in (("--start", args.start), ("--end", args.end)):
            if value:
                bounds[flag] = window_key_of_start(spec, parse_window_bound(spec, value, what=flag))
    except ValueError as e:
        raise CliError(str(e)) from None
    data_end = _data_end(spec)
    if data_end is not None:
        last, newest = data_end
        fits = [k for k in keys if window_end(spec, k) <= last]
        for flag, key in bounds.items():
            if window_end(spec, key) > last:
                value = args.start if flag == "--start" else args.end
                raise CliError(
                    f"{flag} {value!r}: that window closes at {window_end(spec, key).isoformat()}, after the data's last bar "
                    f"({newest}; the last bar closes at {last.isoformat()})"
                    + (f"; last window with data: {fits[-1]}" if fits else "; no window of the strategy has data"))
        if not fits:
            raise CliError(f"{spec.name}: no window has data: the data's last bar ({newest}) closes at {last.isoformat()}, "
                           f"before the first window ({keys[0]}) closes")
        keys = fits
    if bounds:
        lo, hi = bounds.get("--start", keys[0]), bounds.get("--end", keys[-1])
        sel = [k for k in keys if lo <= k <= hi]
        if not sel:
            raise CliError(f"--start {args.start} is after --end {args.end}")
        return sel
    return keys[-args.last:]


def _data_end(spec) -> tuple | None:
    """(close time of the newest bar over the strategy's instruments, who has it) from the replay
    data (``last_closed_bar_end`` of the market data source), or None for live data or when no
    instrument's data can be read (such instruments are the run's ``failed_instruments``)."""
    from trading_pipelines.resources.dagster_resources import default_resources
    from trading_pipelines.stores.market_data import MarketDataError

    if spec.data.source != "replay":
        return None
    market = default_resources()["trading"].market_data.source(spec)
    ends = {}
    for inst in spec.instruments:
        try:
            end = market.last_closed_bar_end(inst, spec.timeframe)
        except MarketDataError:
            continue
        if end is not None:
            ends[inst] = end
    if not ends:
        return None
    inst = max(ends, key=lambda i: ends[i])
    where = market.path_for(inst, spec.timeframe) if hasattr(market, "path_for") else inst
    return ends[inst], f"{inst}: last bar opens {(ends[inst] - spec.bar_duration).isoformat()} in {where}"


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
    from trading_pipelines import runtime

    spec = _strategy(args.strategy)  # bad input is refused before anything is created
    instruments, windows = _instruments(spec, args), _windows(spec, args)
    ensure_dagster_home()
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
    """A replay book over a window range: what the strategy would have done, with its report.

    Exit status: 0 when the run finished, even when some instruments' market data could not be
    read (they are listed in ``failed_instruments``, in the JSON and the summary, with the reason);
    1 when the Dagster run failed (its id is printed; the UI has the event log); 2 for bad input
    (:class:`CliError`: arguments, the strategy file, a window outside the data), nothing run."""
    from trading_pipelines import runtime
    from trading_pipelines.assets.partitions import window_end
    spec = _strategy(args.strategy)  # bad input is refused before DAGSTER_HOME or a ledger is created
    instruments, windows = _instruments(spec, args), _windows(spec, args)
    ensure_dagster_home()
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
        why = _failure(result)
        print(f"error: run {result.run_id} failed{why} (see the UI: make ui)", file=sys.stderr)
        if args.json:  # a script reading --json still gets one object, saying the run failed and why
            json.dump({"strategy": spec.name, "book": book, "success": False, "run_id": result.run_id,
                       "error": why.removeprefix(": ").strip() or "the Dagster run failed", "failed_instruments": []},
                      sys.stdout)
            print()
        return 1
    rep = result.output_for_node(f"{spec.name}__replay")
    rep.update(elapsed_s=elapsed, windows_per_s=len(windows) / elapsed if elapsed > 0 else None)  # the command's wall time
    rep.setdefault("failed_instruments", [])
    rep.setdefault("success", True)
    if args.json:
        json.dump(rep, sys.stdout, default=str, allow_nan=False)
        print()
    else:
        _print_summary(spec, instruments, _ledger_report(spec.name, book), [], elapsed)
        for f in rep["failed_instruments"]:
            print(f"failed instrument {f['instrument']}: {f['reason']}")
        ci = rep["hit_rate_ci95"]
        hr = "n/a" if rep["hit_rate"] is None else f"{rep['hit_rate']:.1%} (95% CI {ci[0]:.1%}–{ci[1]:.1%}, {rep['hit_horizon']})"
        bh = "n/a" if rep["buy_and_hold_pct"] is None else f"{rep['buy_and_hold_pct']:+.2f}%"
        net = "" if rep.get("net_pnl") is None else f"  net P&L {rep['net_pnl']:+.2f} (fees {rep.get('fees') or 0:.2f})"
        print(f"return {rep['return_pct']:+.2f}%  buy-and-hold {bh}  max drawdown {rep['max_drawdown_pct']:.2f}%  "
              f"trades {rep['trades']}{net}  hit rate {hr}  ({rep['windows_per_s'] or 0:.1f} windows/s)")
    return 0


def _failure(result) -> str:
    """``": <the first failed step's error message>"`` of a failed in-process run ("" if none)."""
    for ev in result.all_events:
        if ev.is_step_failure and ev.step_failure_data and ev.step_failure_data.error:
            err = ev.step_failure_data.error
            while err.cause is not None and err.cls_name == "DagsterExecutionStepExecutionError":  # the user code's own error
                err = err.cause
            return f": step {ev.step_key}: {err.message.strip()}"
    return ""


def _print_summary(spec, instruments, rep, failures, elapsed) -> None:
    print(f"\nSummary: {spec.name} ({elapsed:.0f}s)")
    header = (f"{'instrument':<15}{'signals':>8}{'buy/long':>9}{'sell/short':>11}{'hold':>6}{'no-trade':>9}{'closed':>7}"
              f"{'validated':>10}{'rejected':>9}{'orders':>7}{'fills':>6}")
    print(header)
    print("-" * len(header))
    reasons: Counter = Counter()
    for inst in instruments:
        sigs = [x for x in rep["signals"] if x["instrument"] == inst]
        sig = Counter(x["action"] for x in sigs if not x["no_trade_reason"])
        closed = [x for x in sigs if (x["no_trade_reason"] or "").startswith(_MARKET_CLOSED)]  # exchange holidays
        nt = [x for x in sigs if x["no_trade_reason"] and x not in closed]
        reasons.update(x["no_trade_reason"].split(":")[0] for x in nt)
        ints = [x for x in rep["intents"] if x["instrument"] == inst]
        st = Counter(x["status"] for x in ints)
        validated = sum(1 for x in ints for h in x["status_history"] if h["to"] == "VALIDATED")
        ords = [o for o in rep["orders"] if o["instrument"] == inst]
        fills = sum(len(o["fills"]) for o in ords)
        print(f"{inst:<15}{len(sigs):>8}{sig['buy'] + sig['long']:>9}{sig['sell'] + sig['short'] + sig['close']:>11}"
              f"{sig['hold']:>6}{len(nt):>9}{len(closed):>7}{validated:>10}{st['REJECTED']:>9}{len(ords):>7}{fills:>6}")
    if reasons:
        print("no-trade reasons: " + ", ".join(f"{r} ×{n}" for r, n in reasons.most_common()))
    snaps = rep["snapshots"]
    if snaps:
        last = snaps[-1]
        print(f"equity {last['equity']:.2f}  cash {last['cash']:.2f}  realized {last['realized_pnl']:+.2f}  "
              f"unrealized {last['unrealized_pnl']:+.2f}  open positions {len(last['positions'])}  (as of {last['as_of']})")
    print(f"runs failed: {len(failures)}" + "".join(f"\n  run {r}" for r in failures))
    print("inspect: trading-pipelines status --json   |   UI: make ui (dagster dev)")
