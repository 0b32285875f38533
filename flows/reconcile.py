"""The reconcile flow: a merge is all it takes for the fleet to follow.

    fetch the main branch (when the repository mirrors a forge)
    compare its head with the last reconciled revision (a Prefect variable every worker
        sees, shown under Variables in the UI); nothing moved -> done
    plan the change between the two (werft.gitops): the affected clusters and stages
    provision only those clusters, through the usual waves (the provision-fleet flow,
        called as a subflow), at the new revision
    record the new revision -- only when provisioning succeeded, so a failed run is
        retried from the same base by the next push or poll

Decommissions and upgrades are flagged by the plan and never run here. Change policy is
judged on the pull request (make ``werft/plan`` a required status check); by the time a
change is on main it was reviewed. The deployment also runs every 5 minutes, a poll for
forges that cannot reach the webhook receiver.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.variables import Variable
from pydantic import BaseModel, ConfigDict, Field

from flows.models import FleetResult, ProvisionRequest
from flows.provision import provision_fleet
from tasks.gitops import fetch_refs, plan
from werft.gitops.revisions import head_sha
from werft.plan import Selector


class ReconcileRequest(BaseModel):
    """Which branch of which repository the fleet follows."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(".", description="Local clone or bare repository of the inventory")
    inventory: str = Field("inventory", description="Inventory folder inside the repository")
    branch: str = Field("main", description="The branch the fleet follows")
    expected: str | None = Field(None, description="The commit a push announced (for the log)")
    first_run: Literal["record", "provision"] = Field(
        "record",
        description="With no revision reconciled yet: record the head as the baseline, or "
        "provision the whole fleet at it",
    )
    time_scale: float = Field(1.0, gt=0, description="The simulator's time scale")


class ReconcileResult(BaseModel):
    flow_run_id: str | None = None
    previous: str | None = None
    current: str = ""
    action: str = ""  # up-to-date, recorded, nothing-to-run, provisioned, failed, invalid
    clusters: list[str] = Field(default_factory=list)  # provisioned (first 1000)
    flagged: list[str] = Field(default_factory=list)  # decommissions and upgrades not run
    message: str = ""


def variable_name(repo: str, branch: str) -> str:
    """``werft-reconciled-<repo folder>-<branch>``: one per followed branch."""
    raw = f"werft-reconciled-{Path(repo).resolve().name}-{branch}"
    return re.sub(r"[^a-z0-9_-]+", "-", raw.lower())[:200]


def _run_name() -> str:
    request = ReconcileRequest.model_validate((flow_run.parameters or {}).get("request") or {})
    return f"reconcile[{request.branch}]"


@flow(name="reconcile", flow_run_name=_run_name)
async def reconcile(request: ReconcileRequest | None = None) -> Any:
    """Bring the fleet to the head of the branch, provisioning only what the change touched."""
    request = request or ReconcileRequest()
    logger = get_run_logger()
    branch = request.branch
    fetched = await fetch_refs(request.repo, [f"+refs/heads/{branch}:refs/remotes/origin/{branch}"])
    ref = f"refs/remotes/origin/{branch}" if fetched else branch
    current = await asyncio.to_thread(head_sha, Path(request.repo), ref)
    if request.expected and request.expected != current:
        logger.info("%s moved on since the push of %s: reconciling %s", branch,
                    request.expected[:10], current[:10])
    name = variable_name(request.repo, branch)
    previous = await Variable.aget(name, default=None)
    result = ReconcileResult(
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        previous=str(previous) if previous else None,
        current=current,
    )
    if previous == current:
        result.action = "up-to-date"
        return result
    if previous is None and request.first_run == "record":
        await Variable.aset(name, current, overwrite=True)
        result.action, result.message = "recorded", f"baseline {current[:10]} recorded"
        return result

    selector, flagged = Selector(), []
    if previous is not None:
        change = await plan(request.repo, request.inventory, str(previous), current, None, [])
        if not change.valid:
            result.action = "invalid"
            result.message = f"{branch} at {current[:10]} is invalid: {change.headline()}"
            return Failed(message=result.message, data=result)
        flagged = [f"{i.name}: {i.action}" for i in change.impacts if i.destructive or i.refused]
        names = [i.name for i in change.runnable()]
        result.flagged = flagged
        for line in flagged:
            logger.warning("not run by reconcile: %s", line)
        if not names:
            await Variable.aset(name, current, overwrite=True)
            result.action = "nothing-to-run"
            return result
        selector = Selector(clusters=names)

    provisioning = ProvisionRequest(
        inventory=request.inventory,
        repo=request.repo,
        git_ref=current,
        selector=selector,
        time_scale=request.time_scale,
    )
    state: State[Any] = await provision_fleet(provisioning, return_state=True)  # type: ignore[call-overload]
    fleet = await state.aresult(raise_on_failure=False)
    if isinstance(fleet, FleetResult):
        result.clusters = [c.cluster for c in fleet.clusters][:1000]
    if not state.is_completed():
        result.action = "failed"
        result.message = f"provisioning {current[:10]} failed: {state.message}"
        return Failed(message=result.message, data=result)
    await Variable.aset(name, current, overwrite=True)
    result.action = "provisioned"
    since = str(previous)[:10] if previous else "nothing"
    result.message = f"{since} -> {current[:10]}: {len(result.clusters)} cluster(s) provisioned"
    return Completed(message=result.message, data=result)
