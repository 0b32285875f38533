"""Add-on drift, field by field, decided by the API server.

Per kind the cluster's add-ons use, one LIST of what carries werft's label (what werft
applied); per object, one dry-run apply (``dryRun=All``: the server's own normalisation,
no write). The dry run's result against the live object names the changed fields; the
live object's ``managedFields`` say who changed each and when. Objects werft labelled
that the inventory no longer renders are prune candidates. Nothing here writes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from werft.drift.fields import changed_paths
from werft.drift.findings import ABSENT, Area, Finding, Kind, show
from werft.drift.paths import owned_by, server_text, value_at
from werft.kube import (
    FIELD_MANAGER,
    ApplyConflict,
    KubeClient,
    ObjectKey,
    describe,
    object_key,
)
from werft.redact import redact
from werft.render.addons import LABEL_ADDON, MANAGED_SELECTOR, RenderedObject

Obj = dict[str, Any]

# Kinds listed for prune candidates besides those the cluster's add-ons render now: what
# an add-on that was removed whole most likely left behind. A kind outside this list and
# no longer rendered anywhere on the cluster is not seen (a LIST per served kind would
# cost ~40 reads per cluster per check).
PRUNE_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "StatefulSet"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
)


async def addon_findings(
    kube: KubeClient, rendered: Sequence[RenderedObject], sets: Mapping[str, str]
) -> list[Finding]:
    """Every add-on finding on one cluster. ``sets``: add-on name -> its AddonSet."""
    kinds = list(dict.fromkeys([(r.obj["apiVersion"], r.obj["kind"]) for r in rendered]
                               + list(PRUNE_KINDS)))
    listed = await asyncio.gather(
        *(kube.list(v, k, label_selector=MANAGED_SELECTOR) for v, k in kinds)
    )
    live: dict[ObjectKey, Obj] = {object_key(item): item for items in listed for item in items}
    wanted = {object_key(r.obj): r for r in rendered}

    findings: list[Finding] = []
    per_object = await asyncio.gather(
        *(_object_findings(kube, r, live.get(k), sets) for k, r in wanted.items())
    )
    for found in per_object:
        findings += found
    for key, item in live.items():
        if key not in wanted:
            labels = (item.get("metadata") or {}).get("labels") or {}
            addon = str(labels.get(LABEL_ADDON, ""))
            findings.append(Finding(
                area=Area.ADDON, kind=Kind.PRUNE, object=describe(item), addon=addon,
                addon_set=sets.get(addon, ""), api_version=key[0],
                desired="(not in the inventory)", live="present",
            ))
    return findings


async def _object_findings(
    kube: KubeClient, item: RenderedObject, live: Obj | None, sets: Mapping[str, str]
) -> list[Finding]:
    obj = item.obj
    base: dict[str, Any] = {
        "area": Area.ADDON, "object": describe(obj), "addon": item.addon,
        "addon_set": sets.get(item.addon, ""), "template": item.template,
        "api_version": obj["apiVersion"],
    }
    if live is None:
        # Not listed: gone, or someone took werft's label off (then it is a field drift).
        live = await kube.get_live(obj)
        if live is None:
            return [Finding(kind=Kind.MISSING, desired="present", live="(absent)", **base)]
    conflicts: dict[str, str] = {}
    try:
        would_be = await kube.apply(obj, force=item.force_conflicts, dry_run=True)
    except ApplyConflict as exc:
        # Another manager owns fields werft sets. Ask what a forced apply would store,
        # still a dry run, only to name every differing field with both values.
        conflicts = {c.field: c.manager for c in exc.conflicts}
        would_be = await kube.apply(obj, force=True, dry_run=True)
    findings = []
    secret = obj.get("kind") == "Secret"
    for path in changed_paths(would_be, live):
        manager, since = owner(live, path)
        # Conflict causes name fields as the server writes them (``.data.net-conf.json``).
        other = conflicts.get(path) or conflicts.get(server_text(path))
        desired, found = show(value_at(would_be, path)), show(value_at(live, path))
        if secret:  # reports, artifacts and events never carry a Secret's values
            desired, found = _fingerprint(desired), _fingerprint(found)
        findings.append(Finding(
            kind=Kind.FIELD, field=path, desired=redact(desired), live=redact(found),
            manager=other or manager, since=since, conflict=other is not None, **base,
        ))
    return findings


def _fingerprint(value: str) -> str:
    """Tells two values apart (and groups equal ones) without showing either."""
    if value == ABSENT:
        return value
    return "(hidden: sha256 " + hashlib.sha256(value.encode()).hexdigest()[:12] + ")"


def owner(live: Mapping[str, Any], path: str) -> tuple[str, datetime | None]:
    """The manager other than werft that owns ``path`` on the live object, and when it
    last wrote; ("", None) when no one else does (e.g. a field someone removed)."""
    entries = (live.get("metadata") or {}).get("managedFields") or []
    best: tuple[str, datetime | None] = ("", None)
    for entry in entries:
        manager = str(entry.get("manager", ""))
        if manager == FIELD_MANAGER or not owned_by(entry.get("fieldsV1"), path):
            continue
        when = _time(entry.get("time"))
        if best[0] == "" or (when and (best[1] is None or when > best[1])):
            best = (manager, when)
    return best


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
