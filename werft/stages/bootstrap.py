"""Stage 2, Bootstrapped: the API answers and every machine is registered as a Node at
the desired kubelet version, and boots its disk from now on. The nodes bootstrap
themselves from their seeds; werft holds the admin kubeconfig from the start (it made the
CA), so on the cluster this stage mostly watches. Its one write: the bootstrap token the
machines join with must exist as a Secret -- k3s creates none, and a machine re-imaged
after the token was renewed brings one the cluster has not seen.

Ready is *not* required here. A kubelet reports its Node NotReady
(``NetworkPluginNotReady``) until a CNI runs; kubeadm installs none and werft's k3s
config disables flannel, so the CNI is the first add-on and Ready belongs to Verified.
Waiting for Ready here would deadlock every real cluster.

observe  /readyz, then the Node list
act      create the bootstrap token Secret if it is absent (and not expired);
         kubeadm/k3s on the machines do the rest
wait     for /readyz, then for every machine to register as a Node (deadline)
act      once every machine has joined: ``release`` it through its provider (clear a
         boot override to the CD, put libvirt's disk first), so a reboot or a power cut
         does not boot the installer again; nothing to do on a re-run (0 mutations)
confirm  every machine a Node with kubelet v<kubernetesVersion>, released
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from werft.conditions import Condition, ConditionType
from werft.errors import TransientError, WerftError, is_transient
from werft.inventory.resolved import ResolvedCluster
from werft.kube import KubeClient
from werft.render.pki import bootstrap_token_secret
from werft.render.seed import retire_seeds
from werft.stages.checks import NodeCheck, check_nodes
from werft.stages.context import StageContext
from werft.stages.machines import act_on_each, provider_reason, worst
from werft.stages.reach import site_failure
from werft.stages.result import Done, Progress, StageFailed, default_classify, run_stage

STAGE = ConditionType.BOOTSTRAPPED

BOOTSTRAPPED = "Bootstrapped"
API_UNAVAILABLE = "APIUnavailable"  # transient: the API did not answer /readyz in time
NODES_NOT_REGISTERED = "NodesNotRegistered"  # transient: machines not joined by the deadline
VERSION_MISMATCH = "VersionMismatch"  # permanent: waiting does not change a kubelet
BOOTSTRAP_FAILED = "BootstrapFailed"  # permanent, e.g. the API refuses werft's token
# A machine could not be released and the provider named no reason (it usually does:
# Unreachable, BMCUnauthorized, ...). Transient or not as the provider's error was.
RELEASE_FAILED = "ReleaseFailed"


async def ensure_bootstrapped(cluster: ResolvedCluster, ctx: StageContext) -> Condition:
    async def body(progress: Progress) -> Done:
        kubeconfig = await asyncio.to_thread(ctx.kubeconfig, cluster)
        async with ctx.kube(cluster, kubeconfig) as kube:
            await wait_for_api(kube, cluster, ctx, progress)
            await _ensure_join_token(kube, cluster, ctx, progress)
            nodes = await _wait_for_nodes(kube, cluster, ctx, progress)
        await _release(cluster, ctx, progress)
        await asyncio.to_thread(retire_seeds, cluster, ctx)  # seeds hold the CA keys: delete
        released = (
            f"; {progress.mutations} change(s) (join token, boot from disk)"
            if progress.mutations
            else ""
        )
        return Done(
            BOOTSTRAPPED,
            f"API ready; {nodes.expected} node(s) registered at "
            f"v{cluster.kubernetes_version} ({len(nodes.ready)} Ready)" + released,
        )

    return await run_stage(STAGE, cluster, ctx, body, classify)


# An install takes minutes: /readyz is asked every poll interval at first, each pause a
# quarter longer than the last, up to this many poll intervals (20 s on real hardware:
# the API is seen within 20 s of coming up, with a fifth of the requests).
API_WAIT_MAX_POLLS = 4.0
API_WAIT_GROWTH = 1.25
# While the site's BMC or hypervisor answers, it is asked again after this many poll
# intervals; once it does not, every poll (the judgement needs its strikes). A site that
# goes dark mid-install is seen within 30 s on real hardware, plus the grace.
SITE_PROBE_POLLS = 6.0


async def wait_for_api(
    kube: KubeClient, cluster: ResolvedCluster, ctx: StageContext, progress: Progress
) -> None:
    poll = ctx.timeouts.poll_interval
    pause = poll
    site_asked: float | None = None
    while not await kube.readyz():
        # An API that is not up yet refuses connections while the machines install; ask
        # the site's BMC or hypervisor whether the site itself still answers.
        if (
            site_asked is None
            or progress.reach.open
            or time.monotonic() - site_asked >= SITE_PROBE_POLLS * poll
        ):
            site_asked = time.monotonic()
            progress.reach.saw(await site_failure(cluster, ctx, progress.deadline.remaining()))
        if progress.deadline.expired:
            raise StageFailed(
                API_UNAVAILABLE,
                f"cluster {cluster.name}: API {cluster.api_endpoint} not ready after "
                f"{progress.deadline.seconds:g}s",
                transient=True,
            )
        await asyncio.sleep(min(pause, progress.deadline.remaining()))
        pause = min(pause * API_WAIT_GROWTH, API_WAIT_MAX_POLLS * poll)


async def _ensure_join_token(
    kube: KubeClient, cluster: ResolvedCluster, ctx: StageContext, progress: Progress
) -> None:
    """The token in the seeds, as a bootstrap-token Secret. Created only when absent
    (kubeadm init makes its own; a re-run finds it) and never after it expired: the API
    server deletes expired tokens, and recreating one would be a write on every re-run
    that joins nothing."""
    pki = await asyncio.to_thread(ctx.cluster_pki, cluster)
    expires = pki.bootstrap_token_expires
    if expires is not None and expires <= datetime.now(UTC):
        return  # the infrastructure stage renews it, with the seed, on a re-image
    secret = bootstrap_token_secret(pki)
    if await kube.get_live(secret) is not None:
        return
    try:
        await kube.apply(secret)
    finally:
        progress.mutations += 1  # counted when sent: a timed-out apply may have landed


async def _wait_for_nodes(
    kube: KubeClient, cluster: ResolvedCluster, ctx: StageContext, progress: Progress
) -> NodeCheck:
    while True:
        try:
            nodes = check_nodes(cluster, await kube.list("v1", "Node"))
        except TransientError as exc:  # the API blinked; it is up, so keep waiting
            progress.reach.saw(exc)
            nodes, detail = None, str(exc)
        else:
            progress.reach.saw(None)
            if nodes.registered_at_version:
                return nodes
            if nodes.all_registered:  # all joined, yet a kubelet runs another version
                raise StageFailed(
                    VERSION_MISMATCH,
                    f"cluster {cluster.name}: want v{cluster.kubernetes_version}; "
                    f"{nodes.summary()}",
                )
            detail = nodes.summary()
        if progress.deadline.expired:
            raise StageFailed(
                NODES_NOT_REGISTERED,
                f"cluster {cluster.name}: machines not registered as Nodes after "
                f"{progress.deadline.seconds:g}s: {detail}",
                transient=True,
            )
        await asyncio.sleep(min(ctx.timeouts.poll_interval, progress.deadline.remaining()))


async def _release(cluster: ResolvedCluster, ctx: StageContext, progress: Progress) -> None:
    """Every machine has joined: make each one boot its disk from now on. Providers
    observe first, so a machine with nothing to clear costs one read and no mutation."""
    errors = await act_on_each(
        cluster.machines, ctx, progress, lambda provider, machine: provider.release(machine)
    )
    error = worst(errors)
    if error is None:
        return
    if not isinstance(error, WerftError):
        raise error
    raise StageFailed(
        provider_reason(error, transient=RELEASE_FAILED, permanent=RELEASE_FAILED),
        f"cluster {cluster.name}: every machine joined, but one still boots the installer "
        f"next (release failed): {error}",
        transient=is_transient(error),
    )


def classify(exc: WerftError) -> str:
    return default_classify(
        exc, transient_reason=API_UNAVAILABLE, permanent_reason=BOOTSTRAP_FAILED
    )
