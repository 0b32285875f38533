"""One stage over a batch of clusters, concurrently and bounded.

Each cluster runs under its own deadline (inside the stage) and its own error handling
(``run_stage``), so one slow or failing cluster never holds the batch hostage: the batch
returns when every cluster has either finished or run out of its time.

``unreachable_grace`` is how long a cluster's site may stay unreachable before its stage
says ``Unreachable`` (the tier's ``deferAfter``, in the run's time); see
``werft.stages.reach``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from werft.conditions import Condition, ConditionType
from werft.inventory.resolved import ResolvedCluster
from werft.stages.context import StageContext
from werft.stages.reach import grace_for_batch
from werft.stages.registry import STAGES
from werft.stages.result import INTERNAL_ERROR


async def run_stage_batch(
    stage: ConditionType,
    clusters: Sequence[ResolvedCluster],
    ctx: StageContext,
    max_concurrency: int,
    *,
    unreachable_grace: float | None = None,
) -> list[Condition]:
    """``stage`` for every cluster, at most ``max_concurrency`` at once; results in input
    order, one Condition per cluster, never an exception for a cluster's failure."""
    fn = STAGES[stage]
    gate = asyncio.Semaphore(max(1, max_concurrency))

    async def one(cluster: ResolvedCluster) -> Condition:
        async with gate:
            start = time.monotonic()
            try:
                return await fn(cluster, ctx)
            except Exception as exc:  # stages do not raise; this is a last line of defence
                return Condition(
                    type=stage,
                    status="False",
                    reason=INTERNAL_ERROR,
                    message=f"cluster {cluster.name}: {type(exc).__name__}",
                    duration_s=round(time.monotonic() - start, 3),
                )

    # The grace travels in a context variable: gather copies it into each cluster's task,
    # and the stages keep their one signature (cluster, ctx).
    with grace_for_batch(unreachable_grace):
        return list(await asyncio.gather(*(one(c) for c in clusters)))
