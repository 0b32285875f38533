"""The scheduled drift check -- a placeholder until the drift issue lands.

Today it does the read-only half of provisioning: load the inventory, observe the
selected clusters, plan, and report which clusters are out of shape and what they would
need (a table artifact). It never changes anything. The deployment ``drift-check`` runs
it every 15 minutes (deployments/prefect.yaml).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import BaseModel, ConfigDict, Field

from flows.models import FleetResult
from flows.provision import load
from tasks.context import InventorySource, RunRef, open_run
from tasks.observe import observe
from tasks.secret_blocks import use_secret_blocks
from werft.plan import Selector, plan_fleet


class DriftRequest(BaseModel):
    """Which inventory and clusters to check."""

    model_config = ConfigDict(extra="forbid")

    inventory: str = Field("inventory", description="Inventory folder (inside the repo if set)")
    repo: str | None = Field(None, description="Git repository holding the inventory")
    git_ref: str | None = Field(None, description="Git revision to compare against")
    selector: Selector = Field(default_factory=Selector, description="Empty: the whole fleet")
    observe_concurrency: int = Field(32, ge=1, le=1000)


class DriftReport(BaseModel):
    source: str
    clusters: int = 0
    out_of_shape: dict[str, list[str]] = Field(default_factory=dict)  # cluster -> needed stages


@flow(name="drift-check")
async def drift_check(request: DriftRequest | None = None) -> DriftReport:
    """Observe the fleet and report drift from the inventory (read-only placeholder)."""
    request = request or DriftRequest()
    use_secret_blocks()
    source = InventorySource(path=request.inventory, repo=request.repo, git_ref=request.git_ref)
    report = DriftReport(source=source.describe())
    scratch = FleetResult(source=report.source, selector=request.selector.describe())
    inventory = await load(source, request.selector, scratch)
    if inventory is None:
        return Failed(message=scratch.reason, data=report)  # type: ignore[return-value]

    clusters = request.selector.select(inventory)
    ref = RunRef(key=f"drift-{flow_run.id}", source=source)
    async with open_run(ref, inventory):
        observed = await observe(
            ref, [c.name for c in clusters], "drift", request.observe_concurrency
        )
    plan = plan_fleet(clusters, observed)
    report.clusters = len(plan)
    report.out_of_shape = {c.name: [str(s) for s in c.needed] for c in plan.work}
    await publish(report, plan.rows())
    get_run_logger().info(
        "drift: %d of %d cluster(s) out of shape", len(report.out_of_shape), report.clusters
    )
    return report


async def publish(report: DriftReport, rows: list[dict[str, str]]) -> None:
    drifted = [r for r in rows if r["cluster"] in report.out_of_shape]
    text = (
        f"# Drift check: {len(drifted)} of {report.clusters} cluster(s) out of shape\n\n"
        f"Inventory `{report.source}`. Read-only: run `provision-fleet` to converge them."
    )
    await acreate_markdown_artifact(text, key="werft-drift-summary", description="drift")
    if drifted:
        await acreate_table_artifact(drifted[:5000], key="werft-drift", description="drift")
