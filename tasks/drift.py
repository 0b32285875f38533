"""Drift as Prefect tasks: the read-only check of the selected clusters, and pruning.

One task run checks the whole selection (inside, clusters run concurrently, bounded): a
task run per cluster would cost more Prefect bookkeeping than the check itself.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.context import RunRef, resources_for
from werft.drift.check import check_clusters
from werft.drift.findings import ClusterReport, Finding
from werft.drift.prune import prune
from werft.redact import redacted_exceptions


@task(name="drift-check", task_run_name="drift-check[{scope}]", cache_policy=NO_CACHE)
async def check(
    run: RunRef,
    clusters: list[str],
    scope: str,
    concurrency: int = 32,
    deadline_s: float = 30.0,
    busy: list[str] | None = None,
) -> list[ClusterReport]:
    """Per cluster: in shape, drifted (with its findings) or why it could not be checked."""
    with redacted_exceptions():
        resources = await resources_for(run)
        chosen = [resources.inventory.clusters[name] for name in clusters]
        return await check_clusters(chosen, resources.stages, concurrency=concurrency,
                                    deadline_s=deadline_s, busy=set(busy or ()))


@task(name="drift-prune", task_run_name="drift-prune[{scope}]", cache_policy=NO_CACHE)
async def prune_objects(
    run: RunRef, candidates: dict[str, list[Finding]], scope: str
) -> tuple[int, list[str]]:
    """Delete the prune candidates of these clusters; (deleted, left and why)."""
    with redacted_exceptions():
        resources = await resources_for(run)
        deleted, left = 0, []
        for name, findings in candidates.items():
            cluster = resources.inventory.clusters[name]
            n, why = await prune(cluster, resources.stages, findings)
            deleted += n
            left += [f"{name}: {w}" for w in why]
        return deleted, left
