"""What a cluster already satisfies, for the planner: cheap, read-only, one pass.

The checks build on each other, as the stages do, and stop at the first one that fails
(the planner needs every stage from there on anyway), so an unprovisioned cluster costs
one look into the secret store and a provisioned one:

  one observe per machine (provider)   -> InfrastructureReady
  GET /readyz, LIST nodes              -> Bootstrapped: every machine a Node at the desired
                                          kubelet (Ready or not: the CNI is an add-on),
                                          and none still set to boot the installer next
  LIST each add-on kind (werft's label),
  a dry-run apply per object           -> AddonsReady (present, healthy, and the server
                                          says an apply would change nothing)
  GET /version, the Nodes Ready        -> Verified
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from werft.conditions import STAGE_ORDER, ConditionType
from werft.errors import WerftError
from werft.inventory.resolved import ResolvedCluster
from werft.kube import KubeClient, health
from werft.providers.base import MachineState, is_seed_of
from werft.render.addons import MANAGED_SELECTOR
from werft.stages.checks import bare_version, check_nodes
from werft.stages.context import StageContext

log = logging.getLogger("werft.stages")

Observation = dict[ConditionType, bool]


async def observe_cluster(cluster: ResolvedCluster, ctx: StageContext) -> Observation:
    """Which conditions ``cluster`` satisfies right now. Never raises for the cluster: an
    error (unreachable BMC, API down) means "not satisfied" from that stage on."""
    observed: Observation = dict.fromkeys(STAGE_ORDER, False)
    kubeconfig = ctx.stored_kubeconfig(cluster)
    if kubeconfig is None:  # werft never generated its PKI: nothing can be in place
        return observed
    try:
        await _observe(cluster, ctx, kubeconfig, observed)
    except WerftError as exc:
        log.debug("cluster %s: observe stopped: %s", cluster.name, exc)
    except Exception:
        log.exception("cluster %s: observe failed unexpectedly", cluster.name)
    return observed


async def observe_clusters(
    clusters: Sequence[ResolvedCluster], ctx: StageContext, max_concurrency: int = 32
) -> dict[str, Observation]:
    """``observe_cluster`` over many clusters, bounded; keyed by cluster name."""
    gate = asyncio.Semaphore(max(1, max_concurrency))

    async def one(cluster: ResolvedCluster) -> Observation:
        async with gate:
            return await observe_cluster(cluster, ctx)

    results = await asyncio.gather(*(one(c) for c in clusters))
    return {c.name: r for c, r in zip(clusters, results, strict=True)}


async def _observe(
    cluster: ResolvedCluster, ctx: StageContext, kubeconfig: str, observed: Observation
) -> None:
    states = await asyncio.gather(
        *(ctx.with_provider(m, lambda p, m=m: p.observe(m)) for m in cluster.machines)
    )
    if not all(_boots_werft_media(cluster, ctx, s) for s in states):
        return
    observed[ConditionType.INFRASTRUCTURE_READY] = True

    async with ctx.kube(cluster, kubeconfig) as kube:
        if kube.server != cluster.api_endpoint.rstrip("/"):
            return  # the inventory moved the endpoint: the bootstrap stage rewrites it
        if not await kube.readyz():
            return
        nodes = check_nodes(cluster, await kube.list("v1", "Node"))
        if not nodes.registered_at_version:
            return
        if any(s.cd_override or s.media for s in states):
            return  # the bootstrap stage releases them: override cleared, media ejected
        observed[ConditionType.BOOTSTRAPPED] = True

        if not await _addons_ready(cluster, ctx, kube):
            return
        observed[ConditionType.ADDONS_READY] = True

        version = await kube.version()
        observed[ConditionType.VERIFIED] = (
            nodes.ok and bare_version(version) == cluster.kubernetes_version
        )


def _boots_werft_media(cluster: ResolvedCluster, ctx: StageContext, state: MachineState) -> bool:
    """Powered on with the OS image and a werft seed of its own -- or released: its node
    joined, werft recorded that and ejected the media (the desired state from then on).

    Any seed of its own counts, not only the one werft would publish now: computing that
    means building the ISO (too dear for an observe pass), and the infrastructure stage
    does not re-image a running machine for a newer seed either.
    """
    example = f"{ctx.artifacts_url.rstrip('/')}/seeds/{cluster.name}/{state.name}-0.iso"
    if state.exists and state.released(example):
        return True
    if not (state.exists and state.powered_on and cluster.os_image_url in state.media):
        return False
    return any(is_seed_of(url, example, state.name) for url in state.media)


async def _addons_ready(cluster: ResolvedCluster, ctx: StageContext, kube: KubeClient) -> bool:
    """Every add-on object present, healthy and undrifted.

    werft labels what it applies (``app.kubernetes.io/managed-by: werft``), so one LIST
    with that selector across namespaces serves every object of a kind; a cluster's ~30
    add-on objects cost ~10 reads. An object whose label someone removed is not listed:
    it counts as absent, which is right -- it drifted. Only when everything is present and
    healthy does drift cost a dry-run apply per object: the server, not werft, decides
    whether an apply would change anything.
    """
    rendered = await asyncio.to_thread(ctx.addon_objects, cluster)
    objs = [item.obj for item in rendered]
    lives = await kube.get_live_all(objs, label_selector=MANAGED_SELECTOR)
    if any(live is None or not health(live)[0] for live in lives):
        return False
    drifts = await asyncio.gather(
        *(
            kube.diff_live(item.obj, live, force=item.force_conflicts)
            for item, live in zip(rendered, lives, strict=True)
        )
    )
    return not any(drifts)
