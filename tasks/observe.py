"""Observation as a Prefect task: what the selected clusters satisfy right now (read-only)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.context import RunRef, resources_for
from werft.conditions import ConditionType
from werft.redact import redacted_exceptions
from werft.stages import observe_clusters


@task(name="observe", task_run_name="observe[{scope}]", cache_policy=NO_CACHE)
async def observe(
    run: RunRef, clusters: list[str], scope: str, max_concurrency: int = 32
) -> dict[str, dict[ConditionType, bool]]:
    """Per cluster, which conditions hold; an unreachable cluster holds none from there on."""
    with redacted_exceptions():  # Prefect stores a crash's text itself: mask secrets first
        resources = await resources_for(run)
        chosen = [resources.inventory.clusters[name] for name in clusters]
        return await observe_clusters(chosen, resources.stages, max_concurrency)
