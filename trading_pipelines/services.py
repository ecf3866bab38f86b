"""The steps of a strategy, as plain functions over a :class:`Runtime` (no Dagster here).

Two kinds of work, kept apart (see DESIGN.md, "Replay and live"):

* **Analysis**, per instrument × window, order-free: :func:`analyze` turns any set of windows of
  one instrument into bars, an indicator frame, a chart and a signal each. Indicators are
  computed once per *chunk* of :data:`CHUNK_BARS` bars (aligned on the UTC epoch) over a
  warm-up of ``lookback_bars`` more, and every window of the chunk slices that series point in
  time; so a single tick and a year-long backfill see the same frame for a window, bit for bit,
  and no window sees a bar that closed after its end.
* **The account**, per strategy × window, in time order: :func:`account_window` plans every
  instrument's signal on the book's equity as of the window end, validates, executes and takes
  the book's snapshot, in one ledger transaction under the book's lock (``SELECT … FOR UPDATE``
  on its ``books`` row). The venue is reached only through the venue protocol and keeps its
  own store; the ledger is reconciled from what the venue reports.

Steps are idempotent: re-running a window re-reads what an earlier run decided (an intent is
validated once, its orders are submitted once, a snapshot is never overwritten).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pandas as pd
from sqlalchemy import Engine, select

from trading_pipelines.config import StrategySpec
from trading_pipelines.domain.calendars import market_hours
from trading_pipelines.domain.guards import (
    AccountView,
    RiskLimits,
    guard_balance,
    guard_duplicate_position,
    guard_fresh_window,
    guard_position_exists,
    guard_position_limit,
    run_guards,
)
from trading_pipelines.domain.ids import client_order_id, intent_id
from trading_pipelines.domain.indicators import compute_indicators, indicator_summary, swing_levels
from trading_pipelines.domain.models import (
    GuardResult,
    InstrumentSpec,
    IntentKind,
    IntentStatus,
    Mode,
    OrderRequest,
    OrderRole,
    OrderStatus,
    OrderType,
    PortfolioSnapshot,
    Position,
    PositionSide,
    Signal,
    TradeIntent,
)
from trading_pipelines.domain.paper import entry_reserve
from trading_pipelines.domain.planning import MarketContext, PlanParams, plan_intent
from trading_pipelines.ledger import repo
from trading_pipelines.llm.context import AccountContext, OrderView, PositionView
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.ledger.models import LIVE_BOOK, BookRow, FillRow, GuardResultRow, IntentRow, OrderRow, PositionRow
from trading_pipelines.resources.charts import ChartRef, ChartStore, chart_key, render_chart
from trading_pipelines.resources.market_data import MarketDataError, MarketDataSource
from trading_pipelines.resources.signals import (
    ProviderResult,
    SignalProvider,
    SignalRequest,
    base_url_host,
    call_cache_key,
    estimated_cost_usd,
    template_sha256,
)
from trading_pipelines.venues.protocol import SimulatedVenue, Venue, VenueEvent
from trading_pipelines.venues.paper import PaperExchange

PROGRESS: list = []
"""Process-local listeners ``fn(done, total)`` told after every account window (the CLI's progress bar)."""

CHUNK_BARS = 512
"""Indicator chunk length in bars (see the module doc)."""

LIVE_SWITCH_ENV = "TRADING_PIPELINES_LIVE"


def live_trading_allowed(strategy: str, dry_run: bool, live_ack: str | None, environ=None) -> tuple[bool, str]:
    """Live orders need all three: ``dry_run: false``, ``live_ack`` equal to the strategy name, and
    ``TRADING_PIPELINES_LIVE=1`` in the deployment. Returns (allowed, reason)."""
    environ = os.environ if environ is None else environ
    if dry_run:
        return False, "dry-run (execution.dry_run is true)"
    if live_ack != strategy:
        return False, f"execution.live_ack must equal {strategy!r} to trade live"
    if environ.get(LIVE_SWITCH_ENV) != "1":
        return False, f"{LIVE_SWITCH_ENV}=1 is not set in this deployment"
    return True, "live trading acknowledged"


@dataclass
class Runtime:
    """Everything a strategy's steps need for one book, built once per run."""

    spec: StrategySpec
    engine: Engine
    market: MarketDataSource
    charts: ChartStore
    provider: SignalProvider | None
    venue: Venue
    book: str = LIVE_BOOK
    book_instruments: tuple[str, ...] | None = None
    frames: object | None = None  # io_managers.FrameStore: indicator chunks as Parquet (None: not stored)
    _reconciled: object = field(default=None, repr=False)  # venue revision at the last reconcile
    _day_start: dict = field(default_factory=dict, repr=False)  # UTC day → that day's starting equity
    _venue_reasons: dict = field(default_factory=dict, repr=False)  # client order id → why the venue ended it
    _rules: dict = field(default_factory=dict, repr=False)  # symbol → the venue's published trading rules

    @property
    def instruments(self) -> tuple[str, ...]:
        """What the book trades: a replay's instruments, or all the strategy's."""
        return self.book_instruments or self.spec.instruments

    @property
    def limits(self) -> RiskLimits:
        r, f = self.spec.risk, self.spec.futures
        return RiskLimits(risk_per_trade_pct=r.risk_per_trade_pct, max_open_positions=r.max_open_positions,
                          max_daily_loss_pct=r.max_daily_loss_pct, max_leverage=f.max_leverage if f else 1.0,
                          fee_rate=self.spec.venue.fee_rate, max_entry_slippage_pct=r.max_entry_slippage_pct)

    @property
    def plan_params(self) -> PlanParams:
        t, r, f = self.spec.template, self.spec.risk, self.spec.futures
        return PlanParams(risk_per_trade_pct=r.risk_per_trade_pct, min_confidence=r.min_confidence,
                          stop_method=t.stop.method, atr_multiple=t.stop.atr_multiple, buffer_atr=t.stop.buffer_atr,
                          take_profit_r=t.take_profit_r, leverage=f.leverage if f else 1.0,
                          margin_mode=f.margin_mode if f else None, min_exit_confidence=r.exit_confidence,
                          max_entry_slippage_pct=r.max_entry_slippage_pct)

    def instrument(self, symbol: str) -> InstrumentSpec:
        """The instrument's trading rules: the catalogue's, with lot step, minimum quantity, tick
        size and minimum notional replaced by the venue's own when it publishes them (ccxt's
        ``load_markets``: Binance's LOT_SIZE, PRICE_FILTER and NOTIONAL filters), so a live order
        is sized and priced by the exchange's current rules, not a hand-copied file."""
        spec = self.spec.instrument(symbol)
        rules = getattr(self.venue, "instrument_rules", None)
        if rules is None:
            return spec
        if symbol not in self._rules:
            self._rules[symbol] = rules(symbol)
        return spec.model_copy(update=self._rules[symbol])

    def lineage(self, instrument: str, partition_key: str, run_id: str) -> repo.Lineage:
        return repo.Lineage(self.spec.name, instrument, partition_key, run_id, self.book)


def venue_account(strategy: str, book: str) -> str:
    """The venue account of a book: the strategy's name for the live book, ``strategy@book`` else."""
    return strategy if book == LIVE_BOOK else f"{strategy}@{book}"


def make_paper_venue(spec: StrategySpec, market: MarketDataSource, engine: Engine, book: str = LIVE_BOOK) -> PaperExchange:
    """The strategy's paper exchange account for ``book``; ``engine`` is the venue's own store."""
    v = spec.venue
    return PaperExchange(account=venue_account(spec.name, book), mode=spec.mode, starting_cash=v.starting_cash,
                         fee_rate=v.fee_rate, slippage_bps=v.slippage_bps,
                         bars_fn=lambda inst, start, end: market.bars_between(inst, spec.timeframe, start, end),
                         bar_duration=spec.bar_duration, engine=engine,
                         tick_sizes={i: spec.instrument(i).tick_size for i in spec.instruments},
                         maintenance_margin_rates={i: spec.instrument(i).maintenance_margin_rate for i in spec.instruments})


def replay_book_id(spec: StrategySpec, instruments: list[str], first_end: datetime, last_end: datetime) -> str:
    """A replay book is named by what it replays: ``replay-`` + 12 hex of sha256 over the strategy
    (every field), the instruments and the first and last window ends. The same replay of the same
    strategy is the same book (re-running it re-reads its decisions); any change is a new book."""
    raw = json.dumps({"spec": spec.model_dump(mode="json"), "instruments": sorted(instruments),
                      "first": first_end.isoformat(), "last": last_end.isoformat()}, sort_keys=True)
    return "replay-" + hashlib.sha256(raw.encode()).hexdigest()[:12]


# ================================================================ analysis


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


def _chunk_start(t: pd.Timestamp, bar: timedelta) -> pd.Timestamp:
    step = pd.Timedelta(bar) * CHUNK_BARS
    epoch = pd.Timestamp(0, tz="UTC")
    return epoch + ((t - epoch) // step) * step


def indicator_chunks(rt: Runtime, instrument: str, window_ends: list[datetime]) -> dict[pd.Timestamp, pd.DataFrame]:
    """Indicator frames per chunk that the windows fall in (see the module doc). Raises
    :class:`MarketDataError` for bad data and ``ValueError`` when too few bars exist."""
    bar = rt.spec.bar_duration
    lookback = rt.spec.template.lookback_bars
    out: dict[pd.Timestamp, pd.DataFrame] = {}
    for end in sorted(window_ends):
        # the chunk holds windows whose newest bar opens inside it
        start = _chunk_start(pd.Timestamp(end - bar), bar)
        if start in out:
            continue
        chunk_end = (start + pd.Timedelta(bar) * CHUNK_BARS).to_pydatetime()
        last_needed = max(e for e in window_ends if _chunk_start(pd.Timestamp(e - bar), bar) == start)
        history = rt.market.bars(instrument, rt.spec.timeframe, end=min(chunk_end, last_needed),
                                 limit=int((min(chunk_end, last_needed) - start.to_pydatetime()) / bar) + 2 * lookback)
        warm = history[history.index >= start - pd.Timedelta(bar) * (2 * lookback)]
        out[start] = compute_indicators(warm, rt.spec.template.indicators)
    return out


def store_chunks(rt: Runtime, instrument: str, chunks: dict[pd.Timestamp, pd.DataFrame]) -> dict[pd.Timestamp, str]:
    """Write each indicator chunk (OHLCV + indicators) to the frame store, if there is one."""
    if rt.frames is None:
        return {}
    return {start: rt.frames.put(rt.spec.name, "indicator_frames", instrument, start, frame) for start, frame in chunks.items()}


def freshness(rt: Runtime, bars: pd.DataFrame, window_end: datetime) -> str | None:
    """Why a window must not trade on ``bars``, or None: its newest bar must be the bar that
    closes at the window end."""
    bar = rt.spec.bar_duration
    if bars.empty:
        return f"stale data: no bar closed at or before {window_end.isoformat()}"
    newest_close = bars.index[-1].to_pydatetime() + bar
    if newest_close != window_end:
        missing = int((window_end - newest_close) / bar)
        return (f"stale data: newest bar closed at {newest_close.isoformat()}, {missing} bar"
                f"{'s' if missing != 1 else ''} missing before the window end {window_end.isoformat()}")
    return None


def chart_overlays(rt: Runtime) -> list[str]:
    ind = rt.spec.template.indicators
    return [f"ema_{w}" for w in ind.ema] + [f"sma_{w}" for w in ind.sma] + ["bb_upper", "bb_lower"]


def chart_title(rt: Runtime, instrument: str, window_end: datetime) -> str:
    return f"{instrument} {rt.spec.timeframe} → {window_end:%Y-%m-%d %H:%M}Z"


def slice_window(rt: Runtime, chunk: pd.DataFrame, window_end: datetime) -> pd.DataFrame:
    """The point-in-time frame of a window: the last ``lookback_bars`` rows that closed by its end."""
    stop = chunk.index.searchsorted(pd.Timestamp(window_end - rt.spec.bar_duration), side="right")
    return chunk.iloc[max(0, stop - rt.spec.template.lookback_bars):stop]


def analyze(rt: Runtime, instrument: str, window_ends: list[datetime], run_id: str, partition_key=None,
            charts: bool = True, render=None, render_async=None, deferred: list | None = None,
            call_workers: int | None = None, account: tuple | None = None) -> list[Analysis]:
    """Analyse ``window_ends`` of one instrument (any order, any subset): bars, frame, chart,
    signal, each signal recorded in the ledger. Errors stay in this instrument: bad data, a failed
    chart or a provider error becomes an :class:`Analysis` with ``error`` and a no-trade signal.

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
    for a in out:
        if a.error:
            continue
        start = _chunk_start(pd.Timestamp(a.window_end - bar), bar)
        a.frame_object = objects.get(start)
        frame = slice_window(rt, chunks[start], a.window_end)
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


def _render(render, jobs, todo: list[Analysis]) -> list[bytes | None]:
    try:
        return render(jobs) if render else [render_chart(*j) for j in jobs]
    except Exception as e:  # noqa: BLE001 - a failed chart is this instrument's error, not the run's
        for a in todo:
            a.chart_error = f"chart failed: {type(e).__name__}: {e}"
        return [None] * len(jobs)


def _store_charts(rt: Runtime, instrument: str, todo: list[Analysis], pngs: list[bytes | None], reads_chart: bool) -> None:
    """Put rendered charts in the chart store. A chart that failed (or could not be stored) is a
    no-trade when the provider reads charts; for a provider that never sees them (rules) the
    failure is recorded on the analysis (``chart_error``, flagged by ``signal_usable``)."""
    for a, png in zip(todo, pngs):
        if png is not None:
            try:
                a.chart = rt.charts.put(chart_key(rt.spec.name, instrument, a.window_end), png)
                a._png = png  # type: ignore[attr-defined]
            except Exception as e:  # noqa: BLE001
                a.chart_error = f"chart store failed: {type(e).__name__}: {e}"
        if a.chart_error and reads_chart:
            a.error = a.error or a.chart_error


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


def _call_workers(rt: Runtime) -> int:
    """Provider calls of one analysis in flight at once: the openai provider's
    ``max_concurrent_calls`` (its calls run in a thread pool, outside the ledger transaction);
    0 (inline, no pool) for the rules provider or any other."""
    cfg = rt.spec.template.signal_provider
    if rt.provider is None or getattr(cfg, "kind", None) != "openai" or not getattr(rt.provider, "cacheable", False):
        return 0
    return int(getattr(cfg, "max_concurrent_calls", 1) or 1)


def _admit_and_start(rt: Runtime, a: Analysis, prep: "_Prep", budget, pool, order: dict) -> None:
    """Start the window's call, or make it a pipeline no-trade ``budget: …`` when a limit is spent."""
    why = budget.admit(prep) if budget is not None else None
    if why:
        a.error = why
        prep.result, prep.final = _pipeline_no_trade(rt, a), True
        return
    _start_call(rt, prep, pool, order)
    if budget is not None:
        budget.started(prep)


@dataclass(eq=False)
class _Prep:
    """One window's signal between its cache lookup and its ledger write."""

    req: SignalRequest | None = None
    key: str | None = None
    hit: object | None = None
    t0: float = 0.0
    result: ProviderResult | None = None  # set: no call needed (a pipeline no-trade or a cache hit), or the call's answer
    final: bool = False  # a pipeline no-trade: nothing is recorded in provider_calls
    deferred: bool = False
    future: object | None = None
    crash: BaseException | None = None

    @property
    def needs_call(self) -> bool:
        return self.result is None and self.future is None and not self.deferred


def _pipeline_no_trade(rt: Runtime, a: Analysis) -> ProviderResult:
    spec = rt.spec
    reason = a.error or "this runtime was built without a signal provider"
    sig = Signal(strategy=spec.name, instrument=a.instrument, window_end=a.window_end, mode=spec.mode, action="hold",
                 confidence=0.0, thesis=f"no trade: {reason}", provider="pipeline", model="none",
                 prompt_hash="0" * 64, no_trade_reason=reason)
    return ProviderResult(signal=sig, prompt="", response_text=None, latency_ms=0.0, template_name=spec.prompt_template)


def _prepare_signal(rt: Runtime, a: Analysis, s=None, skip_lookup: set | None = None) -> _Prep:
    """The window's request and its response-cache lookup (calling thread; no ledger write).
    ``skip_lookup``: keys an earlier queued window is still calling for (the lookup is deferred)."""
    spec = rt.spec
    a.call_id, a.cache_hit, a.http_calls = None, False, 0
    if a.error or rt.provider is None:
        return _Prep(result=_pipeline_no_trade(rt, a), final=True)
    frame = a.frame
    provider = rt.provider
    recent = [{"open_time": ts.isoformat(), "open": o, "high": h, "low": lo, "close": c, "volume": v}
              for ts, o, h, lo, c, v in zip(frame.index[-20:], *(frame[k].iloc[-20:] for k in ("open", "high", "low", "close", "volume")))]
    req = SignalRequest(strategy=spec.name, instrument=a.instrument, window_end=a.window_end, mode=spec.mode,
                        timeframe=spec.timeframe, summary=indicator_summary(frame),
                        chart_png=getattr(a, "_png", None) if getattr(provider, "reads_chart", True) else None,
                        chart_key=chart_key(spec.name, a.instrument, a.window_end) if a.chart or not getattr(provider, "reads_chart", True) else None,
                        recent_bars=recent, account=a.account if getattr(provider, "reads_account", False) else None)
    p = _Prep(req=req, t0=time.perf_counter())
    if s is not None and getattr(provider, "cacheable", False):
        try:
            p.key = provider.cache_key(req)
        except Exception:  # noqa: BLE001 - no key: the call is made (and its rendering error recorded)
            p.key = None
        if p.key and skip_lookup and p.key in skip_lookup:
            p.deferred = True
            return p
        p.hit = repo.cached_call(s, p.key) if p.key else None
    if p.hit is not None:
        hit = p.hit
        sig = Signal.model_validate({**hit.parsed_signal, "strategy": spec.name, "instrument": a.instrument,
                                     "window_end": a.window_end, "mode": spec.mode.value})
        usage = {k: v for k in ("prompt_tokens", "completion_tokens", "total_tokens") if (v := getattr(hit, k)) is not None}
        dialect = dict((hit.parameters or {}).get("dialect") or {}, http_calls=0, cache_hit=True, cached_from=hit.id)
        p.result = ProviderResult(signal=sig, prompt=hit.prompt, response_text=hit.response_text, usage=usage,
                                  latency_ms=(time.perf_counter() - p.t0) * 1000.0, request_json=hit.request_json,
                                  template_name=hit.template or hit.agent, chart_sha256=hit.chart_sha256, dialect=dialect)
    return p


def _generate(provider, req: SignalRequest):
    """``provider.generate(req)`` as (result, None), or (None, the exception) — the pool's task."""
    try:
        return provider.generate(req), None
    except Exception as e:  # noqa: BLE001 - a provider crash is this window's no-trade
        return None, e


_SENDING = threading.local()
ORDER_GAP_S = 0.01
"""Pooled calls leave in window order: each starts once the previous one's HTTP request is on its
way, plus this gap (servers that answer in arrival order — the test stub — see the serial order)."""


def _install_send_hook(provider) -> bool:
    """An httpx ``request`` event hook on the provider's HTTP client that marks the calling
    thread's call as sent (False: the client has none to hook; calls are then only staggered)."""
    http = getattr(getattr(provider, "_client", None), "_client", None)
    hooks = getattr(http, "event_hooks", None)
    if not isinstance(hooks, dict):
        return False
    if not getattr(http, "_trading_send_hook", False):
        def on_request(request) -> None:
            ev = getattr(_SENDING, "event", None)
            if ev is not None:
                ev.set()
        http.event_hooks = {**hooks, "request": [*hooks.get("request", []), on_request]}
        http._trading_send_hook = True
    return True


def _generate_in_order(provider, req: SignalRequest, prev: threading.Event | None, mine: threading.Event, hooked: bool):
    if prev is not None:
        prev.wait()
        time.sleep(ORDER_GAP_S)
    if not hooked:
        mine.set()
    _SENDING.event = mine
    try:
        return _generate(provider, req)
    finally:
        _SENDING.event = None
        mine.set()


def _start_call(rt: Runtime, p: _Prep, pool: ThreadPoolExecutor | None, order: dict | None = None) -> None:
    if pool is None:
        p.result, p.crash = _generate(rt.provider, p.req)
        return
    order = {} if order is None else order
    if "hooked" not in order:
        order["hooked"] = _install_send_hook(rt.provider)
    mine = threading.Event()
    p.future = pool.submit(_generate_in_order, rt.provider, p.req, order.get("last"), mine, order["hooked"])
    order["last"] = mine


def _wait_call(p: _Prep) -> None:
    if p.future is not None:
        p.result, p.crash = p.future.result()
        p.future = None


def _finish_signal(rt: Runtime, a: Analysis, s, lin: repo.Lineage | None, p: _Prep, budget=None) -> ProviderResult:
    """The window's signal once its call (if any) answered; with ``s`` and ``lin`` the call (cache
    hits included) is appended to ``provider_calls`` and ``a.call_id``/``a.cache_hit``/``a.http_calls`` set."""
    _wait_call(p)
    if budget is not None:
        budget.finished(p)
    if p.final:
        return p.result
    if p.crash is not None:
        a.error = f"provider error: {type(p.crash).__name__}: {p.crash}"
        return _pipeline_no_trade(rt, a)
    spec, provider, result, hit, key, req = rt.spec, rt.provider, p.result, p.hit, p.key, p.req
    if s is None or lin is None:
        return result
    http_calls = 0 if hit is not None else int((result.dialect or {}).get("http_calls", 0) or 0)
    # duck-typed providers (tests, user code) may lack the SignalProvider attributes
    pname = getattr(provider, "provider_name", result.signal.provider)
    model = getattr(provider, "model", result.signal.model)
    template = getattr(provider, "template_name", result.template_name)
    params = provider.call_parameters() if hasattr(provider, "call_parameters") else {}
    if key is None:
        key = call_cache_key(pname, model, result.signal.prompt_hash, result.chart_sha256, params)
    error = result.signal.no_trade_reason if result.response_text is None else None
    cost = estimated_cost_usd(model, result.usage)
    system = next((m.get("content") for m in (result.request_json or {}).get("messages", [])
                   if isinstance(m, dict) and m.get("role") == "system" and isinstance(m.get("content"), str)), None)
    call = repo.record_provider_call(
        s, lin, window_end=a.window_end, mode=spec.mode.value, provider=pname, model=model,
        agent=getattr(provider, "agent", None) or pname, template=template, template_sha256=template_sha256(template),
        base_url_host=base_url_host(getattr(provider, "base_url", None)),
        parameters={**params, "dialect": result.dialect}, system_text=system, prompt=result.prompt,
        prompt_hash=result.signal.prompt_hash, chart_key=req.chart_key, chart_sha256=result.chart_sha256,
        request_json=result.request_json, response_text=result.response_text,
        parsed_signal=result.signal.model_dump(mode="json"), error=error, usage=result.usage,
        latency_ms=result.latency_ms, http_calls=http_calls,
        estimated_cost_usd=(0.0 if cost is not None else None) if hit is not None else cost,
        cache_key=key, cache_hit=hit is not None, cached_from=hit.id if hit is not None else None)
    a.call_id, a.cache_hit, a.http_calls = call.id, hit is not None, http_calls
    return result


def _signal(rt: Runtime, a: Analysis, s=None, lin: repo.Lineage | None = None) -> ProviderResult:
    """The window's signal: a pipeline no-trade (bad data, no provider), a response-cache hit, or
    a provider call (serial; see :func:`analyze` for the concurrent path and budgets). With a
    session ``s`` and ``lin``, each provider call (cache hits included) is appended to
    ``provider_calls`` and ``a.call_id``/``a.cache_hit``/``a.http_calls`` set."""
    p = _prepare_signal(rt, a, s)
    if p.needs_call:
        _start_call(rt, p, None)
    return _finish_signal(rt, a, s, lin, p)


class _Budget:
    """The provider budget of one :func:`analyze` call (``template.signal_provider.budget``).

    Usage so far is read from ``provider_calls`` once (the run's and the strategy's UTC-day tokens
    and estimated cost, cache hits excluded) plus this analysis's calls as they answer. A call is
    admitted only while every limit is unspent *as the serial path would see it*: calls still in
    flight count at an upper bound (``max_tokens`` plus 1.5× the largest prompt seen in this
    analysis; unbounded until one call has answered), and when that bound leaves the decision
    open the calling thread waits for the oldest call in flight. So parallel calls admit exactly
    the calls the serial path would, and never more than a limit allows."""

    def __init__(self, rt: Runtime, cfg, run_id: str, day: datetime, run_tokens: int, day_tokens: int, day_cost: float):
        self.rt, self.cfg, self.run_id, self.day = rt, cfg, run_id, day
        self.run_tokens, self.day_tokens, self.day_cost = run_tokens, day_tokens, day_cost
        self.inflight: list[_Prep] = []
        self.max_prompt: int | None = None
        self.model = getattr(rt.provider, "model", "")
        self.max_tokens = int(getattr(rt.provider, "max_tokens", 0) or 0)

    @classmethod
    def start(cls, rt: Runtime, s, run_id: str) -> "_Budget | None":
        cfg = getattr(rt.spec.template.signal_provider, "budget", None)
        if cfg is None or not cfg.limited or rt.provider is None:
            return None
        from trading_pipelines.ledger.models import utcnow

        now = utcnow()
        run_tokens, _ = repo.provider_usage(s, rt.spec.name, run_id=run_id)
        day_tokens, day_cost = repo.provider_usage(s, rt.spec.name, day=now)
        return cls(rt, cfg, run_id, now, run_tokens, day_tokens, day_cost)

    def _bound(self) -> tuple[float, float]:
        if self.max_prompt is None:
            return math.inf, math.inf
        prompt = math.ceil(1.5 * self.max_prompt)
        cost = estimated_cost_usd(self.model, {"prompt_tokens": prompt, "completion_tokens": self.max_tokens}) or 0.0
        return prompt + self.max_tokens, cost

    def _spent(self) -> str | None:
        c, day = self.cfg, f"{self.day:%Y-%m-%d} UTC"
        if c.max_tokens_per_run is not None and self.run_tokens >= c.max_tokens_per_run:
            return (f"budget: max_tokens_per_run {c.max_tokens_per_run} spent ({self.run_tokens} tokens used by run "
                    f"{self.run_id}); no call made")
        if c.max_tokens_per_day is not None and self.day_tokens >= c.max_tokens_per_day:
            return (f"budget: max_tokens_per_day {c.max_tokens_per_day} spent ({self.day_tokens} tokens used by "
                    f"{self.rt.spec.name} on {day}); no call made")
        if c.max_cost_usd_per_day is not None and self.day_cost >= c.max_cost_usd_per_day:
            return (f"budget: max_cost_usd_per_day {c.max_cost_usd_per_day:g} spent (${self.day_cost:.6f} estimated for "
                    f"{self.rt.spec.name} on {day}); no call made")
        return None

    def _open(self) -> bool:
        """Whether calls in flight could still spend a limit (the decision waits for them)."""
        if not self.inflight:
            return False
        tokens, cost = self._bound()
        n = len(self.inflight)
        c = self.cfg
        return ((c.max_tokens_per_run is not None and self.run_tokens + n * tokens >= c.max_tokens_per_run)
                or (c.max_tokens_per_day is not None and self.day_tokens + n * tokens >= c.max_tokens_per_day)
                or (c.max_cost_usd_per_day is not None and self.day_cost + n * cost >= c.max_cost_usd_per_day))

    def admit(self, p: _Prep) -> str | None:
        """None: make the call; else the no-trade reason ``budget: …``."""
        while True:
            why = self._spent()
            if why is not None:
                while self.inflight:  # the reason names what the serial path would have seen
                    self.finished(self.inflight[0])
                return self._spent()
            if not self._open():
                return None
            self.finished(self.inflight[0])

    def started(self, p: _Prep) -> None:
        if p.future is None:
            self._count(p)
        else:
            self.inflight.append(p)

    def finished(self, p: _Prep) -> None:
        """Count a call's usage once it answered (waits for it)."""
        if p in self.inflight:
            self.inflight.remove(p)
            _wait_call(p)
            self._count(p)

    def _count(self, p: _Prep) -> None:
        if p.result is None or p.hit is not None:
            return
        usage = p.result.usage or {}
        tokens = int(usage.get("total_tokens") or (usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)) or 0)
        self.run_tokens += tokens
        self.day_tokens += tokens
        self.day_cost += estimated_cost_usd(self.model, usage) or 0.0
        if usage.get("prompt_tokens") is not None:
            self.max_prompt = max(self.max_prompt or 0, int(usage["prompt_tokens"]))


# ---- single-window helpers (the per-step API used by tests and tools)


def indicator_frame(rt: Runtime, instrument: str, window_end: datetime) -> pd.DataFrame:
    """The window's indicator frame, exactly as :func:`analyze` computes it (chunked, sliced)."""
    chunks = indicator_chunks(rt, instrument, [window_end])
    return slice_window(rt, next(iter(chunks.values())), window_end)


def make_chart(rt: Runtime, instrument: str, window_end: datetime, frame: pd.DataFrame) -> tuple[ChartRef, bytes]:
    png = render_chart(frame, title=chart_title(rt, instrument, window_end), overlays=chart_overlays(rt),
                       bars=rt.spec.template.chart_bars)
    return rt.charts.put(chart_key(rt.spec.name, instrument, window_end), png), png


# ================================================================ the account


def _day_start(s, rt: Runtime, at: datetime) -> float | None:
    """The day's starting equity (see :func:`repo.day_start_equity`), cached per UTC day once
    the day has begun on the book (a snapshot strictly before ``at`` exists for it)."""
    midnight = at.replace(hour=0, minute=0, second=0, microsecond=0)
    day = (at.date(), at == midnight)  # the window ending at 00:00 reads the day before's last snapshot
    if day in rt._day_start:
        return rt._day_start[day]
    value = repo.day_start_equity(s, rt.spec.name, at, rt.book)
    if value is not None:
        rt._day_start[day] = value
    return value


def _audit_events(s, rt: Runtime, lin: repo.Lineage, events: list[VenueEvent]) -> None:
    for ev in events:
        repo.audit(s, repo.Lineage(rt.spec.name, ev.instrument, lin.partition_key, lin.run_id, rt.book), "venue_event",
                   kind=ev.kind, role=ev.role, client_order_id=ev.client_order_id, price=ev.price,
                   quantity=ev.quantity, time=ev.time.isoformat(), realized_pnl=ev.realized_pnl,
                   reason=ev.reason or None)
        if ev.reason:
            rt._venue_reasons[ev.client_order_id] = f"{ev.kind}: {ev.reason}"


def _reconcile(s, rt: Runtime, lin: repo.Lineage) -> None:
    """Mirror the venue into the ledger, then move SUBMITTED intents whose orders the venue settled.
    Skipped when the venue reports the same revision as at this runtime's last reconcile (nothing
    at the venue changed since; a new runtime always reconciles once)."""
    rev = getattr(rt.venue, "revision", None)
    current = rev() if rev else None
    if current is not None and current == rt._reconciled:
        return
    repo.reconcile(s, rt.spec.name, rt.book, rt.spec.mode.value, rt.venue)
    _sync_intent_statuses(s, rt, lin)
    rt._reconciled = current


WALL_CLOCK = lambda: datetime.now(timezone.utc)  # noqa: E731 - the real venues' "now" (UTC); tests pin it
"""What a real venue's account is at: now, UTC."""


def venue_clock(rt: Runtime) -> datetime | None:
    """The book's clock: a simulated venue's (the last bar it processed), or the wall clock for a
    real venue (its account lives in the present)."""
    return rt.venue.clock() if isinstance(rt.venue, SimulatedVenue) else WALL_CLOCK()


def _guard_clock(rt: Runtime, window_end: datetime) -> datetime | None:
    """``AccountView.as_of`` for the fresh-window guard: a simulated venue's clock; for a real
    venue the wall clock once the next bar has closed (the window is no longer the current one,
    its bar is stale), else None — a window is tradable live only during the bar after it."""
    if isinstance(rt.venue, SimulatedVenue):
        return rt.venue.clock()
    now = WALL_CLOCK()
    return now if now >= window_end + rt.spec.bar_duration else None


def _late(s, rt: Runtime, window_end: datetime, lin: repo.Lineage) -> datetime | None:
    """Bring the book's simulated venue to ``window_end`` (every instrument of the strategy, plus
    any retired one still holding a position or resting order), auditing what it did; return the
    venue's clock if it is already past the window (a late or out-of-order run), else None."""
    if not isinstance(rt.venue, SimulatedVenue):
        return None
    _audit_events(s, rt, lin, rt.venue.advance(rt.instruments, window_end))
    clock = rt.venue.clock()
    return clock if clock is not None and clock > window_end else None


def book_positions(s, rt: Runtime) -> list[Position]:
    """The book's open positions: what the venue reports; for a fire-and-forget venue (a webhook,
    ``reports_positions`` False) what the ledger sent it — fail closed: an entry SENT on an
    instrument counts as open until an exit on that instrument is SENT after it (so a second
    entry is a duplicate, and an exit has a position to close), at the planned entry price."""
    if getattr(rt.venue, "reports_positions", True):
        return rt.venue.fetch_positions()
    rows = s.execute(select(IntentRow).where(IntentRow.strategy == rt.spec.name, IntentRow.book == rt.book,
                                             IntentRow.status == IntentStatus.SENT.value)
                     .order_by(IntentRow.window_end)).scalars().all()
    open_: dict[str, IntentRow] = {}
    for r in rows:
        if r.kind == IntentKind.ENTRY.value:
            open_[r.instrument] = r
        elif r.kind == IntentKind.EXIT.value:
            open_.pop(r.instrument, None)
    return [Position(instrument=r.instrument, side=PositionSide(r.position_side), quantity=r.quantity, entry_price=r.entry,
                     mark_price=r.entry, leverage=r.leverage, margin=r.margin, opened_at=r.window_end)
            for r in open_.values()]


def account_view(s, rt: Runtime, window_end: datetime) -> AccountView:
    """Guards' view of the book, from the venue: free cash net of reserved, equity, positions,
    resting entries, the venue clock; the day's starting equity from the ledger's snapshots."""
    bal = rt.venue.fetch_balance()
    positions = tuple(book_positions(s, rt))
    resting = tuple(sorted({o.request.instrument for o in rt.venue.fetch_open_orders() if o.request.role is OrderRole.ENTRY}))
    day = _day_start(s, rt, window_end)
    return AccountView(free_cash=bal.free, equity=bal.equity, day_start_equity=day if day is not None else bal.equity,
                       positions=positions, resting_entries=resting, as_of=_guard_clock(rt, window_end))


def snapshot_now(rt: Runtime, as_of: datetime) -> PortfolioSnapshot:
    bal = rt.venue.fetch_balance()
    return PortfolioSnapshot(strategy=rt.spec.name, as_of=as_of, cash=bal.cash, equity=bal.equity,
                             realized_pnl=bal.realized_pnl, unrealized_pnl=bal.unrealized_pnl,
                             positions=tuple(rt.venue.fetch_positions()))


def _plan(s, rt: Runtime, lin: repo.Lineage, signal: Signal, market: MarketContext | None,
          late: datetime | None) -> TradeIntent:
    if lin.instrument not in rt.spec.instruments:
        raise ValueError(f"{rt.spec.name} does not trade {lin.instrument!r} (instruments: {list(rt.spec.instruments)})")
    row = s.get(IntentRow, intent_id(rt.spec.name, lin.instrument, signal.window_end, rt.book))
    if row is not None and row.status != IntentStatus.PENDING.value:
        repo.audit(s, lin, "replan_ignored", intent_id=row.intent_id, stored_status=row.status,
                   new_action=signal.action, new_confidence=signal.confidence)
        return repo.intent_from_row(row)
    spec = rt.instrument(lin.instrument)
    if late is not None:
        intent = plan_intent(signal.model_copy(update={
            "no_trade_reason": f"late review: the account is at {late.isoformat()}, past the window end "
                               f"{signal.window_end.isoformat()}; a past window plans no trade"}),
            spec, 0.0, MarketContext(math.nan, math.nan, math.nan, math.nan), rt.plan_params, rt.book)
    elif market is None:
        intent = plan_intent(signal if signal.no_trade_reason else signal.model_copy(update={"no_trade_reason": "no market context"}),
                             spec, 0.0, MarketContext(math.nan, math.nan, math.nan, math.nan), rt.plan_params, rt.book)
    else:
        equity = rt.venue.fetch_balance().equity
        if signal.action in ("sell", "close") and not signal.no_trade_reason and not any(
                p.instrument == lin.instrument for p in book_positions(s, rt)):
            # nothing to exit: a hold, not an order for the guards to refuse (spot is long-only)
            signal = signal.model_copy(update={"action": "hold", "thesis": f"hold: {signal.action} signal but no "
                                               f"{lin.instrument} position to exit ({signal.thesis})"})
        intent = plan_intent(signal, spec, equity, market, rt.plan_params, rt.book)
    repo.record_intent(s, lin, intent)
    return repo.intent_from_row(s.get(IntentRow, intent.intent_id))


def _adopt(s, rt: Runtime, lin: repo.Lineage, intent: TradeIntent) -> bool:
    """Crash recovery on a real venue: a PENDING intent whose client order ids the venue already
    knows was sent by a run that died before the ledger recorded it (the venue commits first, the
    ledger after). The ledger adopts the venue's orders — nothing is validated against them or sent
    again — recording a passed guard ``venue_adopted`` that says so, and the intent goes
    VALIDATED → SUBMITTED. Simulated venues keep their state in the step's unit of work (a crash
    loses both sides), so they have nothing to adopt. Returns whether orders were adopted."""
    if rt.venue.simulated or intent.status is not IntentStatus.PENDING or intent.kind is IntentKind.NONE:
        return False
    roles = (OrderRole.ENTRY, OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT) if intent.kind is IntentKind.ENTRY else (OrderRole.EXIT,)
    found = [o for o in (rt.venue.fetch_order(client_order_id(intent.intent_id, r), instrument=intent.instrument)
                           for r in roles) if o is not None]
    if not found:
        return False
    cids = ", ".join(o.client_order_id for o in found)
    repo.record_guards(s, lin, intent.intent_id, [GuardResult(
        guard="venue_adopted", passed=True,
        message=f"{rt.venue.name} already holds this intent's orders ({cids}): a run that crashed before recording "
                f"them sent them; the ledger adopts what the venue reports, nothing is sent again")])
    repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.VALIDATED, "orders found at the venue (crash recovery)")
    repo.record_orders(s, lin, intent.intent_id, rt.spec.mode.value, rt.venue.name, found)
    repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.SUBMITTED,
                           f"{len(found)} orders adopted from {rt.venue.name} after a crash: {cids}")
    repo.audit(s, lin, "venue_orders_adopted", intent_id=intent.intent_id, client_order_ids=[o.client_order_id for o in found])
    return True


def _stored_guards(s, intent_id_: str) -> tuple[GuardResult, ...]:
    rows = s.execute(select(GuardResultRow).where(GuardResultRow.intent_id == intent_id_).order_by(GuardResultRow.id)).scalars()
    return tuple(GuardResult(guard=r.guard, passed=r.passed, message=r.message) for r in rows)


def _validate(s, rt: Runtime, lin: repo.Lineage, intent: TradeIntent) -> tuple[TradeIntent, tuple[GuardResult, ...]]:
    row = s.get(IntentRow, intent.intent_id)
    if row is None:
        raise KeyError(f"intent {intent.intent_id} was never planned")
    stored = repo.intent_from_row(row)
    if stored.kind is IntentKind.NONE:
        return stored, ()  # a no-trade has no guards
    if row.status != IntentStatus.PENDING.value:
        return stored, _stored_guards(s, stored.intent_id)
    acct = account_view(s, rt, stored.window_end)
    spec = rt.instrument(lin.instrument)
    results = run_guards(stored, spec, acct, rt.limits, market_hours(spec, stored.window_end, rt.spec.bar_duration))
    repo.record_guards(s, lin, stored.intent_id, results)
    failed = [g for g in results if not g.passed]
    new = IntentStatus.REJECTED if failed else IntentStatus.VALIDATED
    reason = "; ".join(f"{g.guard}: {g.message}" for g in failed) or "all guards passed"
    repo.set_intent_status(s, lin, stored.intent_id, new, reason)
    return stored.model_copy(update={"status": new, "reason": reason}), results


def sane_to_send(intent: TradeIntent, guards: tuple[GuardResult, ...] | list[GuardResult]) -> tuple[bool, str]:
    """The last invariant before money moves: a VALIDATED intent with guards on record, every one
    passed, and (entries) a positive size with the stop on the loss side of entry."""
    if intent.status is not IntentStatus.VALIDATED:
        return False, f"status is {intent.status.value}, not VALIDATED"
    if not guards:
        return False, "no guard results on record"
    if not all(g.passed for g in guards):
        return False, "a guard failed: " + ", ".join(g.guard for g in guards if not g.passed)
    if intent.kind is IntentKind.ENTRY:
        if not (intent.quantity > 0 and intent.entry and intent.stop and intent.position_side):
            return False, "entry without size, entry price, stop or side"
        if (intent.stop < intent.entry) != (intent.position_side.value == "long"):
            return False, f"stop {intent.stop} is on the wrong side of entry {intent.entry}"
    elif intent.kind is not IntentKind.EXIT:
        return False, "a no-trade intent has nothing to send"
    return True, "ok"


def _sync_intent_statuses(s, rt: Runtime, lin: repo.Lineage) -> None:
    """The lifecycle from what the venue reported (call after :func:`repo.reconcile`):

    * SUBMITTED → MONITORING when the entry filled (position open, stop-loss and take-profit
      resting); → CLOSED when an exit filled; → SENT when a fire-and-forget venue took the orders;
      → CANCELLED when the venue cancelled, expired or rejected the entry.
    * MONITORING → CLOSED once the position that entry opened is closed — by its stop-loss,
      take-profit, an exit, a liquidation or the venue itself — with the exit price and the
      realized P&L (quote currency) in the reason."""
    rows = s.execute(select(IntentRow).where(IntentRow.strategy == rt.spec.name, IntentRow.book == rt.book,
                                             IntentRow.status.in_((IntentStatus.SUBMITTED.value, IntentStatus.MONITORING.value)))
                     ).scalars().all()
    for row in rows:
        primary = s.execute(select(OrderRow).where(OrderRow.intent_id == row.intent_id,
                                                   OrderRow.role.in_(("entry", "exit")))).scalars().first()
        if primary is None:
            continue
        if row.status == IntentStatus.SUBMITTED.value:
            if primary.status == OrderStatus.FILLED.value and primary.role == "entry":
                repo.set_intent_status(s, lin, row.intent_id, IntentStatus.MONITORING,
                                       f"entry filled at {primary.average_price}: position open, stop-loss and take-profit resting")
            elif primary.status == OrderStatus.FILLED.value:
                repo.set_intent_status(s, lin, row.intent_id, IntentStatus.CLOSED, f"exit filled at {primary.average_price}")
                continue
            elif primary.status == OrderStatus.SENT.value:
                repo.set_intent_status(s, lin, row.intent_id, IntentStatus.SENT,
                                       f"delivered to {primary.venue}, which reports nothing back: not monitored")
                continue
            elif primary.status in (OrderStatus.CANCELLED.value, OrderStatus.REJECTED.value):
                why = rt._venue_reasons.get(primary.client_order_id)
                repo.set_intent_status(s, lin, row.intent_id, IntentStatus.CANCELLED,
                                       f"venue {primary.status.lower()} the {primary.role}" + (f" ({why})" if why else ""))
                continue
            else:
                continue
        fill = s.execute(select(FillRow).where(FillRow.client_order_id == primary.client_order_id)
                         .order_by(FillRow.time)).scalars().first()
        if fill is None:
            continue
        pos = s.execute(select(PositionRow).where(PositionRow.strategy == rt.spec.name, PositionRow.book == rt.book,
                                                  PositionRow.instrument == row.instrument, PositionRow.opened_at == fill.time)
                        ).scalars().first()
        if pos is not None and pos.status == "closed":
            how = (f"closed by its {pos.exit_reason} at {pos.exit_price}" if pos.exit_price is not None
                   else f"closed at the venue ({pos.exit_reason}), no closing fill reported")
            repo.set_intent_status(s, lin, row.intent_id, IntentStatus.CLOSED,
                                   f"position {how}: realized P&L {pos.realized_pnl:+.2f} (quote currency, before fees)")


def _execute(s, rt: Runtime, lin: repo.Lineage, intent: TradeIntent) -> None:
    row = s.get(IntentRow, intent.intent_id)
    if row is None:
        raise KeyError(f"intent {intent.intent_id} was never planned")
    stored = repo.intent_from_row(row)
    if stored.status is not IntentStatus.VALIDATED:
        return
    ok, why = sane_to_send(stored, _stored_guards(s, stored.intent_id))
    if not ok:
        repo.set_intent_status(s, lin, stored.intent_id, IntentStatus.FAILED, f"not sent: {why}")
    elif _recheck(s, rt, lin, stored):
        if rt.spec.execution.confirm == "manual":
            repo.set_intent_status(s, lin, stored.intent_id, IntentStatus.AWAITING_CONFIRMATION,
                                   "execution.confirm is manual: `trading-pipelines confirm " + stored.intent_id + "`")
        else:
            _send(s, rt, lin, stored, placed_at=stored.window_end)


def _orders_of(s, intent_id_: str) -> list[dict]:
    orders = s.execute(select(OrderRow).where(OrderRow.intent_id == intent_id_).order_by(OrderRow.client_order_id)).scalars().all()
    return [{"client_order_id": o.client_order_id, "role": o.role, "side": o.side, "type": o.type, "quantity": o.quantity,
             "price": o.price, "trigger_price": o.trigger_price, "status": o.status} for o in orders]


def _finish(s, rt: Runtime, lin: repo.Lineage, intent: TradeIntent) -> tuple[TradeIntent, list[dict]]:
    _reconcile(s, rt, lin)
    row = s.get(IntentRow, intent.intent_id)
    final = IntentStatus(row.status) if row else intent.status
    return intent.model_copy(update={"status": final}), _orders_of(s, intent.intent_id)


def _recheck(s, rt: Runtime, lin: repo.Lineage, intent: TradeIntent, check_fresh: bool = True) -> bool:
    """Re-run the guards that time and other instruments' runs can invalidate; on a failure the
    intent is CANCELLED with the reason and nothing is sent. Call with the book lock held.
    ``check_fresh`` False: the caller has its own staleness rule (manual confirmation's expiry)."""
    acct = account_view(s, rt, intent.window_end)
    recheck = [guard_fresh_window(intent, acct)] if check_fresh else []
    if intent.kind is IntentKind.ENTRY:
        recheck += [guard_duplicate_position(intent, acct, rt.limits), guard_position_limit(intent, acct, rt.limits),
                    guard_balance(intent, acct, rt.limits, rt.instrument(intent.instrument).tick_size)]
    else:
        recheck.append(guard_position_exists(intent, acct))
    failed = [g for g in recheck if not g.passed]
    if not failed:
        return True
    repo.record_guards(s, lin, intent.intent_id, [g.model_copy(update={"guard": f"pre_submit_{g.guard}"}) for g in recheck])
    reason = "; ".join(f"pre-submit {g.guard}: {g.message}" for g in failed)
    repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.CANCELLED, reason)
    return False


def order_requests(intent: TradeIntent, max_entry_slippage_pct: float | None = None,
                   tick_size: float | None = None) -> list[OrderRequest]:
    """The bracket of an entry intent: a protective-limit entry (a LIMIT priced at
    :func:`~trading_pipelines.domain.costs.protective_limit` of the planned entry, the last close,
    ``max_entry_slippage_pct`` percent beyond it on the ``tick_size`` grid; immediate-or-cancel at
    the next open: the paper venue expires it when the bar opens beyond the limit) plus a reduce-only
    stop-loss (stop-market) and take-profit (limit), one-cancels-other, live once the entry fills.
    ``max_entry_slippage_pct`` None: the planner's default (0.5 %). Raises ``ValueError`` for
    anything but an entry (an exit's size is the venue's position, see :func:`_send`)."""
    from trading_pipelines.domain.costs import DEFAULT_MAX_ENTRY_SLIPPAGE_PCT, protective_limit

    if intent.kind is not IntentKind.ENTRY:
        raise ValueError(f"intent {intent.intent_id} is not an entry")
    entry_cid = client_order_id(intent.intent_id, OrderRole.ENTRY)
    exit_side = intent.side.opposite
    slip = DEFAULT_MAX_ENTRY_SLIPPAGE_PCT if max_entry_slippage_pct is None else max_entry_slippage_pct
    limit = protective_limit(intent.side, intent.entry, slip, tick_size)
    return [
        OrderRequest(client_order_id=entry_cid, instrument=intent.instrument, side=intent.side, type=OrderType.LIMIT,
                     quantity=intent.quantity, price=limit, role=OrderRole.ENTRY),
        OrderRequest(client_order_id=client_order_id(intent.intent_id, OrderRole.STOP_LOSS), instrument=intent.instrument,
                     side=exit_side, type=OrderType.STOP, quantity=intent.quantity, trigger_price=intent.stop,
                     role=OrderRole.STOP_LOSS, reduce_only=True, parent_client_order_id=entry_cid, oco_group=entry_cid),
        OrderRequest(client_order_id=client_order_id(intent.intent_id, OrderRole.TAKE_PROFIT), instrument=intent.instrument,
                     side=exit_side, type=OrderType.LIMIT, quantity=intent.quantity, price=intent.take_profit,
                     role=OrderRole.TAKE_PROFIT, reduce_only=True, parent_client_order_id=entry_cid, oco_group=entry_cid),
    ]


def exit_request(s, rt: Runtime, intent: TradeIntent) -> tuple[OrderRequest, Position]:
    """The reduce-only market order that closes the whole position the book holds on the exit
    intent's instrument (:func:`book_positions`: what the venue reports), and that position.
    Raises ``ValueError`` when there is none."""
    pos = next((p for p in book_positions(s, rt) if p.instrument == intent.instrument), None)
    if pos is None:
        raise ValueError(f"no {intent.instrument} position to exit")
    return OrderRequest(client_order_id=client_order_id(intent.intent_id, OrderRole.EXIT), instrument=intent.instrument,
                        side=pos.side.exit_side, type=OrderType.MARKET, quantity=pos.quantity, role=OrderRole.EXIT,
                        reduce_only=True), pos


def _send(s, rt: Runtime, lin: repo.Lineage, intent: TradeIntent, placed_at: datetime) -> IntentStatus:
    """Send the intent's orders through the venue protocol (idempotent per client order id), then
    record them; or record DRY_RUN when a live venue is not acknowledged live. The venue commits
    before the ledger: after a crash in between, the re-run finds the orders by client order id."""
    ex = rt.spec.execution
    if not rt.venue.simulated:
        allowed, why = live_trading_allowed(rt.spec.name, ex.dry_run, ex.live_ack)
        if not allowed:
            repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.DRY_RUN, why)
            return IntentStatus.DRY_RUN
    venue, paper = rt.venue, rt.spec.venue
    with venue.unit_of_work():
        if intent.kind is IntentKind.ENTRY:
            # one cost model (domain.costs): the limit the planner sized on, the reserve the balance guard asked for
            slip, tick = rt.limits.max_entry_slippage_pct, rt.instrument(intent.instrument).tick_size
            reserve = entry_reserve(intent.quantity, intent.entry, intent.leverage, intent.mode.value == "futures",
                                    getattr(paper, "fee_rate", 0.0), side=intent.side, max_entry_slippage_pct=slip,
                                    tick_size=tick)
            # one call for the bracket: venues with a native one (IBKR bracketOrder, Binance spot OCO,
            # a webhook's single POST) place it whole; each leg stays idempotent on its client order id
            orders = venue.create_bracket(*order_requests(intent, slip, tick), placed_at=placed_at,
                                          position_side=intent.position_side.value, leverage=intent.leverage,
                                          reserve=reserve, margin_mode=intent.margin_mode)
        else:
            req, pos = exit_request(s, rt, intent)
            orders = [venue.create_order(req, placed_at=placed_at, position_side=pos.side.value, leverage=pos.leverage)]
    repo.record_orders(s, lin, intent.intent_id, rt.spec.mode.value, venue.name, orders)
    repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.SUBMITTED,
                           f"{len(orders)} orders sent to {venue.name}: " + ", ".join(o.client_order_id for o in orders))
    return IntentStatus.SUBMITTED


def _snapshot(s, rt: Runtime, lin: repo.Lineage, window_end: datetime, late: datetime | None,
              after_last: bool = False) -> tuple[PortfolioSnapshot, bool]:
    """``after_last``: the book has recorded no window at or after this one (no stored snapshot to read)."""
    stored = None if after_last else repo.stored_snapshot(s, lin)
    if stored is not None:
        return stored, True
    if late is None:
        snap = snapshot_now(rt, window_end)
        repo.record_snapshot(s, lin, rt.spec.mode.value, snap, new=after_last)
        repo.book_progress(s, rt.spec.name, rt.book, window_end)
        return snap, True
    repo.audit(s, lin, "snapshot_not_point_in_time", window_end=window_end.isoformat(), account_clock=late.isoformat())
    return snapshot_now(rt, late), False


@dataclass
class WindowOutcome:
    """What one window did to a book: per instrument the intent (with guards and orders), and the snapshot."""

    window_end: datetime
    intents: dict[str, TradeIntent]
    guards: dict[str, tuple[GuardResult, ...]]
    orders: dict[str, list[dict]]
    snapshot: PortfolioSnapshot
    point_in_time: bool
    events: list[VenueEvent]


def account_window(rt: Runtime, window_end: datetime, signals: dict[str, Signal], markets: dict[str, MarketContext | None],
                   partition_key: str, run_id: str) -> WindowOutcome:
    """PLAN → VALIDATE → EXECUTE → SNAPSHOT for one window of the book, every instrument of
    ``signals`` in one ledger transaction under the book's lock (the venue in one unit of work,
    committed first). Instruments are planned in name order; each later one sees the funds and
    positions the earlier ones took. A window the venue has already passed plans no trade."""
    lin0 = rt.lineage("*", partition_key, run_id)
    with _step(rt) as s:
        book = s.get(BookRow, (rt.book, rt.spec.name))
        after_last = book.last_done is None or window_end > book.last_done
        late = _late(s, rt, window_end, lin0)
        intents, guards, orders = {}, {}, {}
        for inst in sorted(signals):
            lin = rt.lineage(inst, partition_key, run_id)
            intent = _plan(s, rt, lin, signals[inst], markets.get(inst), late)
            if _adopt(s, rt, lin, intent):
                intent, g = repo.intent_from_row(s.get(IntentRow, intent.intent_id)), _stored_guards(s, intent.intent_id)
            else:
                intent, g = _validate(s, rt, lin, intent)
                _execute(s, rt, lin, intent)
            intents[inst], guards[inst] = intent, g
        _reconcile(s, rt, lin0)
        for inst, intent in intents.items():
            row = s.get(IntentRow, intent.intent_id)
            intents[inst] = intent.model_copy(update={"status": IntentStatus(row.status), "reason": row.reason})
            orders[inst] = _orders_of(s, intent.intent_id) if intent.kind is not IntentKind.NONE else []
        snap, pit = _snapshot(s, rt, lin0, window_end, late, after_last)
    return WindowOutcome(window_end, intents, guards, orders, snap, pit, [])


# ---- per-step API (one transaction each; the CLI's confirm/cancel, the monitor, tests)


@contextmanager
def _step(rt: Runtime):
    """A ledger transaction holding the book's lock (its row stays in the session: ``s.get(BookRow,
    …)`` reads it without a query), with the venue in one unit of work, committed first."""
    with session_scope(rt.engine) as s:
        repo.lock_book(s, rt.spec.name, rt.book)
        with rt.venue.unit_of_work():
            yield s


def plan(rt: Runtime, lin: repo.Lineage, signal: Signal, frame: pd.DataFrame) -> TradeIntent:
    """PLAN one instrument's signal (see :func:`account_window`)."""
    last = frame.iloc[-1]
    low, high = swing_levels(frame, min(rt.spec.template.stop.swing_lookback, len(frame)))
    market = MarketContext(last_close=float(last["close"]), atr=float(last["atr"]) if not pd.isna(last["atr"]) else math.nan,
                           swing_low=low, swing_high=high)
    with _step(rt) as s:
        return _plan(s, rt, lin, signal, market, _late(s, rt, signal.window_end, lin))


def validate(rt: Runtime, lin: repo.Lineage, intent: TradeIntent) -> tuple[TradeIntent, tuple[GuardResult, ...]]:
    with _step(rt) as s:
        row = s.get(IntentRow, intent.intent_id)
        if row is not None and row.status == IntentStatus.PENDING.value:
            _late(s, rt, intent.window_end, lin)
        return _validate(s, rt, lin, intent)


def execute(rt: Runtime, lin: repo.Lineage, intent: TradeIntent) -> tuple[TradeIntent, list[dict]]:
    """EXECUTE the stored VALIDATED intent, once (the ledger row, not the caller's copy, is sent)."""
    with _step(rt) as s:
        row = s.get(IntentRow, intent.intent_id)
        if row is None:
            raise KeyError(f"intent {intent.intent_id} was never planned")
        stored = repo.intent_from_row(row)
        if stored.status is IntentStatus.VALIDATED:
            _late(s, rt, stored.window_end, lin)
            _execute(s, rt, lin, stored)
        return _finish(s, rt, lin, stored)


def snapshot(rt: Runtime, lin: repo.Lineage, window_end: datetime) -> tuple[PortfolioSnapshot, bool]:
    """The book at the window end as the venue reports it, reconciled into the ledger. Returns
    (snapshot, point_in_time); a stored snapshot of the window is never overwritten."""
    with _step(rt) as s:
        late = _late(s, rt, window_end, lin)
        _reconcile(s, rt, lin)
        return _snapshot(s, rt, lin, window_end, late)


def _stored_intent(s, intent_id_: str) -> tuple[IntentRow, TradeIntent]:
    row = s.get(IntentRow, intent_id_)
    if row is None:
        raise KeyError(f"unknown intent {intent_id_!r}")
    return row, repo.intent_from_row(row)


def confirm(rt: Runtime, intent_id_: str, run_id: str = "cli") -> tuple[TradeIntent, list[dict]]:
    """Manually confirm an AWAITING_CONFIRMATION intent: re-check under the book lock, then send.
    A signal is good for one bar: once the venue has passed the bar after the window, the intent
    is CANCELLED as expired instead (fail closed). Raises ``ValueError`` for any other status."""
    with _step(rt) as s:
        row, intent = _stored_intent(s, intent_id_)
        lin = repo.Lineage(row.strategy, row.instrument, row.partition_key, run_id, row.book)
        if row.status != IntentStatus.AWAITING_CONFIRMATION.value:
            raise ValueError(f"intent {intent_id_} is {row.status}, not AWAITING_CONFIRMATION")
        _late(s, rt, intent.window_end, lin)
        clock = venue_clock(rt)
        expiry = intent.window_end + rt.spec.bar_duration
        if clock is not None and clock >= expiry:
            repo.set_intent_status(s, lin, intent_id_, IntentStatus.CANCELLED,
                                   f"expired: confirmed after the venue reached {clock.isoformat()} (valid until {expiry.isoformat()})")
        elif _recheck(s, rt, lin, intent, check_fresh=False):
            repo.audit(s, lin, "confirm", intent_id=intent_id_)
            _send(s, rt, lin, intent, placed_at=max(intent.window_end, clock) if clock else intent.window_end)
        return _finish(s, rt, lin, intent)


def cancel_resting(s, rt: Runtime, intent_id_: str) -> list[str]:
    """Cancel a SUBMITTED intent's resting entry or exit at the venue (its bracket legs go with
    it); the client order ids cancelled. Refused with ``ValueError`` when the venue reports the
    order traded, even in part (exit the position instead). Call under the book lock, after
    :func:`_reconcile`."""
    primary = [o for o in s.execute(select(OrderRow).where(OrderRow.intent_id == intent_id_)).scalars()
               if o.role in (OrderRole.ENTRY.value, OrderRole.EXIT.value)]
    at_venue = [rt.venue.fetch_order(o.client_order_id, instrument=o.instrument) for o in primary]
    filled = [v for v in at_venue if v is not None and (v.status is OrderStatus.FILLED or v.filled_quantity > 0)]
    if filled:
        raise ValueError(f"intent {intent_id_} already traded ({filled[0].request.role.value} "
                         f"{filled[0].client_order_id} filled at {filled[0].average_price}); exit the position instead")
    cancelled = []
    for o, v in zip(primary, at_venue):
        if v is not None and v.status is OrderStatus.NEW:
            rt.venue.cancel_order(o.client_order_id)
            cancelled.append(o.client_order_id)
    return cancelled


def cancel(rt: Runtime, intent_id_: str, run_id: str = "cli") -> tuple[TradeIntent, list[dict]]:
    """Cancel an intent that has not traded: a VALIDATED or AWAITING_CONFIRMATION intent is marked
    CANCELLED; a SUBMITTED one has its resting orders cancelled at the venue first. An intent whose
    entry already filled cannot be cancelled (exit the position instead): ``ValueError``."""
    # the venue is the source of truth: bring the ledger up to date first, committed even if the cancel is refused
    with _step(rt) as s:
        row, _ = _stored_intent(s, intent_id_)
        _reconcile(s, rt, repo.Lineage(row.strategy, row.instrument, row.partition_key, run_id, row.book))
    with _step(rt) as s:
        row, intent = _stored_intent(s, intent_id_)
        lin = repo.Lineage(row.strategy, row.instrument, row.partition_key, run_id, row.book)
        status = IntentStatus(row.status)
        if status is IntentStatus.SUBMITTED:
            cancel_resting(s, rt, intent_id_)
        elif status not in (IntentStatus.VALIDATED, IntentStatus.AWAITING_CONFIRMATION):
            raise ValueError(f"intent {intent_id_} is {status.value}: nothing to cancel")
        repo.set_intent_status(s, lin, intent_id_, IntentStatus.CANCELLED, f"cancelled by {run_id}")
        repo.audit(s, lin, "cancel", intent_id=intent_id_, previous_status=status.value)
        return _finish(s, rt, lin, intent)


def monitor(rt: Runtime, lin: repo.Lineage, as_of: datetime) -> list[VenueEvent]:
    """Advance the book's simulated venue to ``as_of`` (new bars: fills, stop and take-profit
    hits, liquidations), then reconcile the ledger. Returns the venue events, each audited."""
    with _step(rt) as s:
        events = rt.venue.advance(rt.instruments, as_of) if isinstance(rt.venue, SimulatedVenue) else []
        _audit_events(s, rt, lin, events)
        _reconcile(s, rt, lin)
    return events


def has_activity(rt: Runtime) -> bool:
    """Whether the book holds a position or a resting order."""
    with rt.venue.unit_of_work():
        return bool(rt.venue.fetch_positions() or rt.venue.fetch_open_orders())


__all__ = ["Analysis", "Runtime", "WindowOutcome", "account_window", "analyze", "cancel", "confirm", "execute",
           "has_activity", "indicator_frame", "live_trading_allowed", "make_chart", "make_paper_venue",
           "monitor", "plan", "replay_book_id", "snapshot", "validate", "venue_account"]
