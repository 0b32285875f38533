"""One transient fault at any one request of a cluster's provisioning still ends Verified,
with every machine installed exactly once.

A reference cluster is provisioned without faults to count its requests (BMC and cluster
API). Then every other cluster of the fleet gets a single 503 at a different position of
its own request sequence (the simulator's ``skip``/``count`` fault fields), all provisioned
together: positions spread over the whole sequence, so every kind of request -- reads,
settings, media inserts, resets, applies, probes -- takes its turn. The ``fleet_scale`` variant
puts a fault at every position.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.stagefixtures import StageFleet, stage_fleet_of
from werft.conditions import STAGE_ORDER
from werft.inventory.resolved import ResolvedCluster
from werft.stages import run_stage_batch


def requests_of(f: StageFleet, cluster: ResolvedCluster) -> int:
    by_target = f.sim.stats()["requestsByTarget"]
    machines = sum(
        by_target["bmc"].get(m.name, 0) + by_target["hypervisor"].get(m.name, 0)
        for m in cluster.machines
    )
    return machines + by_target["clusters"].get(cluster.name, 0)


async def provision(f: StageFleet, clusters: list[ResolvedCluster]) -> dict[str, str]:
    """Every stage over the clusters as one batch; each cluster's last condition reason."""
    last = {c.name: "" for c in clusters}
    active = list(clusters)
    for stage in STAGE_ORDER:
        # As an edge batch runs: bounded, since every simulated BMC shares one origin here
        # (one connection pool), where real sites each have their own.
        conditions = await run_stage_batch(stage, active, f.ctx, max_concurrency=25)
        for cluster, condition in zip(active, conditions, strict=True):
            last[cluster.name] = f"{condition.reason}: {condition.message}"
        active = [c for c, cond in zip(active, conditions, strict=True) if cond.ok]
    return last


async def check_every_position_is_survived(f: StageFleet, stride_limit: int | None) -> None:
    edge = sorted(
        (c for c in f.inventory.clusters.values() if str(c.tier) == "edge"), key=lambda c: c.name
    )
    reference, others = edge[0], edge[1:]
    f.sim.reset_stats()
    outcome = await provision(f, [reference])
    assert outcome[reference.name].startswith("Verified"), outcome
    total = requests_of(f, reference)
    stride = 1 if stride_limit is None else max(1, math.ceil(total / stride_limit))
    positions = list(range(0, total, stride))[: len(others)]
    assert len(positions) == min(len(others), math.ceil(total / stride))

    targets = others[: len(positions)]
    rules = {
        c.name: f.sim.add_fault(kind="error", status=503, site=c.site, skip=p, count=1)["id"]
        for c, p in zip(targets, positions, strict=True)
    }
    outcome = await provision(f, targets)

    failed = {name: why for name, why in outcome.items() if not why.startswith("Verified")}
    assert not failed, failed
    # A cluster's request count varies a little with its polls: a fault is served exactly
    # when its cluster made more requests than its position, and most were.
    hits = {r["id"]: r["hits"] for r in f.sim.faults()["rules"]}
    served = {c.name: hits[rules[c.name]] for c in targets}
    expected = {
        c.name: int(p < requests_of(f, c))  # the faulted request is counted too
        for c, p in zip(targets, positions, strict=True)
    }
    assert served == expected, (total, served, expected)
    assert sum(served.values()) >= 0.7 * len(targets), (total, served)
    for cluster in targets:
        for machine in cluster.machines:
            assert f.sim.machine(machine.name)["installs"] == 1, machine.name


async def test_a_single_503_at_any_request_still_ends_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stage_fleet_of(
        tmp_path, monkeypatch, edge_sites=25, core_sites=0, near_edge_sites=0
    ) as f:
        await check_every_position_is_survived(f, stride_limit=24)


@pytest.mark.fleet_scale
async def test_a_single_503_at_every_request_still_ends_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stage_fleet_of(
        tmp_path, monkeypatch, edge_sites=120, core_sites=0, near_edge_sites=0
    ) as f:
        await check_every_position_is_survived(f, stride_limit=None)
