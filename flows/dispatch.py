"""One batch's stage pipeline, in this process or handed to a Prefect work pool.

A batch runs infrastructure -> bootstrap -> add-ons -> verify, each stage one task run
over the clusters still in the pipeline (``stage_pipeline``). The fleet flow runs it in
its own process by default; with ``dispatch: pool`` in a tier's rollout policy (or the
run's ``rollout`` override) it hands the batch to the ``provision-batch`` deployment
through ``run_deployment`` instead: a flow run of its own, linked as a subflow of the
fleet run (the UI shows it under the fleet run), picked up by whichever worker of the
deployment's work pool is free.

What travels is small: a ``BatchOrder`` (the run's ``RunRef``, cluster names and the
stages each needs) there, a ``BatchOutcome`` (a condition per cluster and stage) back.
The worker loads the same inventory revision itself (``tasks.context.resources_for``),
and everything werft generates lives in the shared secret store, created
first-writer-wins (``SecretStore.put_if_absent``), so a batch may run on any worker.

The outcome comes back as the child run's persisted result, so the fleet process must
be able to read the workers' result storage: the same local path on one machine, a
shared result storage block (S3, GCS) across machines.

A batch run whose process dies while its worker lives is reported Crashed by the worker.
A worker that dies *with* its runs (a machine lost) reports nothing, and the run would
stay Running for good, the fleet run waiting on it. So batch runs send heartbeats (the
deployment's job variables set ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, every
``HEARTBEAT_S``) and the automation ``ZOMBIE_AUTOMATION`` (Prefect's zombie-flow
detection; ``ensure_zombie_detection``, run by ``flows.deployments.apply_to_work_pool``)
marks a batch run Crashed when ``ZOMBIE_AFTER_S`` pass without a heartbeat or a final
state; ``dispatch_batch`` then hands the batch to the pool again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect import Task, flow, get_run_logger, tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from pydantic import BaseModel, ConfigDict, Field

from tasks import STAGE_TASKS
from tasks.batch import BatchResult, BatchSpec, ClusterStageResult
from tasks.context import RunRef, resources_for
from tasks.policy import concurrency_tags, with_retry_policy
from werft.conditions import STAGE_ORDER, Condition, ConditionType
from werft.inventory.model import Tier

BATCH_DEPLOYMENT = "provision-batch/provision-batch"
TASK_FAILED = "TaskFailed"
# The batch's flow run ended without an outcome (crashed, cancelled, its worker died).
BATCH_RUN_FAILED = "BatchRunFailed"
# How often the fleet run asks the server whether a dispatched batch finished: a batch
# takes seconds to minutes, and a second of slack per batch costs nothing in waves of
# batches running side by side.
POLL_INTERVAL_S = 1.0
# How often a batch whose run crashed is handed to the pool again.
REDISPATCH = 2

# Zombie detection: how a batch run whose worker died with it (a machine lost) still ends
# Crashed. Every HEARTBEAT_S a running batch run emits prefect.flow-run.heartbeat; the
# automation crashes one that emitted neither another heartbeat nor a final state within
# ZOMBIE_AFTER_S. 30 s is the smallest frequency Prefect accepts (flows.heartbeat_frequency
# >= 30; its default, 180, would stall a wave 9 minutes per lost machine); three missed
# heartbeats, as Prefect's guide suggests, so that a loaded server or a slow event
# delivery never crashes a healthy run (which would then run its batch twice, harmlessly
# but for nothing). A machine's death thus costs its batches 60-95 s before re-dispatch.
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
HEARTBEAT_S = 30
ZOMBIE_AFTER_S = 3 * HEARTBEAT_S
ZOMBIE_AUTOMATION = "werft: crash provision-batch runs that stopped sending heartbeats"

RunStage = Callable[[ConditionType, list[str]], Awaitable[BatchResult]]
Outcomes = dict[str, list[ClusterStageResult]]


async def stage_pipeline(needs: Mapping[str, Sequence[ConditionType]], run: RunStage) -> Outcomes:
    """Each stage in order over the clusters that need it and have not failed an earlier
    stage; per cluster, the results of the stages it ran."""
    outcomes: Outcomes = {name: [] for name in needs}
    active = list(needs)
    for stage in STAGE_ORDER:
        todo = [name for name in active if stage in needs[name]]
        if not todo:
            continue
        result = await run(stage, todo)
        for name, item in result.clusters.items():
            outcomes[name].append(item)
        active = [name for name in active if name not in todo or result.ok(name)]
    return outcomes


def failed_stage(stage: ConditionType, names: list[str], reason: str, message: str) -> BatchResult:
    """A stage result failing every one of ``names`` (the task or the batch run broke,
    not a cluster)."""
    failed = Condition(type=stage, status="False", reason=reason, message=message[:300])
    return BatchResult(
        stage=stage, batch="", clusters={n: ClusterStageResult(condition=failed) for n in names}
    )


class BatchOrder(BaseModel):
    """One batch for the ``provision-batch`` deployment: small, serialisable, no secrets."""

    model_config = ConfigDict(extra="forbid")

    run: RunRef
    path: str  # "edge-wave-3/batch-07"
    label: str
    tier: Tier
    needs: dict[str, list[ConditionType]]  # cluster -> the stages it still needs, in order
    sites: list[str] = Field(default_factory=list)
    max_concurrency: int = Field(ge=1)
    defer_unreachable: bool = False
    defer_after: float = Field(15.0, ge=0)
    retries: int = Field(3, ge=0, le=10)
    retry_backoff_s: float = Field(2.0, ge=0)

    def spec(self, names: list[str]) -> BatchSpec:
        return BatchSpec(
            run=self.run,
            path=self.path,
            label=self.label if names == list(self.needs) else _label(self.path, names),
            tier=self.tier,
            clusters=names,
            max_concurrency=self.max_concurrency,
            defer_unreachable=self.defer_unreachable,
            defer_after=self.defer_after,
        )


class BatchOutcome(BaseModel):
    """What a batch run hands back: per cluster, the results of the stages it ran."""

    clusters: dict[str, list[ClusterStageResult]]
    task_runs: int = 0


def _label(path: str, names: list[str]) -> str:
    return names[0] if len(names) == 1 else path


def _run_name() -> str:
    """The name ``dispatch_batch`` gave the run (`` #2`` on a batch dispatched again), or
    one made from the order for a run started some other way."""
    from prefect.runtime import flow_run

    given = flow_run.name
    if isinstance(given, str) and given.startswith("provision-batch["):
        return given
    order = (flow_run.parameters or {}).get("order")
    path = order.path if isinstance(order, BatchOrder) else (order or {}).get("path", "?")
    return f"provision-batch[{path}]"


@flow(name="provision-batch", flow_run_name=_run_name, persist_result=True)
async def provision_batch(order: BatchOrder) -> dict[str, Any]:
    """Run one batch's stage pipeline (a fleet run handed it to this work pool)."""
    stage_tasks: dict[ConditionType, Task[Any, Any]] = {
        stage: with_retry_policy(task, order.retries, order.retry_backoff_s)
        for stage, task in STAGE_TASKS.items()
    }
    await resources_for(order.run)  # load the inventory once, before the stages need it
    runs = 0
    # Tagged like the fleet run's own stage tasks, so the same concurrency limits apply.
    run_tags = concurrency_tags(order.tier, order.sites)

    async def run(stage: ConditionType, names: list[str]) -> BatchResult:
        nonlocal runs
        runs += 1
        try:
            with tags(*run_tags):
                return await stage_tasks[stage](order.spec(names))
        except Exception as exc:  # the task itself broke (not a cluster): fail its clusters
            return failed_stage(stage, names, TASK_FAILED, f"{type(exc).__name__}: {exc}")

    outcomes = await stage_pipeline(order.needs, run)
    # A plain dict: the persisted result unpickles without this module's classes.
    return BatchOutcome(clusters=outcomes, task_runs=runs).model_dump(mode="json")


async def dispatch_batch(order: BatchOrder) -> BatchOutcome:
    """Hand the batch to the work pool and wait for its outcome.

    A batch run that crashed is dispatched again, up to ``REDISPATCH`` times, to whichever
    worker is free: every stage observes before it acts, so the new run finishes what the
    dead one began without a second install. Crashed means its process died (killed, out
    of memory) and its worker reported it, or its worker died with it (a machine lost) and
    the ``ZOMBIE_AUTOMATION`` marked it Crashed after ``ZOMBIE_AFTER_S`` without a
    heartbeat; so the wait here is bounded by that, not forever. A batch run that ends
    otherwise without an outcome (failed, cancelled) fails the batch's clusters at their
    first needed stage; the next fleet run picks them up."""
    for attempt in range(REDISPATCH + 1):
        child = await run_deployment(
            BATCH_DEPLOYMENT,
            parameters={"order": order.model_dump(mode="json")},
            flow_run_name=f"provision-batch[{order.path}]"
            + (f" #{attempt + 1}" if attempt else ""),
            poll_interval=POLL_INTERVAL_S,
            tags=[f"tier:{order.tier}"],
            as_subflow=True,
        )
        state = child.state
        if state is not None and state.is_completed():
            return BatchOutcome.model_validate(await state.aresult())
        if state is None or not state.is_crashed():
            break
        get_run_logger().warning(
            "%s: batch run %s crashed (%s); dispatching it again",
            order.path,
            child.name,
            state.message,
        )
    why = f"batch run {child.name} ended {state.type.value if state else 'without a state'}"
    if state is not None and state.message:
        why += f": {state.message}"
    return BatchOutcome(
        clusters={
            name: list(failed_stage(stages[0], [name], BATCH_RUN_FAILED, why).clusters.values())
            for name, stages in order.needs.items()
            if stages
        }
    )


def zombie_automation(within_s: float = ZOMBIE_AFTER_S) -> AutomationCore:
    """Prefect's zombie-flow automation (docs: "Detect zombie flows"), for werft's batch
    runs only: after a heartbeat of a ``provision-batch`` run, expect another heartbeat or
    a final state of the same run within ``within_s``, else mark the run Crashed. Not
    forced: a run that reached a final state in the meantime stays as it is."""
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=(
            "Marks a provision-batch flow run Crashed when it stopped sending heartbeats "
            "(its worker died with it), so that the fleet run dispatches the batch again. "
            "Managed by werft (flows/dispatch.py); changes here are overwritten."
        ),
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match={"prefect.resource.id": "prefect.flow-run.*"},
            # Both the heartbeats and the server's state events name the run's flow as a
            # related resource: only werft's batch runs, not every flow on the server.
            match_related={
                "prefect.resource.role": "flow",
                "prefect.resource.name": provision_batch.name,
            },
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {within_s:g} s: its process and worker are gone",
            )
        ],
    )


async def ensure_zombie_detection(within_s: float = ZOMBIE_AFTER_S) -> UUID:
    """The id of the ``ZOMBIE_AUTOMATION``: created if the server has none of that name,
    updated if it differs from ``zombie_automation(within_s)``, else left alone."""
    wanted = zombie_automation(within_s)
    async with get_client() as client:
        existing = await client.read_automations_by_name(ZOMBIE_AUTOMATION)
        if not existing:
            return await client.create_automation(wanted)
        current = existing[0]
        if _comparable(current) != _comparable(wanted):
            await client.update_automation(current.id, wanted)
        return current.id


def _comparable(automation: AutomationCore) -> dict[str, Any]:
    """An automation's definition without the ids the server assigns (the trigger's)."""
    data = AutomationCore.model_validate(automation.model_dump()).model_dump(mode="json")
    trigger = data["trigger"]
    trigger.pop("id", None)
    for label in ("after", "expect", "for_each"):  # sets, listed in any order
        trigger[label] = sorted(trigger.get(label) or [])
    return data
