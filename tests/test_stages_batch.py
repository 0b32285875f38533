"""run_stage_batch: bounded concurrency, per-cluster deadlines, results in input order."""

from __future__ import annotations

import time

from tests.stagefixtures import BARE_METAL, EDGE, StageFleet, stage_fleet_fixture  # noqa: F401
from werft.conditions import ConditionType
from werft.stages import run_stage_batch

INFRA = ConditionType.INFRASTRUCTURE_READY
BOOTSTRAP = ConditionType.BOOTSTRAPPED
OTHER_EDGE = "edge-00002"


async def test_one_hanging_cluster_does_not_hold_the_batch_hostage(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    clusters = [f.cluster(EDGE), f.cluster(OTHER_EDGE), f.cluster(BARE_METAL)]
    provisioned = await run_stage_batch(INFRA, clusters, f.ctx, max_concurrency=3)
    assert [c.reason for c in provisioned] == ["Provisioned"] * 3
    # EDGE's API accepts connections and never answers (its BMC still does).
    f.sim.add_fault(kind="offline", mode="hang", seconds=30, cluster=EDGE, path="/clusters/*")
    ctx = f.with_timeouts(bootstrap=1.0, http=0.3)

    started = time.monotonic()
    results = await run_stage_batch(BOOTSTRAP, clusters, ctx, max_concurrency=3)
    elapsed = time.monotonic() - started

    # One condition per cluster, in input order.
    assert [(c.type, c.reason) for c in results] == [
        (BOOTSTRAP, "APIUnavailable"),
        (BOOTSTRAP, "Bootstrapped"),
        (BOOTSTRAP, "Bootstrapped"),
    ]
    assert results[0].transient is True
    # The hanging one ran until its own deadline (a lower bound, whatever the load) ...
    assert results[0].duration_s >= 1.0
    # ... while the others finished on their own time, well before it (ratios and order,
    # not wall-clock limits: a loaded machine slows everything alike) ...
    assert max(results[1].duration_s, results[2].duration_s) < results[0].duration_s / 2
    # ... and the batch returned once the hanging one gave up, not later.
    assert elapsed < 2 * results[0].duration_s


async def test_concurrency_is_bounded_by_max_concurrency(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    clusters = [f.cluster(EDGE), f.cluster(OTHER_EDGE), f.cluster(BARE_METAL)]
    await run_stage_batch(INFRA, clusters, f.ctx, max_concurrency=3)
    assert all(c.ok for c in await run_stage_batch(BOOTSTRAP, clusters, f.ctx, 3))
    # Every cluster API answers 0.15 s late; bootstrap on a ready cluster makes 2 calls.
    f.sim.add_fault(kind="slow", seconds=0.15, path="/clusters/*")

    async def timed(limit: int) -> float:
        started = time.monotonic()
        results = await run_stage_batch(BOOTSTRAP, clusters, f.ctx, max_concurrency=limit)
        assert [c.reason for c in results] == ["Bootstrapped"] * 3
        return time.monotonic() - started

    one_at_a_time = await timed(1)
    all_at_once = await timed(3)

    # A lower bound the injected latency guarantees, then a ratio: three at once overlap.
    assert one_at_a_time >= 3 * 2 * 0.15
    assert all_at_once < one_at_a_time * 0.6
    assert await run_stage_batch(BOOTSTRAP, [], f.ctx, max_concurrency=3) == []
