"""300 edge clusters with the same manual edit give one finding group of 300 (a
``fleet_scale`` test, run by ``make test-fleet``: the fleet is provisioned first, by the
stages without Prefect). tests/test_drift_flow.py does
the same with 30 clusters through the Prefect flow in the normal suite."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.driftfixtures import FLANNEL_CM
from tests.simfixtures import reserve_port, running_sim, write_edge_fleet
from werft.conditions import STAGE_ORDER
from werft.drift.check import check_clusters
from werft.drift.report import DriftReport
from werft.exitcodes import ExitCode
from werft.inventory.load import load_inventory
from werft.stages import StageContext, StageTimeouts, run_stage_batch

EDGE = 300
TIME_SCALE = 2000.0


@pytest.mark.fleet_scale
def test_same_edit_on_300_edge_clusters_is_one_group_of_300(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WERFT_HOME", str(tmp_path / ".werft"))
    sock = reserve_port()
    root = write_edge_fleet(tmp_path, EDGE, sock.getsockname()[1])
    inventory = load_inventory(root)
    artifacts = tmp_path / ".werft" / "artifacts"
    with running_sim(inventory, sock=sock, time_scale=TIME_SCALE, artifacts_dir=artifacts,
                     default_credentials=None) as sim:

        async def scenario() -> tuple[DriftReport, int]:
            ctx = StageContext.for_inventory(
                inventory, artifacts_dir=artifacts, kube_threads=32,
                timeouts=StageTimeouts().scaled(TIME_SCALE, min_deadline=30.0))
            clusters = sorted(inventory.clusters.values(), key=lambda c: c.name)
            try:
                for start in range(0, EDGE, 50):
                    batch = clusters[start : start + 50]
                    for stage in STAGE_ORDER:
                        results = await run_stage_batch(stage, batch, ctx, 50)
                        assert all(r.ok for r in results), [r.message for r in results][:3]
                for cluster in clusters:  # the same `kubectl edit` everywhere
                    sim.drift(kind="change-object", cluster=cluster.name, **FLANNEL_CM,
                              patch={"metadata": {"labels": {"team": "edge-ops"}},
                                     "data": {"cni-conf.json": "{}"}})
                sim.reset_stats()
                reports = await check_clusters(clusters, ctx, concurrency=64)
                return DriftReport.of(reports), sim.mutations()
            finally:
                await ctx.aclose()

        report, mutations = asyncio.run(scenario())

    assert mutations == 0
    assert report.counts() == {"Drifted": EDGE}
    [group] = report.groups
    assert group.count == EDGE and group.tiers == {"edge": EDGE}
    assert (group.finding.object, group.finding.field, group.finding.manager) == (
        "ConfigMap kube-flannel/kube-flannel-cfg", '.data["cni-conf.json"]', "kubectl-edit")
    assert group.headline().startswith(
        "ConfigMap kube-flannel/kube-flannel-cfg .data[\"cni-conf.json\"] ")
    assert f"by kubectl-edit on {EDGE} clusters (edge, " in group.headline()
    assert report.exit_code() == ExitCode.DRIFT
