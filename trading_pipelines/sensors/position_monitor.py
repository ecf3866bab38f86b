"""The position monitor: every 5 minutes, advance each strategy's venue over new bars (fills of
resting orders, stop-loss and take-profit hits), record what happened and reconcile the ledger.

"Now" per instrument: a live data source's newest closed bar; for replay data, the newest window
the strategy has reviewed on any instrument (replay time only moves with reviews, so the monitor
never looks past what the strategy has seen).
"""


from datetime import datetime, timezone

import dagster as dg
from sqlalchemy import select

from trading_pipelines.config import StrategySpec
from trading_pipelines.ledger.db import session_scope
from trading_pipelines.ledger.models import PaperClockRow
from trading_pipelines.ledger.repo import Lineage
from trading_pipelines.resources.dagster_resources import TradingResource
from trading_pipelines.resources.venues import instruments_with_activity
from trading_pipelines.services import monitor


def monitor_strategy(spec: StrategySpec, trading: TradingResource, run_id: str = "position_monitor") -> list:
    rt = trading.runtime(spec, signals=False)
    with session_scope(rt.engine) as s:
        active = list(instruments_with_activity(rt.venue, s))
        clocks = list(s.execute(select(PaperClockRow.as_of).where(PaperClockRow.account == rt.venue.account)).scalars())
    if not active:
        return []
    as_of: dict[str, datetime] = {}
    for inst in active:
        if spec.data.source == "replay":
            if clocks:
                as_of[inst] = max(clocks)
        else:
            end = rt.market.last_closed_bar_end(inst, spec.timeframe)
            if end is not None:
                as_of[inst] = min(end, datetime.now(timezone.utc))
    return monitor(rt, Lineage(spec.name, "*", "monitor", run_id), active, as_of)


def build_position_monitor(specs: list[StrategySpec]) -> dg.SensorDefinition:
    @dg.sensor(name="position_monitor", minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Checks open paper positions and resting orders of every strategy against new bars; records exits.")
    def position_monitor(context: dg.SensorEvaluationContext, trading: TradingResource):
        lines = []
        for spec in specs:
            try:
                events = monitor_strategy(spec, trading, run_id=f"sensor:{context.cursor or 'first'}")
            except Exception as e:  # one strategy's failure must not stop the others
                context.log.exception(f"{spec.name}: monitor failed: {e}")
                lines.append(f"{spec.name}: FAILED ({type(e).__name__}: {e})")
                continue
            lines.append(f"{spec.name}: {len(events)} venue events")
            for ev in events:
                context.log.info(f"{spec.name} {ev.instrument} {ev.role} filled {ev.quantity} @ {ev.price:.6g} ({ev.time.isoformat()})")
        context.update_cursor(datetime.now(timezone.utc).isoformat())
        return dg.SkipReason("; ".join(lines) or "no strategies")

    return position_monitor
