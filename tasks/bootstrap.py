"""Stage 2 as a Prefect task: nodes self-bootstrap from cloud-init; the API and nodes come up."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.batch import BatchResult, BatchSpec, run_batch
from tasks.policy import retry_options
from werft.conditions import ConditionType


@task(
    name="bootstrap",
    task_run_name="bootstrap[{batch.label}]",
    cache_policy=NO_CACHE,
    **retry_options(),
)
async def bootstrap(batch: BatchSpec) -> BatchResult:
    """Bootstrapped: wait for /readyz and every node Ready with the requested version."""
    return await run_batch(ConditionType.BOOTSTRAPPED, batch)
