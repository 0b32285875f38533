"""Stage 1 as a Prefect task: machines powered on, booting the OS image and their seeds."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.batch import BatchResult, BatchSpec, run_batch
from tasks.policy import retry_options
from werft.conditions import ConditionType


@task(
    name="infrastructure",
    task_run_name="infrastructure[{batch.label}]",
    cache_policy=NO_CACHE,
    **retry_options(),
)
async def infrastructure(batch: BatchSpec) -> BatchResult:
    """InfrastructureReady for every cluster of the batch (Redfish, libvirt or simulated)."""
    return await run_batch(ConditionType.INFRASTRUCTURE_READY, batch)
