"""The stage model a real kubelet forces: a Node is NotReady until a CNI runs, and the CNI
is an add-on. Bootstrapped therefore means "every machine registered" (Ready or not),
AddonsReady installs the CNI first and waits for it, and Verified wants every Node Ready.

werft before this change waited for Ready nodes in Bootstrapped and deadlocked on every
real cluster (the first test); a CNI that never comes up must end in a deadline failure
that names it, with nothing that needs a network applied meanwhile.
"""

from __future__ import annotations

from tests.stagefixtures import (  # noqa: F401
    BARE_METAL,
    EDGE,
    StageFleet,
    run_all,
    stage_fleet_fixture,
)
from werft.conditions import ConditionType
from werft.inventory.load import load_inventory
from werft.kube import health
from werft.render.pki import ensure_cluster_pki
from werft.stages import ensure_addons, ensure_bootstrapped, ensure_infrastructure, verify_cluster
from werft.stages.checks import check_nodes


async def test_bootstrapped_means_registered_even_while_no_cni_runs(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    assert (await ensure_infrastructure(cluster, f.ctx)).ok

    bootstrapped = await ensure_bootstrapped(cluster, f.ctx)

    assert (bootstrapped.status, bootstrapped.reason) == ("True", "Bootstrapped"), bootstrapped
    async with f.ctx.kube(cluster) as kube:
        nodes = await kube.list("v1", "Node")
        # k3s creates no bootstrap-token Secret: werft does, from the token in the seeds.
        pki = ensure_cluster_pki(cluster, f.ctx.secrets)
        token_id = pki.bootstrap_token.split(".", 1)[0]
        secret = await kube.get("v1", "Secret", f"bootstrap-token-{token_id}", "kube-system")
    assert secret is not None and secret["type"] == "bootstrap.kubernetes.io/token"
    assert check_nodes(cluster, nodes).registered_at_version
    # As a kubelet without a CNI reports itself: NotReady, tainted not-ready.
    node = nodes[0]
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and "cni" in ready["message"].lower()
    taints = {(t["key"], t["effect"]) for t in node["spec"].get("taints", [])}
    assert ("node.kubernetes.io/not-ready", "NoSchedule") in taints

    # Verified is where Ready is required.
    early = await verify_cluster(cluster, f.ctx)
    assert early.status == "False" and "fail: nodes Ready 0/1" in early.checks

    assert (await ensure_addons(cluster, f.ctx)).ok
    assert (await verify_cluster(cluster, f.ctx)).reason == "Verified"


async def test_cni_that_never_comes_up_fails_addons_at_the_deadline_naming_it(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    template = f.root / "addons" / "base" / "flannel.yaml.j2"
    daemonset_metadata = "kind: DaemonSet\nmetadata:\n"
    stalled = template.read_text().replace(
        daemonset_metadata,
        daemonset_metadata + "  annotations:\n    sim.werft.dev/unavailable: image pull backoff\n",
    )
    assert stalled != template.read_text()
    template.write_text(stalled)
    ctx = f.with_inventory(load_inventory(f.root))
    cluster = ctx.inventory.clusters[EDGE]
    assert (await ensure_infrastructure(cluster, ctx)).ok
    assert (await ensure_bootstrapped(cluster, ctx)).ok

    short = f.with_inventory(ctx.inventory, addons=1.0)
    failed = await ensure_addons(cluster, short)

    assert (failed.status, failed.reason, failed.transient) == (
        "False",
        "AddonNotAvailable",
        True,
    )
    assert "DaemonSet kube-flannel/kube-flannel-ds not Available" in failed.message
    async with ctx.kube(cluster) as kube:
        # Nothing that needs a pod network was applied before the CNI was up.
        assert await kube.get("apps/v1", "Deployment", "source-controller", "flux-system") is None
        nodes = await kube.list("v1", "Node")
    assert not any(health(node)[0] for node in nodes)
    verified = await verify_cluster(cluster, ctx)
    assert verified.type == ConditionType.VERIFIED and verified.status == "False"


async def test_a_kubeadm_cluster_without_workers_runs_its_add_ons_on_its_control_plane(
    stage_fleet: StageFleet,
) -> None:
    """kubeadm taints every control plane NoSchedule unless its nodeRegistration says
    otherwise. A cluster with no worker has nowhere else to run a Deployment, so werft
    must register its control planes untainted: before, every single-node kubeadm site
    waited out the add-on deadline (the sample's single-node sites are k3s, which taints
    nothing)."""
    f = stage_fleet
    profile = f.root / "profiles" / "edge-single-node.yaml"
    kubeadm = profile.read_text().replace("distribution: k3s", "distribution: kubeadm")
    assert kubeadm != profile.read_text()
    profile.write_text(kubeadm)
    ctx = f.with_inventory(load_inventory(f.root), addons=5.0)
    cluster = ctx.inventory.clusters[EDGE]

    results = await run_all(cluster, ctx)

    assert [c.reason for c in results][-1] == "Verified", results[-1]
    async with ctx.kube(cluster) as kube:
        [node] = await kube.list("v1", "Node")
    assert node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == ""  # kubeadm
    assert "taints" not in node["spec"]


async def test_a_kubeadm_cluster_with_workers_keeps_its_control_planes_tainted(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(BARE_METAL)
    assert cluster.distribution == "kubeadm" and cluster.workers

    assert [c.reason for c in await run_all(cluster, f.ctx)][-1] == "Verified"

    async with f.ctx.kube(cluster) as kube:
        nodes = {n["metadata"]["name"]: n for n in await kube.list("v1", "Node")}
    for machine in cluster.machines:
        taints = {(t["key"], t["effect"]) for t in nodes[machine.name]["spec"].get("taints", [])}
        tainted = ("node-role.kubernetes.io/control-plane", "NoSchedule") in taints
        assert tainted == (machine.role == "control-plane"), (machine.name, taints)
