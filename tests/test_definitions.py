"""The code location loads: every strategy's assets, jobs, schedule; the monitor sensor; resources."""

from __future__ import annotations

import dagster as dg

from trading_pipelines.config import load_strategies
from trading_pipelines.definitions import defs


def test_definitions_load():
    d = defs()
    repo = d.get_repository_def()
    specs = load_strategies()
    steps = ["symbol_universe", "ohlcv_bars", "indicator_frames", "chart_images", "signals", "trade_intents",
             "validated_intents", "orders", "portfolio_snapshots"]
    keys = set(repo.asset_graph.get_all_asset_keys())
    for name in specs:
        for step in steps:
            assert dg.AssetKey([name, step]) in keys
        assert d.resolve_job_def(f"review_{name}") is not None
        sched = d.resolve_schedule_def(f"review_{name}_schedule")
        assert sched.default_status == dg.DefaultScheduleStatus.STOPPED  # toggled per strategy in the UI
    assert d.resolve_schedule_def("review_spot_4h_majors_schedule").cron_schedule == "0 */4 * * *"
    assert d.resolve_sensor_def("position_monitor").minimum_interval_seconds == 300
    # lineage: signals depend on the chart and the indicator frame; orders on validated intents.
    graph = repo.asset_graph
    sig = dg.AssetKey(["spot_4h_majors", "signals"])
    assert graph.get(sig).parent_keys == {dg.AssetKey(["spot_4h_majors", "indicator_frames"]),
                                          dg.AssetKey(["spot_4h_majors", "chart_images"])}
    assert dg.AssetKey(["spot_4h_majors", "validated_intents"]) in graph.get(dg.AssetKey(["spot_4h_majors", "orders"])).parent_keys


def test_partitions_are_instrument_by_window():
    d = defs()
    pdef = d.resolve_job_def("review_spot_4h_majors").partitions_def
    assert isinstance(pdef, dg.MultiPartitionsDefinition)
    dims = {dim.name: dim.partitions_def for dim in pdef.partitions_defs}
    assert isinstance(dims["instrument"], dg.DynamicPartitionsDefinition)
    assert dims["instrument"].name == "spot_4h_majors__instruments"
    windows = dims["window"].get_partition_keys()
    assert windows[0] == "2025-06-01-00:00" and windows[-1] == "2026-03-03-20:00"
