"""The add-on record: one ConfigMap per cluster, ``kube-system/werft-addons``, naming the
kinds of the objects werft applies there. It is written *before* any of them, so its
kinds are always a superset of what werft may have applied -- kubectl's ApplySet parent
(KEP-3659) keeps its ``contains-group-kinds`` annotation ahead of its members the same
way.

What it buys: on a fresh cluster, one GET that finds no record says that nothing of
werft's can be there, which took a LIST per kind (~9 per edge cluster) to learn before.
With the record there, the add-on stage lists the kinds as it always did.

The record decides nothing beyond that. A cluster without one (provisioned before the
record existed, or someone deleted it) gets every object applied without a dry run
first: server-side apply leaves an unchanged object as it is and reports a field another
manager owns as a conflict, as the dry run would have, and the record is written again.
It carries no ``managed-by`` label, so drift never offers it for pruning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from werft.kube import KubeClient, Obj

RECORD_NAMESPACE = "kube-system"
RECORD_NAME = "werft-addons"
KINDS_ANNOTATION = "werft.dev/contains-group-kinds"


def group_kind(obj: Mapping[str, Any]) -> str:
    """``Deployment.apps``, ``Namespace``: ApplySet's spelling of a kind."""
    group = str(obj["apiVersion"]).rpartition("/")[0]
    return f"{obj['kind']}.{group}" if group else str(obj["kind"])


def recorded_kinds(record: Mapping[str, Any] | None) -> frozenset[str]:
    annotations = ((record or {}).get("metadata") or {}).get("annotations") or {}
    return frozenset(k for k in str(annotations.get(KINDS_ANNOTATION, "")).split(",") if k)


def record_manifest(kinds: Iterable[str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": RECORD_NAME,
            "namespace": RECORD_NAMESPACE,
            "annotations": {KINDS_ANNOTATION: ",".join(sorted(kinds))},
        },
    }


async def read_record(kube: KubeClient) -> Obj | None:
    return await kube.get("v1", "ConfigMap", RECORD_NAME, RECORD_NAMESPACE)


def record_update(
    record: Mapping[str, Any] | None, manifests: Iterable[Mapping[str, Any]]
) -> Obj | None:
    """The record to apply, before any of ``manifests`` is, so that it names their kinds
    too; None when it already does."""
    have = recorded_kinds(record)
    wanted = have | {group_kind(m) for m in manifests}
    if record is not None and wanted == have:
        return None
    return record_manifest(wanted)
