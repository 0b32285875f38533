"""The drift check of single clusters on the simulator: every kind of drift is named by
field, with desired and live value and who changed it; a converged cluster costs reads
only and reports nothing; an offline site is Unreachable, not drifted."""

from __future__ import annotations

from tests.stagefixtures import EDGE, StageFleet, run_all, stage_fleet_fixture  # noqa: F401
from werft.drift.check import check_cluster
from werft.drift.findings import Kind, Outcome
from werft.drift.report import DriftReport
from werft.exitcodes import ExitCode
from werft.inventory.load import load_inventory
from werft.stages.verify import verify_cluster


async def test_converged_cluster_is_in_shape_with_reads_only(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    assert all(c.ok for c in await run_all(cluster, f.ctx))
    f.sim.reset_stats()

    report = await check_cluster(cluster, f.ctx)

    assert (report.outcome, report.findings) == (Outcome.IN_SHAPE, [])
    assert report.objects > 0
    assert f.mutations() == 0
    assert f.sim.stats()["requests"] > report.objects  # it did look: a dry run per object
    assert DriftReport.of([report]).exit_code() == ExitCode.OK


async def test_manual_edit_is_named_by_field_with_values_manager_and_time(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    await run_all(cluster, f.ctx)
    f.sim.drift(kind="change-object", cluster=EDGE, apiVersion="apps/v1",
                resource="deployments", namespace="flux-system", name="source-controller",
                patch={"spec": {"replicas": 3}})
    f.sim.reset_stats()

    report = await check_cluster(cluster, f.ctx)

    assert report.outcome is Outcome.DRIFTED
    [finding] = report.findings
    assert (finding.kind, finding.object, finding.field) == (
        Kind.FIELD, "Deployment flux-system/source-controller", ".spec.replicas")
    assert (finding.desired, finding.live, finding.manager) == ("1", "3", "kubectl-edit")
    assert finding.since is not None and finding.conflict
    assert finding.addon == "source-controller" and finding.addon_set == "gitops"
    assert f.mutations() == 0
    report_all = DriftReport.of([report])
    assert report_all.exit_code() == ExitCode.DRIFT
    assert report_all.groups[0].headline() == (
        "Deployment flux-system/source-controller .spec.replicas 1 → 3 by kubectl-edit "
        f"on 1 cluster (edge, {cluster.region})")


async def test_deleted_object_machine_and_node_drift_are_findings(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    await run_all(cluster, f.ctx)
    node = cluster.machines[0].name
    f.sim.drift(kind="delete-object", cluster=EDGE, apiVersion="v1", resource="configmaps",
                namespace="kube-flannel", name="kube-flannel-cfg")
    f.sim.drift(kind="kubelet-version", cluster=EDGE, node=node, version="v1.29.0")

    report = await check_cluster(cluster, f.ctx)

    found = {(x.kind, x.object, x.field, x.live) for x in report.findings}
    assert (Kind.MISSING, "ConfigMap kube-flannel/kube-flannel-cfg", "", "(absent)") in found
    assert (Kind.NODE, "Node", ".status.nodeInfo.kubeletVersion", "v1.29.0") in found

    f.sim.drift(kind="power-off", machine=node)
    off = await check_cluster(cluster, f.ctx)
    power = [(x.object, x.field, x.live) for x in off.findings]
    assert ("Machine", "power", "Off") in power, off
    assert [f for f in power if f[1] == "media"] == []  # an off machine is the power finding


async def test_object_the_inventory_dropped_is_a_prune_candidate(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    await run_all(cluster, f.ctx)
    addonset = f.root / "addons" / "gitops" / "addonset.yaml"
    text = addonset.read_text()
    # kustomize-controller goes: its objects stay on the cluster, labelled werft's
    start = text.index("    - name: kustomize-controller")
    addonset.write_text(text[:start])
    ctx = f.with_inventory(load_inventory(f.root))

    report = await check_cluster(ctx.inventory.clusters[EDGE], ctx)

    pruned = {x.object for x in report.findings if x.kind is Kind.PRUNE}
    assert "Deployment flux-system/kustomize-controller" in pruned
    assert all(x.kind is Kind.PRUNE for x in report.findings), report.findings


async def test_offline_site_is_unreachable_not_drifted(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    await run_all(cluster, f.ctx)
    f.sim.add_fault(kind="offline", site=cluster.site)

    report = await check_cluster(cluster, f.ctx, deadline_s=5.0)

    assert report.outcome is Outcome.UNREACHABLE, report
    assert report.findings == []
    assert DriftReport.of([report]).exit_code() == ExitCode.NOT_FINE


async def test_a_control_plane_without_workers_tainted_against_workloads_is_node_drift(
    stage_fleet: StageFleet,
) -> None:
    """A single-node site's control plane runs its workloads (werft registers it
    untainted). Tainted NoSchedule by hand, every pod keeps running until one restarts, then
    it stays Pending: drift now, and a failed verify, not a surprise later."""
    f = stage_fleet
    cluster = f.cluster(EDGE)
    assert not cluster.workers
    await run_all(cluster, f.ctx)
    node = cluster.machines[0].name

    def taint(effect: str) -> None:
        key = "node-role.kubernetes.io/control-plane"
        f.sim.drift(kind="change-object", cluster=EDGE, apiVersion="v1", resource="nodes",
                    name=node, patch={"spec": {"taints": [{"key": key, "effect": effect}]}})

    taint("PreferNoSchedule")  # a preference keeps nothing off the node
    assert (await check_cluster(cluster, f.ctx)).outcome is Outcome.IN_SHAPE

    taint("NoSchedule")
    report = await check_cluster(cluster, f.ctx)

    assert report.outcome is Outcome.DRIFTED
    [finding] = report.findings
    assert (finding.kind, finding.field, finding.live, finding.where) == (
        Kind.NODE, ".spec.taints", "node-role.kubernetes.io/control-plane:NoSchedule", node)
    verified = await verify_cluster(cluster, f.ctx)
    assert (verified.status, verified.reason) == ("False", "VerificationFailed")
    assert "tainted" in verified.message and "kubectl taint" in verified.message
