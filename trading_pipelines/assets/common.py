"""What the asset steps of a strategy share: the step names, the run tags, which instruments and
which book a run covers, and the markdown tables of their metadata.

**Books.** A run tagged ``dagster/backfill`` (a UI backfill) or ``trading/book=replay`` (the CLI's
``replay``) trades a replay book: a fresh simulated account named after what it replays
(:func:`~trading_pipelines.runtime.replay_book_id`); every other run (schedule, sensor, a manual
materialization) trades the live book, which refuses windows it has moved past.
"""

from datetime import datetime

import dagster as dg

from trading_pipelines import runtime
from trading_pipelines.config import StrategySpec
from trading_pipelines.ledger.models import LIVE_BOOK

ANALYSIS_STEPS = ("ohlcv_bars", "indicator_frames", "chart_images", "signals")
ACCOUNT_STEPS = ("trade_intents", "validated_intents", "orders", "portfolio_snapshots")
STEPS = (*ANALYSIS_STEPS, *ACCOUNT_STEPS)
BOOK_TAG = "trading/book"
INSTRUMENTS_TAG = "trading/instruments"
CHARTS_TAG = "trading/charts"
_MAX_PREVIEWS = 6
_TABLE_ROWS = 40


def run_instruments(context, spec: StrategySpec) -> list[str]:
    """The instruments this run covers: the ``trading/instruments`` tag (comma-separated, a subset
    of the strategy's), else all of them. Raises ``dg.Failure`` naming an unknown instrument."""
    tag = context.run.tags.get(INSTRUMENTS_TAG)
    if not tag:
        return list(spec.instruments)
    chosen = [i.strip() for i in tag.split(",") if i.strip()]
    unknown = [i for i in chosen if i not in spec.instruments]
    if unknown:
        # an expected refusal: no retry (the analysis step has a retry policy for transient errors)
        raise dg.Failure(description=f"{spec.name} does not trade {unknown} (instruments: {list(spec.instruments)})",
                         metadata={"tag": f"{INSTRUMENTS_TAG}={tag}", "unknown": unknown,
                                   "instruments": list(spec.instruments)}, allow_retries=False)
    return chosen


def run_book(context, spec: StrategySpec, window_ends: list[datetime], instruments: list[str]) -> str:
    """``live``, or the replay book of this run's windows and instruments (see the module doc)."""
    tags = context.run.tags
    kind = tags.get(BOOK_TAG) or ("replay" if tags.get("dagster/backfill") else "live")
    if kind == "live":
        return LIVE_BOOK
    if kind != "replay":
        raise dg.Failure(description=f"tag {BOOK_TAG}={kind!r}: expected live or replay",
                         metadata={"tag": f"{BOOK_TAG}={kind}"}, allow_retries=False)
    return runtime.replay_book_id(spec, instruments, min(window_ends), max(window_ends))


def selected(context, result) -> list:
    """``[result]`` if the run selected its asset (a ``MaterializeResult``) or its check (an
    ``AssetCheckResult``), else ``[]``: a subsettable multi-asset yields exactly what was selected."""
    if isinstance(result, dg.AssetCheckResult):
        key = dg.AssetCheckKey(result.asset_key, result.check_name)
        return [result] if key in context.selected_asset_check_keys else []
    return [result] if result.asset_key in context.selected_asset_keys else []


def _keys(context) -> list[str]:
    return sorted(context.partition_keys)  # window keys sort in time order


def _md_table(header: list[str], rows: list[list]) -> str:
    head = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    return head + "\n".join("| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows)
