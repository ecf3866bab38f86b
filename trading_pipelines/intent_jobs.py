"""Launchpad jobs of the intent lifecycle: ``plan_intent``, ``execute_intent``, ``cancel_intent``.

One set for the code location, the strategy named in the op config (a job per strategy would
triple the job list for no gain: the ops do not depend on a strategy's assets or partitions, and
``execute``/``cancel`` find the strategy from the intent id). The UI launchpad fills in the
config (:class:`PlanIntentConfig`, :class:`ExecuteIntentConfig`, :class:`CancelIntentConfig`);
the work is :mod:`trading_pipelines.operations`. A refusal fails the run with its message and
changes nothing; the op's output (and its metadata in the UI) is the intent report: status,
guards with their messages, orders, and the audit trail of transitions with their causes.

**How a refusal reads in the UI** (Dagster 1.13): a refusal is an expected outcome, so it is a
``dg.Failure(description, metadata, allow_retries=False)`` raised ``from None`` (no chained
exception), logged first as an ERROR line holding only the message. Dagster records every failure
with its stack (``step_failure_event_from_exc_info``, dagster/_core/execution/plan/objects.py) and
the UI's step-failure row (ui-core ``LogsRowStructuredContent.tsx`` ``FailureContent``) prints the
error's first line, ``dagster._core.definitions.events.Failure: refused: …``, then the Failure's
metadata entries, then "Stack Trace:"; there is no way to leave the stack out. So the message is
that first line and the metadata table (``refused``, the intent, what to run to inspect it) sits
between it and the stack; ``allow_retries=False`` keeps a retry policy from replaying a refusal.
"""


from typing import Optional

import dagster as dg
from pydantic import Field

from trading_pipelines import operations
from trading_pipelines.config import StrategySpec
from trading_pipelines.operations import ExecutionMode
from trading_pipelines.resources.dagster_resources import TradingResource

PLAN_JOB, EXECUTE_JOB, CANCEL_JOB = "plan_intent", "execute_intent", "cancel_intent"
CONTRACTS_JOB = "resolve_ibkr_contracts"
_TAGS = {"purpose": "intent_lifecycle"}


class PlanIntentConfig(dg.Config):
    strategy: str = Field(description="The strategy (its name, as in `trading-pipelines list`).")
    instrument: str = Field(description="One of the strategy's instruments, e.g. ETH/USDT or BTC/USDT:USDT.")
    side: str = Field(description="buy | sell (spot); long | short | close (futures).")
    capital: Optional[float] = Field(default=None, description="Quote currency the 1 % risk is taken on "
                                                               "(default: the book's equity).")


class ExecuteIntentConfig(dg.Config):
    intent_id: str = Field(description="The intent to execute (it-…), VALIDATED or AWAITING_CONFIRMATION.")
    mode: ExecutionMode = Field(default=ExecutionMode.DRY_RUN,
                                description="DRY_RUN: record the orders that would be sent, send nothing. "
                                            "LIVE: send through the venue (needs acknowledge_risk and "
                                            "TRADING_PIPELINES_LIVE=1 in the deployment).")
    acknowledge_risk: bool = Field(default=False, description="Required for LIVE: orders reach the venue.")


class ContractsConfig(dg.Config):
    strategy: str


class CancelIntentConfig(dg.Config):
    intent_id: str = Field(description="The intent to cancel (it-…): not yet executed, or SUBMITTED with its entry resting.")
    reason: Optional[str] = Field(default=None, description="Why (recorded with the transition).")


def _who(context: dg.OpExecutionContext) -> str:
    user = context.run.tags.get("dagster/user") or context.run.tags.get("user")
    return user or f"dagster run {context.run.run_id[:8]}"


def _md(report: dict) -> str:
    lines = [f"**{report['intent_id']}** {report['status']} — {report['reason']}", "",
             "| guard | passed | message |", "|---|---|---|"]
    lines += [f"| {g['guard']} | {'PASS' if g['passed'] else 'FAIL'} | {g['message']} |" for g in report["guards"]]
    if report["orders"]:
        lines += ["", "| order | role | side | type | qty | price | trigger | status |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {o['client_order_id']} | {o['role']} | {o['side']} | {o['type']} | {o['quantity']:.10g} | "
                  f"{o['price'] if o['price'] is not None else ''} | {o['trigger_price'] if o['trigger_price'] is not None else ''} "
                  f"| {o['status']} |" for o in report["orders"]]
    lines += ["", "| from | to | cause | run |", "|---|---|---|---|"]
    lines += [f"| {t['from'] or ''} | {t['to']} | {t['reason']} | {t['run_id']} |" for t in report["transitions"]]
    return "\n".join(lines)


def _output(context: dg.OpExecutionContext, report: dict) -> dg.Output:
    context.log.info(f"{report['intent_id']} {report['strategy']} {report['instrument']}: {report['status']} "
                     f"({report['reason']})")
    return dg.Output(report, metadata={
        "intent_id": report["intent_id"], "strategy": report["strategy"], "instrument": report["instrument"],
        "status": report["status"], "reason": report["reason"], "quantity": report["quantity"],
        "orders": len(report["orders"]), "report": dg.MetadataValue.md(_md(report)),
        "inspect": f"trading-pipelines intent show {report['intent_id']}"})


def refusal(context: dg.OpExecutionContext, message: str, **facts) -> dg.Failure:
    """The ``dg.Failure`` of an expected refusal (raise it ``from None``): description
    ``refused: <message>``, metadata ``refused`` (the message) plus ``facts`` (e.g. ``intent_id``,
    with an ``inspect`` command for an intent), no retries; the message is logged first as an ERROR
    line of its own."""
    description = f"refused: {message}"
    context.log.error(description)
    metadata: dict = {"refused": message, **facts}
    if "intent_id" in facts:
        metadata["inspect"] = f"trading-pipelines intent show {facts['intent_id']}"
    return dg.Failure(description=description, metadata=metadata, allow_retries=False)


def refused(context: dg.OpExecutionContext, e: Exception, **facts) -> dg.Failure:
    """:func:`refusal` of an :class:`~trading_pipelines.operations.Refused` (its text is the message)."""
    return refusal(context, str(e), **facts)


def build_intent_jobs(specs: list[StrategySpec]) -> list[dg.JobDefinition]:
    """The three launchpad jobs over ``specs`` (the code location's strategies)."""
    by_name = {s.name: s for s in specs}

    def spec_of(context: dg.OpExecutionContext, name: str) -> StrategySpec:
        spec = by_name.get(name)
        if spec is None:
            raise refusal(context, f"unknown strategy {name!r} (known: {', '.join(sorted(by_name))})",
                          strategy=name, known=sorted(by_name))
        return spec

    def runtime_of_intent(context: dg.OpExecutionContext, trading: TradingResource, intent_id: str):
        try:
            strategy, _book = operations.intent_owner(trading.ledger.engine(), intent_id)
        except operations.Refused as e:
            raise refused(context, e, intent_id=intent_id) from None
        return operations.runtime_for(trading, spec_of(context, strategy))

    @dg.op(name="plan_manual_intent", pool="venue", tags=_TAGS,
           description="Plan a manual intent for the strategy's latest closed window (technical stop, 1 % sizing, "
                       "confidence 1.0) and validate it at once; every guard is recorded.")
    def plan_op(context: dg.OpExecutionContext, config: PlanIntentConfig, trading: TradingResource) -> dg.Output:
        rt = operations.runtime_for(trading, spec_of(context, config.strategy))
        try:
            report = operations.plan_manual(rt, config.instrument, config.side, config.capital, who=_who(context),
                                            run_id=context.run.run_id)
        except operations.Refused as e:
            raise refused(context, e, strategy=config.strategy, instrument=config.instrument, side=config.side) from None
        return _output(context, report)

    @dg.op(name="execute_manual_intent", pool="venue", tags=_TAGS,
           description="Execute one validated intent once: DRY_RUN records the orders that would be sent; LIVE sends "
                       "them through the venue after the pre-submit re-check under the book lock.")
    def execute_op(context: dg.OpExecutionContext, config: ExecuteIntentConfig, trading: TradingResource) -> dg.Output:
        rt = runtime_of_intent(context, trading, config.intent_id)
        try:
            report = operations.execute_intent(rt, config.intent_id, config.mode, config.acknowledge_risk,
                                               who=_who(context), run_id=context.run.run_id)
        except operations.Refused as e:
            raise refused(context, e, intent_id=config.intent_id, mode=str(config.mode.value)) from None
        return _output(context, report)

    @dg.op(name="cancel_manual_intent", pool="venue", tags=_TAGS,
           description="Cancel an intent that has not traded (a SUBMITTED one: its resting entry at the venue, "
                       "after reconciling).")
    def cancel_op(context: dg.OpExecutionContext, config: CancelIntentConfig, trading: TradingResource) -> dg.Output:
        rt = runtime_of_intent(context, trading, config.intent_id)
        try:
            report = operations.cancel_intent(rt, config.intent_id, config.reason, who=_who(context),
                                              run_id=context.run.run_id)
        except operations.Refused as e:
            raise refused(context, e, intent_id=config.intent_id) from None
        return _output(context, report)

    @dg.job(name=PLAN_JOB, tags=_TAGS, executor_def=dg.in_process_executor,
            description="Plan (and validate) a manual intent on a strategy's live book. Config: strategy, instrument, "
                        "side, optional capital.")
    def plan_job():
        plan_op()

    @dg.job(name=EXECUTE_JOB, tags=_TAGS, executor_def=dg.in_process_executor,
            description="Execute an intent once, DRY_RUN or LIVE (LIVE: acknowledge_risk and TRADING_PIPELINES_LIVE=1).")
    def execute_job():
        execute_op()

    @dg.job(name=CANCEL_JOB, tags=_TAGS, executor_def=dg.in_process_executor,
            description="Cancel an intent that has not traded, with a reason.")
    def cancel_job():
        cancel_op()

    @dg.op(name="resolve_contracts", pool="venue", tags={"purpose": "contracts"},
           description="Resolve each instrument of an ibkr strategy to its IB contract (qualifyContracts: conid, "
                       "primary exchange, currency) and record it in the ledger's audit trail.")
    def contracts_op(context: dg.OpExecutionContext, config: ContractsConfig, trading: TradingResource) -> dg.Output:
        rt = operations.runtime_for(trading, spec_of(context, config.strategy))
        try:
            rows = operations.resolve_contracts(rt, run_id=context.run.run_id)
        except operations.Refused as e:
            raise refused(context, e, strategy=config.strategy) from None
        table = "| instrument | conid | symbol | sec type | primary exchange | currency |\n|---|---|---|---|---|---|\n" + "\n".join(
            f"| {r['instrument']} | {r['conid']} | {r['symbol']} | {r['sec_type']} | {r['primary_exchange']} | {r['currency']} |"
            for r in rows)
        return dg.Output(rows, metadata={"contracts": dg.MetadataValue.md(table),
                                         "conids": dg.MetadataValue.json({r["instrument"]: r["conid"] for r in rows})})

    @dg.job(name=CONTRACTS_JOB, tags={"purpose": "contracts"}, executor_def=dg.in_process_executor,
            description="Resolve and record an ibkr strategy's IB contracts (conids). Config: strategy.")
    def contracts_job():
        contracts_op()

    return [plan_job, execute_job, cancel_job, contracts_job]


def op_name(job: str) -> str:
    """The op of a launchpad job (its run config goes under ``ops.<op_name>.config``)."""
    return {PLAN_JOB: "plan_manual_intent", EXECUTE_JOB: "execute_manual_intent", CANCEL_JOB: "cancel_manual_intent",
            CONTRACTS_JOB: "resolve_contracts"}[job]


__all__ = ["CONTRACTS_JOB", "ContractsConfig", "CANCEL_JOB", "CancelIntentConfig", "EXECUTE_JOB", "ExecuteIntentConfig", "PLAN_JOB", "PlanIntentConfig",
           "build_intent_jobs", "op_name"]
