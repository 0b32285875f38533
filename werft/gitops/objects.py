"""The inventory's objects as a pull request changes them: what was added, changed, removed.

Objects are compared as the fleet sees them, not as files: a Cluster is its *resolved*
form (profile merged, fleet defaults applied, edge CSV rows expanded), so a Profile edit
shows up on every cluster it reaches, and moving a CSV row shifts no one. Each change
carries its object before and after as plain JSON (what policies see as ``oldObject`` and
``object``) and the paths of the fields that differ (``spec.machines[cp0].bmc.address``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from werft.inventory.model import API_VERSION, Machine
from werft.inventory.resolved import Inventory, ResolvedCluster, Source


class Operation(StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


@dataclass(frozen=True)
class ObjectChange:
    kind: str
    name: str
    operation: Operation
    old: dict[str, Any] | None  # None for CREATE
    new: dict[str, Any] | None  # None for DELETE
    fields: tuple[str, ...] = ()  # changed paths; empty for CREATE and DELETE
    source: str = ""  # "sites/fra1.yaml:12" at head (at base for a DELETE)
    edge: bool = False  # an edge CSV row (Site and Cluster)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "operation": str(self.operation),
            "fields": list(self.fields),
            "source": self.source,
        }


@dataclass
class ObjectDiff:
    changes: list[ObjectChange] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[ObjectChange]:
        return [c for c in self.changes if c.kind == kind]


def diff_objects(base: Inventory, head: Inventory) -> ObjectDiff:
    """Every object that differs between two revisions, in kind order then name order."""
    diff = ObjectDiff()
    diff.changes += _compare("Fleet", {"fleet": base.fleet}, {"fleet": head.fleet}, base, head)
    diff.changes += _compare("Site", base.sites, head.sites, base, head)
    diff.changes += _compare("Profile", base.profiles, head.profiles, base, head)
    diff.changes += _compare_clusters(base, head)
    diff.changes += _compare("AddonSet", base.addon_sets, head.addon_sets, base, head)
    diff.changes += _compare("Policy", base.policies, head.policies, base, head)
    return diff


def _compare(
    kind: str,
    old: dict[str, BaseModel],
    new: dict[str, BaseModel],
    base: Inventory,
    head: Inventory,
) -> Iterator[ObjectChange]:
    # Pydantic models compare field by field; only the few that differ are dumped to JSON.
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        lookup = name if kind != "Fleet" else (after or before).metadata.name  # type: ignore[union-attr]
        yield _change(
            kind,
            lookup,
            _dump(before) if before is not None else None,
            _dump(after) if after is not None else None,
            _where(head if after is not None else base, kind, lookup),
        )


def _compare_clusters(base: Inventory, head: Inventory) -> Iterator[ObjectChange]:
    old, new = base.clusters, head.clusters
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before is not None and after is not None and _same_cluster(before, after):
            continue
        inventory = head if after is not None else base
        cluster = after or before
        assert cluster is not None
        yield _change(
            "Cluster",
            name,
            cluster_object(before) if before is not None else None,
            cluster_object(after) if after is not None else None,
            _where(inventory, "Cluster", name),
        )


# Every field but ``source`` (a CSV row that moves down a line is not a change) and
# ``machines``, compared apart: pydantic's __eq__ costs ~5 us a model, 10,000 sites twice.
_CLUSTER_FIELDS = tuple(
    f for f in ResolvedCluster.__slots__ if f not in ("source", "machines")  # type: ignore[attr-defined]
)


def _same_cluster(a: ResolvedCluster, b: ResolvedCluster) -> bool:
    if not all(getattr(a, f) == getattr(b, f) for f in _CLUSTER_FIELDS):
        return False
    if len(a.machines) != len(b.machines):
        return False
    pairs = zip(a.machines, b.machines, strict=True)
    return all(_machine_key(m) == _machine_key(n) for m, n in pairs)


def _machine_key(machine: Machine) -> tuple[object, ...]:
    bmc = machine.bmc
    return (
        machine.name,
        machine.role,
        machine.boot_mac_address,
        machine.vm,  # None for every bare-metal machine: cheap
        None if bmc is None else (
            bmc.address, bmc.credentials_ref, bmc.disable_certificate_verification, bmc.ca_bundle
        ),
    )


def _change(
    kind: str, name: str, old: dict[str, Any] | None, new: dict[str, Any] | None, where: str
) -> ObjectChange:
    if old is None:
        operation, fields = Operation.CREATE, ()
    elif new is None:
        operation, fields = Operation.DELETE, ()
    else:
        operation, fields = Operation.UPDATE, tuple(changed_paths(old, new))
    edge = where.split(":", 1)[0].endswith(".csv")
    return ObjectChange(kind, name, operation, old, new, fields, where, edge)


def _where(inventory: Inventory, kind: str, name: str) -> str:
    source: Source | None = inventory.sources.get((kind, name))
    if source is None:
        return ""
    return f"{source.file}:{source.line}" if source.line else source.file


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def cluster_object(cluster: ResolvedCluster) -> dict[str, Any]:
    """A resolved cluster as a Kubernetes-shaped document (what policies see)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Cluster",
        "metadata": {"name": cluster.name, "labels": dict(cluster.labels)},
        "spec": {
            "site": cluster.site,
            "tier": str(cluster.tier),
            "region": cluster.region,
            "profile": cluster.profile,
            "kubernetesVersion": cluster.kubernetes_version,
            "distribution": str(cluster.distribution),
            "controlPlane": {"replicas": cluster.control_plane_replicas},
            "workers": {"replicas": cluster.worker_replicas},
            "network": _dump(cluster.network),
            "addonSets": list(cluster.addon_sets),
            "osImage": cluster.os_image_url,
            "apiEndpoint": cluster.api_endpoint,
            "machines": [_dump(m) for m in cluster.machines],
            "owners": list(cluster.owners),
        },
    }


def changed_paths(old: Any, new: Any, prefix: str = "") -> Iterator[str]:
    """Paths where two JSON values differ. Lists of named items are matched by name
    (``spec.machines[cp0].bmc.address``), other lists by position."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys(), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                yield path
            elif old[key] != new[key]:
                yield from changed_paths(old[key], new[key], path)
        return
    if isinstance(old, list) and isinstance(new, list):
        named_old, named_new = _by_name(old), _by_name(new)
        if named_old is not None and named_new is not None:
            for key in sorted(named_old.keys() | named_new.keys()):
                path = f"{prefix}[{key}]"
                if key not in named_old or key not in named_new:
                    yield path
                elif named_old[key] != named_new[key]:
                    yield from changed_paths(named_old[key], named_new[key], path)
            return
    if old != new:
        yield prefix


def _by_name(items: list[Any]) -> dict[str, Any] | None:
    if not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    named = {i["name"]: i for i in items}
    return named if len(named) == len(items) else None
