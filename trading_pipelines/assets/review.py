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

**Books.** A run tagged ``dagster/backfill`` (a UI backfill) or ``trading/book=replay`` (the CLI's
``replay``) trades a replay book: a fresh simulated account named after what it replays
(:func:`~trading_pipelines.runtime.replay_book_id`); every other run (schedule, sensor, a manual
materialization) trades the live book, which refuses windows it has moved past.
"""



from datetime import datetime

import dagster as dg

from trading_pipelines import runtime
from trading_pipelines.account import window as account
from trading_pipelines.account.decide import sane_to_send
from trading_pipelines.analysis.analyze import analyze_many
from trading_pipelines.venues.factory import venue_account
from trading_pipelines.assets.partitions import window_end, window_key, window_partitions
from trading_pipelines.config import StrategySpec
from trading_pipelines.domain.models import IntentKind, IntentStatus, Signal
from trading_pipelines.domain.planning import MarketContext
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.ledger.models import LIVE_BOOK, SignalRow
from trading_pipelines.resources.dagster_resources import TradingResource
from trading_pipelines.stores.chart_render import thumbnail_markdown

ANALYSIS_STEPS = ("ohlcv_bars", "indicator_frames", "chart_images", "signals")
ACCOUNT_STEPS = ("trade_intents", "validated_intents", "orders", "portfolio_snapshots")
STEPS = (*ANALYSIS_STEPS, *ACCOUNT_STEPS)
BOOK_TAG = "trading/book"
INSTRUMENTS_TAG = "trading/instruments"
CHARTS_TAG = "trading/charts"
_MAX_PREVIEWS = 6
_TABLE_ROWS = 40


def run_instruments(context, spec: StrategySpec) -> list[str]:
    """The instruments this run covers: the ``trading/instruments`` tag (comma-separated, a subset
    of the strategy's), else all of them. Raises ``dg.Failure`` naming an unknown instrument."""
    tag = context.run.tags.get(INSTRUMENTS_TAG)
    if not tag:
        return list(spec.instruments)
    chosen = [i.strip() for i in tag.split(",") if i.strip()]
    unknown = [i for i in chosen if i not in spec.instruments]
    if unknown:
        raise dg.Failure(f"{spec.name} does not trade {unknown} (instruments: {list(spec.instruments)})")
    return chosen


def run_book(context, spec: StrategySpec, window_ends: list[datetime], instruments: list[str]) -> str:
    """``live``, or the replay book of this run's windows and instruments (see the module doc)."""
    tags = context.run.tags
    kind = tags.get(BOOK_TAG) or ("replay" if tags.get("dagster/backfill") else "live")
    if kind == "live":
        return LIVE_BOOK
    if kind != "replay":
        raise dg.Failure(f"tag {BOOK_TAG}={kind!r}: expected live or replay")
    return runtime.replay_book_id(spec, instruments, min(window_ends), max(window_ends))


def _keys(context) -> list[str]:
    return sorted(context.partition_keys)  # window keys sort in time order


def _md_table(header: list[str], rows: list[list]) -> str:
    head = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    return head + "\n".join("| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows)


def build_review_assets(spec: StrategySpec) -> tuple[list, list[dg.AssetKey]]:
    """The strategy's assets (keys ``<strategy>/<step>``), checks included, and the keys a tick runs."""
    name = spec.name
    parts = window_partitions(spec)
    k = {step: dg.AssetKey([name, step]) for step in ("symbol_universe", *STEPS, "replay_report")}
    tags = {"strategy": name, "mode": spec.mode.value}
    llm = spec.template.signal_provider.kind == "openai"

    @dg.asset(key=k["symbol_universe"], group_name=name, kinds={"python"}, tags=tags,
              description=f"The instruments {name} trades (from its strategy file). Re-running it changes nothing.")
    def symbol_universe(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"instruments": list(spec.instruments), "count": len(spec.instruments)})

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

    @dg.multi_asset(name=f"{name}__analysis", specs=analysis_specs, partitions_def=parts, can_subset=False,
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
        yield dg.MaterializeResult(asset_key=k["ohlcv_bars"], metadata={
            "windows": len(wkeys), "first_window": wkeys[0], "last_window": last, "instruments": instruments,
            "last_window_bars": dg.MetadataValue.md(_md_table(["instrument", "rows", "newest bar open", "zero-volume bars",
                                                                "missing bars in lookback", "status"], bars_rows)),
            "zero_volume_bars": sum(a.zero_volume_bars for i in instruments for a in results[i]),
            "windows_with_gaps": sum(1 for i in instruments for a in results[i] if a.gap_bars),
            "stale_or_bad": sum(1 for _, _, e in failed if e.startswith(("stale", "bad data")))})
        ind_rows = [[i, *(f"{a.frame[c].iloc[-1]:.6g}" if a.frame is not None and len(a.frame) and c in a.frame else "n/a"
                          for c in ("close", "rsi", "atr", "adx"))] for i, a in zip(instruments, last_rows)]
        yield dg.MaterializeResult(asset_key=k["indicator_frames"], metadata={
            "last_window": last, "chunk_objects": dg.MetadataValue.json(sorted({a.frame_object for i in instruments
                                                                                 for a in results[i] if a.frame_object})), "last_window_indicators": dg.MetadataValue.md(_md_table(["instrument", "close", "rsi", "atr", "adx"], ind_rows))})
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
        yield dg.MaterializeResult(asset_key=k["chart_images"], metadata=chart_meta)
        sig_rows = [[window_key(spec, a.window_end), i, a.signal.action, f"{a.signal.confidence:.2f}", a.signal.provider,
                     (a.signal.no_trade_reason or a.signal.thesis)[:120]]
                    for i in instruments for a in results[i][-_TABLE_ROWS:]]
        counts: dict[str, int] = {}
        for i in instruments:
            for a in results[i]:
                key = "no_trade" if a.signal.no_trade_reason else a.signal.action
                counts[key] = counts.get(key, 0) + 1
        yield dg.MaterializeResult(asset_key=k["signals"], metadata={
            "counts": dg.MetadataValue.json(counts),
            "total_tokens": sum(int((a.result.usage or {}).get("total_tokens") or 0) for i in instruments for a in results[i]),
            "signals": dg.MetadataValue.md(_md_table(["window", "instrument", "action", "confidence", "provider", "thesis / no-trade reason"], sig_rows)),
            **signal_call_metadata(spec, instruments, results, single=len(wkeys) == 1)})
        yield dg.AssetCheckResult(check_name="signal_usable", asset_key=k["signals"], passed=not failed,
                                  severity=dg.AssetCheckSeverity.WARN,
                                  metadata={"no_trade": len(failed), "failures": dg.MetadataValue.md(
                                      _md_table(["window", "instrument", "reason"], [list(f) for f in failed[:_TABLE_ROWS]]) if failed else "none")})

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

    @dg.asset(key=k["replay_report"], group_name=name, partitions_def=parts, deps=[k["portfolio_snapshots"]],
              backfill_policy=dg.BackfillPolicy.single_run(), kinds={"python"}, tags=tags,
              description="What the strategy would have done over the run's windows on its book: equity curve and drawdown "
                          "(PNG), trades, return vs buy-and-hold, max drawdown, signal hit rate (1 bar) with its Wilson 95% interval.")
    def replay_report(context: dg.AssetExecutionContext, trading: TradingResource) -> dg.MaterializeResult:
        from trading_pipelines.replay.report import equity_chart_png, report_markdown

        wkeys = _keys(context)
        ends = [window_end(spec, w) for w in wkeys]
        instruments = run_instruments(context, spec)
        book = run_book(context, spec, ends, instruments)
        rep = book_report(trading, spec, book, instruments, ends)
        png = equity_chart_png(_points(rep), f"{name} {book}")
        return dg.MaterializeResult(metadata={
            "book": book, "return_pct": rep["return_pct"], "buy_and_hold_pct": rep["buy_and_hold_pct"],
            "max_drawdown_pct": rep["max_drawdown_pct"], "hit_rate": rep["hit_rate"] if rep["hit_rate"] is not None else "n/a",
            "hit_rate_ci95": dg.MetadataValue.json(rep["hit_rate_ci95"]), "trades": rep["trades"],
            "report": dg.MetadataValue.md(report_markdown(rep, png))})

    return [symbol_universe, analysis, account, replay_report], [*(k[s] for s in STEPS)]


_PROMPT_CHARS = 6000  # per signal in the UI; the whole prompt is in the ledger (provider_calls)


def signal_call_metadata(spec: StrategySpec, instruments: list[str], results: dict, single: bool) -> dict:
    """What the UI shows of the run's provider calls on the ``signals`` materialization.

    Usage counters under dagster-openai's keys (``openai.calls`` = HTTP calls made, cache hits
    excluded; ``openai.prompt_tokens``, ``openai.completion_tokens``, ``openai.total_tokens``; as
    ``dagster_openai.with_usage_metadata`` records them) plus ``openai.cache_hits`` and
    ``openai.estimated_cost_usd`` (list prices, see ``llm.calls.estimated_cost_usd``); a
    ``calls`` table (window, instrument, agent, action, tokens, cost, latency, cache hit, ledger
    call id); and for a single-window run, per instrument ``signal/<instrument>``: the chart, the
    exact prompt, the raw answer, tokens and cost. Rules signals record no HTTP usage."""
    from trading_pipelines.llm.calls import estimated_cost_usd

    analyses = [a for i in instruments for a in results[i] if a.result is not None]
    http = [a for a in analyses if a.http_calls and not a.cache_hit]

    def tok(a, key: str) -> int:
        return int((a.result.usage or {}).get(key) or 0)

    def cost(a) -> float:
        return 0.0 if a.cache_hit else (estimated_cost_usd(a.signal.model, a.result.usage) or 0.0)

    meta: dict = {}
    if any(a.result.usage for a in analyses) or http:
        meta.update({"openai.calls": sum(a.http_calls for a in http),
                     "openai.prompt_tokens": sum(tok(a, "prompt_tokens") for a in http),
                     "openai.completion_tokens": sum(tok(a, "completion_tokens") for a in http),
                     "openai.total_tokens": sum(tok(a, "total_tokens") for a in http),
                     "openai.cache_hits": sum(1 for a in analyses if a.cache_hit),
                     "openai.estimated_cost_usd": round(sum(cost(a) for a in analyses), 6)})
    agent = getattr(spec.template.signal_provider, "kind", "rules")
    rows = [[window_key(spec, a.window_end), a.instrument, a.signal.action, tok(a, "prompt_tokens"), tok(a, "completion_tokens"),
             f"{cost(a):.6f}", f"{a.result.latency_ms:.0f}", "yes" if a.cache_hit else "no", a.call_id or ""]
            for a in analyses[-_TABLE_ROWS:]]
    meta["calls"] = dg.MetadataValue.md(f"agent: {_agent_name(spec) if agent == 'openai' else 'rules'}\n\n" + _md_table(
        ["window", "instrument", "action", "prompt tokens", "completion tokens", "est. cost USD", "latency ms", "cache hit",
         "ledger call id"], rows))
    if single:
        for a in analyses:
            chart = thumbnail_markdown(a._png, max_width=480, alt=a.instrument) if getattr(a, "_png", None) else (
                f"chart: `{a.chart.key}`" if a.chart else "no chart")
            prompt = a.result.prompt if len(a.result.prompt) <= _PROMPT_CHARS else (
                a.result.prompt[:_PROMPT_CHARS] + f"\n… ({len(a.result.prompt)} characters; whole prompt in provider_calls)")
            body = (f"**{a.instrument}** {a.signal.action} ({a.signal.confidence:.2f}) — "
                    f"{a.signal.no_trade_reason or a.signal.thesis}\n\n{chart}\n\n"
                    f"tokens: {tok(a, 'prompt_tokens')} prompt + {tok(a, 'completion_tokens')} completion; "
                    f"est. cost ${cost(a):.6f}; latency {a.result.latency_ms:.0f} ms; cache hit: {a.cache_hit}; "
                    f"ledger call id: {a.call_id}\n\n**Prompt**\n\n```\n{prompt}\n```\n\n"
                    f"**Raw answer**\n\n```\n{a.result.response_text or '(none)'}\n```")
            meta[f"signal/{a.instrument}"] = dg.MetadataValue.md(body)
    return meta


def _agent_name(spec: StrategySpec) -> str:
    from trading_pipelines.llm.agents import agent_for

    return agent_for(spec.mode).name


def _points(rep: dict):
    from trading_pipelines.replay.report import EquityPoint

    return [EquityPoint(datetime.fromisoformat(t), e) for t, e in rep["equity_curve"]]


def _stored_signals(rt: runtime.Runtime, instruments: list[str], ends: list[datetime]) -> dict:
    from sqlalchemy import select

    with session_scope(rt.engine) as s:
        rows = s.execute(select(SignalRow).where(SignalRow.strategy == rt.spec.name, SignalRow.instrument.in_(instruments),
                                                 SignalRow.window_end >= min(ends), SignalRow.window_end <= max(ends))).scalars()
        out = {}
        for r in rows:
            sig = Signal(strategy=r.strategy, instrument=r.instrument, window_end=r.window_end, mode=r.mode, action=r.action,
                         confidence=r.confidence, entry=r.entry, stop=r.stop, take_profit=r.take_profit, thesis=r.thesis,
                         provider=r.provider, model=r.model, prompt_hash=r.prompt_hash, no_trade_reason=r.no_trade_reason)
            m = r.market
            market = MarketContext(**{f: (float("nan") if v is None else v) for f, v in m.items()}) if m else None
            out[(r.instrument, r.window_end)] = (sig, market)
        return out


def replay_account(trading: TradingResource, spec: StrategySpec, book: str, instruments: list[str], wkeys: list[str],
                   run_id: str, log=None, progress=None) -> list[account.WindowOutcome]:
    """Run the account over ``wkeys`` (window keys, oldest first) on ``book`` from the signals in
    the ledger. A missing signal is that instrument's no-trade. ``progress(done, total)`` is
    called after every window."""
    ends = [window_end(spec, w) for w in wkeys]
    rt = trading.runtime(spec, signals=False, book=book)
    rt.book_instruments = tuple(instruments)
    with session_scope(rt.engine) as s:
        if book == LIVE_BOOK:
            repo.ensure_book(s, spec.name, book, kind="live", venue_account=venue_account(spec.name, book),
                             starting_cash=spec.venue.starting_cash, instruments=list(spec.instruments))
        else:
            repo.ensure_book(s, spec.name, book, kind="replay", venue_account=venue_account(spec.name, book),
                             starting_cash=spec.venue.starting_cash, first_window=ends[0], last_window=ends[-1],
                             instruments=instruments, run_id=run_id)
    stored = _stored_signals(rt, instruments, ends)
    outcomes = []
    for n, (w, end) in enumerate(zip(wkeys, ends), 1):
        sigs, markets = {}, {}
        for inst in instruments:
            sig, market = stored.get((inst, end), (None, None))
            if sig is None:
                sig = Signal(strategy=spec.name, instrument=inst, window_end=end, mode=spec.mode, action="hold", confidence=0.0,
                             thesis="no trade: no signal recorded for this window", provider="pipeline", model="none",
                             prompt_hash="0" * 64, no_trade_reason="no signal recorded for this window (analysis did not run)")
            sigs[inst], markets[inst] = sig, market
        outcomes.append(account.account_window(rt, end, sigs, markets, w, run_id))
        for listener in (progress, *runtime.PROGRESS):
            if listener:
                listener(n, len(wkeys))
        if log and (n % 100 == 0 or n == len(wkeys)):
            log.info(f"account {book}: window {n}/{len(wkeys)} ({w}) equity {outcomes[-1].snapshot.equity:.2f}")
    return outcomes


def account_results(spec: StrategySpec, k: dict, book: str, outcomes: list[account.WindowOutcome]):
    """The account step's materializations and checks, from its window outcomes."""
    rows = [(o.window_end, inst, it, o.guards.get(inst, ()), o.orders.get(inst, [])) for o in outcomes for inst, it in o.intents.items()]
    late = [(window_key(spec, w), i, it.reason) for w, i, it, _, _ in rows if "late review" in it.reason]
    status_counts: dict[str, int] = {}
    for _, _, it, _, _ in rows:
        status_counts[it.status.value] = status_counts.get(it.status.value, 0) + 1
    recent = rows[-_TABLE_ROWS:]
    yield dg.MaterializeResult(asset_key=k["trade_intents"], metadata={
        "book": book, "windows": len(outcomes), "statuses": dg.MetadataValue.json(status_counts),
        "intents": dg.MetadataValue.md(_md_table(
            ["window", "instrument", "intent", "kind", "status", "qty", "entry", "stop", "take profit", "reason"],
            [[window_key(spec, w), i, it.intent_id, it.kind.value, it.status.value, f"{it.quantity:g}", it.entry or "",
              it.stop or "", it.take_profit or "", it.reason[:100]] for w, i, it, _, _ in recent]))})
    insane = []
    for w, i, it, g, _ in rows:
        if it.status in (IntentStatus.SUBMITTED, IntentStatus.MONITORING, IntentStatus.CLOSED, IntentStatus.SENT,
                         IntentStatus.VALIDATED, IntentStatus.AWAITING_CONFIRMATION):
            ok, why = sane_to_send(it.model_copy(update={"status": IntentStatus.VALIDATED}), g)
            if not ok:
                insane.append((window_key(spec, w), i, why))
    guard_rows = [[window_key(spec, w), i, gr.guard, "PASS" if gr.passed else "FAIL", gr.message[:100]]
                  for w, i, it, g, _ in recent if it.kind is not IntentKind.NONE for gr in g]
    yield dg.MaterializeResult(asset_key=k["validated_intents"], metadata={
        "book": book, "guards": dg.MetadataValue.md(_md_table(["window", "instrument", "guard", "result", "message"], guard_rows)
                                                    if guard_rows else "_no guards ran (no trade)_")})
    order_rows = [[window_key(spec, w), i, o["client_order_id"], o["role"], o["side"], o["type"], f"{o['quantity']:g}",
                   o["price"] or "", o["trigger_price"] or "", o["status"]]
                  for w, i, _, _, ords in rows for o in ords][-_TABLE_ROWS:]
    # the mode is the discriminator of the ledger's orders (spot and futures never share a strategy):
    # `trading-pipelines history --mode spot|futures` lists them per mode across strategies
    yield dg.MaterializeResult(asset_key=k["orders"], metadata={
        "book": book, "mode": spec.mode.value, "venue": spec.venue.kind, "order_count": sum(len(o) for *_, o in rows),
        "orders": dg.MetadataValue.md(_md_table(["window", "instrument", "client order id", "role", "side", "type", "qty",
                                                 "limit", "trigger", "status"], order_rows)
                                      if order_rows else "_no orders_")})
    last = outcomes[-1].snapshot
    yield dg.MaterializeResult(asset_key=k["portfolio_snapshots"], metadata={
        "book": book, "as_of": last.as_of.isoformat(), "equity": last.equity, "cash": last.cash,
        "realized_pnl": last.realized_pnl, "unrealized_pnl": last.unrealized_pnl, "open_positions": len(last.positions),
        "point_in_time": all(o.point_in_time for o in outcomes),
        "positions": dg.MetadataValue.json([p.model_dump(mode="json") for p in last.positions])})
    yield dg.AssetCheckResult(check_name="reviewed_in_time", asset_key=k["trade_intents"], passed=not late,
                              severity=dg.AssetCheckSeverity.WARN,
                              metadata={"late": len(late), "windows": dg.MetadataValue.md(
                                  _md_table(["window", "instrument", "reason"], [list(x) for x in late[:_TABLE_ROWS]]) if late else "none")})
    yield dg.AssetCheckResult(check_name="no_order_from_invalid_intent", asset_key=k["validated_intents"], passed=not insane,
                              metadata={"insane": len(insane), "detail": dg.MetadataValue.md(
                                  _md_table(["window", "instrument", "why"], [list(x) for x in insane]) if insane else "none")})


def book_report(trading: TradingResource, spec: StrategySpec, book: str, instruments: list[str], ends: list[datetime],
                elapsed_s: float = 0.0) -> dict:
    """The replay report (see :mod:`trading_pipelines.replay.report`) of ``book`` over ``ends``."""
    from sqlalchemy import select

    from trading_pipelines.ledger.models import PositionRow, SnapshotRow
    from trading_pipelines.replay.report import EquityPoint, SignalOutcome, Trade, build_report

    rt = trading.runtime(spec, signals=False, book=book)
    with session_scope(rt.engine) as s:
        snaps = s.execute(select(SnapshotRow).where(SnapshotRow.strategy == spec.name, SnapshotRow.book == book,
                                                    SnapshotRow.as_of >= min(ends), SnapshotRow.as_of <= max(ends))
                          .order_by(SnapshotRow.as_of)).scalars().all()
        points = [EquityPoint(r.as_of, r.equity) for r in snaps]
        trades = [Trade(instrument=r.instrument, side=r.side, opened_at=r.opened_at, closed_at=r.closed_at,
                        entry_price=r.entry_price, exit_price=r.exit_price, quantity=r.quantity, realized_pnl=r.realized_pnl,
                        exit_reason=r.exit_reason)
                  for r in s.execute(select(PositionRow).where(PositionRow.strategy == spec.name, PositionRow.book == book)
                                     .order_by(PositionRow.opened_at)).scalars()]
        sig_rows = s.execute(select(SignalRow).where(SignalRow.strategy == spec.name, SignalRow.instrument.in_(instruments),
                                                     SignalRow.window_end >= min(ends), SignalRow.window_end <= max(ends))).scalars().all()
    closes = {}
    for inst in instruments:
        bars = rt.market.bars_between(inst, spec.timeframe, min(ends) - spec.bar_duration, max(ends) + spec.bar_duration)
        closes[inst] = {(ts.to_pydatetime() + spec.bar_duration): float(c) for ts, c in zip(bars.index, bars["close"])}
    counts: dict[str, int] = {}
    no_trade = 0
    outcomes = []
    for r in sig_rows:
        if r.no_trade_reason:
            no_trade += 1
        else:
            counts[r.action] = counts.get(r.action, 0) + 1
        c = closes.get(r.instrument, {})
        outcomes.append(SignalOutcome(instrument=r.instrument, window_end=r.window_end,
                                      action="hold" if r.no_trade_reason else r.action,
                                      close_at_signal=c.get(r.window_end), next_close=c.get(r.window_end + spec.bar_duration)))
    first_close = {i: closes[i].get(min(ends)) for i in instruments if closes[i].get(min(ends))}
    last_close = {i: closes[i].get(max(ends)) for i in instruments if closes[i].get(max(ends))}
    return build_report(strategy=spec.name, book=book, starting_cash=spec.venue.starting_cash, points=points, trades=trades,
                        outcomes=outcomes, first_close=first_close, last_close=last_close, signal_counts=counts,
                        no_trade=no_trade, elapsed_s=elapsed_s)


class ReplayConfig(dg.Config):
    """Launchpad config of ``replay_<strategy>``: window starts (ISO-8601 UTC, inclusive), an
    optional subset of instruments, and whether to render charts (the rules provider does not
    read them; an LLM provider always gets them)."""

    start: str
    end: str
    instruments: list[str] = []
    charts: bool = True


def build_replay_job(spec: StrategySpec) -> dg.JobDefinition:
    """``replay_<strategy>``: a replay book over a window range in one op and one process — the
    same analysis and account code as a UI backfill of the assets (same book, same decisions),
    without one Dagster event per asset × window (measured here: ~9 ms per event on the SQLite
    event log, 16 per window). The report is the op's output metadata."""
    name = spec.name
    llm = spec.template.signal_provider.kind == "openai"

    @dg.op(name=f"{name}__replay", pool="llm" if llm else None, tags={"strategy": name, "mode": spec.mode.value},
           description=f"Replay {name} over the configured windows on a fresh replay book; report inline.")
    def replay(context: dg.OpExecutionContext, config: ReplayConfig, trading: TradingResource) -> dg.Output:
        import time

        from trading_pipelines.assets.partitions import window_key_of_start
        from trading_pipelines.config import parse_window_bound
        from trading_pipelines.replay.report import equity_chart_png, report_markdown

        t0 = time.monotonic()
        try:
            lo = window_key_of_start(spec, parse_window_bound(spec, config.start, what="start"))
            hi = window_key_of_start(spec, parse_window_bound(spec, config.end, what="end"))
        except ValueError as e:
            raise dg.Failure(str(e)) from None
        wkeys = [w for w in window_partitions(spec).get_partition_keys() if lo <= w <= hi]
        if not wkeys:
            raise dg.Failure(f"start {config.start} is after end {config.end}")
        instruments = list(config.instruments) or list(spec.instruments)
        unknown = [i for i in instruments if i not in spec.instruments]
        if unknown:
            raise dg.Failure(f"{name} does not trade {unknown} (instruments: {list(spec.instruments)})")
        ends = [window_end(spec, w) for w in wkeys]
        book = runtime.replay_book_id(spec, instruments, ends[0], ends[-1])
        rt = trading.runtime(spec)
        deferred: list = []
        analysed = analyze_many(rt, instruments, ends, context.run.run_id,
                                         partition_key=lambda e: window_key(spec, e), charts=config.charts or llm,
                                         render=trading.chart_renderer(), render_async=trading.chart_submitter(),
                                         deferred=deferred)
        for n, (inst, out) in enumerate(analysed.items(), 1):
            context.log.info(f"analysis {n}/{len(instruments)}: {inst}, {len(out)} windows, "
                             f"{sum(1 for a in out if a.error or a.signal.no_trade_reason)} no-trade")
        # the account never reads charts: it walks the windows while the pool renders them
        replay_account(trading, spec, book, instruments, wkeys, context.run.run_id, log=context.log)
        for finish in deferred:
            finish()
        rep = book_report(trading, spec, book, instruments, ends, elapsed_s=time.monotonic() - t0)
        png = equity_chart_png(_points(rep), f"{name} {book}")
        return dg.Output(
            rep,  # the whole report (JSON-able): the CLI's --json prints it
            metadata={"book": book, "first_window": wkeys[0], "last_window": wkeys[-1],
                      "return_pct": rep["return_pct"], "max_drawdown_pct": rep["max_drawdown_pct"], "trades": rep["trades"],
                      "report": dg.MetadataValue.md(report_markdown(rep, png))})

    @dg.job(name=f"replay_{name}", tags={"strategy": name, "trading/book": "replay"}, executor_def=dg.in_process_executor,
            description=f"Replay {name} over a window range (launchpad: start, end, instruments, charts) on a replay book.")
    def replay_job():
        replay()

    return replay_job
