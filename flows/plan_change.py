"""The plan-change flow: what a pull request would do to the fleet, told to the forge.

    fetch the base branch and the pull request's head (when the repository mirrors a forge)
    read who approved it (the forge's reviews / approvals)
    plan: base vs head -> changed objects, affected clusters and stages, diffs, waves,
          blast radius, policy verdicts (werft.gitops)
    publish the plan as a markdown artifact; comment on the pull request and set the
          ``werft/plan`` commit status (success, failure when denied or invalid)

A denied or invalid change is a verdict, not a failed run: the run completes with it.
The webhook receiver (werft/webhook.py) starts this deployment for pull request events.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from tasks.gitops import fetch_refs, notify, plan, read_approvers, set_status
from tasks.secret_blocks import use_secret_blocks
from werft.gitops.forge import ForgeTarget
from werft.gitops.report import markdown


class PlanChangeRequest(BaseModel):
    """Which change to plan: two revisions of the inventory repository."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(".", description="Local clone or bare repository of the inventory")
    inventory: str = Field("inventory", description="Inventory folder inside the repository")
    base: str = Field("main", description="The target branch")
    head: str = Field("HEAD", description="The pull request's head commit (or branch)")
    head_ref: str | None = Field(
        None, description="The forge's ref to fetch the head from (refs/pull/7/head)"
    )
    author: str | None = Field(None, description="Who asks (default: the head commit's author)")
    approvers: list[str] = Field(
        default_factory=list, description="Who approved (default: read from the forge)"
    )
    forge: ForgeTarget | None = Field(None, description="Where to comment and set the status")


class PlanChangeResult(BaseModel):
    flow_run_id: str | None = None
    base: str = ""
    head: str = ""
    headline: str = ""
    state: str = ""  # success, denied, failure (invalid)
    exit_code: int = 0
    provision: list[str] = Field(default_factory=list)  # clusters a merge provisions
    denials: list[str] = Field(default_factory=list)
    comment: str = ""  # the forge comment's URL


def _run_name() -> str:
    request = PlanChangeRequest.model_validate((flow_run.parameters or {}).get("request") or {})
    where = f"#{request.forge.number}" if request.forge else request.head[:12]
    return f"plan-change[{where}]"


@flow(name="plan-change", flow_run_name=_run_name)
async def plan_change(request: PlanChangeRequest | None = None) -> PlanChangeResult:
    """Plan a pull request's change and report it on the pull request."""
    request = request or PlanChangeRequest()
    use_secret_blocks()
    logger = get_run_logger()
    if request.forge is not None:  # the pull request shows that werft is on it
        await set_status(request.forge, "pending", "werft is planning this change")
    refspecs = [f"+refs/heads/{request.base}:refs/remotes/origin/{request.base}"]
    if request.head_ref:
        refspecs.append(f"+{request.head_ref}:refs/werft/head")
    fetched = await fetch_refs(request.repo, refspecs)
    base = f"refs/remotes/origin/{request.base}" if fetched else request.base
    approvers = list(request.approvers)
    if request.forge is not None and not approvers:
        approvers = await read_approvers(request.forge)

    change = await plan(
        request.repo, request.inventory, base, request.head, request.author, approvers
    )
    body = markdown(change)
    await acreate_markdown_artifact(body, key="werft-change-plan", description=change.headline())
    logger.info("%s", change.headline())
    result = PlanChangeResult(
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        base=change.revisions.base_sha,
        head=change.revisions.head_sha,
        headline=change.headline(),
        state=change.state,
        exit_code=int(change.exit_code),
        provision=[i.name for i in change.runnable()][:1000],
        denials=[str(d) for d in change.verdicts.denials],
    )
    if request.forge is not None:
        result.comment = await notify(request.forge, body, change.state, change.headline())
    return result
