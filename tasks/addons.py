"""Stage 3 as a Prefect task: the cluster's add-on sets, server-side applied and healthy."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.batch import BatchResult, BatchSpec, run_batch
from tasks.policy import retry_options
from werft.conditions import ConditionType


@task(
    name="addons",
    task_run_name="addons[{batch.label}]",
    cache_policy=NO_CACHE,
    **retry_options(),
)
async def addons(batch: BatchSpec) -> BatchResult:
    """AddonsReady: apply in dependency order, wait for every workload to be available."""
    return await run_batch(ConditionType.ADDONS_READY, batch)
