"""Stage 3, AddonsReady: the cluster's add-on sets applied and rolled out, in dependency
order -- the CNI first, since nothing else schedules before the nodes turn Ready.

For each dependency level (add-ons that depend on nothing, then those that depend on
them, ...):

observe  ask the server what applying each object would change (``KubeClient.diff``: a
         GET and a ``dryRun=All`` server-side apply) -- the server normalises quantities
         and defaults, so ``cpu: 1000m`` against a stored ``"1"`` is no drift
act      server-side apply only objects that are absent or would change, in render order
         (Namespaces and CRDs first); a new CRD is waited for until Established. A field
         another manager owns is a permanent ``ApplyConflict`` unless the AddonSet opts in
         with ``forceConflicts: true``; a typo is a permanent ``ApplyFailed`` naming the
         template and the field (``fieldValidation=Strict``)
wait     the level's Deployments, DaemonSets, StatefulSets and APIServices Available
confirm  AddonsApplied (something applied) or AddonsAlreadyReady (zero mutating calls)
"""

from __future__ import annotations

import asyncio
from itertools import groupby

from werft.conditions import Condition, ConditionType
from werft.errors import PermanentError, TransientError, WerftError, is_transient
from werft.inventory.resolved import ResolvedCluster
from werft.kube import FieldConflict, KubeClient, WaitTimeout, describe
from werft.render.addons import RenderedObject, render_addon_objects
from werft.render.kubeconfig import kubeconfig_for
from werft.stages.checks import WORKLOAD_KINDS
from werft.stages.context import StageContext
from werft.stages.reach import is_unreachable
from werft.stages.result import Done, Progress, StageFailed, default_classify, run_stage

STAGE = ConditionType.ADDONS_READY

ADDONS_APPLIED = "AddonsApplied"
ADDONS_ALREADY_READY = "AddonsAlreadyReady"
ADDON_NOT_AVAILABLE = "AddonNotAvailable"  # transient: not rolled out by the deadline
APPLY_FAILED = "ApplyFailed"  # the API rejected an object (permanent) or blinked
APPLY_CONFLICT = "ApplyConflict"  # permanent: another field manager owns a field werft sets
RENDER_FAILED = "RenderFailed"  # the inventory's add-on templates do not render
API_UNAVAILABLE = "APIUnavailable"


async def ensure_addons(cluster: ResolvedCluster, ctx: StageContext) -> Condition:
    async def body(progress: Progress) -> Done:
        try:
            rendered = await asyncio.to_thread(render_addon_objects, cluster, ctx.inventory)
        except PermanentError as exc:
            raise StageFailed(RENDER_FAILED, str(exc)) from None
        kubeconfig = await asyncio.to_thread(kubeconfig_for, cluster, ctx.secrets)
        applied = workloads = 0
        async with ctx.kube(cluster, kubeconfig) as kube:
            for _, level in groupby(sorted(rendered, key=_level), key=_level):
                items = list(level)
                applied += await _apply_level(kube, cluster, items, progress)
                for item in items:
                    if item.obj.get("kind") in WORKLOAD_KINDS:
                        await _wait(kube, item, "Available", progress, ctx.timeouts.poll_interval)
                        workloads += 1
        if applied:
            return Done(
                ADDONS_APPLIED,
                f"applied {applied} of {len(rendered)} object(s); "
                f"{workloads} workload(s) available",
            )
        return Done(ADDONS_ALREADY_READY, f"{len(rendered)} object(s) already in place")

    return await run_stage(STAGE, cluster, ctx, body, classify)


def _level(item: RenderedObject) -> int:
    return item.level


async def _apply_level(
    kube: KubeClient, cluster: ResolvedCluster, items: list[RenderedObject], progress: Progress
) -> int:
    """Apply what the server says would change; the number of objects applied."""
    # observe every object of the level at once: round trips to a far site add up
    drifts = await asyncio.gather(
        *(kube.diff(item.obj, force=item.force_conflicts) for item in items)
    )
    applied = 0
    for item, drift in zip(items, drifts, strict=True):
        if drift.conflicts:
            raise StageFailed(APPLY_CONFLICT, _conflict_message(cluster, item, drift.conflicts))
        if not drift:
            continue
        await _apply(kube, item, progress)
        applied += 1
    return applied


async def _apply(kube: KubeClient, item: RenderedObject, progress: Progress) -> None:
    try:
        await kube.apply(item.obj, force=item.force_conflicts)
    except WerftError as exc:
        if is_unreachable(exc):
            raise  # nothing answered: run_stage judges whether the site is gone
        if is_transient(exc):
            raise StageFailed(APPLY_FAILED, str(exc), transient=True) from None
        # A rejected object is the template's to fix: say which one.
        raise StageFailed(
            APPLY_FAILED, f"{exc} (add-on {item.addon!r}, template {item.template})"
        ) from None
    finally:
        progress.mutations += 1  # counted when sent: a timed-out apply may have landed
    if item.obj["kind"] == "CustomResourceDefinition":
        # Custom resources of this kind further down the list need it served first.
        await _wait(kube, item, "Established", progress, 0.2)


def _conflict_message(
    cluster: ResolvedCluster, item: RenderedObject, conflicts: list[FieldConflict]
) -> str:
    fields = ", ".join(f"{c.field} (owned by {c.manager!r})" for c in conflicts)
    return (
        f"cluster {cluster.name}: {describe(item.obj)} (add-on {item.addon!r}, "
        f"template {item.template}): other field managers own {fields}; werft does not take "
        "fields over silently (fix: remove the other manager's change, or set "
        "forceConflicts: true on the AddonSet to let werft take them)"
    )


async def _wait(
    kube: KubeClient, item: RenderedObject, condition: str, progress: Progress, poll: float
) -> None:
    meta = item.obj.get("metadata") or {}
    try:
        await kube.wait(
            item.obj["apiVersion"],
            item.obj["kind"],
            meta["name"],
            meta.get("namespace"),
            condition=condition,
            timeout=progress.deadline.remaining(),
            poll=poll,
            on_probe=progress.reach.saw,
        )
    except WaitTimeout as exc:
        # The message names the cluster, the object and its last observed state.
        raise StageFailed(ADDON_NOT_AVAILABLE, str(exc), transient=True) from None


def classify(exc: WerftError) -> str:
    if isinstance(exc, TransientError) and not isinstance(exc, WaitTimeout):
        return API_UNAVAILABLE
    return default_classify(exc, transient_reason=API_UNAVAILABLE, permanent_reason=APPLY_FAILED)
