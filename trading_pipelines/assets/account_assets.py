"""The account step's helpers: the account walked over a run's windows from the signals in the
ledger (:func:`replay_account`), its materializations and checks (:func:`account_results`), and
the replay report of a book (:func:`book_report`).

Market data that cannot be read (a bad CSV row: :class:`~trading_pipelines.stores.market_data.MarketDataError`)
stays in its instrument: the report lists it in ``failed_instruments`` with the reason (file and
line) and values nothing from it; the run goes on and finishes (see :func:`book_report`)."""


from datetime import datetime

import dagster as dg

from trading_pipelines import runtime
from trading_pipelines.account import window as account
from trading_pipelines.account.decide import sane_to_send
from trading_pipelines.assets.common import _TABLE_ROWS, _md_table
from trading_pipelines.assets.partitions import window_end, window_key
from trading_pipelines.config import StrategySpec
from trading_pipelines.domain.models import IntentKind, IntentStatus, Signal
from trading_pipelines.domain.planning import MarketContext
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.ledger.models import LIVE_BOOK, SignalRow
from trading_pipelines.resources.dagster_resources import TradingResource
from trading_pipelines.stores.market_data import MarketDataError
from trading_pipelines.venues.factory import venue_account

MARKET_DATA_EVENT = "market_data_unreadable"
"""The audit event :func:`replay_account` records when the book's venue cannot read an
instrument's bars (detail: ``reason``, ``window``, ``walk_stopped``); :func:`book_report` lists it."""


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
    called after every window.

    Fail closed on market data: the paper venue freezes an instrument whose bars it cannot read
    (a bad CSV row under a position or resting order: :mod:`trading_pipelines.venues.paper`) and the
    walk goes on for the others. Any other :class:`MarketDataError` out of a window (a venue that
    does not freeze), that window changes nothing (its transaction rolls back),
    the walk stops there (no later window can be valued without those bars) and the audit event
    :data:`MARKET_DATA_EVENT` names the instrument, the window and the reason;
    :func:`book_report` lists it in ``failed_instruments``. Returns the outcomes of the windows
    walked."""
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
        try:
            outcomes.append(account.account_window(rt, end, sigs, markets, w, run_id))
        except MarketDataError as e:
            _walk_stopped(rt, spec, book, instruments, outcomes, ends, n - 1, w, run_id, e, log)
            break
        for listener in (progress, *runtime.PROGRESS):
            if listener:
                listener(n, len(wkeys))
        if log and (n % 100 == 0 or n == len(wkeys)):
            log.info(f"account {book}: window {n}/{len(wkeys)} ({w}) equity {outcomes[-1].snapshot.equity:.2f}")
    return outcomes


def _walk_stopped(rt, spec: StrategySpec, book: str, instruments: list[str], outcomes, ends, i: int, w: str, run_id: str,
                  err: MarketDataError, log) -> None:
    """Audit the window ``w`` (index ``i``) whose venue advance failed on market data: which
    instrument's bars (from the last window walked to this one) cannot be read, and why."""
    start = ends[i - 1] if i else ends[i] - spec.bar_duration
    culprits = {}
    for inst in instruments:
        try:
            rt.market.bars_between(inst, spec.timeframe, start, ends[i])
        except MarketDataError as e:
            culprits[inst] = str(e)
    culprits = culprits or {"*": str(err)}  # a retired instrument still at the venue
    with session_scope(rt.engine) as s:
        for inst, reason in culprits.items():
            repo.audit(s, repo.Lineage(spec.name, inst, w, run_id, book), MARKET_DATA_EVENT, reason=reason, window=w,
                       walk_stopped=True, windows_walked=len(outcomes))
    if log:
        log.warning(f"account {book}: stopped at window {w} ({len(outcomes)} of {len(ends)} walked): market data of "
                    f"{', '.join(culprits)} cannot be read: {'; '.join(culprits.values())}")


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
    if outcomes:
        last = outcomes[-1].snapshot
        yield dg.MaterializeResult(asset_key=k["portfolio_snapshots"], metadata={
            "book": book, "as_of": last.as_of.isoformat(), "equity": last.equity, "cash": last.cash,
            "realized_pnl": last.realized_pnl, "unrealized_pnl": last.unrealized_pnl, "open_positions": len(last.positions),
            "point_in_time": all(o.point_in_time for o in outcomes),
            "positions": dg.MetadataValue.json([p.model_dump(mode="json") for p in last.positions])})
    else:  # the walk stopped at its first window (market data unreadable: see replay_account)
        yield dg.MaterializeResult(asset_key=k["portfolio_snapshots"], metadata={"book": book, "windows": 0})
    yield dg.AssetCheckResult(check_name="reviewed_in_time", asset_key=k["trade_intents"], passed=not late,
                              severity=dg.AssetCheckSeverity.WARN,
                              metadata={"late": len(late), "windows": dg.MetadataValue.md(
                                  _md_table(["window", "instrument", "reason"], [list(x) for x in late[:_TABLE_ROWS]]) if late else "none")})
    yield dg.AssetCheckResult(check_name="no_order_from_invalid_intent", asset_key=k["validated_intents"], passed=not insane,
                              metadata={"insane": len(insane), "detail": dg.MetadataValue.md(
                                  _md_table(["window", "instrument", "why"], [list(x) for x in insane]) if insane else "none")})


def run_elapsed_s(context=None) -> float | None:
    """Wall seconds since the current Dagster run started (its ``RUN_START`` event, from
    ``instance.get_run_stats``; else the run record's creation time), or None outside a run.
    ``context``: an op/asset execution context (default: the one executing, ``OpExecutionContext.get()``)."""
    import time

    try:
        context = context or dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:  # not inside a run
        return None
    if context is None:
        return None
    run_id, instance = context.run_id, context.instance
    started = instance.get_run_stats(run_id).start_time
    if started is None:
        record = instance.get_run_record_by_id(run_id)
        started = record.create_timestamp.timestamp() if record is not None else None
    return max(0.0, time.time() - started) if started is not None else None


def book_report(trading: TradingResource, spec: StrategySpec, book: str, instruments: list[str], ends: list[datetime],
                elapsed_s: float | None = None) -> dict:
    """The replay report (see :mod:`trading_pipelines.replay.report`) of ``book`` over ``ends``
    (window ends, UTC), plus ``failed_instruments``.

    ``failed_instruments``: a list of ``{"instrument", "reason"}`` (sorted by instrument), one per
    instrument whose market data cannot be read over the report's span (the bars from one bar
    before the first window end to one bar after the last: :class:`MarketDataError`, the reason
    naming the file and line) or whose bars the account walk could not read (the audit event
    :data:`MARKET_DATA_EVENT`; ``reason`` then says where the walk stopped), or that the paper
    venue froze (a ``venue_event`` audit of kind ``bars_unreadable``: ``reason`` names the window it
    froze at; the walk went on for the others). Nothing of a failed
    instrument is valued: no closes, so no hit-rate outcome and no buy-and-hold leg. Buy-and-hold
    runs from each instrument's first close at or after the first window end to its last close at
    or before the last window end (a window on an exchange holiday has no bar). Market-closed
    signals (an exchange holiday, no-trade reason starting with ``market closed``) are counted in
    ``market_closed``, not in the no-trades.

    ``elapsed_s``: wall seconds of the replay; default: since the Dagster run started
    (:func:`run_elapsed_s`), so a UI backfill's report has its real elapsed time and windows/s."""
    from sqlalchemy import select

    from trading_pipelines.ledger.models import AuditRow, FillRow, IntentRow, OrderRow, PositionRow, SnapshotRow
    from trading_pipelines.replay.report import (EquityPoint, SignalOutcome, Trade, build_report, intent_could_trade,
                                                 is_market_closed)

    if elapsed_s is None:
        elapsed_s = run_elapsed_s() or 0.0
    rt = trading.runtime(spec, signals=False, book=book)
    with session_scope(rt.engine) as s:
        snaps = s.execute(select(SnapshotRow).where(SnapshotRow.strategy == spec.name, SnapshotRow.book == book,
                                                    SnapshotRow.as_of >= min(ends), SnapshotRow.as_of <= max(ends))
                          .order_by(SnapshotRow.as_of)).scalars().all()
        points = [EquityPoint(r.as_of, r.equity) for r in snaps]
        # the stop planned at entry: the intent of the entry fill that opened the position (the R multiple's risk)
        entry_stop = {(f.instrument, f.time): stop for f, stop in s.execute(
            select(FillRow, IntentRow.stop).join(OrderRow, OrderRow.client_order_id == FillRow.client_order_id)
            .join(IntentRow, IntentRow.intent_id == OrderRow.intent_id)
            .where(FillRow.strategy == spec.name, FillRow.book == book, OrderRow.role == "entry")).all()}
        trades = [Trade(instrument=r.instrument, side=r.side, opened_at=r.opened_at, closed_at=r.closed_at,
                        entry_price=r.entry_price, exit_price=r.exit_price, quantity=r.quantity, realized_pnl=r.realized_pnl,
                        exit_reason=r.exit_reason, fees=r.fees or 0.0, stop=entry_stop.get((r.instrument, r.opened_at)))
                  for r in s.execute(select(PositionRow).where(PositionRow.strategy == spec.name, PositionRow.book == book)
                                     .order_by(PositionRow.opened_at)).scalars()]
        # which signals could trade on this book: an entry or exit intent the guards passed (intent_could_trade)
        could_trade: dict = {}
        for it in s.execute(select(IntentRow).where(IntentRow.strategy == spec.name, IntentRow.book == book,
                                                    IntentRow.window_end >= min(ends), IntentRow.window_end <= max(ends))).scalars():
            key = (it.instrument, it.window_end)
            could_trade[key] = could_trade.get(key, False) or intent_could_trade(it.kind, it.status)
        sig_rows = s.execute(select(SignalRow).where(SignalRow.strategy == spec.name, SignalRow.instrument.in_(instruments),
                                                     SignalRow.window_end >= min(ends), SignalRow.window_end <= max(ends))).scalars().all()
        walk = [(r.instrument, r.detail) for r in s.execute(
            select(AuditRow).where(AuditRow.strategy == spec.name, AuditRow.book == book, AuditRow.event == MARKET_DATA_EVENT)
            .order_by(AuditRow.id)).scalars()]
        # a paper instrument frozen by unreadable bars (venues.paper): the first window it froze at
        frozen: dict[str, tuple[str, str]] = {}
        for r in s.execute(select(AuditRow).where(AuditRow.strategy == spec.name, AuditRow.book == book,
                                                  AuditRow.event == "venue_event").order_by(AuditRow.id)).scalars():
            if (r.detail or {}).get("kind") == "bars_unreadable" and r.instrument not in frozen:
                frozen[r.instrument] = (r.partition_key, r.detail.get("reason") or "")
    failed: dict[str, str] = {}
    closes = {}
    for inst in instruments:
        try:
            bars = rt.market.bars_between(inst, spec.timeframe, min(ends) - spec.bar_duration, max(ends) + spec.bar_duration)
        except MarketDataError as e:  # fail closed: nothing of this instrument is valued
            failed[inst] = str(e)
            closes[inst] = {}
            continue
        closes[inst] = {(ts.to_pydatetime() + spec.bar_duration): float(c) for ts, c in zip(bars.index, bars["close"])}
    for inst, d in walk:
        stop = (f"the account walk stopped at window {d.get('window')} ({d.get('windows_walked')} windows walked): "
                if d.get("walk_stopped") else "")
        failed[inst] = f"{stop}{d.get('reason')}" if stop or inst not in failed else failed[inst]
    for inst, (w, reason) in frozen.items():
        failed[inst] = (f"frozen at window {w} (the paper venue cannot fill over its bars: its position and orders "
                        f"stay as they were, marked at the last readable bar; the other instruments go on): {reason}")
    counts: dict[str, int] = {}
    no_trade = market_closed = 0
    outcomes = []
    for r in sig_rows:
        if is_market_closed(r.no_trade_reason):
            market_closed += 1
        elif r.no_trade_reason:
            no_trade += 1
        else:
            counts[r.action] = counts.get(r.action, 0) + 1
        c = closes.get(r.instrument, {})
        outcomes.append(SignalOutcome(instrument=r.instrument, window_end=r.window_end,
                                      action="hold" if r.no_trade_reason else r.action,
                                      close_at_signal=c.get(r.window_end), next_close=c.get(r.window_end + spec.bar_duration),
                                      could_trade=could_trade.get((r.instrument, r.window_end), False)))
    # buy-and-hold from each instrument's first close in the span to its last (a first window on an
    # exchange holiday, 2016-01-01 for the shipped equities, has no bar of its own)
    span = {i: sorted(t for t in closes[i] if min(ends) <= t <= max(ends)) for i in instruments}
    first_close = {i: closes[i][ts[0]] for i, ts in span.items() if ts}
    last_close = {i: closes[i][ts[-1]] for i, ts in span.items() if ts}
    rep = build_report(strategy=spec.name, book=book, starting_cash=spec.venue.starting_cash, points=points, trades=trades,
                       outcomes=outcomes, first_close=first_close, last_close=last_close, signal_counts=counts,
                       no_trade=no_trade, elapsed_s=elapsed_s, market_closed=market_closed, closes=closes)
    rep["failed_instruments"] = [{"instrument": i, "reason": failed[i]} for i in sorted(failed)]
    return rep


def protection_check(k: dict, unprotected: list) -> dg.AssetCheckResult:
    """``positions_protected`` (blocking): the open positions of intents whose working stops do not
    cover the venue's quantity (:func:`trading_pipelines.account.checks.unprotected_positions`)."""
    return dg.AssetCheckResult(
        check_name="positions_protected", asset_key=k["orders"], passed=not unprotected,
        metadata={"unprotected": len(unprotected), "detail": dg.MetadataValue.md(
            _md_table(["intent", "instrument", "open", "stops cover", "why"],
                      [[u.intent_id, u.instrument, f"{u.quantity:g}", f"{u.stop_quantity:g}", u.why] for u in unprotected])
            if unprotected else "every open position has its stop")})

