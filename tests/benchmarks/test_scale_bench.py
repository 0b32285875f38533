"""Where the CPU goes in an edge rollout (make bench; issue 12).

1. HTTP requests per edge cluster for a full provisioning, by stage (observe, then the
   four stages) and by target (BMC, cluster API, anything else the simulator serves),
   counted by the simulator (``/_sim/stats``, reset between stages). The issue's goal is
   no more than ~30 per cluster. Every stage runs over all clusters at once, so the
   counts are per stage, not interleaved (a cluster that fails a stage fails the
   benchmark: retries would skew the counts). The wait phases poll, so the figure depends a
   little on timing; it is measured at the tests' time scale (1000).
2. A profile of a WERFT_BENCH_PROFILE_EDGE_SITES (default 300) edge-site rollout with
   Prefect (the provision-fleet flow against a real ``prefect server``, the simulator in
   a process of its own, as a real fleet's BMCs and API servers are), every thread of
   this process sampled and weighted by CPU (cpuprofile.py: cProfile sees one thread and
   counts waiting as time): the event loop (werft's stages, httpx), the threads the
   kubernetes client runs in and Prefect's client threads.
   The top entries are written to profile-edge-rollout.txt next to this file, for the
   next person to see the hot spots.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.cpuprofile import sampling
from tests.benchmarks.test_fleet_bench import (
    _with_prefect,
    edge_fleet,
    edge_fleet_on_sim_process,
    prefect_server,
)
from tests.simfixtures import SimHandle
from werft.conditions import STAGE_ORDER
from werft.inventory.load import load_inventory
from werft.stages import StageContext, StageTimeouts, observe_clusters, run_stage_batch

TIME_SCALE = 1000.0
REQUEST_SITES = int(os.environ.get("WERFT_BENCH_REQUEST_SITES", "50"))
PROFILE_SITES = int(os.environ.get("WERFT_BENCH_PROFILE_EDGE_SITES", "300"))
PROFILE_TXT = Path(__file__).with_name("profile-edge-rollout.txt")
TOP = 40
REQUEST_GOAL = 30
# Clusters worked on at once: the sample fleet's edge batch size, so the simulator sees the
# load a rollout puts on it (and no stage fails for want of a connection).
CONCURRENCY = 25


def _per_target(snapshot: dict[str, Any]) -> dict[str, int]:
    by_target = {t: sum(c.values()) for t, c in snapshot["requestsByTarget"].items()}
    mutating = sum(sum(c.values()) for c in snapshot["mutations"].values())
    other = snapshot["requests"] - sum(by_target.values())
    return {**by_target, "other": other, "total": snapshot["requests"], "mutating": mutating}


async def _stage_by_stage(root: Path, sim: SimHandle) -> dict[str, dict[str, int]]:
    """Observe, then each stage over every cluster; the simulator's counts after each."""
    inventory = load_inventory(root)
    clusters = list(inventory.clusters.values())
    ctx = StageContext.for_inventory(inventory, timeouts=StageTimeouts().scaled(TIME_SCALE))
    counts: dict[str, dict[str, int]] = {}
    try:
        sim.reset_stats()
        await observe_clusters(clusters, ctx, CONCURRENCY)
        counts["observe"] = _per_target(sim.stats())
        for stage in STAGE_ORDER:
            sim.reset_stats()
            results = await run_stage_batch(stage, clusters, ctx, CONCURRENCY)
            counts[str(stage)] = _per_target(sim.stats())
            assert all(r.ok for r in results), [r.message for r in results if not r.ok][:3]
    finally:
        await ctx.aclose()
    return counts


@pytest.mark.bench
def test_http_requests_per_edge_cluster_by_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WERFT_HOME", str(tmp_path / ".werft"))
    with edge_fleet(tmp_path, TIME_SCALE, REQUEST_SITES) as (root, sim):
        counts = asyncio.run(_stage_by_stage(root, sim))

    columns = ["bmc", "hypervisor", "clusters", "other", "total", "mutating"]
    lines = [f"{'stage':<22}" + "".join(f"{c:>11}" for c in columns)]
    for stage, row in counts.items():
        lines.append(f"{stage:<22}" + "".join(f"{row[c] / REQUEST_SITES:>11.1f}" for c in columns))
    total = {c: sum(row[c] for row in counts.values()) for c in columns}
    lines.append(
        f"{'full provisioning':<22}"
        + "".join(f"{total[c] / REQUEST_SITES:>11.1f}" for c in columns)
    )
    per_cluster = total["total"] / REQUEST_SITES
    print(
        f"\nHTTP requests per edge cluster ({REQUEST_SITES} edge sites, time scale "
        f"{TIME_SCALE:g}), as the simulator counted them:\n"
        + "\n".join(lines)
        + f"\nper edge cluster: {per_cluster:.1f} requests for a full provisioning "
        f"(goal: <= ~{REQUEST_GOAL})"
    )
    assert total["total"] > 0


# --- the profile ---------------------------------------------------------------------------


@pytest.mark.bench
def test_profile_of_an_edge_rollout_with_prefect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "prefect").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WERFT_HOME", str(tmp_path / ".werft"))
    with (
        prefect_server(tmp_path / "prefect") as api,
        sampling() as profile,
        edge_fleet_on_sim_process(tmp_path, TIME_SCALE, PROFILE_SITES) as root,
    ):
        seconds, task_runs = _with_prefect(root, api)
    header = (
        f"CPU profile of a {PROFILE_SITES}-edge-site rollout with Prefect: provision-fleet "
        f"against a real prefect server and the simulator at time scale {TIME_SCALE:g}, "
        f"each in a process of its own (their CPU is not in here); every thread of werft's "
        f"process, sampled and weighted by each thread's CPU clock "
        f"(tests/benchmarks/cpuprofile.py). {task_runs} task runs, {seconds:.1f} s for the "
        f"run. Written by tests/benchmarks/test_scale_bench.py (make bench)."
    )
    text = header + "\n\n" + profile.report(TOP)
    PROFILE_TXT.write_text(text)
    print("\n" + "\n".join(text.splitlines()[:60]))
    assert task_runs > 0
