"""One review schedule per strategy (stopped by default: each strategy is toggled in the UI).

A tick launches **one run** for the window that just closed, covering every instrument of the
strategy (analysis and account in the same run, the live book)."""


import dagster as dg

from trading_pipelines.assets.partitions import last_closed_window_key
from trading_pipelines.config import StrategySpec


def build_review_schedule(spec: StrategySpec, job) -> dg.ScheduleDefinition:
    @dg.schedule(name=f"review_{spec.name}_schedule", cron_schedule=spec.review_cron, job=job,
                 execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING if spec.schedule.default_running else dg.DefaultScheduleStatus.STOPPED,
                 description=f"Reviews every instrument of {spec.name} for the window that just closed ({spec.review_cron}, UTC): "
                             "one run, live book.")
    def _schedule(context: dg.ScheduleEvaluationContext):
        wkey = last_closed_window_key(spec, context.scheduled_execution_time)  # the last window whose bar has closed
        if wkey is None:
            return dg.SkipReason("no complete window yet")
        # run_key: each window runs at most once, however often the tick is evaluated
        return dg.RunRequest(run_key=wkey, partition_key=wkey,
                             tags={"strategy": spec.name, "trading/book": "live"})  # every instrument of the strategy

    return _schedule
