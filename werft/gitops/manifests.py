"""The rendered add-on manifests a change would apply: a unified diff per object.

Rendering every cluster of a 10,000-site fleet twice would take minutes, and nearly all of
them render the same bytes: an add-on template only sees the cluster through the
attributes it names (``cluster.network.pod_cidr``). So clusters are grouped by what their
templates can see -- their AddonSets and the values of the ``cluster.*`` attributes those
templates read -- and one cluster of each group is rendered with ``render_addon_objects``
(at both revisions). Identical diffs, within and across groups, are shown once with the
clusters they apply to.
"""

from __future__ import annotations

import difflib
import functools
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.nodes

from werft.errors import PermanentError
from werft.inventory.resolved import Inventory, ResolvedCluster
from werft.render.addons import RenderedObject, render_addon_objects
from werft.yamlsafe import safe_dump

ALL = "*"  # a template that uses ``cluster`` as a whole sees every attribute

# The attributes of ``cluster`` a template context has (werft.render.addons._base_context).
_CONTEXT_ATTRS = (
    "name", "site", "tier", "region", "kubernetes_version", "distribution", "api_endpoint",
    "network", "labels",
)  # fmt: skip


@dataclass
class ObjectDiff:
    """One add-on object's change, the same for every cluster in ``clusters``."""

    addon: str
    object: str  # "apps/v1 Deployment kube-system/metrics-server"
    change: str  # "added", "changed", "removed"
    diff: str
    clusters: list[str] = field(default_factory=list)

    def as_dict(self, *, sample: int = 20) -> dict[str, Any]:
        return {
            "addon": self.addon,
            "object": self.object,
            "change": self.change,
            "clusters": len(self.clusters),
            "sample": self.clusters[:sample],
            "diff": self.diff,
        }


@dataclass
class ManifestChanges:
    diffs: list[ObjectDiff] = field(default_factory=list)
    # Clusters whose rendered add-ons differ between the revisions (or that are new).
    changed: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)  # templates that no longer render
    renders: int = 0  # clusters actually rendered (one per group and revision)


def manifest_changes(
    base: Inventory, head: Inventory, clusters: Iterable[str]
) -> ManifestChanges:
    """The add-on object diffs of ``clusters`` (names at head; new ones render from nothing)."""
    _attrs_cache.clear()  # ids are only unique while both inventories are alive
    groups: dict[tuple[Any, Any], list[str]] = {}
    for name in clusters:
        after = head.clusters.get(name)
        if after is None:
            continue
        before = base.clusters.get(name)
        head_key = _group_key(after, head)
        base_key = _group_key(before, base) if before is not None else None
        if base_key is not None and base_key == head_key and not _sets_differ(
            base, head, after.addon_sets
        ):
            continue  # same inputs, same templates: the same bytes
        groups.setdefault((base_key, head_key), []).append(name)

    result = ManifestChanges()
    merged: dict[tuple[str, str], ObjectDiff] = {}
    for names in groups.values():
        sample = names[0]
        try:
            after_objects = _rendered(head.clusters[sample], head)
            before = base.clusters.get(sample)
            before_objects = _rendered(before, base) if before is not None else {}
        except PermanentError as exc:
            result.problems.append(str(exc))
            continue
        result.renders += 1 + (sample in base.clusters)
        for item in _object_diffs(before_objects, after_objects):
            found = merged.setdefault((item.object, item.diff), item)
            found.clusters += names
            result.changed.update(names)
    result.diffs = sorted(merged.values(), key=lambda d: (-len(d.clusters), d.addon, d.object))
    for item in result.diffs:
        item.clusters.sort()
    return result


# --- which clusters render alike --------------------------------------------------------


def _group_key(cluster: ResolvedCluster, inventory: Inventory) -> tuple[Any, ...]:
    names = _attrs_for(inventory, cluster.addon_sets)
    return (cluster.addon_sets, *(_hashable(getattr(cluster, a, None)) for a in names))


# (id of the inventory, sets) -> the attributes; both inventories live for the whole plan,
# and 10,000 edge clusters share one combination of AddonSets.
_attrs_cache: dict[tuple[int, tuple[str, ...]], tuple[str, ...]] = {}


def _attrs_for(inventory: Inventory, sets: tuple[str, ...]) -> tuple[str, ...]:
    key = (id(inventory), sets)
    found = _attrs_cache.get(key)
    if found is None:
        attrs = _attrs_read(inventory, sets)
        found = _CONTEXT_ATTRS if ALL in attrs else tuple(sorted(attrs))
        _attrs_cache[key] = found
    return found


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    return value


def _attrs_read(inventory: Inventory, sets: tuple[str, ...]) -> frozenset[str]:
    """The ``cluster.*`` attributes the templates of ``sets`` read, at this revision."""
    texts = tuple(sorted(_templates(inventory, sets).items()))
    return _attrs_of(texts)


@functools.lru_cache(maxsize=256)
def _attrs_of(texts: tuple[tuple[str, str], ...]) -> frozenset[str]:
    found: set[str] = set()
    env = jinja2.Environment()
    for _, text in texts:
        try:
            tree = env.parse(text)
        except jinja2.TemplateSyntaxError:
            return frozenset({ALL})  # rendering reports it; group nothing together
        named = [
            node
            for node in tree.find_all(jinja2.nodes.Getattr)
            if isinstance(node.node, jinja2.nodes.Name) and node.node.name == "cluster"
        ]
        found.update(node.attr for node in named)
        uses = sum(1 for n in tree.find_all(jinja2.nodes.Name) if n.name == "cluster")
        if uses > len(named):  # ``cluster`` passed whole, subscripted or aliased
            found.add(ALL)
    return frozenset(found)


def _templates(inventory: Inventory, sets: Iterable[str]) -> dict[str, str]:
    """Template path -> text of every manifest of ``sets``."""
    found: dict[str, str] = {}
    for set_name in sets:
        addon_set = inventory.addon_sets.get(set_name)
        source = inventory.sources.get(("AddonSet", set_name))
        if addon_set is None:
            continue
        folder = posixpath.dirname(source.file) if source is not None else ""
        for addon in addon_set.spec.addons:
            for manifest in addon.manifests:
                path = posixpath.normpath(posixpath.join(folder, manifest))
                found[path] = inventory.files.get(path, "")
    return found


def _sets_differ(base: Inventory, head: Inventory, sets: tuple[str, ...]) -> bool:
    if base.fleet.spec.artifacts.base_url != head.fleet.spec.artifacts.base_url:
        return True
    if any(base.addon_sets.get(s) != head.addon_sets.get(s) for s in sets):
        return True
    return _templates(base, sets) != _templates(head, sets)


# --- rendering and diffing ----------------------------------------------------------------


def _rendered(cluster: ResolvedCluster, inventory: Inventory) -> dict[str, tuple[str, str]]:
    """Object id -> (add-on, YAML text) of the cluster's rendered add-ons."""
    objects: dict[str, tuple[str, str]] = {}
    for item in render_addon_objects(cluster, inventory):
        objects[_object_id(item)] = (item.addon, _yaml(item.obj))
    return objects


def _object_id(item: RenderedObject) -> str:
    obj = item.obj
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace")
    name = f"{namespace}/{metadata['name']}" if namespace else metadata["name"]
    return f"{obj['apiVersion']} {obj['kind']} {name}"


def _yaml(obj: dict[str, Any]) -> str:
    return safe_dump(obj, sort_keys=False, default_flow_style=False)


def _object_diffs(
    before: dict[str, tuple[str, str]], after: dict[str, tuple[str, str]]
) -> Iterable[ObjectDiff]:
    for object_id in list(after) + [o for o in before if o not in after]:
        old = before.get(object_id)
        new = after.get(object_id)
        old_text = old[1] if old else ""
        new_text = new[1] if new else ""
        if old_text == new_text:
            continue
        change = "added" if old is None else "removed" if new is None else "changed"
        lines = difflib.unified_diff(
            old_text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=f"base/{object_id}" if old else "/dev/null",
            tofile=f"head/{object_id}" if new else "/dev/null",
        )
        addon = (new or old)[0]  # type: ignore[index]
        yield ObjectDiff(addon, object_id, change, "".join(lines))
