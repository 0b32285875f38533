"""The drift check: the team as auditors. The runbook it follows:

    load and validate the inventory (the desired state)
    check the selected clusters through their servers (read-only): findings per cluster
    triage: one group per cause, ranked by reach and tier
    apply the inventory's remediation policy: report, or remediate (now or after a while)
      -- prune candidates deleted, then the provisioning rollout for only those clusters,
      through the same waves, canary and failure budget (flows/provision.py, called)
    publish: summary markdown, groups table, clusters table; one Prefect event per group
      (werft.drift.detected), and werft.drift.cleared for groups that disappeared

A run that finds drift ends Completed with the report: drift is a finding, not a failure
of the run. It ends Failed when the inventory is invalid or a remediation failed.
The deployment ``drift-check`` runs it every 15 minutes (deployments/prefect.yaml).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from pydantic import BaseModel, ConfigDict, Field

from flows.drift_publish import emit_events, publish
from flows.models import FleetResult, ProvisionRequest
from flows.provision import load, provision
from tasks.context import InventorySource, RunRef, open_run
from tasks.drift import check, prune_objects
from tasks.secret_blocks import use_secret_blocks
from werft.drift.findings import Kind
from werft.drift.policy import Decision, clusters_to_remediate, decide
from werft.drift.report import DriftReport
from werft.drift.state import DriftState
from werft.inventory.resolved import Inventory
from werft.locks import ClusterLocks
from werft.plan import Selector
from werft.secrets import werft_home


class DriftRequest(BaseModel):
    """Which inventory and clusters to check, and whether to act on the policy."""

    model_config = ConfigDict(extra="forbid")

    inventory: str = Field("inventory", description="Inventory folder (inside the repo if set)")
    repo: str | None = Field(None, description="Git repository holding the inventory")
    git_ref: str | None = Field(None, description="Git revision to compare against")
    selector: Selector = Field(default_factory=Selector, description="Empty: the whole fleet")
    group: str | None = Field(
        None, description="Only the clusters of this finding group of the last check "
        "(what an automation on werft.drift.detected passes)")
    apply_policy: bool = Field(
        True, description="Act on the inventory's remediation policy (off: report only)")
    observe_concurrency: int = Field(32, ge=1, le=1000, description="Clusters checked at once")
    deadline_s: float = Field(30.0, gt=0, description="Seconds one cluster's check may take")
    lock_wait_s: float = Field(
        0.0, ge=0, description="Seconds to wait for clusters a provisioning run holds before "
        "reporting them Busy (checked and remediated by a later run)")
    time_scale: float = Field(1.0, gt=0, description="The simulator's time scale")


class DriftResult(BaseModel):
    """What the run returns (the report itself is in the artifacts)."""

    flow_run_id: str | None = None
    source: str = ""
    headline: str = ""
    counts: dict[str, int] = Field(default_factory=dict)
    groups: list[dict[str, str]] = Field(default_factory=list)  # the first 100, ranked
    exit_code: int = 0
    # cluster -> the stages a remediation would run, from the first one drifted on
    out_of_shape: dict[str, list[str]] = Field(default_factory=dict)
    remediated: list[str] = Field(default_factory=list)
    remediation: str = ""  # "", or the remediation's outcome (provisioning's headline)
    pruned: int = 0
    blocked: dict[str, str] = Field(default_factory=dict)
    busy: list[str] = Field(default_factory=list)
    events: dict[str, int] = Field(default_factory=dict)


def _run_name() -> str:
    params = flow_run.parameters or {}
    request = DriftRequest.model_validate(params.get("request") or {})
    what = f"group={request.group}" if request.group else request.selector.describe()
    return f"drift[{what}]"


@flow(name="drift-check", flow_run_name=_run_name)
async def drift_check(request: DriftRequest | None = None) -> Any:
    """Check the fleet against the inventory, triage, act on the policy, report."""
    request = request or DriftRequest()
    start = time.monotonic()
    use_secret_blocks()
    source = InventorySource(path=request.inventory, repo=request.repo, git_ref=request.git_ref)
    result = DriftResult(flow_run_id=str(flow_run.id) if flow_run.id else None,
                         source=source.describe())
    scratch = FleetResult(source=result.source, selector=request.selector.describe())
    inventory = await load(source, request.selector, scratch)
    if inventory is None:
        return Failed(message=scratch.reason, data=result)

    home = werft_home()
    state = DriftState(home)
    names = _selected(request, inventory, state)
    ref = RunRef(key=str(flow_run.id or "local-drift"), source=source,
                 time_scale=request.time_scale)
    locks = ClusterLocks(home, holder=ref.key)
    # A cluster a provisioning run holds is mid-change: wait for it (lock_wait_s), then
    # report it Busy rather than check a half-built state.
    busy = await locks.wait_until_free(names, wait_s=request.lock_wait_s,
                                       poll_s=_poll(request.lock_wait_s))
    async with open_run(ref, inventory):
        reports = await check(ref, names, _scope(request), request.observe_concurrency,
                              request.deadline_s, sorted(busy))
    report = DriftReport.of(reports, result.source)
    result.busy = sorted(busy)
    report.duration_s = round(time.monotonic() - start, 3)
    decisions = decide(inventory, {c.cluster: c for c in reports}, report.groups,
                       state.first_seen(), report.checked_at)

    if request.apply_policy:
        await remediate(request, inventory, report, decisions, ref, locks, result)
    changes = state.update(report)
    await publish(report)
    result.events = emit_events(changes)
    _fill(result, report)
    get_run_logger().info("drift: %s", report.headline())
    if result.remediation and not result.remediation.startswith("Succeeded"):
        return Failed(message=f"drift found; remediation: {result.remediation}", data=result)
    return Completed(message=report.headline(), data=result)


def _selected(request: DriftRequest, inventory: Inventory, state: DriftState) -> list[str]:
    chosen = [c.name for c in request.selector.select(inventory)]
    if request.group is None:
        return chosen
    last = state.last_report()
    group = last.group(request.group) if last else None
    members = set(group.clusters) if group else set()
    return [name for name in chosen if name in members]


def _poll(wait_s: float) -> float:
    return min(1.0, max(0.05, wait_s / 20))


def _scope(request: DriftRequest) -> str:
    return f"group={request.group}" if request.group else request.selector.describe()


async def remediate(
    request: DriftRequest,
    inventory: Inventory,
    report: DriftReport,
    decisions: dict[str, Decision],
    ref: RunRef,
    locks: ClusterLocks,
    result: DriftResult,
) -> None:
    """Bring back the clusters the policy says to: prune, then provision only them."""
    chosen, blocked = clusters_to_remediate(decisions)
    result.blocked = blocked
    if not chosen:
        return
    logger = get_run_logger()
    taken, busy = await locks.acquire_waiting(chosen, wait_s=request.lock_wait_s,
                                              poll_s=_poll(request.lock_wait_s))
    result.busy += busy
    report.skipped_busy = busy
    if busy:
        logger.warning("drift: %d cluster(s) held by a provisioning run: skipped", len(busy))
    try:
        by_name = {c.cluster: c for c in report.clusters}
        candidates = {
            name: [f for f in by_name[name].findings if f.kind is Kind.PRUNE] for name in taken
        }
        candidates = {n: f for n, f in candidates.items() if f}
        if candidates:
            async with open_run(ref, inventory):
                pruned, left = await prune_objects(ref, candidates, f"{len(candidates)} clusters")
            report.pruned = result.pruned = pruned
            for line in left:
                logger.warning("prune: %s", line)
        if not taken:
            return
        provisioning = ProvisionRequest(
            inventory=request.inventory, repo=request.repo, git_ref=request.git_ref,
            selector=Selector(clusters=taken), time_scale=request.time_scale,
        )
        outcome = await provision(provisioning)
        fleet = outcome.data if isinstance(outcome, State) else outcome
        if isinstance(outcome, State):
            fleet = await outcome.result(raise_on_failure=False) if fleet is None else fleet
        report.remediated = result.remediated = taken
        result.remediation = fleet.headline() if isinstance(fleet, FleetResult) else "crashed"
        for group in report.groups:
            if set(group.clusters) & set(taken):
                group.action = f"remediated {len(set(group.clusters) & set(taken))}"
    finally:
        locks.release(taken)


def _fill(result: DriftResult, report: DriftReport) -> None:
    result.headline = report.headline()
    result.counts = report.counts()
    result.groups = report.group_rows()[:100]
    result.exit_code = int(report.exit_code())
    stages = {"machine": 0, "node": 1, "addon": 2}
    order = ["InfrastructureReady", "Bootstrapped", "AddonsReady", "Verified"]
    for cluster in report.drifted:
        first = min(stages[str(f.area)] for f in cluster.findings)
        result.out_of_shape[cluster.cluster] = order[first:]


def run_sync(request: DriftRequest) -> DriftResult:
    """For scripts and tests: run the flow in this process; its result."""
    state = asyncio.run(drift_check(request, return_state=True))  # type: ignore[call-overload]
    data = state.result(raise_on_failure=False)
    assert isinstance(data, DriftResult), data
    return data
