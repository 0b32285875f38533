"""The provisioning flows: the runbook a platform engineer would follow, run by Prefect.

    load and validate the inventory (Git is the desired state)
    observe the selected clusters (the fleet is the observed state)
    plan: which stages each cluster still needs; cut it into waves and batches
    roll out: core, near-edge, edge (canary first), within each wave's failure budget
    report: fleet table, summary

Resume after a crash (kill -9 of the flow process) needs nothing special: a new run
re-observes and plans again, and only the stages still missing are run. Task results
are deliberately not cached (``cache_policy=NO_CACHE``): a cached "Verified" from the
last run would skip the very observation that makes re-runs correct (a machine may have
been wiped since), and it would cost a persisted result per batch. Observation is cheap
and a satisfied stage makes no mutating call, so correctness comes from the fleet itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows.artifacts import publish_fleet, publish_plan, publish_problems
from flows.models import FleetResult, ProvisionRequest
from flows.rollout import Rollout
from tasks.context import InventorySource, RunRef, open_run
from tasks.observe import observe
from tasks.secret_blocks import use_secret_blocks
from werft.errors import InventoryError, Problem
from werft.inventory.resolved import Inventory
from werft.inventory.tree import InventoryNotFound
from werft.plan import Selector, override_rollout, plan_fleet, task_runs, waves
from werft.retry import counting_retries


def _run_name() -> str:
    params = flow_run.parameters or {}
    if "cluster" in params:
        return f"provision-cluster[{params['cluster']}]"
    request = ProvisionRequest.model_validate(params.get("request") or {})
    what = request.selector.describe()
    return f"provision[{what}]" + (" dry-run" if request.dry_run else "")


@flow(name="provision-fleet", flow_run_name=_run_name)
async def provision_fleet(request: ProvisionRequest | None = None) -> FleetResult:
    """Provision the selected clusters of the fleet from the inventory, in waves."""
    return await provision(request or ProvisionRequest())


@flow(name="provision-cluster", flow_run_name=_run_name)
async def provision_cluster(
    cluster: str,
    inventory: str = "inventory",
    repo: str | None = None,
    git_ref: str | None = None,
    dry_run: bool = False,
    time_scale: float = 1.0,
) -> FleetResult:
    """Provision one named cluster (for API-triggered requests, e.g. a vendor's)."""
    request = ProvisionRequest(
        inventory=inventory,
        repo=repo,
        git_ref=git_ref,
        selector=Selector(clusters=[cluster]),
        dry_run=dry_run,
        time_scale=time_scale,
    )
    return await provision(request)


async def provision(request: ProvisionRequest) -> Any:
    """The body both flows share. Returns a FleetResult, or a Failed state carrying one."""
    start = time.monotonic()
    use_secret_blocks()
    result = FleetResult(
        flow_run_id=flow_run.id,
        source=request.source.describe(),
        selector=request.selector.describe(),
        dry_run=request.dry_run,
    )
    # This run's retries only, though other runs may share the process (a served
    # deployment). Batches on work-pool workers count in their own processes.
    with counting_retries() as retries:
        inventory = await load(request.source, request.selector, result)
        if inventory is None:
            return await finish(result, start)
        rollout = await _roll_out(request, inventory, result)
    result.task_runs = rollout.task_runs
    result.clusters = list(rollout.records.values())
    result.retries = dict(sorted(retries.snapshot().items()))
    judge(result, rollout.halted)
    return await finish(result, start)


async def _roll_out(
    request: ProvisionRequest, inventory: Inventory, result: FleetResult
) -> Rollout:
    """Observe, plan and roll out; the waves' reports go into ``result``."""
    clusters = request.selector.select(inventory)
    ref = RunRef(key=flow_run.id or "local", source=request.source, time_scale=request.time_scale)
    async with open_run(ref, inventory):
        observed = await observe(
            ref, [c.name for c in clusters], result.selector, request.observe_concurrency
        )
        plan = plan_fleet(clusters, observed)
        wave_list = waves(plan, override_rollout(inventory.fleet.spec.rollout, request.rollout))
        await publish_plan(plan, wave_list, task_runs(plan, wave_list))

        rollout = Rollout(inventory, plan, ref, request)
        if request.dry_run:
            result.waves = rollout.not_started(wave_list)
        else:
            result.waves = await rollout.run(wave_list)
    return rollout


def judge(result: FleetResult, halted: str) -> None:
    """The run succeeded only if the fleet did: every selected cluster Verified or
    Deferred within policy. A failure inside a wave's budget lets the rollout go on, but
    the run still failed for that cluster; the run's state says so, so automations, CI
    and the exit status see it, and the first line says how many."""
    if result.dry_run:
        return
    failure = result.fleet_failure()
    if halted:
        result.succeeded, result.reason = False, f"{failure}; {halted}" if failure else halted
    elif failure:
        result.succeeded, result.reason = False, failure


async def load(
    source: InventorySource, selector: Selector, result: FleetResult
) -> Inventory | None:
    """The validated inventory, or None with the problems recorded (nothing is touched)."""
    try:
        inventory = await asyncio.to_thread(source.load)
    except InventoryError as exc:
        problems = exc.problems
    except InventoryNotFound as exc:
        problems = [Problem(source.describe(), None, "path", str(exc))]
    else:
        unknown = selector.unknown_names(inventory)
        if not unknown:
            return inventory
        problems = [
            Problem(source.describe(), None, "selector", f"{name} is not in the inventory")
            for name in unknown
        ]
    await publish_problems(source.describe(), problems)
    result.succeeded = False
    result.problems = [str(p) for p in problems]
    result.reason = f"inventory {source.describe()}: {len(problems)} problem(s); nothing touched"
    return None


async def finish(result: FleetResult, start: float) -> FleetResult | State[Any]:
    result.duration_s = round(time.monotonic() - start, 3)
    await publish_fleet(result)
    logger = get_run_logger()
    logger.info("fleet: %s", ", ".join(f"{n} {k}" for k, n in result.counts().items()))
    if not result.dry_run and result.clusters:
        logger.info(result.retries_line())
    if not result.succeeded:
        # The fleet's count first, then why (a halted wave, inventory problems).
        return Failed(message=f"Failed: {result.reason or result.headline()}", data=result)
    return result
