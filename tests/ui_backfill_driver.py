"""Driver of tests/test_ui_backfill.py, run in its own process so that its ``PYTHONHASHSEED`` (the
webserver's, in ``dagster dev``) is the one the test chose.

``python tests/ui_backfill_driver.py ROOT FIRST=LAST [FIRST=LAST ...]`` (window keys, inclusive): one Dagster instance
under ROOT (the embedded SQLite storage, the synchronous in-memory run launcher), one workspace
(the code location loaded once, as one ``dagster dev`` process holds it), then for each range of
window keys the GraphQL request the UI's "Materialize all… → Launch backfill" sends
(``LaunchAssetChoosePartitionsDialog.tsx`` ``onLaunchAsBackfill``, target type ``job`` on the
hidden ``__ASSET_JOB``: ``assetSelection`` = the group's assets, ``partitionNames`` = the range's
keys, ``fromFailure: false``, the ``dagster/from_ui`` tag; the same as chromium sent from
``dagster dev`` on 2026-12-04, captured with Playwright), then the backfill daemon's own
iteration (``execute_backfill_iteration``) until the backfill leaves REQUESTED.

Prints one JSON object on its last line: ``children_of_indicator_frames`` (the order this process's
string hashing iterates that set in the webserver's asset graph) and one entry per launch: the
mutation's ``__typename`` and message, the backfill's status, and each run of the backfill with
its status and the asset keys it materialized.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPOT = "spot_4h_majors"
GROUP = ("symbol_universe", "ohlcv_bars", "indicator_frames", "chart_images", "signals", "trade_intents",
         "validated_intents", "orders", "portfolio_snapshots", "replay_report")

# the mutation document of ui-core's LaunchAssetChoosePartitionsDialog (LAUNCH_PARTITION_BACKFILL_MUTATION)
UI_MUTATION = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    ... on LaunchBackfillSuccess { backfillId launchedRunIds }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
    __typename
  }
}
"""


def ui_backfill_params(keys: list[str]) -> dict:
    """``backfillParams`` exactly as the UI builds them for the whole group and a custom range."""
    return {"tags": [{"key": "dagster/from_ui", "value": "true"}],
            "assetSelection": [{"path": [SPOT, step]} for step in sorted(GROUP)],  # the browser's order
            "partitionNames": keys, "fromFailure": False}


def main(root: Path, ranges: list[tuple[str, str]]) -> dict:
    os.environ["DAGSTER_HOME"] = str(root)
    os.environ["TRADING_LEDGER_URL"] = f"sqlite:///{root / 'ledger.sqlite'}"
    os.environ["TRADING_CHART_DIR"] = str(root / "charts")
    os.environ.pop("TRADING_VENUE_URL", None)
    import dagster as dg
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.storage.dagster_run import RunsFilter
    from dagster._core.storage.tags import BACKFILL_ID_TAG
    from dagster._core.test_utils import create_test_daemon_workspace_context, instance_for_test
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._daemon.backfill import execute_backfill_iteration
    from dagster_graphql.test.utils import execute_dagster_graphql

    from trading_pipelines.assets.partitions import window_partitions
    from trading_pipelines.config import load_strategies

    all_keys = window_partitions(load_strategies()[SPOT]).get_partition_keys()
    overrides = {"run_launcher": {"module": "dagster._core.launcher.sync_in_memory_run_launcher",
                                  "class": "SyncInMemoryRunLauncher"},
                 "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}}
    log = logging.getLogger("ui_backfill_driver")
    out: dict = {"launches": []}
    with instance_for_test(overrides=overrides, temp_dir=str(root)) as instance:
        target = ModuleTarget(module_name="trading_pipelines.definitions", attribute="defs",
                              working_directory=str(REPO), location_name="trading_pipelines")
        with create_test_daemon_workspace_context(target, instance) as wpc:
            graph = wpc.create_request_context().asset_graph
            out["children_of_indicator_frames"] = [
                k.path[-1] for k in graph.get(dg.AssetKey([SPOT, "indicator_frames"])).child_keys]
            for first, last in ranges:
                keys = all_keys[all_keys.index(first): all_keys.index(last) + 1]
                res = execute_dagster_graphql(wpc.create_request_context(), UI_MUTATION,
                                              variables={"backfillParams": ui_backfill_params(keys)})
                launched = res.data["launchPartitionBackfill"]
                entry = {"range": [first, last], "windows": len(keys), "typename": launched["__typename"],
                         "message": launched.get("message")}
                out["launches"].append(entry)
                if launched["__typename"] != "LaunchBackfillSuccess":
                    continue
                backfill_id = launched["backfillId"]
                deadline = time.monotonic() + 900
                while instance.get_backfill(backfill_id).status is BulkActionStatus.REQUESTED:
                    if time.monotonic() > deadline:
                        break
                    list(execute_backfill_iteration(wpc, log))
                entry["status"] = instance.get_backfill(backfill_id).status.value
                runs = instance.get_runs(RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))
                entry["runs"] = [{"status": r.status.value,
                                  "assets": sorted(k.path[-1] for k in (r.asset_selection or ())),
                                  "range": [r.tags.get("dagster/asset_partition_range_start"),
                                            r.tags.get("dagster/asset_partition_range_end")]} for r in runs]
    return out


if __name__ == "__main__":
    root_dir = Path(sys.argv[1])
    root_dir.mkdir(parents=True, exist_ok=True)
    result = main(root_dir, [tuple(a.split("=")) for a in sys.argv[2:]])
    print(json.dumps(result))
