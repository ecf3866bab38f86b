"""One review schedule per strategy (stopped by default: each strategy is toggled in the UI)."""


import dagster as dg

from trading_pipelines.assets.partitions import INSTRUMENT_DIM, WINDOW_DIM, window_partitions
from trading_pipelines.config import StrategySpec


def build_review_schedule(spec: StrategySpec, job) -> dg.ScheduleDefinition:
    windows = window_partitions(spec)

    @dg.schedule(name=f"review_{spec.name}_schedule", cron_schedule=spec.review_cron, job=job,
                 execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING if spec.schedule.default_running else dg.DefaultScheduleStatus.STOPPED,
                 description=f"Reviews every instrument of {spec.name} for the window that just closed ({spec.review_cron}, UTC).")
    def _schedule(context: dg.ScheduleEvaluationContext):
        with dg.partition_loading_context(effective_dt=context.scheduled_execution_time):
            wkey = windows.get_last_partition_key()  # the last window that has fully closed
        if wkey is None:
            return dg.SkipReason("no complete window yet")
        # registered and still in the strategy file (a retired instrument keeps its partition, not its reviews)
        registered = set(context.instance.get_dynamic_partitions(spec.instruments_partitions_name))
        instruments = [i for i in spec.instruments if i in registered]
        if not instruments:
            return dg.SkipReason(f"no instruments registered: materialize {spec.name}/symbol_universe first")
        # run_key makes each instrument × window run at most once, however often the tick is evaluated.
        return [dg.RunRequest(run_key=f"{wkey}|{inst}", partition_key=dg.MultiPartitionKey({INSTRUMENT_DIM: inst, WINDOW_DIM: wkey}),
                              tags={"strategy": spec.name, "instrument": inst}) for inst in instruments]

    return _schedule
