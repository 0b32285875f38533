"""Stage 3, AddonsReady: the cluster's add-on sets applied and rolled out.

observe  GET each rendered object; managed_drift against what werft manages
act      server-side apply only objects that are absent or drifted, in render order
         (Namespaces and CRDs first); a new CRD is waited for until Established
wait     Deployments, DaemonSets, StatefulSets and APIServices Available (deadline)
confirm  AddonsApplied (something applied) or AddonsAlreadyReady (zero mutating calls)
"""

from __future__ import annotations

import asyncio
from typing import Any

from werft.conditions import Condition, ConditionType
from werft.errors import PermanentError, TransientError, WerftError, is_transient
from werft.inventory.resolved import ResolvedCluster
from werft.kube import KubeClient, WaitTimeout, managed_drift
from werft.render.addons import render_addons
from werft.render.kubeconfig import kubeconfig_for
from werft.stages.checks import WORKLOAD_KINDS
from werft.stages.context import StageContext
from werft.stages.result import Done, Progress, StageFailed, default_classify, run_stage

STAGE = ConditionType.ADDONS_READY

ADDONS_APPLIED = "AddonsApplied"
ADDONS_ALREADY_READY = "AddonsAlreadyReady"
ADDON_NOT_AVAILABLE = "AddonNotAvailable"  # transient: not rolled out by the deadline
APPLY_FAILED = "ApplyFailed"  # the API rejected an object (permanent) or blinked
RENDER_FAILED = "RenderFailed"  # the inventory's add-on templates do not render
API_UNAVAILABLE = "APIUnavailable"


async def ensure_addons(cluster: ResolvedCluster, ctx: StageContext) -> Condition:
    async def body(progress: Progress) -> Done:
        try:
            manifests = await asyncio.to_thread(render_addons, cluster, ctx.inventory)
        except PermanentError as exc:
            raise StageFailed(RENDER_FAILED, str(exc)) from None
        kubeconfig = await asyncio.to_thread(kubeconfig_for, cluster, ctx.secrets)
        async with ctx.kube(cluster, kubeconfig) as kube:
            # observe: every object at once (round trips to a far site add up)
            lives = await asyncio.gather(*(kube.get_live(obj) for obj in manifests))
            drifted = [
                obj for obj, live in zip(manifests, lives, strict=True) if managed_drift(obj, live)
            ]
            # act: apply only what is absent or differs, in render order
            for obj in drifted:
                await _apply(kube, obj, progress)
            # wait
            workloads = [obj for obj in manifests if obj.get("kind") in WORKLOAD_KINDS]
            for obj in workloads:
                await _wait_available(kube, obj, ctx, progress)
        # confirm
        if drifted:
            return Done(
                ADDONS_APPLIED,
                f"applied {len(drifted)} of {len(manifests)} object(s); "
                f"{len(workloads)} workload(s) available",
            )
        return Done(ADDONS_ALREADY_READY, f"{len(manifests)} object(s) already in place")

    return await run_stage(STAGE, cluster, ctx, body, classify)


async def _apply(kube: KubeClient, obj: dict[str, Any], progress: Progress) -> None:
    try:
        await kube.apply(obj)
    except WerftError as exc:
        raise StageFailed(APPLY_FAILED, str(exc), transient=is_transient(exc)) from None
    finally:
        progress.mutations += 1  # counted when sent: a timed-out apply may have landed
    if obj["kind"] == "CustomResourceDefinition":
        # Custom resources of this kind further down the list need it served first.
        await _wait(kube, obj, "Established", progress)


async def _wait_available(
    kube: KubeClient, obj: dict[str, Any], ctx: StageContext, progress: Progress
) -> None:
    await _wait(kube, obj, "Available", progress, poll=ctx.timeouts.poll_interval)


async def _wait(
    kube: KubeClient, obj: dict[str, Any], condition: str, progress: Progress, *, poll: float = 0.2
) -> None:
    meta = obj.get("metadata") or {}
    try:
        await kube.wait(
            obj["apiVersion"],
            obj["kind"],
            meta["name"],
            meta.get("namespace"),
            condition=condition,
            timeout=progress.deadline.remaining(),
            poll=poll,
        )
    except WaitTimeout as exc:
        # The message names the cluster, the object and its last observed state.
        raise StageFailed(ADDON_NOT_AVAILABLE, str(exc), transient=True) from None


def classify(exc: WerftError) -> str:
    if isinstance(exc, TransientError) and not isinstance(exc, WaitTimeout):
        return API_UNAVAILABLE
    return default_classify(exc, transient_reason=API_UNAVAILABLE, permanent_reason=APPLY_FAILED)
