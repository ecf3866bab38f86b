"""The code location loads: every strategy's assets, job, schedule; the monitor sensor; resources.
The shape of a strategy (see trading_pipelines/assets/review.py): time-window partitions only, an
analysis multi-asset and an account multi-asset whose snapshot depends on its own previous window."""

from __future__ import annotations

import dagster as dg
import yaml

from trading_pipelines.config import STRATEGIES_DIR, load_strategies, parse_strategy
from trading_pipelines.definitions import defs

SHIPPED = ("spot_4h_majors", "futures_1h_btc_eth", "equities_1d_spy_aapl")
STEPS = ["ohlcv_bars", "indicator_frames", "chart_images", "signals", "trade_intents", "validated_intents", "orders",
         "portfolio_snapshots"]
ANALYSIS = ["ohlcv_bars", "indicator_frames", "chart_images", "signals"]
ACCOUNT = ["trade_intents", "validated_intents", "orders", "portfolio_snapshots"]


def test_definitions_load():
    d = defs()
    repo = d.get_repository_def()
    specs = load_strategies()
    assert set(SHIPPED) <= set(specs)  # plus any user strategies from TRADING_STRATEGIES_PATH
    keys = set(repo.asset_graph.get_all_asset_keys())
    jobs = {j.name for j in repo.get_all_jobs()}
    for name in specs:
        for step in ["symbol_universe", *STEPS, "replay_report"]:
            assert dg.AssetKey([name, step]) in keys
        job = d.resolve_job_def(f"review_{name}")
        # one job per strategy: analysis and account, in process, over the strategy's windows
        assert {k.path[1] for k in job.asset_layer.selected_asset_keys} == set(STEPS)
        assert job.executor_def.name == "in_process"
        assert f"universe_{name}" not in jobs  # no per-strategy universe job any more
        sched = d.resolve_schedule_def(f"review_{name}_schedule")
        assert sched.job_name == f"review_{name}"
        assert sched.default_status == dg.DefaultScheduleStatus.STOPPED  # toggled per strategy in the UI
        # the two multi-assets, each one step
        for steps, op in ((ANALYSIS, f"{name}__analysis"), (ACCOUNT, f"{name}__account")):
            for step in steps:
                assert repo.assets_defs_by_key[dg.AssetKey([name, step])].node_def.name == op
    assert d.resolve_schedule_def("review_spot_4h_majors_schedule").cron_schedule == "0 */4 * * *"
    assert d.resolve_sensor_def("position_monitor").minimum_interval_seconds == 300
    assert d.resolve_job_def("position_monitor_job") is not None
    # lineage: signals depend on the chart and the indicator frame; orders on validated intents.
    graph = repo.asset_graph
    sig = dg.AssetKey(["spot_4h_majors", "signals"])
    assert graph.get(sig).parent_keys == {dg.AssetKey(["spot_4h_majors", "indicator_frames"]),
                                          dg.AssetKey(["spot_4h_majors", "chart_images"])}
    assert dg.AssetKey(["spot_4h_majors", "validated_intents"]) in graph.get(dg.AssetKey(["spot_4h_majors", "orders"])).parent_keys
    assert graph.get(dg.AssetKey(["spot_4h_majors", "trade_intents"])).parent_keys == {sig}


def test_account_snapshot_depends_on_its_own_previous_window():
    d = defs()
    graph = d.get_repository_def().asset_graph
    for name in load_strategies():
        ps = dg.AssetKey([name, "portfolio_snapshots"])
        assert graph.get(ps).parent_keys == {ps, dg.AssetKey([name, "orders"])}
        mapping = graph.get_partition_mapping(ps, ps)
        assert isinstance(mapping, dg.TimeWindowPartitionMapping)
        assert (mapping.start_offset, mapping.end_offset) == (-1, -1)
        # and the mapping really points one window back
        pdef = graph.get(ps).partitions_def
        w = "2026-02-27-04:00" if name == "spot_4h_majors" else pdef.get_partition_keys()[5]
        up = mapping.get_upstream_mapped_partitions_result_for_partitions(
            pdef.subset_with_partition_keys([w]), pdef, pdef).partitions_subset.get_partition_keys()
        keys = pdef.get_partition_keys()
        assert list(up) == [keys[keys.index(w) - 1]]


def test_partitions_are_windows_only():
    d = defs()
    repo = d.get_repository_def()
    graph = repo.asset_graph
    pdef = d.resolve_job_def("review_spot_4h_majors").partitions_def
    assert isinstance(pdef, dg.TimeWindowPartitionsDefinition)
    assert not isinstance(pdef, dg.MultiPartitionsDefinition)
    windows = pdef.get_partition_keys()
    assert windows[0] == "2025-06-01-00:00" and windows[-1] == "2026-03-03-20:00"
    for name in load_strategies():
        job_pdef = d.resolve_job_def(f"review_{name}").partitions_def
        for step in ["symbol_universe", *STEPS, "replay_report"]:  # one backfill of the group = one run
            node = graph.get(dg.AssetKey([name, step]))
            assert isinstance(node.partitions_def, dg.TimeWindowPartitionsDefinition)
            assert node.partitions_def == job_pdef  # one partitions definition per strategy
            assert node.backfill_policy == dg.BackfillPolicy.single_run()
    for key in graph.get_all_asset_keys():
        p = graph.get(key).partitions_def
        assert not isinstance(p, (dg.MultiPartitionsDefinition, dg.DynamicPartitionsDefinition))


def test_checks_of_the_two_steps():
    repo = defs().get_repository_def()
    an = repo.assets_defs_by_key[dg.AssetKey(["spot_4h_majors", "signals"])]
    ac = repo.assets_defs_by_key[dg.AssetKey(["spot_4h_majors", "portfolio_snapshots"])]
    assert {(c.asset_key.path[1], c.name) for c in an.check_keys} == {("signals", "signal_usable")}
    assert {(c.asset_key.path[1], c.name) for c in ac.check_keys} == {
        ("trade_intents", "reviewed_in_time"), ("validated_intents", "no_order_from_invalid_intent"),
        ("orders", "positions_protected")}
    blocking = {s.name: s.blocking for s in ac.check_specs}
    assert blocking["no_order_from_invalid_intent"] is True and blocking["positions_protected"] is True


def test_pools_rules_analysis_has_no_llm_pool_openai_has():
    from trading_pipelines.components import build_strategy_defs

    repo = defs().get_repository_def()
    specs = load_strategies()
    for name in SHIPPED:
        spec = specs[name]
        assert spec.template.signal_provider.kind == "rules"
        analysis = repo.assets_defs_by_key[dg.AssetKey([name, "signals"])]
        assert analysis.op.pool is None
        assert repo.assets_defs_by_key[dg.AssetKey([name, "orders"])].op.pool == "venue"
    attrs = yaml.safe_load((STRATEGIES_DIR / "spot_4h_majors" / "defs.yaml").read_text())["attributes"]
    attrs["name"] = "spot_4h_llm"
    attrs["template"]["signal_provider"] = {"kind": "openai", "model": "gpt-4o-mini"}
    from trading_pipelines.resources.dagster_resources import default_resources

    llm = dg.Definitions.merge(build_strategy_defs(parse_strategy(attrs)), dg.Definitions(resources=default_resources()))
    llm_repo = llm.get_repository_def()
    assert llm_repo.assets_defs_by_key[dg.AssetKey(["spot_4h_llm", "signals"])].op.pool == "llm"
    assert llm_repo.assets_defs_by_key[dg.AssetKey(["spot_4h_llm", "orders"])].op.pool == "venue"
