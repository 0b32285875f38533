"""Stage 1, InfrastructureReady: every machine powered on, booting the OS image + its seed.

observe  each machine through its provider (BMC or hypervisor); for machines that are off
         but carry werft's seed, whether they were installed already (``installed``)
act      ensure only the machines that do not boot the desired media yet -- except an
         installed machine that lost power: it is only powered back on, from its disk
wait     until every machine reports power on (deadline)
confirm  Provisioned (mutations made) or AlreadyProvisioned (none)

The Condition's reason for a provider failure is the one the provider classified it with
(``werft.providers.errors``: Unreachable, BMCUnauthorized, SystemNotFound,
MediaUnavailable, ...); mutations count every call sent, also those of a failed ensure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from werft.conditions import Condition, ConditionType
from werft.errors import TransientError, WerftError
from werft.inventory.model import Machine
from werft.inventory.resolved import ResolvedCluster
from werft.providers.base import MachineState, Provider, is_seed_of
from werft.providers.errors import PROVIDER_ERROR
from werft.render.kubeconfig import kubeconfig_for
from werft.render.pki import ensure_cluster_pki
from werft.render.seed import publish_seed
from werft.stages.context import StageContext
from werft.stages.machines import act_on_each, each, provider_reason, raise_worst
from werft.stages.result import TIMEOUT, Done, Progress, StageFailed, run_stage

log = logging.getLogger("werft.stages")

STAGE = ConditionType.INFRASTRUCTURE_READY

# Reasons (besides the providers' own, and Timeout/InternalError from werft.stages.result).
PROVISIONED = "Provisioned"
ALREADY_PROVISIONED = "AlreadyProvisioned"
PROVISIONING_FAILED = "ProvisioningFailed"  # permanent, and the provider named no reason


async def ensure_infrastructure(cluster: ResolvedCluster, ctx: StageContext) -> Condition:
    async def body(progress: Progress) -> Done:
        image = cluster.os_image_url
        # Local and idempotent: the CA and tokens once, then each machine's seed at a
        # content-addressed URL (key generation and ISO building: off the event loop).
        seeds = await asyncio.to_thread(publish_seeds, cluster, ctx)

        # observe
        states, errors = await each(cluster.machines, lambda m: ctx.provider(m).observe(m))
        raise_worst(errors)
        todo = {m: s for m, s in states.items() if not s.boots(image, seeds[m.name])}
        installed = await installed_machines(cluster, ctx, todo, seeds)

        # act: only on machines that do not boot the desired media yet
        async def act(provider: Provider, machine: Machine) -> int:
            if machine in installed:
                return await provider.power_on(machine)
            return await provider.ensure(machine, image, seeds[machine.name])

        raise_worst(await act_on_each(list(todo), ctx, progress, act))
        # wait
        off = [m for m, s in states.items() if m in todo or not s.powered_on]
        await _wait_powered_on(cluster, ctx, progress, off)

        # confirm
        n = len(cluster.machines)
        if not progress.mutations:
            return Done(ALREADY_PROVISIONED, f"{n} machine(s) already powered on")
        message = f"{n} machine(s) powered on, booting {_tail(image)}"
        if installed:
            names = ", ".join(sorted(m.name for m in installed))
            message += f"; installed already, powered back on from disk: {names}"
        return Done(PROVISIONED, message)

    return await run_stage(STAGE, cluster, ctx, body, classify)


async def installed_machines(
    cluster: ResolvedCluster,
    ctx: StageContext,
    states: Mapping[Machine, MachineState],
    seeds: Mapping[str, str],
) -> set[Machine]:
    """Which of these machines are off although they were installed already (they lost
    power): those are only powered back on from their disks, never re-imaged -- on real
    hardware a re-image wipes a working node.

    Only machines that are off and carry a werft seed of their own are in question (werft
    installs nothing without its seed), so a first provisioning asks nothing more. For
    them, the evidence, strongest first:

    1. The cluster: a Node named after the machine is registered (one LIST of Nodes with
       the admin kubeconfig werft holds). A Node exists only once the OS was installed,
       booted and joined, which is what "installed" means; it is also what werft's own
       bootstrap stage waits for. An API that answers without that Node says the machine
       never joined (its install was cut short, or it was removed from the cluster):
       installing it is what makes it join.
    2. When the cluster cannot say -- its API does not answer, which is exactly what a
       power loss of a single-node site or of every control plane looks like -- the
       machine itself: it carries its werft seed and no boot override to the CD is left
       (the one-time override was consumed by the installer's boot, or ``release``
       cleared it once the node had joined). This is weaker on its own: a machine that
       lost power in the middle of its install looks the same. Powered on from its disk
       it then comes up empty, the bootstrap stage names it (NodesNotReady), and
       re-imaging it is an explicit operation, as for any machine that runs werft's
       media. The other way round -- re-imaging on a guess -- would wipe every node of a
       site after each power cut.

    The machine-side signal is not used when the cluster answers: before ``release``, a
    BMC that keeps overrides (Continuous) shows a Cd override on an installed machine,
    and after an interrupted install a consumed Once shows none.
    """
    candidates = {
        m: s
        for m, s in states.items()
        if s.exists
        and not s.powered_on
        and any(is_seed_of(url, seeds[m.name], m.name) for url in s.media)
    }
    if not candidates:
        return set()
    registered = await _registered_nodes(cluster, ctx)
    if registered is not None:
        return {m for m in candidates if m.name in registered}
    return {m for m, s in candidates.items() if not s.cd_override}


async def _registered_nodes(cluster: ResolvedCluster, ctx: StageContext) -> set[str] | None:
    """The names of the cluster's Nodes; None when the cluster cannot say (no kubeconfig,
    API down or refusing)."""
    kubeconfig = ctx.stored_kubeconfig(cluster)
    if kubeconfig is None:
        return None
    try:
        async with ctx.kube(cluster, kubeconfig) as kube:
            nodes = await kube.list("v1", "Node")
    except WerftError as exc:
        log.debug("cluster %s: cannot list Nodes (%s); judging by the machines", cluster.name, exc)
        return None
    return {str((node.get("metadata") or {}).get("name")) for node in nodes}


def publish_seeds(cluster: ResolvedCluster, ctx: StageContext) -> dict[str, str]:
    """Each machine's seed URL; writes only seeds that are not published yet.

    Also stores the admin kubeconfig: werft holds it from the moment it made the CA, and
    ``observe_cluster`` takes its presence as "werft has started on this cluster".
    """
    pki = ensure_cluster_pki(cluster, ctx.secrets)
    kubeconfig_for(cluster, ctx.secrets)
    return {
        m.name: publish_seed(cluster, m, pki, ctx.artifacts_dir, ctx.artifacts_url)
        for m in cluster.machines
    }


async def _wait_powered_on(
    cluster: ResolvedCluster, ctx: StageContext, progress: Progress, machines: Sequence[Machine]
) -> None:
    """Poll the machines still off until all are on; transient read errors only delay."""
    pending = list(machines)
    last = ""
    while pending:
        results = await asyncio.gather(
            *(ctx.provider(m).observe(m) for m in pending), return_exceptions=True
        )
        still: list[Machine] = []
        for machine, result in zip(pending, results, strict=True):
            if isinstance(result, TransientError):
                still.append(machine)
                last = str(result)
            elif isinstance(result, BaseException):
                raise result
            elif not result.powered_on:
                still.append(machine)
                last = f"{machine.name}: {result.details.get('power_state', 'off')}"
        pending = still
        if not pending:
            return
        if progress.deadline.expired:
            names = ", ".join(m.name for m in pending)
            raise StageFailed(
                TIMEOUT,
                f"cluster {cluster.name}: machine(s) {names} not powered on after "
                f"{progress.deadline.seconds:g}s (last: {last})",
                transient=True,
            )
        await asyncio.sleep(min(ctx.timeouts.poll_interval, progress.deadline.remaining()))


def _tail(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def classify(exc: WerftError) -> str:
    """The reason for a failure: the provider's own, else ProviderError (transient; the
    endpoint answered) or ProvisioningFailed."""
    return provider_reason(exc, transient=PROVIDER_ERROR, permanent=PROVISIONING_FAILED)
