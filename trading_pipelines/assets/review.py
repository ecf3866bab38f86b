"""A strategy as software-defined assets, partitioned by time window (UTC):

symbol_universe → [analysis] ohlcv_bars → indicator_frames → chart_images → signals
               → [account]  trade_intents → validated_intents → orders → portfolio_snapshots → replay_report

Every asset of a strategy shares one partitions definition, the strategy's windows, and the
instruments are looped inside each step (detail per instrument lives in metadata tables and in
the ledger's rows, one per instrument × window). Measured on Dagster 1.13 and kept because of it:

* a run cannot mix partitions definitions (an asset job refuses assets whose definitions differ),
  so a tick that covers analysis *and* account in one run needs one definition;
* a single-run backfill of a multi-partitioned asset is split per key of the smaller dimension
  (``DefaultPartitionsSubset.get_partition_key_ranges``), so an instrument × window analysis
  backfilled with a cross-instrument account step ran the account before other instruments'
  signals existed.

**Analysis** (one step, ``analysis``): order-free; indicators once per instrument per chunk,
sliced point in time; charts rendered in parallel; errors per instrument become recorded
no-trades. **Account** (one step, ``account``): ``portfolio_snapshots`` depends on its own
previous window (``TimeWindowPartitionMapping(-1, -1)``), so Dagster orders the windows; with
``BackfillPolicy.single_run()`` a UI backfill is one run and the step walks its windows oldest
first. Cycles across assets (A(t) → B(t−1) → A(t)) are refused by Dagster (CircularDependencyError),
which is why the loop lives inside one multi-asset.

**One backfill, one run.** ``symbol_universe`` shares the windows (a universe per window, the
instruments that window reviews) and ``BackfillPolicy.single_run()``: an unpartitioned asset in a
backfill of the group is always a run of its own (a run targets one partitions definition), so the
group's backfill was 2 runs. The tick (``review_<strategy>``) does not select it; its windows show
the universe missing, which changes nothing downstream (a plain dependency, nothing is loaded).

**Why the analysis multi-asset is subsettable** (Dagster 1.13, measured; the UI's "Materialize all…
→ Launch backfill" was refused in some ``dagster dev`` processes, every time in such a process:
``PYTHONHASHSEED`` 2 of 0–3 here): the UI sends ``launchPartitionBackfill`` with ``assetSelection`` + ``partitionNames``.
``AssetBackfillData.from_asset_partitions`` (dagster/_core/execution/asset_backfill.py, ~line 546)
builds each asset's target by walking the graph from the root with
``BaseAssetGraph.bfs_filter_subsets`` (dagster/_core/definitions/assets/graph/base_asset_graph.py,
~line 864); an asset reached from two parents (``signals`` ← ``indicator_frames`` and
``chart_images``) gets ``subset | prior`` when its second parent is visited before it, and that
union is a ``TimeWindowPartitionsSubset`` with ``num_partitions=None`` (counted lazily) where the
others carry 40. Whether it is visited before depends on the iteration order of the ``child_keys``
set, i.e. on ``str`` hashing, i.e. on the webserver process's ``PYTHONHASHSEED``: fixed for the
life of the process, so 4 launches of 4 were refused and a restart could cure it. Then
``assert_valid_asset_partition_backfill`` (dagster_graphql/implementation/utils.py, ~line 477)
compares the members of a *non-subsettable* multi-asset with ``!=``; ``TimeWindowPartitionsSubset``
(dagster/_core/definitions/partitions/subset/time_window.py, ~line 627) defines ``__eq__`` (same
windows) but not ``__ne__``, so ``!=`` is ``tuple.__ne__``, which also compares ``num_partitions``:
equal subsets compare unequal → "Targeted subset must match between every key in a non-subsettable
multi-asset". Not the time-dependent end of the windows (spot_4h_majors has ``windows_end`` and is
refused alike), not a cache. ``partitionsByAssets`` builds every asset's subset on its own, which is
why that form always passed. The check runs in the webserver, which never imports this code, so
the fix is the graph's shape: Dagster only requires equal subsets of a multi-asset that cannot be
subset, so ``analysis`` declares ``can_subset=True`` and materializes exactly the selected keys
(the whole analysis runs either way: it is order-free and idempotent). The lineage keeps both of
``signals``' parents. ``account`` has no diamond (a chain, plus ``portfolio_snapshots``' own
previous window, an edge the walk only follows after recording that asset) and stays
all-or-nothing. Tested with the UI's exact request under both hash orders
(tests/test_ui_backfill.py), and in chromium on ``dagster dev`` with the webserver at
``PYTHONHASHSEED=2``: before, 2 launches of 2 refused; after, 5 of 5 launched, each one run.

**Books**: see :mod:`trading_pipelines.assets.common` (:func:`run_book`). The helpers the assets
call live beside this module: :mod:`~trading_pipelines.assets.analysis_assets` (the signals'
provider-call metadata), :mod:`~trading_pipelines.assets.account_assets` (the account walk, its
materializations, the replay report) and :mod:`~trading_pipelines.assets.replay_job` (the
launchpad replay job); their public names are re-exported here.
"""


import dagster as dg

from trading_pipelines.analysis.analyze import analyze_many
from trading_pipelines.account.checks import unprotected_positions
from trading_pipelines.assets.account_assets import account_results, book_report, protection_check, replay_account
from trading_pipelines.assets.analysis_assets import signal_call_metadata
from trading_pipelines.assets.common import (
    _MAX_PREVIEWS,
    _TABLE_ROWS,
    ACCOUNT_STEPS,
    ANALYSIS_STEPS,
    BOOK_TAG,
    CHARTS_TAG,
    INSTRUMENTS_TAG,
    STEPS,
    _keys,
    _md_table,
    run_book,
    run_instruments,
    selected,
)
from trading_pipelines.assets.partitions import window_end, window_key, window_partitions
from trading_pipelines.assets.replay_job import ReplayConfig, build_replay_job
from trading_pipelines.config import StrategySpec
from trading_pipelines.resources.dagster_resources import TradingResource
from trading_pipelines.stores.chart_render import thumbnail_markdown

__all__ = ["ACCOUNT_STEPS", "ANALYSIS_STEPS", "BOOK_TAG", "CHARTS_TAG", "INSTRUMENTS_TAG", "STEPS", "ReplayConfig",
           "account_results", "book_report", "build_replay_job", "build_review_assets", "replay_account", "run_book",
           "run_instruments", "signal_call_metadata"]


def build_review_assets(spec: StrategySpec) -> tuple[list, list[dg.AssetKey]]:
    """The strategy's assets (keys ``<strategy>/<step>``), checks included, and the keys a tick runs."""
    name = spec.name
    parts = window_partitions(spec)
    k = {step: dg.AssetKey([name, step]) for step in ("symbol_universe", *STEPS, "replay_report")}
    tags = {"strategy": name, "mode": spec.mode.value}
    llm = spec.template.signal_provider.kind == "openai"

    @dg.asset(key=k["symbol_universe"], group_name=name, kinds={"python"}, tags=tags, partitions_def=parts,
              backfill_policy=dg.BackfillPolicy.single_run(),
              description=f"The instruments {name} reviews in each window (from its strategy file; the run's "
                          f"`{INSTRUMENTS_TAG}` tag when it names a subset). Re-running it changes nothing.")
    def symbol_universe(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        instruments = run_instruments(context, spec)
        wkeys = _keys(context)
        return dg.MaterializeResult(metadata={"instruments": instruments, "count": len(instruments),
                                              "first_window": wkeys[0], "last_window": wkeys[-1]})

    analysis_specs = [
        dg.AssetSpec(k["ohlcv_bars"], deps=[k["symbol_universe"]], kinds={"pandas"}, group_name=name, tags=tags,
                     description="Point-in-time OHLCV bars per instrument: the last lookback bars that closed at or before "
                                 "the window end; a window whose newest bar is not the one closing at its end is stale."),
        dg.AssetSpec(k["indicator_frames"], deps=[k["ohlcv_bars"]], kinds={"pandas"}, group_name=name, tags=tags,
                     description="Indicators from the `ta` library, computed once per instrument per 512-bar chunk and sliced "
                                 "point in time (the same frame whether a window is ticked alone or backfilled)."),
        dg.AssetSpec(k["chart_images"], deps=[k["indicator_frames"]], kinds={"s3"}, group_name=name, tags=tags,
                     description="Candlestick chart per instrument (mplfinance/matplotlib), stored in the chart store."),
        dg.AssetSpec(k["signals"], deps=[k["indicator_frames"], k["chart_images"]],
                     kinds={"openai"} if llm else {"python"}, group_name=name, tags=tags,
                     description="The signal provider's recommendation per instrument; prompt, chart, response and tokens are "
                                 "in the ledger. Bad data, a failed chart or a provider error is that instrument's recorded no-trade."),
    ]

    # can_subset=True: see the module doc (the UI's backfill request and Dagster 1.13's `!=`)
    @dg.multi_asset(name=f"{name}__analysis", specs=analysis_specs, partitions_def=parts, can_subset=True,
                    backfill_policy=dg.BackfillPolicy.single_run(), pool="llm" if llm else None,
                    retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
                    check_specs=[dg.AssetCheckSpec("signal_usable", asset=k["signals"],
                                                   description="Every instrument × window got a usable signal (not a recorded no-trade).")],
                    op_tags=tags)
    def analysis(context: dg.AssetExecutionContext, trading: TradingResource):
        """Analysis of every instrument over the run's windows (any order; idempotent: a re-run
        re-derives the same frames and charts and updates the signal rows in place)."""
        wkeys = _keys(context)
        ends = [window_end(spec, w) for w in wkeys]
        instruments = run_instruments(context, spec)
        rt = trading.runtime(spec)
        charts = context.run.tags.get(CHARTS_TAG, "on") != "off"
        results, failed, deferred = {}, [], []
        results = analyze_many(rt, instruments, ends, context.run.run_id, partition_key=lambda e: window_key(spec, e),
                                        charts=charts, render=trading.chart_renderer(),
                                        render_async=trading.chart_submitter(), deferred=deferred)
        for finish in deferred:  # charts rendered in the background (providers that do not read them)
            finish()
        for n, inst in enumerate(instruments, 1):
            unusable = [(window_key(spec, a.window_end), inst, a.error or a.signal.no_trade_reason or a.chart_error)
                        for a in results[inst] if a.error or a.signal.no_trade_reason or a.chart_error]
            failed += unusable
            context.log.info(f"analysis {n}/{len(instruments)}: {inst} {len(results[inst])} windows, {len(unusable)} unusable")
        last = wkeys[-1]
        last_rows = [results[i][-1] for i in instruments]
        bars_rows = [[i, len(a.bars) if a.bars is not None else 0, a.bars.index[-1].isoformat() if a.bars is not None and len(a.bars) else "",
                      a.zero_volume_bars, a.gap_bars, a.error or "ok"] for i, a in zip(instruments, last_rows)]
        yield from selected(context, dg.MaterializeResult(asset_key=k["ohlcv_bars"], metadata={
            "windows": len(wkeys), "first_window": wkeys[0], "last_window": last, "instruments": instruments,
            "last_window_bars": dg.MetadataValue.md(_md_table(["instrument", "rows", "newest bar open", "zero-volume bars",
                                                                "missing bars in lookback", "status"], bars_rows)),
            "zero_volume_bars": sum(a.zero_volume_bars for i in instruments for a in results[i]),
            "windows_with_gaps": sum(1 for i in instruments for a in results[i] if a.gap_bars),
            "stale_or_bad": sum(1 for _, _, e in failed if e.startswith(("stale", "bad data")))}))
        ind_rows = [[i, *(f"{a.frame[c].iloc[-1]:.6g}" if a.frame is not None and len(a.frame) and c in a.frame else "n/a"
                          for c in ("close", "rsi", "atr", "adx"))] for i, a in zip(instruments, last_rows)]
        yield from selected(context, dg.MaterializeResult(asset_key=k["indicator_frames"], metadata={
            "last_window": last, "chunk_objects": dg.MetadataValue.json(sorted({a.frame_object for i in instruments
                                                                                 for a in results[i] if a.frame_object})), "last_window_indicators": dg.MetadataValue.md(_md_table(["instrument", "close", "rsi", "atr", "adx"], ind_rows))}))
        chart_meta = {"charts": sum(1 for i in instruments for a in results[i] if a.chart), "rendered": charts,
                      "last_window_keys": dg.MetadataValue.json({i: a.chart.key for i, a in zip(instruments, last_rows) if a.chart})}
        if len(wkeys) == 1:  # previews only for a single window: metadata is copied to every partition's event
            previews = [f"**{i}**\n\n{thumbnail_markdown(a._png, max_width=640, alt=i)}"
                        for i, a in zip(instruments, last_rows) if a.chart and getattr(a, "_png", None)][:_MAX_PREVIEWS]
            if previews:
                chart_meta["preview"] = dg.MetadataValue.md("\n\n".join(previews))
            first = next((a.chart for a in last_rows if a.chart), None)
            if first is not None and first.uri.startswith("http"):
                chart_meta["uri"] = dg.MetadataValue.url(first.uri)
        yield from selected(context, dg.MaterializeResult(asset_key=k["chart_images"], metadata=chart_meta))
        sig_rows = [[window_key(spec, a.window_end), i, a.signal.action, f"{a.signal.confidence:.2f}", a.signal.provider,
                     (a.signal.no_trade_reason or a.signal.thesis)[:120]]
                    for i in instruments for a in results[i][-_TABLE_ROWS:]]
        counts: dict[str, int] = {}
        for i in instruments:
            for a in results[i]:
                key = "no_trade" if a.signal.no_trade_reason else a.signal.action
                counts[key] = counts.get(key, 0) + 1
        yield from selected(context, dg.MaterializeResult(asset_key=k["signals"], metadata={
            "counts": dg.MetadataValue.json(counts),
            "total_tokens": sum(int((a.result.usage or {}).get("total_tokens") or 0) for i in instruments for a in results[i]),
            "signals": dg.MetadataValue.md(_md_table(["window", "instrument", "action", "confidence", "provider", "thesis / no-trade reason"], sig_rows)),
            **signal_call_metadata(spec, instruments, results, single=len(wkeys) == 1)}))
        yield from selected(context, dg.AssetCheckResult(check_name="signal_usable", asset_key=k["signals"], passed=not failed,
                                  severity=dg.AssetCheckSeverity.WARN,
                                  metadata={"no_trade": len(failed), "failures": dg.MetadataValue.md(
                                      _md_table(["window", "instrument", "reason"], [list(f) for f in failed[:_TABLE_ROWS]]) if failed else "none")}))

    account_specs = [
        dg.AssetSpec(k["trade_intents"], deps=[k["signals"]], kinds={"python"}, group_name=name, tags=tags,
                     description="PLAN: technical stop and 1%-risk size on the book's equity as of the window end; "
                                 "PENDING, or NO_TRADE with its reason."),
        dg.AssetSpec(k["validated_intents"], deps=[k["trade_intents"]], kinds={"python"}, group_name=name, tags=tags,
                     description="VALIDATE: balance, risk limit, daily loss, position limit, market hours, duplicate position, "
                                 "min notional, window freshness — each PASS/FAIL with its numbers (guard_results in the ledger)."),
        dg.AssetSpec(k["orders"], deps=[k["validated_intents"]], kinds={"python"}, group_name=name, tags=tags,
                     description="EXECUTE: a bracket (entry + stop-loss + take-profit) per validated intent through the venue "
                                 "protocol; client order ids derive from the intent id, so a re-run never places a second order."),
        dg.AssetSpec(k["portfolio_snapshots"], group_name=name, kinds={"python"}, tags=tags,
                     deps=[k["orders"], dg.AssetDep(k["portfolio_snapshots"],
                                                    partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1))],
                     description="The book at the window end as the venue reports it: cash, positions, P&L, equity. "
                                 "Depends on its own previous window: the account runs in time order."),
    ]

    @dg.multi_asset(name=f"{name}__account", specs=account_specs, partitions_def=parts, can_subset=False,
                    backfill_policy=dg.BackfillPolicy.single_run(), pool="venue", op_tags=tags,
                    check_specs=[
                        dg.AssetCheckSpec("reviewed_in_time", asset=k["trade_intents"],
                                          description="No window was reviewed after the book had moved past it (a late review plans no trade)."),
                        dg.AssetCheckSpec("no_order_from_invalid_intent", asset=k["validated_intents"], blocking=True,
                                          description="Every VALIDATED intent has all guards passing and a sane plan."),
                        dg.AssetCheckSpec("positions_protected", asset=k["orders"], blocking=True,
                                          description="After the account walk, every open position of an intent has a "
                                                      "resting reduce-only stop-loss for its whole quantity at the venue "
                                                      "(the execution engine's protection invariant); a position it had "
                                                      "to flag UNPROTECTED fails the run."),
                    ])
    def account(context: dg.AssetExecutionContext, trading: TradingResource):
        """The book, window by window, oldest first (idempotent: a window whose snapshot is stored
        is re-read, never re-decided)."""
        wkeys = _keys(context)
        ends = [window_end(spec, w) for w in wkeys]
        instruments = run_instruments(context, spec)
        book = run_book(context, spec, ends, instruments)
        outcomes = replay_account(trading, spec, book, instruments, wkeys, context.run.run_id, log=context.log)
        yield from account_results(spec, k, book, outcomes)
        yield protection_check(k, unprotected_positions(trading.runtime(spec, signals=False, book=book)))

    @dg.asset(key=k["replay_report"], group_name=name, partitions_def=parts, deps=[k["portfolio_snapshots"]],
              backfill_policy=dg.BackfillPolicy.single_run(), kinds={"python"}, tags=tags,
              description="What the strategy would have done over the run's windows on its book: equity curve and drawdown "
                          "(PNG), trades, return vs buy-and-hold, max drawdown, signal hit rate (1 bar) with its Wilson 95% interval.")
    def replay_report(context: dg.AssetExecutionContext, trading: TradingResource) -> dg.MaterializeResult:
        from trading_pipelines.replay.report import report_chart_png, report_markdown

        wkeys = _keys(context)
        ends = [window_end(spec, w) for w in wkeys]
        instruments = run_instruments(context, spec)
        book = run_book(context, spec, ends, instruments)
        rep = book_report(trading, spec, book, instruments, ends)
        png = report_chart_png(rep, f"{name} {book}")
        return dg.MaterializeResult(metadata={
            "book": book, "return_pct": rep["return_pct"], "buy_and_hold_pct": rep["buy_and_hold_pct"],
            "max_drawdown_pct": rep["max_drawdown_pct"], "hit_rate": rep["hit_rate"] if rep["hit_rate"] is not None else "n/a",
            "hit_rate_ci95": dg.MetadataValue.json(rep["hit_rate_ci95"]), "trades": rep["trades"],
            "report": dg.MetadataValue.md(report_markdown(rep, png))})

    return [symbol_universe, analysis, account, replay_report], [*(k[s] for s in STEPS)]
