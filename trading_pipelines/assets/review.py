"""A strategy's review as software-defined assets, one partition per instrument × window:

symbol_universe → ohlcv_bars → indicator_frames → chart_images → signals → trade_intents
→ validated_intents → orders → portfolio_snapshots

Assets are thin: each calls one step of :mod:`trading_pipelines.services` and attaches metadata.
Re-running any partition is safe: the steps are idempotent (see the services module).
"""


import dagster as dg
import pandas as pd

from trading_pipelines.assets.partitions import instruments_partitions, review_partitions, split_key, window_end
from trading_pipelines.config import StrategySpec
from trading_pipelines.domain.models import IntentStatus, Signal, TradeIntent
from trading_pipelines.ledger.repo import Lineage
from trading_pipelines.resources.charts import ChartRef, thumbnail_markdown
from trading_pipelines.resources.dagster_resources import TradingResource
from trading_pipelines import services

STEPS = ("ohlcv_bars", "indicator_frames", "chart_images", "signals", "trade_intents", "validated_intents", "orders",
         "portfolio_snapshots")


def _guards_md(guards) -> str:
    rows = "\n".join(f"| {g.guard} | {'PASS' if g.passed else 'FAIL'} | {g.message} |" for g in guards)
    return "| guard | result | message |\n|---|---|---|\n" + rows if rows else "_no guards apply (no trade)_"


def build_review_assets(spec: StrategySpec) -> tuple[list[dg.AssetsDefinition], list[dg.AssetKey]]:
    """Assets of one strategy (asset keys ``<strategy>/<step>``) and the keys of the partitioned ones."""
    name = spec.name
    parts = review_partitions(spec)
    inst_parts = instruments_partitions(spec)
    k = {step: dg.AssetKey([name, step]) for step in ("symbol_universe", *STEPS)}
    common = dict(partitions_def=parts, group_name=name, tags={"strategy": name, "mode": spec.mode.value})
    retry = dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

    def ctx(context: dg.AssetExecutionContext, trading) -> tuple[services.Runtime, Lineage, str, object]:
        instrument, wkey = split_key(context)
        lin = Lineage(strategy=name, instrument=instrument, partition_key=str(context.partition_key), run_id=context.run.run_id)
        return trading.runtime(spec), lin, instrument, window_end(spec, wkey)

    @dg.asset(key=k["symbol_universe"], group_name=name, kinds={"python"},
              description=f"The instruments {name} trades, registered as dynamic partitions "
                          f"`{spec.instruments_partitions_name}`. Re-running only adds missing ones.")
    def symbol_universe(context: dg.AssetExecutionContext) -> list[str]:
        existing = set(context.instance.get_dynamic_partitions(inst_parts.name))
        new = [i for i in spec.instruments if i not in existing]
        if new:
            context.instance.add_dynamic_partitions(inst_parts.name, new)
        context.add_output_metadata({"instruments": list(spec.instruments), "added": new, "count": len(spec.instruments)})
        return list(spec.instruments)

    @dg.asset(key=k["ohlcv_bars"], deps=[k["symbol_universe"]], kinds={"pandas", "parquet"}, retry_policy=retry,
              io_manager_key="frames_io_manager",
              description="Point-in-time OHLCV bars: the last lookback bars that closed at or before the window end.", **common)
    def ohlcv_bars(context: dg.AssetExecutionContext, trading: TradingResource) -> pd.DataFrame:
        rt, lin, inst, end = ctx(context, trading)
        bars = services.load_bars(rt, inst, end)
        last_close_time = bars.index[-1] + spec.bar_duration
        context.add_output_metadata({
            "rows": len(bars), "first_bar": bars.index[0].isoformat(), "last_bar_open": bars.index[-1].isoformat(),
            "last_bar_close": last_close_time.isoformat(), "window_end": end.isoformat(),
            "last_close": float(bars["close"].iloc[-1]), "source": spec.data.source,
        })
        return bars

    @dg.asset(key=k["indicator_frames"], ins={"bars": dg.AssetIn(k["ohlcv_bars"])}, kinds={"pandas", "parquet"},
              io_manager_key="frames_io_manager",
              description="Indicators from the `ta` library, chosen and parameterized by the strategy template.", **common)
    def indicator_frames(context: dg.AssetExecutionContext, trading: TradingResource, bars: pd.DataFrame) -> pd.DataFrame:
        rt, *_ = ctx(context, trading)
        frame = services.indicator_frame(rt, bars)
        last = frame.iloc[-1]
        context.add_output_metadata({"rows": len(frame), "columns": list(frame.columns),
                                     **{f"last_{c}": float(last[c]) for c in ("close", "rsi", "atr", "adx") if c in frame and pd.notna(last[c])}})
        return frame

    @dg.asset(key=k["chart_images"], ins={"frame": dg.AssetIn(k["indicator_frames"])}, kinds={"s3"},
              description="mplfinance candlestick chart with volume and overlays, stored in the chart store; the value is its reference.",
              **common)
    def chart_images(context: dg.AssetExecutionContext, trading: TradingResource, frame: pd.DataFrame) -> dict:
        rt, lin, inst, end = ctx(context, trading)
        ref, png = services.make_chart(rt, inst, end, frame)
        context.add_output_metadata({"object_key": ref.key, "sha256": ref.sha256, "bytes": ref.size,
                                     "uri": dg.MetadataValue.url(ref.uri) if ref.uri.startswith("http") else ref.uri,
                                     "preview": dg.MetadataValue.md(thumbnail_markdown(png))})
        return {"key": ref.key, "sha256": ref.sha256, "size": ref.size, "uri": ref.uri}

    @dg.asset(key=k["signals"], ins={"frame": dg.AssetIn(k["indicator_frames"]), "chart": dg.AssetIn(k["chart_images"])},
              kinds={"openai"} if spec.template.signal_provider.kind == "openai" else {"python"}, pool="llm",
              check_specs=[dg.AssetCheckSpec("signal_usable", asset=k["signals"],
                                             description="The provider answered with a usable signal (not a recorded no-trade).")],
              description="The signal provider's recommendation (rules or LLM); prompt, chart, response and tokens are in the ledger.",
              **common)
    def signals(context: dg.AssetExecutionContext, trading: TradingResource, frame: pd.DataFrame, chart: dict):
        rt, lin, inst, end = ctx(context, trading)
        png = rt.charts.get(chart["key"])
        res = services.generate_signal(rt, lin, end, frame, ChartRef(**chart), png)
        sig = res.signal
        yield dg.Output(sig, metadata={
            "action": sig.action, "confidence": sig.confidence, "thesis": sig.thesis, "provider": sig.provider,
            "model": sig.model, "prompt_hash": sig.prompt_hash, "no_trade_reason": sig.no_trade_reason or "",
            "total_tokens": int((res.usage or {}).get("total_tokens") or 0), "chart_key": chart["key"]})
        yield dg.AssetCheckResult(check_name="signal_usable", passed=sig.no_trade_reason is None,
                                  severity=dg.AssetCheckSeverity.WARN,
                                  metadata={"no_trade_reason": sig.no_trade_reason or ""})

    @dg.asset(key=k["trade_intents"], ins={"signal": dg.AssetIn(k["signals"]), "frame": dg.AssetIn(k["indicator_frames"])},
              kinds={"python"},
              check_specs=[dg.AssetCheckSpec("reviewed_in_time", asset=k["trade_intents"],
                                             description="The review ran before the strategy's account moved past its window "
                                                         "(a late review plans no trade: backfill window by window).")],
              description="PLAN: technical stop and 1%-risk size; PENDING, or NO_TRADE with its reason.", **common)
    def trade_intents(context: dg.AssetExecutionContext, trading: TradingResource, signal: Signal, frame: pd.DataFrame):
        rt, lin, *_ = ctx(context, trading)
        intent = services.plan(rt, lin, signal, frame)
        yield dg.Output(intent, metadata={
            "intent_id": intent.intent_id, "kind": intent.kind.value, "status": intent.status.value,
            "quantity": intent.quantity, "entry": intent.entry or 0.0, "stop": intent.stop or 0.0,
            "take_profit": intent.take_profit or 0.0, "risk_amount": intent.risk_amount, "notional": intent.notional,
            "reason": intent.reason})
        late = "late review" in intent.reason
        yield dg.AssetCheckResult(check_name="reviewed_in_time", passed=not late, severity=dg.AssetCheckSeverity.WARN,
                                  metadata={"reason": intent.reason if late else ""})

    @dg.asset(key=k["validated_intents"], ins={"intent": dg.AssetIn(k["trade_intents"])}, kinds={"python"},
              check_specs=[dg.AssetCheckSpec("no_order_from_invalid_intent", asset=k["validated_intents"], blocking=True,
                                             description="A VALIDATED intent has every guard passing and a sane plan; else orders never run.")],
              description="VALIDATE: balance, risk limit, daily loss, position limit, market hours, duplicate position, "
                          "min notional, window freshness — each PASS/FAIL with its numbers.", **common)
    def validated_intents(context: dg.AssetExecutionContext, trading: TradingResource, intent: TradeIntent):
        rt, lin, *_ = ctx(context, trading)
        checked, guards = services.validate(rt, lin, intent)
        yield dg.Output(checked, metadata={"status": checked.status.value, "reason": checked.reason,
                                           "guards": dg.MetadataValue.md(_guards_md(guards))})
        sane, why = services.sane_to_send(checked, guards) if checked.status is IntentStatus.VALIDATED else (True, "nothing to send")
        yield dg.AssetCheckResult(check_name="no_order_from_invalid_intent", passed=sane,
                                  metadata={"status": checked.status.value, "detail": why})

    @dg.asset(key=k["orders"], ins={"intent": dg.AssetIn(k["validated_intents"])}, kinds={"python"},
              tags={"strategy": name, "mode": spec.mode.value}, pool="venue",
              description="EXECUTE: a bracket (entry + stop-loss + take-profit) per validated intent, client order ids derived "
                          "from the intent id, so a re-run never places a second order.",
              partitions_def=parts, group_name=name)
    def orders(context: dg.AssetExecutionContext, trading: TradingResource, intent: TradeIntent) -> list[dict]:
        rt, lin, *_ = ctx(context, trading)
        if intent.status in (IntentStatus.VALIDATED, IntentStatus.SUBMITTED, IntentStatus.FILLED,
                             IntentStatus.AWAITING_CONFIRMATION):
            intent, rows = services.execute(rt, lin, intent)
        else:
            rows = []
        context.add_output_metadata({"intent_status": intent.status.value, "order_count": len(rows),
                                     "client_order_ids": [r["client_order_id"] for r in rows],
                                     "orders": dg.MetadataValue.json(rows)})
        return rows

    @dg.asset(key=k["portfolio_snapshots"], deps=[k["orders"]], kinds={"python"},
              description="The strategy's account at the window end as the venue reports it: cash, positions, P&L, equity.",
              **common)
    def portfolio_snapshots(context: dg.AssetExecutionContext, trading: TradingResource) -> dict:
        rt, lin, inst, end = ctx(context, trading)
        snap, point_in_time = services.snapshot(rt, lin, end)
        context.add_output_metadata({"point_in_time": point_in_time, "as_of": snap.as_of.isoformat(), "equity": snap.equity, "cash": snap.cash, "realized_pnl": snap.realized_pnl,
                                     "unrealized_pnl": snap.unrealized_pnl, "open_positions": len(snap.positions),
                                     "positions": dg.MetadataValue.json([p.model_dump(mode="json") for p in snap.positions])})
        return snap.model_dump(mode="json")

    assets = [symbol_universe, ohlcv_bars, indicator_frames, chart_images, signals, trade_intents, validated_intents,
              orders, portfolio_snapshots]
    return assets, [k[s] for s in STEPS]

