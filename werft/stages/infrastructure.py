"""Stage 1, InfrastructureReady: every machine powered on, booting the OS image + its seed.

observe  each machine through its provider (BMC or hypervisor)
act      ensure only the machines that do not boot the desired media yet
wait     until every machine reports power on (deadline)
confirm  Provisioned (mutations made) or AlreadyProvisioned (none)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from werft.conditions import Condition, ConditionType
from werft.errors import PermanentError, SecretNotFound, TransientError, WerftError
from werft.inventory.model import Machine
from werft.inventory.resolved import ResolvedCluster
from werft.render.kubeconfig import kubeconfig_for
from werft.render.pki import ensure_cluster_pki
from werft.render.seed import publish_seed
from werft.stages.context import StageContext
from werft.stages.result import (
    TIMEOUT,
    UNREACHABLE,
    Done,
    Progress,
    StageFailed,
    run_stage,
)

STAGE = ConditionType.INFRASTRUCTURE_READY
T = TypeVar("T")

# Reasons (besides Timeout/Unreachable/InternalError from werft.stages.result).
PROVISIONED = "Provisioned"
ALREADY_PROVISIONED = "AlreadyProvisioned"
BMC_UNAUTHORIZED = "BMCUnauthorized"
SYSTEM_NOT_FOUND = "SystemNotFound"
MEDIA_UNAVAILABLE = "MediaUnavailable"
CREDENTIALS_MISSING = "CredentialsMissing"
PROVIDER_ERROR = "ProviderError"  # transient, but the endpoint did answer (5xx, busy)
PROVISIONING_FAILED = "ProvisioningFailed"  # permanent, none of the above


async def ensure_infrastructure(cluster: ResolvedCluster, ctx: StageContext) -> Condition:
    async def body(progress: Progress) -> Done:
        image = cluster.os_image_url
        # Local and idempotent: the CA and tokens once, then each machine's seed at a
        # content-addressed URL (key generation and ISO building: off the event loop).
        seeds = await asyncio.to_thread(publish_seeds, cluster, ctx)

        # observe
        states, errors = await _each(cluster.machines, lambda m: ctx.provider(m).observe(m))
        _raise_worst(errors)
        todo = [m for m, s in states.items() if not s.boots(image, seeds[m.name])]
        # act: only on machines that do not boot the desired media yet
        made, errors = await _each(todo, lambda m: ctx.provider(m).ensure(m, image, seeds[m.name]))
        progress.mutations += sum(made.values())
        _raise_worst(errors)
        # wait
        off = [m for m, s in states.items() if m in todo or not s.powered_on]
        await _wait_powered_on(cluster, ctx, progress, off)

        # confirm
        n = len(cluster.machines)
        if progress.mutations:
            return Done(PROVISIONED, f"{n} machine(s) powered on, booting {_tail(image)}")
        return Done(ALREADY_PROVISIONED, f"{n} machine(s) already powered on")

    return await run_stage(STAGE, cluster, ctx, body, classify)


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


async def _each(
    machines: Sequence[Machine], call: Callable[[Machine], Awaitable[T]]
) -> tuple[dict[Machine, T], list[BaseException]]:
    """``call`` for every machine concurrently: the results that came back, the errors."""
    outcomes = await asyncio.gather(*(call(m) for m in machines), return_exceptions=True)
    results: dict[Machine, T] = {}
    errors: list[BaseException] = []
    for machine, outcome in zip(machines, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            errors.append(outcome)
        else:
            results[machine] = outcome
    return results, errors


def _raise_worst(errors: list[BaseException]) -> None:
    """The most telling error first: a bug, then a permanent failure ("wrong password"
    must not hide behind "machine 3 was slow"), then a transient one."""
    if not errors:
        return
    for error in errors:
        if not isinstance(error, WerftError):
            raise error
    raise next((e for e in errors if not isinstance(e, TransientError)), errors[0])


def _tail(url: str) -> str:
    return url.rsplit("/", 1)[-1]


# What the providers' messages say, mapped to reasons. Providers classify transient vs
# permanent once (werft.providers.errors); an error that carries a ``reason`` attribute
# is taken at its word instead.
_PERMANENT_REASONS = (
    ("refused the credentials", BMC_UNAUTHORIZED),
    ("unknown system", SYSTEM_NOT_FOUND),
    ("could not fetch image", MEDIA_UNAVAILABLE),
    ("insert media", MEDIA_UNAVAILABLE),
    ("http 404", SYSTEM_NOT_FOUND),  # no BMC (or no hypervisor domain API) at that address
)
_UNREACHABLE_SIGNS = ("cannot connect", "timed out", "connection failed")


def classify(exc: WerftError) -> str:
    """The reason for a provider failure."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    if isinstance(exc, SecretNotFound):
        return CREDENTIALS_MISSING
    text = str(exc).lower()
    if isinstance(exc, TransientError):
        return UNREACHABLE if any(s in text for s in _UNREACHABLE_SIGNS) else PROVIDER_ERROR
    if isinstance(exc, PermanentError):
        return next((r for sign, r in _PERMANENT_REASONS if sign in text), PROVISIONING_FAILED)
    return PROVISIONING_FAILED
