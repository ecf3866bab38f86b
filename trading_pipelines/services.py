"""The steps of one review, as plain functions over a :class:`Runtime` (no Dagster here).

Assets call these and attach metadata; the CLI, the sensor and the tests call the same code.
Each step that touches the venue or the ledger runs in one database transaction: it commits
whole or not at all. Steps are idempotent: re-running a window re-reads what an earlier run
decided (an intent is validated once, its orders are submitted once) instead of deciding again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import Engine, select

from trading_pipelines.config import StrategySpec
from trading_pipelines.domain.calendars import market_hours
from trading_pipelines.domain.guards import (
    RiskLimits,
    guard_balance,
    guard_duplicate_position,
    guard_fresh_window,
    guard_position_exists,
    guard_position_limit,
    run_guards,
)
from trading_pipelines.domain.ids import intent_id
from trading_pipelines.domain.indicators import compute_indicators, indicator_summary, swing_levels
from trading_pipelines.domain.models import (
    GuardResult,
    IntentKind,
    IntentStatus,
    OrderStatus,
    PortfolioSnapshot,
    Signal,
    TradeIntent,
)
from trading_pipelines.domain.planning import MarketContext, PlanParams, plan_intent
from trading_pipelines.ledger import repo
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.ledger.models import GuardResultRow, IntentRow, OrderRow
from trading_pipelines.resources.charts import ChartRef, ChartStore, chart_key, render_chart
from trading_pipelines.resources.market_data import MarketDataSource
from trading_pipelines.resources.signals import ProviderResult, SignalProvider, SignalRequest
from trading_pipelines.resources.venues import PaperVenue, instruments_with_activity, live_trading_allowed


@dataclass
class Runtime:
    """Everything a strategy's steps need, built once per run."""

    spec: StrategySpec
    engine: Engine
    market: MarketDataSource
    charts: ChartStore
    provider: SignalProvider | None
    venue: PaperVenue

    @property
    def limits(self) -> RiskLimits:
        r, f = self.spec.risk, self.spec.futures
        return RiskLimits(risk_per_trade_pct=r.risk_per_trade_pct, max_open_positions=r.max_open_positions,
                          max_daily_loss_pct=r.max_daily_loss_pct, max_leverage=f.max_leverage if f else 1.0,
                          fee_rate=getattr(self.spec.venue, "fee_rate", 0.0))

    @property
    def plan_params(self) -> PlanParams:
        t, r, f = self.spec.template, self.spec.risk, self.spec.futures
        return PlanParams(risk_per_trade_pct=r.risk_per_trade_pct, min_confidence=r.min_confidence,
                          stop_method=t.stop.method, atr_multiple=t.stop.atr_multiple, buffer_atr=t.stop.buffer_atr,
                          take_profit_r=t.take_profit_r, leverage=f.leverage if f else 1.0,
                          margin_mode=f.margin_mode if f else None)


def make_paper_venue(spec: StrategySpec, market: MarketDataSource) -> PaperVenue:
    v = spec.venue
    return PaperVenue(account=spec.name, mode=spec.mode, starting_cash=v.starting_cash, fee_rate=v.fee_rate,
                      slippage_bps=v.slippage_bps,
                      bars_fn=lambda inst, start, end: market.bars_between(inst, spec.timeframe, start, end),
                      bar_duration=spec.bar_duration,
                      tick_sizes={i: spec.instrument(i).tick_size for i in spec.instruments},
                      maintenance_margin_rates={i: spec.instrument(i).maintenance_margin_rate for i in spec.instruments})


# ---------------------------------------------------------------- market steps


def load_bars(rt: Runtime, instrument: str, window_end: datetime) -> pd.DataFrame:
    """Point-in-time bars: the last ``lookback_bars`` bars that closed at or before ``window_end``."""
    bars = rt.market.bars(instrument, rt.spec.timeframe, end=window_end, limit=rt.spec.template.lookback_bars)
    if bars.empty:
        raise ValueError(f"{rt.spec.name}/{instrument}: no bars closed at or before {window_end.isoformat()}")
    return bars


def indicator_frame(rt: Runtime, bars: pd.DataFrame) -> pd.DataFrame:
    return compute_indicators(bars, rt.spec.template.indicators)


def chart_overlays(rt: Runtime) -> list[str]:
    ind = rt.spec.template.indicators
    return [f"ema_{w}" for w in ind.ema] + [f"sma_{w}" for w in ind.sma] + ["bb_upper", "bb_lower"]


def make_chart(rt: Runtime, instrument: str, window_end: datetime, frame: pd.DataFrame) -> tuple[ChartRef, bytes]:
    png = render_chart(frame, title=f"{instrument} {rt.spec.timeframe} → {window_end:%Y-%m-%d %H:%M}Z",
                       overlays=chart_overlays(rt), bars=rt.spec.template.chart_bars)
    ref = rt.charts.put(chart_key(rt.spec.name, instrument, window_end), png)
    return ref, png


# ---------------------------------------------------------------- decision steps


def generate_signal(rt: Runtime, lin: repo.Lineage, window_end: datetime, frame: pd.DataFrame,
                    chart: ChartRef | None, png: bytes | None) -> ProviderResult:
    recent = [
        {"open_time": ts.isoformat(), "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
        for ts, r in frame.tail(20).iterrows()
    ]
    req = SignalRequest(strategy=rt.spec.name, instrument=lin.instrument, window_end=window_end, mode=rt.spec.mode,
                        timeframe=rt.spec.timeframe, summary=indicator_summary(frame), chart_png=png,
                        chart_key=chart.key if chart else None, recent_bars=recent)
    if rt.provider is None:
        raise RuntimeError("this runtime was built without a signal provider")
    result = rt.provider.generate(req)
    with session_scope(rt.engine) as s:
        repo.record_signal(s, lin, result.signal, prompt=result.prompt, request_json=result.request_json,
                           response_text=result.response_text, usage=result.usage or {}, latency_ms=result.latency_ms,
                           chart_key=chart.key if chart else None, chart_sha256=chart.sha256 if chart else None)
    return result


def _day_start(s, rt: Runtime, at: datetime) -> float | None:
    return repo.day_start_equity(s, rt.spec.name, at)


def _audit_events(s, rt: Runtime, lin: repo.Lineage, events) -> None:
    for ev in events:
        repo.audit(s, repo.Lineage(rt.spec.name, ev.instrument, lin.partition_key, lin.run_id), "venue_event",
                   kind=ev.kind, role=ev.role, client_order_id=ev.client_order_id, price=ev.price,
                   quantity=ev.quantity, time=ev.time.isoformat(), realized_pnl=ev.realized_pnl)


def _reconcile(s, rt: Runtime, lin: repo.Lineage) -> None:
    """Mirror the venue into the ledger, then move SUBMITTED intents whose orders the venue settled."""
    repo.reconcile(s, rt.spec.name, rt.spec.mode.value, rt.venue)
    _sync_intent_statuses(s, rt, lin)


def _late(s, rt: Runtime, window_end: datetime, lin: repo.Lineage) -> datetime | None:
    """Bring every instrument of the account (the strategy's, plus any retired one still holding a
    position or resting order) to ``window_end``, auditing what the venue did on the way; return
    the account's clock if it is already past the window (a late or out-of-order run), else None."""
    instruments = set(rt.spec.instruments) | set(instruments_with_activity(rt.venue, s))
    _audit_events(s, rt, lin, rt.venue.advance_account(s, instruments, window_end))
    clock = rt.venue.max_clock(s)
    return clock if clock is not None and clock > window_end else None


def plan(rt: Runtime, lin: repo.Lineage, signal: Signal, frame: pd.DataFrame) -> TradeIntent:
    """PLAN: technical stop, risk sizing on the account's equity as of the window end.

    Once an intent has left PENDING the ledger row is the decision: a re-run returns it unchanged
    (a new signal for the same window is audited, never traded). A run for a window the account
    has already moved past plans no trade: its equity and positions would not be point in time."""
    if lin.instrument not in rt.spec.instruments:
        raise ValueError(f"{rt.spec.name} does not trade {lin.instrument!r} (instruments: {list(rt.spec.instruments)})")
    with session_scope(rt.engine) as s:
        row = s.get(IntentRow, intent_id(rt.spec.name, lin.instrument, signal.window_end))
        if row is not None and row.status != IntentStatus.PENDING.value:
            repo.audit(s, lin, "replan_ignored", intent_id=row.intent_id, stored_status=row.status,
                       new_action=signal.action, new_confidence=signal.confidence)
            return repo.intent_from_row(row)
        late = _late(s, rt, signal.window_end, lin)
        if late is not None:
            intent = plan_intent(signal.model_copy(update={
                "no_trade_reason": f"late review: the account is at {late.isoformat()}, past the window end "
                                   f"{signal.window_end.isoformat()}; a past window plans no trade"}),
                rt.spec.instrument(lin.instrument), 0.0, MarketContext(math.nan, math.nan, math.nan, math.nan), rt.plan_params)
        else:
            equity = rt.venue.snapshot(s, signal.window_end).equity
            last = frame.iloc[-1]
            low, high = swing_levels(frame, rt.spec.template.stop.swing_lookback)
            atr = float(last["atr"]) if not pd.isna(last["atr"]) else math.nan
            ctx = MarketContext(last_close=float(last["close"]), atr=atr, swing_low=low, swing_high=high)
            intent = plan_intent(signal, rt.spec.instrument(lin.instrument), equity, ctx, rt.plan_params)
        repo.record_intent(s, lin, intent)
        return repo.intent_from_row(s.get(IntentRow, intent.intent_id))


def _stored_guards(s, intent_id: str) -> tuple[GuardResult, ...]:
    rows = s.execute(select(GuardResultRow).where(GuardResultRow.intent_id == intent_id).order_by(GuardResultRow.id)).scalars()
    return tuple(GuardResult(guard=r.guard, passed=r.passed, message=r.message) for r in rows)


def validate(rt: Runtime, lin: repo.Lineage, intent: TradeIntent) -> tuple[TradeIntent, tuple[GuardResult, ...]]:
    """VALIDATE the *stored* intent: every guard against the account as of the window end. An
    intent is validated once; a re-run returns the stored verdict and guard results."""
    with session_scope(rt.engine) as s:
        row = s.get(IntentRow, intent.intent_id)
        if row is None:
            raise KeyError(f"intent {intent.intent_id} was never planned")
        stored = repo.intent_from_row(row)
        if row.status != IntentStatus.PENDING.value:
            return stored, _stored_guards(s, stored.intent_id)
        _late(s, rt, stored.window_end, lin)
        acct = rt.venue.account_view(s, lin.instrument, _day_start(s, rt, stored.window_end))
        spec = rt.spec.instrument(lin.instrument)
        hours = market_hours(spec, stored.window_end, rt.spec.bar_duration)
        results = run_guards(stored, spec, acct, rt.limits, hours)
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
    """SUBMITTED intents become FILLED when the venue filled their entry/exit order (CANCELLED if cancelled)."""
    for row in s.execute(select(IntentRow).where(IntentRow.strategy == rt.spec.name,
                                                 IntentRow.status == IntentStatus.SUBMITTED.value)).scalars():
        primary = s.execute(select(OrderRow).where(OrderRow.intent_id == row.intent_id,
                                                   OrderRow.role.in_(("entry", "exit")))).scalars().first()
        if primary is None:
            continue
        if primary.status == OrderStatus.FILLED.value:
            repo.set_intent_status(s, lin, row.intent_id, IntentStatus.FILLED, f"{primary.role} filled at {primary.average_price}")
        elif primary.status in (OrderStatus.CANCELLED.value, OrderStatus.REJECTED.value):
            repo.set_intent_status(s, lin, row.intent_id, IntentStatus.CANCELLED, f"venue {primary.status.lower()} the {primary.role}")


def execute(rt: Runtime, lin: repo.Lineage, intent: TradeIntent) -> tuple[TradeIntent, list[dict]]:
    """EXECUTE the stored VALIDATED intent, once (the ledger row, not the caller's copy, is what
    is sent). Under the account lock: the send invariant, then the guards that time and other
    runs can invalidate (window freshness, position still there for exits, duplicate position,
    position limit, balance) are re-checked; a failure cancels the intent and sends nothing.
    Manual confirmation leaves the intent waiting; dry-run on a live venue records what it would
    send. Returns the intent and its ledger order rows."""
    with session_scope(rt.engine) as s:
        rt.venue.lock(s)
        row = s.get(IntentRow, intent.intent_id)
        if row is None:
            raise KeyError(f"intent {intent.intent_id} was never planned")
        stored = repo.intent_from_row(row)
        if stored.status is IntentStatus.VALIDATED:
            ok, why = sane_to_send(stored, _stored_guards(s, stored.intent_id))
            if not ok:
                repo.set_intent_status(s, lin, stored.intent_id, IntentStatus.FAILED, f"not sent: {why}")
            else:
                _late(s, rt, stored.window_end, lin)
                if _recheck_under_lock(s, rt, lin, stored):
                    if rt.spec.execution.confirm == "manual":
                        repo.set_intent_status(s, lin, stored.intent_id, IntentStatus.AWAITING_CONFIRMATION,
                                               "execution.confirm is manual: `trading-pipelines confirm " + stored.intent_id + "`")
                    else:
                        _send(s, rt, lin, stored, placed_at=stored.window_end)
        return _finish(s, rt, lin, stored)


def _finish(s, rt: Runtime, lin: repo.Lineage, intent: TradeIntent) -> tuple[TradeIntent, list[dict]]:
    _reconcile(s, rt, lin)
    orders = s.execute(select(OrderRow).where(OrderRow.intent_id == intent.intent_id)
                       .order_by(OrderRow.client_order_id)).scalars().all()
    row = s.get(IntentRow, intent.intent_id)
    final = IntentStatus(row.status) if row else intent.status
    return intent.model_copy(update={"status": final}), [
        {"client_order_id": o.client_order_id, "role": o.role, "side": o.side, "type": o.type, "quantity": o.quantity,
         "price": o.price, "trigger_price": o.trigger_price, "status": o.status} for o in orders]


def _recheck_under_lock(s, rt: Runtime, lin: repo.Lineage, intent: TradeIntent, check_fresh: bool = True) -> bool:
    """Re-run the guards that time and other instruments' runs can invalidate; on a failure the
    intent is CANCELLED with the reason and nothing is sent. Call with the account lock held.
    ``check_fresh`` False: the caller has its own staleness rule (manual confirmation's expiry)."""
    acct = rt.venue.account_view(s, lin.instrument, _day_start(s, rt, intent.window_end))
    recheck = [guard_fresh_window(intent, acct)] if check_fresh else []
    if intent.kind is IntentKind.ENTRY:
        recheck += [guard_duplicate_position(intent, acct, rt.limits), guard_position_limit(intent, acct, rt.limits),
                    guard_balance(intent, acct, rt.limits)]
    else:
        recheck.append(guard_position_exists(intent, acct))
    failed = [g for g in recheck if not g.passed]
    if not failed:
        return True
    repo.record_guards(s, lin, intent.intent_id, [g.model_copy(update={"guard": f"pre_submit_{g.guard}"}) for g in recheck])
    reason = "; ".join(f"pre-submit {g.guard}: {g.message}" for g in failed)
    repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.CANCELLED, reason)
    return False


def _send(s, rt: Runtime, lin: repo.Lineage, intent: TradeIntent, placed_at: datetime) -> IntentStatus:
    """Send the intent's orders, or record DRY_RUN when a live venue is not acknowledged live."""
    ex = rt.spec.execution
    if not rt.venue.simulated:
        allowed, why = live_trading_allowed(rt.spec.name, ex.dry_run, ex.live_ack)
        if not allowed:
            repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.DRY_RUN, why)
            return IntentStatus.DRY_RUN
    orders = rt.venue.submit(s, intent, placed_at=placed_at)
    repo.record_orders(s, lin, intent.intent_id, rt.spec.mode.value, rt.venue.name, orders)
    repo.set_intent_status(s, lin, intent.intent_id, IntentStatus.SUBMITTED,
                           f"{len(orders)} orders sent to {rt.venue.name}: " + ", ".join(o.client_order_id for o in orders))
    return IntentStatus.SUBMITTED


def _stored_intent(s, intent_id: str) -> tuple[IntentRow, TradeIntent]:
    row = s.get(IntentRow, intent_id)
    if row is None:
        raise KeyError(f"unknown intent {intent_id!r}")
    return row, repo.intent_from_row(row)


def confirm(rt: Runtime, intent_id: str, run_id: str = "cli") -> tuple[TradeIntent, list[dict]]:
    """Manually confirm an AWAITING_CONFIRMATION intent: re-check under the account lock, then send.
    A signal is good for one bar: once the venue has passed the bar after the window, the intent
    is CANCELLED as expired instead (fail closed). Raises ``ValueError`` for any other status."""
    with session_scope(rt.engine) as s:
        rt.venue.lock(s)
        row, intent = _stored_intent(s, intent_id)
        lin = repo.Lineage(row.strategy, row.instrument, row.partition_key, run_id)
        if row.status != IntentStatus.AWAITING_CONFIRMATION.value:
            raise ValueError(f"intent {intent_id} is {row.status}, not AWAITING_CONFIRMATION")
        _late(s, rt, intent.window_end, lin)
        clock = rt.venue.max_clock(s)
        expiry = intent.window_end + rt.spec.bar_duration
        if clock is not None and clock >= expiry:
            repo.set_intent_status(s, lin, intent_id, IntentStatus.CANCELLED,
                                   f"expired: confirmed after the venue reached {clock.isoformat()} (valid until {expiry.isoformat()})")
        elif _recheck_under_lock(s, rt, lin, intent, check_fresh=False):
            repo.audit(s, lin, "confirm", intent_id=intent_id)
            _send(s, rt, lin, intent, placed_at=max(intent.window_end, clock) if clock else intent.window_end)
        return _finish(s, rt, lin, intent)


def cancel(rt: Runtime, intent_id: str, run_id: str = "cli") -> tuple[TradeIntent, list[dict]]:
    """Cancel an intent that has not traded: a VALIDATED or AWAITING_CONFIRMATION intent is marked
    CANCELLED; a SUBMITTED one has its resting orders cancelled at the venue first. An intent whose
    entry already filled cannot be cancelled (exit the position instead): ``ValueError``."""
    with session_scope(rt.engine) as s:  # the venue is the source of truth: bring the ledger up to date first
        row, _ = _stored_intent(s, intent_id)
        _reconcile(s, rt, repo.Lineage(row.strategy, row.instrument, row.partition_key, run_id))
    with session_scope(rt.engine) as s:
        rt.venue.lock(s)
        row, intent = _stored_intent(s, intent_id)
        lin = repo.Lineage(row.strategy, row.instrument, row.partition_key, run_id)
        status = IntentStatus(row.status)
        if status is IntentStatus.SUBMITTED:
            primary = [o for o in s.execute(select(OrderRow).where(OrderRow.intent_id == intent_id)).scalars()
                       if o.role in ("entry", "exit")]
            at_venue = [rt.venue.get_order(s, o.client_order_id) for o in primary]
            if any(v is not None and v.status is OrderStatus.FILLED for v in at_venue):
                raise ValueError(f"intent {intent_id} already traded; exit the position instead")
            for o in primary:
                rt.venue.cancel(s, o.client_order_id)
        elif status not in (IntentStatus.VALIDATED, IntentStatus.AWAITING_CONFIRMATION):
            raise ValueError(f"intent {intent_id} is {row.status}: nothing to cancel")
        repo.set_intent_status(s, lin, intent_id, IntentStatus.CANCELLED, f"cancelled by {run_id}")
        repo.audit(s, lin, "cancel", intent_id=intent_id, previous_status=status.value)
        return _finish(s, rt, lin, intent)


def snapshot(rt: Runtime, lin: repo.Lineage, window_end: datetime) -> tuple[PortfolioSnapshot, bool]:
    """The strategy's account as the venue reports it at the window end, reconciled into the
    ledger. Returns (snapshot, point_in_time). When the account has already moved past the window
    (a late run) the venue's state is not that of the window: the stored snapshot of the window is
    returned if there is one, else the current state is returned unrecorded."""
    with session_scope(rt.engine) as s:
        late = _late(s, rt, window_end, lin)
        _reconcile(s, rt, lin)
        if late is None:
            snap = rt.venue.snapshot(s, window_end)
            repo.record_snapshot(s, lin, rt.spec.mode.value, snap)
            return snap, True
        stored = repo.stored_snapshot(s, lin)
        if stored is not None:
            return stored, True
        repo.audit(s, lin, "snapshot_not_point_in_time", window_end=window_end.isoformat(), account_clock=late.isoformat())
        return rt.venue.snapshot(s, late), False


def monitor(rt: Runtime, lin: repo.Lineage, instruments: list[str], as_of: dict[str, datetime]) -> list:
    """Advance the venue for each instrument to ``as_of[instrument]`` (new bars: fills, stop and
    take-profit hits), then reconcile the ledger. Returns the venue events, each audited."""
    events = []
    with session_scope(rt.engine) as s:
        for inst in instruments:
            if inst in as_of:
                events.extend(rt.venue.advance(s, inst, as_of[inst]))
        _audit_events(s, rt, lin, events)
        _reconcile(s, rt, lin)
    return events


__all__ = ["Runtime", "make_paper_venue", "load_bars", "indicator_frame", "make_chart", "generate_signal", "plan",
           "validate", "execute", "confirm", "cancel", "snapshot", "monitor"]
