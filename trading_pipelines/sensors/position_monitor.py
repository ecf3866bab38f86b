"""The position monitor: every 5 minutes, advance each strategy's venue over new bars (fills of
resting orders, stop-loss and take-profit hits), record what happened and run the execution engine
over every open intent (legs synced by client order id, the protection invariant kept, orphaned
reduce-only legs cancelled). A position left without its stop (``execution.protection: flag``)
fails the run, so it pages.

"Now": a live data source's newest closed bar; for replay data, the live book's venue clock
(replay time only moves with reviews, so the monitor never looks past what the strategy has seen).
Replay books are never monitored: they are finished simulations.
"""


from datetime import datetime, timezone

import dagster as dg

from trading_pipelines.config import StrategySpec
from trading_pipelines.ledger.repo import Lineage
from trading_pipelines.resources.dagster_resources import TradingResource
from trading_pipelines.account.checks import unprotected_positions
from trading_pipelines.account.window import has_activity, monitor
from trading_pipelines.runtime import venue_clock


def monitor_strategy(spec: StrategySpec, trading: TradingResource, run_id: str = "position_monitor") -> list:
    """Advance the strategy's live book to "now" and reconcile the ledger; the venue events."""
    rt = trading.runtime(spec, signals=False)
    if not has_activity(rt):
        return []
    if spec.data.source == "replay":
        as_of = venue_clock(rt)
    else:
        ends = [e for e in (rt.market.last_closed_bar_end(i, spec.timeframe) for i in spec.instruments) if e is not None]
        as_of = min(max(ends), datetime.now(timezone.utc)) if ends else None
    if as_of is None:
        return []
    return monitor(rt, Lineage(spec.name, "*", "monitor", run_id), as_of)


def active_strategies(specs: list[StrategySpec], trading: TradingResource) -> list[str]:
    """Strategies whose live book holds an open position or a resting order (the venue's state only)."""
    return [spec.name for spec in specs if has_activity(trading.runtime(spec, signals=False))]


class MonitorConfig(dg.Config):
    strategies: list[str]


def build_position_monitor(specs: list[StrategySpec]) -> tuple[dg.JobDefinition, dg.SensorDefinition]:
    """The monitor as a job (a run per check: logged, retried, bounded by the ``venue`` pool) and a
    sensor that launches it every 5 minutes while any strategy has something to watch."""
    by_name = {s.name: s for s in specs}

    @dg.op(pool="venue", retry_policy=dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL,
                                                      jitter=dg.Jitter.PLUS_MINUS),
           description="Advance each strategy's venue over new bars and reconcile the ledger.")
    def monitor_positions(context: dg.OpExecutionContext, config: MonitorConfig, trading: TradingResource) -> dict:
        summary, failed = {}, []
        for name in config.strategies:
            try:
                events = monitor_strategy(by_name[name], trading, run_id=context.run.run_id)
            except Exception as e:  # one strategy's failure must not stop the others
                context.log.exception(f"{name}: monitor failed: {e}")
                failed.append(name)
                continue
            summary[name] = len(events)
            for ev in events:
                context.log.info(f"{name} {ev.instrument} {ev.kind} {ev.role} {ev.quantity} @ {ev.price:.6g} ({ev.time.isoformat()})")
            # the engine flattens what it cannot protect; with `protection: flag` it pages instead: here
            for u in unprotected_positions(trading.runtime(by_name[name], signals=False)):
                context.log.error(f"{name}: UNPROTECTED {u.why} (intent {u.intent_id})")
                failed.append(f"{name} ({u.instrument} unprotected)")
        if failed:
            raise dg.Failure(f"monitor failed for {failed} (the others completed: {summary})")
        return summary

    @dg.job(name="position_monitor_job", tags={"purpose": "position_monitor"})
    def position_monitor_job():
        monitor_positions()

    @dg.sensor(name="position_monitor", job=position_monitor_job, minimum_interval_seconds=300,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Every 5 minutes, while a strategy holds a position or a resting order, launches "
                           "position_monitor_job: fills, stop-loss and take-profit hits, exits.")
    def position_monitor(context: dg.SensorEvaluationContext, trading: TradingResource):
        active = active_strategies(specs, trading)
        if not active:
            return dg.SkipReason("no open positions or resting orders")
        tick = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M")
        return dg.RunRequest(run_key=f"monitor:{tick}", tags={"strategies": ",".join(active)},
                             run_config={"ops": {"monitor_positions": {"config": {"strategies": active}}}})

    return position_monitor_job, position_monitor
