"""Stage 1, InfrastructureReady: every machine powered on, booting the OS image + its seed
(or, once its node joined and werft released it, booting its disk with the media ejected).

observe  each machine through its provider (BMC or hypervisor); for machines that are off
         but werft had a hand in, whether they were installed already (``installed``:
         only on evidence, never on looks)
act      ensure only the machines that are not provisioned yet -- except an installed
         machine that lost power: it is only powered back on, from its disk. ``ensure``
         picks up from wherever an earlier run stopped (media, override, reset).
wait     until every machine reports power on (deadline); a machine still off once no
         reset of werft's is settling any more (one was lost) is acted on again
confirm  Provisioned (mutations made) or AlreadyProvisioned (none)

Provider requests are retried at the request within this stage's deadline
(``request_deadline``).

The Condition's reason for a provider failure is the one the provider classified it with
(``werft.providers.errors``: Unreachable, BMCUnauthorized, SystemNotFound,
MediaUnavailable, ...); mutations count every call sent, also those of a failed ensure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from werft.conditions import Condition, ConditionType
from werft.errors import TransientError, WerftError
from werft.inventory.model import Machine
from werft.inventory.resolved import ResolvedCluster
from werft.providers.base import MachineState, Provider, is_seed_of
from werft.providers.errors import PROVIDER_ERROR
from werft.render.pki import ensure_cluster_pki, token_ttl
from werft.render.seed import build_seed_iso, issue_seed, publish_seed
from werft.stages.context import StageContext
from werft.stages.machines import act_on_each, each, provider_reason, raise_worst
from werft.stages.reach import MACHINES
from werft.stages.result import TIMEOUT, Done, Progress, StageFailed, run_stage

log = logging.getLogger("werft.stages")

STAGE = ConditionType.INFRASTRUCTURE_READY

# Reasons (besides the providers' own, and Timeout/InternalError from werft.stages.result).
PROVISIONED = "Provisioned"
ALREADY_PROVISIONED = "AlreadyProvisioned"
PROVISIONING_FAILED = "ProvisioningFailed"  # permanent, and the provider named no reason


async def ensure_infrastructure(cluster: ResolvedCluster, ctx: StageContext) -> Condition:
    async def body(progress: Progress) -> Done:
        return await _provision(cluster, ctx, progress)

    return await run_stage(STAGE, cluster, ctx, body, classify)


async def _provision(cluster: ResolvedCluster, ctx: StageContext, progress: Progress) -> Done:
    image = cluster.os_image_url
    # Local and idempotent: the CA and tokens once, then each machine's seed at a
    # content-addressed URL (key generation and ISO building: off the event loop).
    seeds = await asyncio.to_thread(publish_seeds, cluster, ctx)
    urls = {name: seed.url for name, seed in seeds.items()}

    # observe
    states, errors = await each(
        cluster.machines, lambda m: ctx.with_provider(m, lambda p: p.observe(m))
    )
    raise_worst(errors)
    todo = {m: s for m, s in states.items() if not s.provisioned(image, urls[m.name])}
    installed = await installed_machines(cluster, ctx, todo, urls)

    # act: only on machines that are not provisioned yet
    async def act(provider: Provider, machine: Machine) -> int:
        if machine in installed:
            return await provider.power_on(machine)
        # Its seed is written now (re-issued under a new URL if it was retired after an
        # earlier install): keys reach the artifacts server only for a machine to install.
        iso = seeds[machine.name].iso
        url = await asyncio.to_thread(
            lambda: issue_seed(cluster, machine, ctx, ctx.cluster_pki(cluster), iso)
        )
        return await provider.ensure(machine, image, url)

    raise_worst(await act_on_each(list(todo), ctx, progress, act))
    # wait
    off = [m for m, s in states.items() if m in todo or not s.powered_on]
    await _wait_powered_on(cluster, ctx, progress, off, act)

    # confirm
    n = len(cluster.machines)
    if not progress.mutations:
        return Done(ALREADY_PROVISIONED, f"{n} machine(s) already powered on")
    message = f"{n} machine(s) powered on, booting {_tail(image)}"
    if installed:
        names = ", ".join(sorted(m.name for m in installed))
        message += f"; installed already, powered back on from disk: {names}"
    return Done(PROVISIONED, message)


async def installed_machines(
    cluster: ResolvedCluster,
    ctx: StageContext,
    states: Mapping[Machine, MachineState],
    seeds: Mapping[str, str],
) -> set[Machine]:
    """Which of these machines are off although they were installed already (they lost
    power): those are only powered back on from their disks, never re-imaged -- on real
    hardware a re-image wipes a working node. Every other machine is (re)installed:
    ``ensure`` drives it forward from wherever it stands.

    Only evidence that the OS was installed from werft's seed for this cluster counts,
    strongest first:

    1. The cluster: a Node named after the machine is registered (one LIST of Nodes with
       the admin kubeconfig werft holds). A Node exists only once the OS was installed,
       booted and joined. An API that answers without that Node says the machine never
       joined (its install was cut short, or it was removed from the cluster):
       installing it is what makes it join.
    2. When the cluster cannot say -- its API does not answer, which is exactly what a
       power loss of a single-node site or of every control plane looks like -- werft's
       own record that it saw the machine join this cluster and released it
       (``MachineState.joined_with``, kept in the store every run and worker shares; an
       install werft starts forgets it).

    Never the machine's looks: "off, with werft's seed inserted and no override to the
    CD" is also a machine werft stopped between inserting the media and setting the
    override, or one that lost power in the middle of its install; powered on from its
    empty disk it would never come up. Only machines that are off and that werft had a
    hand in (its seed inserted, or a join record) are in question, so a first
    provisioning asks the cluster nothing.
    """
    candidates = {
        m: s
        for m, s in states.items()
        if s.exists
        and not s.powered_on
        and (
            s.joined_with(seeds[m.name])
            or any(is_seed_of(url, seeds[m.name], m.name) for url in s.media)
        )
    }
    if not candidates:
        return set()
    registered = await _registered_nodes(cluster, ctx)
    if registered is not None:
        return {m for m in candidates if m.name in registered}
    return {m for m, s in candidates.items() if s.joined_with(seeds[m.name])}


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


@dataclass(frozen=True)
class BuiltSeed:
    """A machine's seed as this stage run built it: its URL, and the image to write
    should the machine be installed (building it is the dearest step)."""

    url: str
    iso: bytes


def publish_seeds(cluster: ResolvedCluster, ctx: StageContext) -> dict[str, BuiltSeed]:
    """Each machine's seed; the seed itself is written by ``issue_seed`` only for a
    machine about to be installed (it carries the cluster's keys).

    Also stores the admin kubeconfig: werft holds it from the moment it made the CA, and
    ``observe_cluster`` takes its presence as "werft has started on this cluster".
    """
    pki = ensure_cluster_pki(cluster, ctx.secrets, token_ttl=token_ttl(ctx.inventory))
    ctx.remember(cluster, pki)
    ctx.kubeconfig(cluster)
    seeds = {}
    for m in cluster.machines:
        iso = build_seed_iso(cluster, m, pki, artifacts_url=ctx.artifacts_url)
        url = publish_seed(
            cluster, m, pki, ctx.artifacts_dir, ctx.artifacts_url,
            store=ctx.secrets, write=False, iso=iso,
        )
        seeds[m.name] = BuiltSeed(url, iso)
    return seeds


async def _wait_powered_on(
    cluster: ResolvedCluster,
    ctx: StageContext,
    progress: Progress,
    machines: Sequence[Machine],
    act: Callable[[Provider, Machine], Awaitable[int]],
) -> None:
    """Poll the machines still off until all are on; transient read errors only delay.

    A machine still off although no reset of werft's is settling any more (the last one
    was lost, or refused) is acted on again: ``act`` is level-triggered, and the reset
    records keep it from resetting a machine that is on its way."""
    pending = list(machines)
    last = ""
    acted_at = {m: time.monotonic() for m in pending}
    again_after = max(ctx.timeouts.poll_interval * 10, 0.2)
    while pending:
        results = await asyncio.gather(
            *(ctx.with_provider(m, lambda p, m=m: p.observe_power(m)) for m in pending),
            return_exceptions=True,
        )
        still: list[Machine] = []
        for machine, result in zip(pending, results, strict=True):
            if isinstance(result, TransientError):
                still.append(machine)
                last = str(result)
                # A BMC that stops answering for the grace period: the site is gone.
                progress.reach.saw(result, via=MACHINES)
                continue
            if isinstance(result, BaseException):
                raise result
            progress.reach.saw(None, via=MACHINES)
            if not result.powered_on:
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
        stale = [
            m
            for m in pending
            if time.monotonic() - acted_at[m] >= again_after and _may_act_again(ctx, m)
        ]
        if stale:
            for machine in stale:
                acted_at[machine] = time.monotonic()
            raise_worst(await act_on_each(stale, ctx, progress, act))
        await asyncio.sleep(min(ctx.timeouts.poll_interval, progress.deadline.remaining()))


def _may_act_again(ctx: StageContext, machine: Machine) -> bool:
    records = getattr(ctx.providers, "records", None)
    return records is None or records.may_reset(machine.name, powered_on=False)


def _tail(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def classify(exc: WerftError) -> str:
    """The reason for a failure: the provider's own, else ProviderError (transient; the
    endpoint answered) or ProvisioningFailed."""
    return provider_reason(exc, transient=PROVIDER_ERROR, permanent=PROVISIONING_FAILED)
