"""The stage model a real kubelet forces: a Node is NotReady until a CNI runs, and the CNI
is an add-on. Bootstrapped therefore means "every machine registered" (Ready or not),
AddonsReady installs the CNI first and waits for it, and Verified wants every Node Ready.

werft before this change waited for Ready nodes in Bootstrapped and deadlocked on every
real cluster (the first test); a CNI that never comes up must end in a deadline failure
that names it, with nothing that needs a network applied meanwhile.
"""

from __future__ import annotations

from tests.stagefixtures import EDGE, StageFleet, stage_fleet_fixture  # noqa: F401
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
