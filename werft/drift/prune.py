"""Pruning: delete objects werft applied that the inventory no longer has. Only under a
``remediate`` policy, and never an object another manager has written to (a person's
``kubectl edit``, another controller's apply) unless its AddonSet says ``forceConflicts``:
someone else uses it, and deleting it is a decision for a person.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from werft.drift.findings import Finding, Kind
from werft.inventory.resolved import Inventory, ResolvedCluster
from werft.kube import FIELD_MANAGER, KubeClient
from werft.stages.context import StageContext


def others_write(live: Mapping[str, Any]) -> list[str]:
    """Managers other than werft that own fields of the object (status writers aside:
    controllers report status on everything they run)."""
    entries = (live.get("metadata") or {}).get("managedFields") or []
    return sorted({
        str(e.get("manager")) for e in entries
        if e.get("manager") != FIELD_MANAGER and e.get("subresource") != "status"
    })


def _forced(inventory: Inventory, finding: Finding) -> bool:
    addon_set = inventory.addon_sets.get(finding.addon_set)
    return addon_set is not None and addon_set.spec.force_conflicts


async def prune(
    cluster: ResolvedCluster, ctx: StageContext, findings: Sequence[Finding]
) -> tuple[int, list[str]]:
    """Delete this cluster's prune candidates; (deleted, objects left and why)."""
    deleted, left = 0, []
    candidates = [f for f in findings if f.kind is Kind.PRUNE]
    if not candidates:
        return 0, []
    async with ctx.kube(cluster) as kube:
        for finding in candidates:
            deleted_one, why = await _prune_one(kube, ctx.inventory, finding)
            deleted += deleted_one
            if why:
                left.append(f"{finding.object}: {why}")
    return deleted, left


async def _prune_one(kube: KubeClient, inventory: Inventory, finding: Finding) -> tuple[int, str]:
    kind, _, ref = finding.object.partition(" ")
    namespace, _, name = ref.rpartition("/")
    live = await kube.get(finding.api_version, kind, name, namespace or None)
    if live is None:
        return 0, ""
    others = others_write(live)
    if others and not _forced(inventory, finding):
        return 0, f"also written by {', '.join(others)}; not deleted (forceConflicts is off)"
    return int(await kube.delete(finding.api_version, kind, name, namespace or None)), ""
