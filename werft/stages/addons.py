"""Stage 3, AddonsReady: the cluster's add-on sets applied and rolled out, in dependency
order -- the CNI first, since nothing else schedules before the nodes turn Ready.

For each dependency level (add-ons that depend on nothing, then those that depend on
them, ...):

observe  once for all levels: the add-on record (``werft.stages.addon_record``); none
         means nothing of werft's is on the cluster yet, otherwise one LIST per kind of
         werft's labelled objects (``KubeClient.get_live_all``). The record is extended
         to the rendered kinds before anything is applied. For each object that exists,
         ask the server what applying it would change (a ``dryRun=All`` server-side
         apply) -- the server normalises quantities and defaults, so ``cpu: 1000m``
         against a stored ``"1"`` is no drift. An absent object needs no dry run: it is
         applied.
act      server-side apply only objects that are absent or would change, in render order
         (Namespaces and CRDs first); a new CRD is waited for until Established. A field
         another manager owns is a permanent ``ApplyConflict`` unless the AddonSet opts in
         with ``forceConflicts: true``; a typo is a permanent ``ApplyFailed`` naming the
         template and the field (``fieldValidation=Strict``)
wait     the level's Deployments, DaemonSets, StatefulSets and APIServices Available: one
         just applied is first looked at a poll interval later (it cannot have rolled out
         at once), one already listed Available is not asked again
confirm  AddonsApplied (something applied) or AddonsAlreadyReady (zero mutating calls)

What the server answered for each object is noted in ``ctx.confirmed``, so verify, in the
same run, need not ask for a dry run of an object nobody has written since.

A fresh edge cluster's ~17 objects cost the record's GET and apply and an apply each; a
converged one's cost the record's GET, a LIST per kind (~9) and a dry run each, and no
mutating call.
"""

from __future__ import annotations

import asyncio
from itertools import groupby

from werft.conditions import Condition, ConditionType
from werft.errors import PermanentError, TransientError, WerftError, is_transient
from werft.inventory.resolved import ResolvedCluster
from werft.kube import (
    ApplyConflict,
    FieldConflict,
    KubeClient,
    Obj,
    WaitTimeout,
    condition_met,
    describe,
)
from werft.render.addons import MANAGED_SELECTOR, RenderedObject
from werft.stages.addon_record import read_record, record_update
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
AVAILABLE = "Available"


async def ensure_addons(cluster: ResolvedCluster, ctx: StageContext) -> Condition:
    async def body(progress: Progress) -> Done:
        try:
            rendered = await asyncio.to_thread(ctx.addon_objects, cluster)
        except PermanentError as exc:
            raise StageFailed(RENDER_FAILED, str(exc)) from None
        kubeconfig = await asyncio.to_thread(ctx.kubeconfig, cluster)
        applied = workloads = 0
        poll = ctx.timeouts.poll_interval
        async with ctx.kube(cluster, kubeconfig) as kube:
            live = await _observe(kube, rendered, progress)
            for _, level in groupby(sorted(rendered, key=_level), key=_level):
                items = list(level)
                stored = await _apply_level(kube, cluster, items, live, progress, ctx)
                applied += len(stored)
                waiting = [item for item in items if item.obj.get("kind") in WORKLOAD_KINDS]
                workloads += len(waiting)
                if any(id(item) in stored for item in waiting):
                    await asyncio.sleep(poll)  # just applied: not rolled out this instant
                for item in waiting:
                    current = live[id(item)]
                    if id(item) not in stored and current and condition_met(current, AVAILABLE)[0]:
                        continue  # listed Available a moment ago and not touched since
                    rolled_out = await _wait(kube, item, AVAILABLE, progress, poll)
                    ctx.confirmed.rolled_out(cluster.name, item.obj, rolled_out)
        if applied:
            return Done(
                ADDONS_APPLIED,
                f"applied {applied} of {len(rendered)} object(s); "
                f"{workloads} workload(s) available",
            )
        return Done(ADDONS_ALREADY_READY, f"{len(rendered)} object(s) already in place")

    return await run_stage(STAGE, cluster, ctx, body, classify)


async def _observe(
    kube: KubeClient, rendered: list[RenderedObject], progress: Progress
) -> dict[int, Obj | None]:
    """The live counterpart of each rendered object (None: absent), by item id; the add-on
    record names their kinds before this returns (``werft.stages.addon_record``)."""
    manifests = [item.obj for item in rendered]
    record = await read_record(kube)
    if record is None:
        listed: list[Obj | None] = [None] * len(rendered)  # none of werft's can be here
    else:
        listed = await kube.get_live_all(manifests, label_selector=MANAGED_SELECTOR)
    update = record_update(record, manifests)
    if update is not None:  # werft's own object: it takes the record's fields back
        record_name = describe(update)
        await _send(kube, update, True, progress, source=f"werft's add-on record {record_name}")
    return {id(item): obj for item, obj in zip(rendered, listed, strict=True)}


def _level(item: RenderedObject) -> int:
    return item.level


async def _apply_level(
    kube: KubeClient,
    cluster: ResolvedCluster,
    items: list[RenderedObject],
    live: dict[int, Obj | None],
    progress: Progress,
    ctx: StageContext,
) -> set[int]:
    """Apply what the server says would change; the ids of the items applied."""
    # Asked together: the client keeps a few in flight (werft.kube.IN_FLIGHT), so round
    # trips to a far site overlap.
    drifts = await asyncio.gather(
        *(kube.diff_live(item.obj, live[id(item)], force=item.force_conflicts) for item in items)
    )
    applied: set[int] = set()
    for item, drift in zip(items, drifts, strict=True):
        if drift.conflicts:
            raise StageFailed(APPLY_CONFLICT, _conflict_message(cluster, item, drift.conflicts))
        current = live[id(item)]
        if not drift and current is not None:
            ctx.confirmed.note(cluster.name, item.obj, current)
            continue
        stored = await _apply(kube, cluster, item, progress)
        ctx.confirmed.note(cluster.name, item.obj, stored)
        applied.add(id(item))
    return applied


async def _apply(
    kube: KubeClient, cluster: ResolvedCluster, item: RenderedObject, progress: Progress
) -> Obj:
    try:
        stored = await _send(
            kube, item.obj, item.force_conflicts, progress,
            source=f"add-on {item.addon!r}, template {item.template}",
        )
    except ApplyConflict as exc:
        # Not in werft's lists (or the cluster has no add-on record), yet another manager
        # holds fields of it: an object someone else created or took werft's label off.
        raise StageFailed(
            APPLY_CONFLICT, _conflict_message(cluster, item, exc.conflicts)
        ) from None
    if item.obj["kind"] == "CustomResourceDefinition":
        # Custom resources of this kind further down the list need it served first.
        await _wait(kube, item, "Established", progress, 0.2)
    return stored


async def _send(
    kube: KubeClient, obj: Obj, force: bool, progress: Progress, *, source: str
) -> Obj:
    """Server-side apply; a failure as this stage reports it, ``source`` saying what to
    fix when the API rejects the object. An ``ApplyConflict`` is the caller's to word."""
    try:
        return await kube.apply(obj, force=force)
    except ApplyConflict:
        raise
    except WerftError as exc:
        if is_unreachable(exc):
            raise  # nothing answered: run_stage judges whether the site is gone
        if is_transient(exc):
            raise StageFailed(APPLY_FAILED, str(exc), transient=True) from None
        raise StageFailed(APPLY_FAILED, f"{exc} ({source})") from None
    finally:
        progress.mutations += 1  # counted when sent: a timed-out apply may have landed


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
) -> Obj:
    meta = item.obj.get("metadata") or {}
    try:
        return await kube.wait(
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
