"""``StrategyComponent``: one strategy YAML → its assets, job and schedule.

Each ``<name>/defs.yaml`` (shipped under ``trading_pipelines/defs/strategies``, or in a folder of
``TRADING_STRATEGIES_PATH``) declares ``type: trading_pipelines.components.StrategyComponent``
with the strategy under ``attributes`` (schema: :class:`trading_pipelines.config.StrategySpec`;
unknown fields are errors).

Dagster reads a ``defs.yaml`` with its own YAML loader, which keeps the last of two equal keys;
:meth:`StrategyComponent.load` therefore reads the file again through the project's loader
(:func:`~trading_pipelines.config.load_strategy_file`: duplicate keys, wrong types and unknown
fields refused, naming the file, the field and for a duplicate the line), and builds the strategy
from that reading: the UI and the CLI run the same spec from the same file.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import BaseModel

from trading_pipelines.assets.partitions import window_partitions
from trading_pipelines.assets.review import build_replay_job, build_review_assets
from trading_pipelines.config import StrategySpec, load_strategy_file
from trading_pipelines.schedules import build_review_schedule


def review_job_name(strategy: str) -> str:
    return f"review_{strategy}"


def replay_job_name(strategy: str) -> str:
    return f"replay_{strategy}"


class StrategyComponent(dg.Component):
    """A trading strategy: symbol universe, the analysis and account multi-assets, the replay
    report, a review job and one schedule (stopped until toggled on in the UI)."""

    def __init__(self, spec: StrategySpec):
        self.spec = spec

    @classmethod
    def get_model_cls(cls) -> type[BaseModel]:
        return StrategySpec

    @classmethod
    def load(cls, attributes: BaseModel | None, context: dg.ComponentLoadContext) -> "StrategyComponent":
        """The strategy of the component's ``defs.yaml`` as the project reads it (raises
        :class:`~trading_pipelines.config.StrategyConfigError` naming file, field and line);
        without a file (a component built from Python), the attributes Dagster validated."""
        path = component_file(context.path)
        if path is not None:
            return cls(load_strategy_file(path))
        if not isinstance(attributes, StrategySpec):
            attributes = StrategySpec.model_validate(attributes.model_dump() if attributes else {})
        return cls(attributes)

    def build_defs(self, context: dg.ComponentLoadContext | None = None) -> dg.Definitions:
        return build_strategy_defs(self.spec)


def component_file(path: Path) -> Path | None:
    """The YAML file of a component at ``path`` (Dagster's component location: the file itself,
    or its folder holding ``defs.yaml`` / ``defs.yml``), ``None`` when there is none."""
    path = Path(path)
    if path.is_file():
        return path
    return next((p for p in (path / "defs.yaml", path / "defs.yml") if p.is_file()), None)


def build_strategy_defs(spec: StrategySpec) -> dg.Definitions:
    assets, review_keys = build_review_assets(spec)
    # in process: analysis and account are two steps of one run; a subprocess per step costs ~1 s each
    review_job = dg.define_asset_job(
        review_job_name(spec.name), selection=dg.AssetSelection.assets(*review_keys),
        partitions_def=window_partitions(spec), executor_def=dg.in_process_executor,
        tags={"strategy": spec.name, "mode": spec.mode.value},
        description=f"Review {spec.name}: every instrument over the run's windows, analysis then the account in time order.")
    return dg.Definitions(assets=assets, jobs=[review_job, build_replay_job(spec)],
                          schedules=[build_review_schedule(spec, review_job)])
