"""Stage 4 as a Prefect task: API health, nodes, version and every add-on, checked."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.batch import BatchResult, BatchSpec, run_batch
from tasks.policy import retry_options
from werft.conditions import ConditionType


@task(
    name="verify",
    task_run_name="verify[{batch.label}]",
    cache_policy=NO_CACHE,
    **retry_options(),
)
async def verify(batch: BatchSpec) -> BatchResult:
    """Verified: the record of what was checked, per cluster."""
    return await run_batch(ConditionType.VERIFIED, batch)
