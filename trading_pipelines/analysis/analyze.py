"""Analysis, per instrument × window and order-free (see DESIGN.md, "Replay and live"):
:func:`analyze` turns any set of windows of one instrument into bars, an indicator frame
(:mod:`.frames`), a chart (:mod:`.charting`) and a signal (:mod:`.calls`, :mod:`.budget`) each,
every signal recorded in the ledger. Errors stay in the instrument and the window: bad or stale
data, too little history (``warming up: N of M bars``), an exchange holiday (``market closed: …``),
a failed chart or a provider error becomes that window's recorded no-trade with its reason; a bad
CSV row is the no-trade of the windows whose lookback sees it (naming file and line), not of the
windows before or long after it (see :mod:`.frames`)."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd

from trading_pipelines.analysis.budget import _Budget
from trading_pipelines.analysis.calls import (
    _admit_and_start,
    _call_workers,
    _finish_signal,
    _prepare_signal,
    _wait_call,
)
from trading_pipelines.analysis.charting import _render, _store_charts, chart_overlays, chart_title
from trading_pipelines.analysis.frames import _chunk_start, freshness, indicator_chunks, slice_window, store_chunks
from trading_pipelines.domain.calendars import market_hours
from trading_pipelines.domain.indicators import swing_levels
from trading_pipelines.domain.models import Mode, Signal
from trading_pipelines.domain.planning import MarketContext
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.ledger.models import LIVE_BOOK, IntentRow
from trading_pipelines.llm.context import AccountContext, OrderView, PositionView
from trading_pipelines.llm.requests import ProviderResult
from trading_pipelines.runtime import Runtime
from trading_pipelines.stores.charts import ChartRef
from trading_pipelines.stores.market_data import MarketDataError


@dataclass
class Analysis:
    """One instrument × window: the point-in-time bars and frame, chart, signal and the market
    context the planner needs. ``error`` is set (and ``signal`` is a recorded no-trade) when the
    window could not be analysed (bad or stale data, a failed chart, a provider error)."""

    instrument: str
    window_end: datetime
    bars: pd.DataFrame | None = None
    frame: pd.DataFrame | None = None
    chart: ChartRef | None = None
    signal: Signal | None = None
    result: ProviderResult | None = None
    market: MarketContext | None = None
    zero_volume_bars: int = 0
    error: str | None = None
    flags: list[str] = field(default_factory=list)
    frame_object: str | None = None  # where the window's indicator chunk is stored
    chart_error: str | None = None
    gap_bars: int = 0  # bars missing inside the lookback (24/7 markets only; indicators span the hole)
    call_id: int | None = None  # the provider_calls row the signal came from (None: no call was made)
    cache_hit: bool = False  # the answer came from the response cache (no HTTP call)
    http_calls: int = 0  # HTTP calls this window's signal took (step-downs included; SDK retries not counted)
    signal_kept: bool = False  # a live intent already used the stored signal: no call, the stored one stands
    account: AccountContext | None = None  # what the analyst was told of the book (providers with reads_account)


def account_snapshot(rt: Runtime) -> tuple:
    """The live book's (balance, positions, open orders) read from the venue in one unit of work:
    read once per analysis and shared by every instrument's account view."""
    with rt.venue.unit_of_work():
        return rt.venue.fetch_balance(), rt.venue.fetch_positions(), rt.venue.fetch_open_orders()


def account_context(rt: Runtime, instrument: str, snapshot: tuple | None = None) -> AccountContext:
    """What the book's venue reports, as the analyst's prompt shows it (see
    :mod:`trading_pipelines.llm.context`). The live book: cash, positions, open orders and (futures)
    the venue's funding rate, leverage limit and margin mode, read now. A replay book: ``source``
    ``replay`` (its analysis runs before its account walk) with the strategy's leverage settings and
    whatever market terms the venue reports. A venue that cannot be read fails closed: the error
    propagates and becomes this instrument's no-trade in :func:`analyze`. ``snapshot``: an
    :func:`account_snapshot` already read (else it is read here)."""
    f = rt.spec.futures
    lev = dict(leverage=f.leverage, max_leverage=f.max_leverage, margin_mode=f.margin_mode) if f else {}
    terms = rt.venue.futures_terms(instrument) if rt.spec.mode is Mode.FUTURES else None
    if terms is not None:
        lev.update(funding_rate=terms.funding_rate, venue_max_leverage=terms.max_leverage,
                   next_funding_time=terms.next_funding_time.isoformat() if terms.next_funding_time else None)
        if terms.margin_mode:
            lev["margin_mode"] = terms.margin_mode
    if rt.book != LIVE_BOOK:
        return AccountContext(source="replay", venue=rt.venue.name, **lev)
    bal, positions, orders = snapshot if snapshot is not None else account_snapshot(rt)
    return AccountContext(
        source="venue", venue=rt.venue.name, cash=bal.cash, free_cash=bal.free, equity=bal.equity,
        positions=tuple(PositionView(instrument=p.instrument, side=p.side.value, quantity=p.quantity, entry_price=p.entry_price,
                                     mark_price=p.mark_price, unrealized_pnl=p.unrealized_pnl, leverage=p.leverage,
                                     margin=p.margin, liquidation_price=p.liquidation_price, margin_mode=p.margin_mode)
                        for p in positions),
        open_orders=tuple(OrderView(instrument=o.request.instrument, side=o.request.side.value, type=o.request.type.value,
                                    role=o.request.role.value, quantity=o.request.quantity, price=o.request.price,
                                    trigger_price=o.request.trigger_price) for o in orders),
        **lev)



def _market_closed(rt: Runtime, instrument: str):
    """``window_end -> reason | None``: ``"market closed: <calendar> has no session on <day>"`` for
    a daily window of an exchange-traded instrument whose bar date is not a session of its
    calendar (a holiday, a weekend), else None. Crypto, intraday bars and instruments without a
    calendar are never closed here (intraday hours are the guards' ``market_hours``)."""
    bar = rt.spec.bar_duration
    spec = rt.spec.instrument(instrument)
    if spec.asset_class == "crypto" or not spec.calendar or bar < timedelta(days=1):
        return lambda end: None

    def closed(end: datetime) -> str | None:
        hours = market_hours(spec, end, bar)
        return None if hours.open else f"market closed: {hours.message.removesuffix(' (market closed)')}"
    return closed


def analyze(rt: Runtime, instrument: str, window_ends: list[datetime], run_id: str, partition_key=None,
            charts: bool = True, render=None, render_async=None, deferred: list | None = None,
            call_workers: int | None = None, account: tuple | None = None) -> list[Analysis]:
    """Analyse ``window_ends`` of one instrument (any order, any subset): bars, frame, chart,
    signal, each signal recorded in the ledger. Errors stay in this instrument and window: an
    exchange holiday of a daily equity window (``market closed: …``), a bad row in the window's
    lookback (``bad data: <file>: line <n> …``), too little history (``warming up: …``), stale data,
    a failed chart or a provider error becomes an :class:`Analysis` with ``error`` and a no-trade
    signal; a file that cannot be read at all is ``bad data: …`` for every window.

    ``render``: ``callable(list[(frame, title, overlays, bars)]) -> list[png]`` (parallel
    rendering); default renders in process. ``render_async(jobs) -> Future[list[png]]`` with a
    ``deferred`` list: when the provider never reads charts (rules), charts render in the background
    while the signals are decided, and a callable appended to ``deferred`` stores them and records
    their keys and hashes on the signal rows (call it before the run ends).
    ``partition_key(window_end) -> str`` names ledger rows.

    Provider calls: the openai provider's calls run in a thread pool of ``max_concurrent_calls``
    outside any ledger transaction (they leave in window order); the cache lookups and the ledger
    writes stay in this thread, in window order, so the rows and signals are those of the serial
    path. The rules provider decides inline (no pool). A ``budget`` block (see :class:`_Budget`)
    turns a window whose call would exceed a spent limit into a recorded no-trade ``budget: …``.
    ``call_workers``: at most this many of the pool's calls (:func:`analyze_many`'s share).
    ``account``: the live book's :func:`account_snapshot`, read once for all instruments.
    ``deferred`` is appended to from this thread only (list appends are atomic)."""
    ends = sorted(set(window_ends))
    pkey = partition_key or (lambda e: f"{instrument}|{e.isoformat()}")
    out = [Analysis(instrument, e) for e in ends]
    try:
        chunks = indicator_chunks(rt, instrument, ends)
    except (MarketDataError, ValueError) as e:
        for a in out:
            a.error = f"bad data: {e}"
        chunks = {}
    objects = store_chunks(rt, instrument, chunks)
    bar = rt.spec.bar_duration
    lookback = rt.spec.template.lookback_bars
    closed = _market_closed(rt, instrument)
    for a in out:
        if a.error:
            continue
        a.error = closed(a.window_end)
        if a.error:  # an exchange holiday: no bar to trade on, and not a data problem
            continue
        start = _chunk_start(pd.Timestamp(a.window_end - bar), bar)
        chunk = chunks[start]
        problem = chunk.problems.get(a.window_end)
        if problem:  # a bad row in its lookback, or too little history (see frames): no frame, no chart
            a.error = problem
            continue
        a.frame_object = objects.get(start)
        frame = slice_window(rt, chunk.frame, a.window_end)
        a.frame, a.bars = frame, frame[["open", "high", "low", "close", "volume"]]
        stale = freshness(rt, frame, a.window_end)
        if stale:
            a.error = stale
            continue
        if len(frame) < min(lookback, 30):
            a.error = f"bad data: only {len(frame)} bars before {a.window_end.isoformat()}"
            continue
        a.zero_volume_bars = int((frame["volume"] <= 0).sum())
        if rt.spec.instrument(instrument).asset_class == "crypto":  # 24/7 markets: a hole in the lookback is missing data
            span = int((frame.index[-1] - frame.index[0]) / pd.Timedelta(bar)) + 1
            a.gap_bars = span - len(frame)
        if frame["volume"].iloc[-1] <= 0:
            a.flags.append("zero-volume newest bar")
            a.error = (f"stale data: the newest bar ({frame.index[-1].isoformat()}) has zero volume, a placeholder, "
                       f"never the basis of an entry")
        last = frame.iloc[-1]
        low, high = swing_levels(frame, min(rt.spec.template.stop.swing_lookback, len(frame)))
        atr = float(last["atr"]) if not pd.isna(last["atr"]) else math.nan
        a.market = MarketContext(last_close=float(last["close"]), atr=atr, swing_low=low, swing_high=high)
    if getattr(rt.provider, "reads_account", False) and any(not a.error for a in out):
        try:
            ctx = account_context(rt, instrument, account)
        except Exception as e:  # noqa: BLE001 - fail closed: no account view, no call, a recorded no-trade
            ctx = None
            for a in out:
                a.error = a.error or f"venue unreadable for the analyst's account view: {type(e).__name__}: {e}"
        for a in out:
            a.account = ctx
    todo = [a for a in out if a.frame is not None and not (a.error and a.error.startswith("bad data"))]
    jobs = [(a.frame, chart_title(rt, instrument, a.window_end), chart_overlays(rt), rt.spec.template.chart_bars)
            for a in todo] if charts else []
    reads_chart = getattr(rt.provider, "reads_chart", True)
    pending = None
    if jobs and render_async is not None and not reads_chart:
        pending = render_async(jobs)  # rendered in the pool while the signals (which never read it) are decided
    elif jobs:
        _store_charts(rt, instrument, todo, _render(render, jobs, todo), reads_chart)
    # 1. reads (one short transaction): stored signals, live intents, budget usage, cache lookups
    # 2. provider calls, no transaction open: concurrent for openai (max_concurrent_calls), each
    #    admitted by the budget in window order
    # 3. writes (one transaction), in window order: calls recorded, signals recorded
    workers = _call_workers(rt)
    if workers and call_workers is not None:
        workers = max(1, min(workers, call_workers))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-call") if workers else None
    order: dict = {}  # pooled calls leave in window order (see _start_call)
    plan: list[tuple] = []
    try:
        with session_scope(rt.engine) as s:
            existing = repo.signal_rows(s, rt.spec.name, instrument, ends)
            used = repo.used_signal_intents(s, rt.spec.name, instrument, ends)
            budget = _Budget.start(rt, s, run_id)
            calling: set[str] = set()
            for a in out:
                lin = repo.Lineage(rt.spec.name, instrument, pkey(a.window_end), run_id)
                if a.window_end in used and existing.get(a.window_end) is not None:
                    # the live book's intent already used this signal: no call, the stored signal and its call stand
                    plan.append(("keep", a, lin, None))
                    continue
                # an earlier window of this batch making the same request: looked up again at write time
                prep = _prepare_signal(rt, a, s, skip_lookup=calling)
                if prep.needs_call and prep.key:
                    calling.add(prep.key)
                plan.append(("call", a, lin, prep))
        for _, a, lin, prep in plan:
            if prep is not None and prep.needs_call:
                _admit_and_start(rt, a, prep, budget, pool, order)
        for _, _, _, prep in plan:  # the answers arrive before the write transaction takes the ledger's lock
            if prep is not None:
                _wait_call(prep)
        with session_scope(rt.engine) as s:
            existing = repo.signal_rows(s, rt.spec.name, instrument, ends)
            used = repo.used_signal_intents(s, rt.spec.name, instrument, ends)
            for kind, a, lin, prep in plan:
                if kind == "keep":
                    _keep_signal(s, lin, a, existing[a.window_end], used[a.window_end], rt.spec.prompt_template)
                    continue
                if prep.deferred:
                    prep = _prepare_signal(rt, a, s)
                    if prep.needs_call:
                        _admit_and_start(rt, a, prep, budget, None, order)
                a.result = _finish_signal(rt, a, s, lin, prep, budget)
                _record_signal(s, lin, a, existing)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if pending is not None:
        def finish() -> None:
            _store_charts(rt, instrument, todo, _render(lambda _: pending.result(), jobs, todo), reads_chart)
            with session_scope(rt.engine) as s:
                repo.set_signal_charts(s, rt.spec.name, instrument, {a.window_end: a.chart for a in todo if a.chart})
        deferred.append(finish)
    return out


def analyze_many(rt: Runtime, instruments: list[str], window_ends: list[datetime], run_id: str,
                 **kwargs) -> dict[str, list[Analysis]]:
    """:func:`analyze` for each of ``instruments`` (same keyword arguments), side by side when the
    provider makes HTTP calls: ``min(len(instruments), max_concurrent_calls)`` instruments at once,
    each with an equal share of ``max_concurrent_calls`` for its windows, so at most
    ``max_concurrent_calls`` calls are in flight (a tick of 20 instruments with 20 allowed: 20
    calls at once). The rules provider (no calls, no ``llm`` pool slot) and a strategy with a
    ``budget`` run instruments one after another: a budget admits calls in a serial order, and
    one instrument's spending must be seen by the next. Errors stay per instrument (see
    :func:`analyze`); a crash of one instrument's analysis is re-raised after the others finish."""
    if getattr(rt.provider, "reads_account", False) and rt.book == LIVE_BOOK and "account" not in kwargs:
        try:  # one read of the venue for every instrument's account view (a real venue: 3 requests, not 3 × N)
            kwargs["account"] = account_snapshot(rt)
        except Exception:  # noqa: BLE001 - each instrument reads again and records its own no-trade
            pass
    limit = _call_workers(rt)
    cfg = getattr(rt.spec.template.signal_provider, "budget", None)
    side_by_side = min(len(instruments), limit) if limit and not (cfg is not None and cfg.limited) else 1
    if side_by_side <= 1:
        return {inst: analyze(rt, inst, window_ends, run_id, **kwargs) for inst in instruments}
    share = max(1, limit // side_by_side)
    with ThreadPoolExecutor(max_workers=side_by_side, thread_name_prefix="analysis") as pool:
        futures = {inst: pool.submit(analyze, rt, inst, window_ends, run_id, call_workers=share, **kwargs)
                   for inst in instruments}
        return {inst: f.result() for inst, f in futures.items()}



def _keep_signal(s, lin: repo.Lineage, a: Analysis, row, intent: IntentRow, template_name: str) -> None:
    """A window whose live intent left PENDING: the stored signal (and the call behind it) stands."""
    a.signal = Signal(strategy=row.strategy, instrument=row.instrument, window_end=row.window_end, mode=row.mode,
                      action=row.action, confidence=row.confidence, entry=row.entry, stop=row.stop,
                      take_profit=row.take_profit, thesis=row.thesis, provider=row.provider, model=row.model,
                      prompt_hash=row.prompt_hash, no_trade_reason=row.no_trade_reason)
    usage = {k: v for k in ("prompt_tokens", "completion_tokens", "total_tokens") if (v := getattr(row, k)) is not None}
    a.result = ProviderResult(signal=a.signal, prompt=row.prompt, response_text=row.response_text, usage=usage,
                              latency_ms=0.0, request_json=row.request_json, template_name=template_name,
                              chart_sha256=row.chart_sha256)
    a.call_id, a.signal_kept = row.call_id, True
    repo.audit(s, lin, "signal_kept", intent_id=intent.intent_id, intent_status=intent.status, call_id=row.call_id,
               action=row.action, reason="the live intent already left PENDING: no provider call, the stored signal stands")


def _record_signal(s, lin: repo.Lineage, a: Analysis, existing) -> None:
    a.signal = a.result.signal
    r = a.result
    row = repo.record_signal(s, lin, a.signal, existing=existing,
                             prompt=r.prompt, request_json=r.request_json, response_text=r.response_text,
                             usage=r.usage or {}, latency_ms=r.latency_ms,
                             chart_key=a.chart.key if a.chart else None, chart_sha256=a.chart.sha256 if a.chart else None,
                             market=vars(a.market) if a.market is not None else None)
    repo.set_signal_call(s, row, a.call_id)


__all__ = ["Analysis", "account_context", "account_snapshot", "analyze", "analyze_many"]
