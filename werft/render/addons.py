"""Add-on manifests: a cluster's AddonSets rendered into Kubernetes objects in apply order.

Each add-on names jinja2 templates (relative to its AddonSet document's folder) whose text
the inventory carries in ``Inventory.files``. A template sees:

  cluster   name, site, tier, region, kubernetes_version, distribution, api_endpoint,
            network (pod_cidr, service_cidr, node_cidr, control_plane_endpoint), labels
  addon     name, version, values        addon_set  name, version
  artifacts base_url (the fleet's artifacts.baseUrl, e.g. for an in-site registry mirror)

Apply order: Namespaces and CRDs, then cluster-scoped RBAC (and PriorityClasses), then
everything else, then admission webhooks; within each group, add-ons in dependency order
(``dependsOn``) and each add-on's objects in template order.
"""

from __future__ import annotations

import copy
import functools
import posixpath
import traceback
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import jinja2
import jinja2.sandbox
import yaml

from werft.errors import PermanentError
from werft.inventory.model import Addon
from werft.inventory.resolved import Inventory, ResolvedCluster
from werft.yamlsafe import SafeLoader

MANAGED_BY = "werft"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"  # a label selector for werft's objects
LABEL_ADDON = "werft.dev/addon"
LABEL_ADDON_VERSION = "werft.dev/addon-version"

# Objects others need first: a namespaced object needs its Namespace, a custom resource its
# CRD; a pod is refused without its PriorityClass, and a controller that starts before its
# cluster RBAC crash-loops until the binding appears.
_FIRST_KINDS = frozenset({"Namespace", "CustomResourceDefinition"})
_CLUSTER_SCOPED_EARLY = frozenset({"ClusterRole", "ClusterRoleBinding", "PriorityClass"})
# A webhook registered before the Deployment that serves it would reject later applies.
_LAST_KINDS = frozenset({"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"})


@dataclass(frozen=True)
class _PlannedAddon:
    addon: Addon
    set_name: str
    set_version: str
    folder: str  # the AddonSet document's folder, relative to the inventory root
    force_conflicts: bool = False


@dataclass(frozen=True)
class RenderedObject:
    """One add-on object with where it came from, for messages that say what to fix."""

    obj: dict[str, Any]
    addon: str
    template: str  # the template's path in the inventory
    # 0 for add-ons that depend on nothing, else one more than their deepest dependency:
    # everything of level n is applied and healthy before level n+1 is applied.
    level: int
    force_conflicts: bool


def render_addons(cluster: ResolvedCluster, inventory: Inventory) -> list[dict[str, Any]]:
    """Every object of the cluster's add-ons, labelled and in apply order."""
    return [item.obj for item in render_addon_objects(cluster, inventory)]


def render_addon_objects(cluster: ResolvedCluster, inventory: Inventory) -> list[RenderedObject]:
    """``render_addons`` with each object's add-on, template and dependency level."""
    planned = _dependency_order(_cluster_addons(cluster, inventory), cluster)
    levels: dict[str, int] = {}
    for item in planned:  # dependencies come first in this order
        deps = [levels[d] for d in item.addon.depends_on]
        levels[item.addon.name] = 1 + max(deps) if deps else 0
    base = _base_context(cluster, inventory)
    ranked: list[tuple[int, int, int, RenderedObject]] = []
    for addon_index, item in enumerate(planned):
        for seq, (obj, template) in enumerate(_render_addon(item, inventory, base)):
            rendered = RenderedObject(
                obj, item.addon.name, template, levels[item.addon.name], item.force_conflicts
            )
            ranked.append((_kind_rank(obj["kind"]), addon_index, seq, rendered))
    ranked.sort(key=lambda entry: entry[:3])
    return [rendered for *_, rendered in ranked]


def _kind_rank(kind: str) -> int:
    if kind in _FIRST_KINDS:
        return 0
    if kind in _CLUSTER_SCOPED_EARLY:
        return 1
    if kind in _LAST_KINDS:
        return 3
    return 2


# --- which add-ons, in which order -----------------------------------------------------


def _cluster_addons(cluster: ResolvedCluster, inventory: Inventory) -> list[_PlannedAddon]:
    found: dict[str, _PlannedAddon] = {}
    for set_name in cluster.addon_sets:
        addon_set = inventory.addon_sets.get(set_name)
        if addon_set is None:
            raise PermanentError(f"cluster {cluster.name!r}: unknown AddonSet {set_name!r}")
        source = inventory.sources.get(("AddonSet", set_name))
        folder = posixpath.dirname(source.file) if source is not None else ""
        for addon in addon_set.spec.addons:
            if addon.name in found:
                raise PermanentError(
                    f"cluster {cluster.name!r}: add-on {addon.name!r} is in both AddonSet "
                    f"{found[addon.name].set_name!r} and {set_name!r}"
                )
            found[addon.name] = _PlannedAddon(
                addon,
                set_name,
                addon_set.spec.version,
                folder,
                addon_set.spec.force_conflicts,
            )
    return list(found.values())


def _dependency_order(addons: list[_PlannedAddon], cluster: ResolvedCluster) -> list[_PlannedAddon]:
    """Topological order by ``dependsOn``, keeping the declared order where free."""
    by_name = {item.addon.name: item for item in addons}
    for item in addons:
        for dep in item.addon.depends_on:
            if dep not in by_name:
                raise PermanentError(
                    f"cluster {cluster.name!r}: add-on {item.addon.name!r} depends on "
                    f"{dep!r}, which none of its AddonSets {list(cluster.addon_sets)} has"
                )
    ordered: list[_PlannedAddon] = []
    placed: set[str] = set()
    visiting: list[str] = []

    def place(item: _PlannedAddon) -> None:
        name = item.addon.name
        if name in placed:
            return
        if name in visiting:
            cycle = [*visiting[visiting.index(name) :], name]
            raise PermanentError(
                f"cluster {cluster.name!r}: add-on dependencies form a cycle: " + " -> ".join(cycle)
            )
        visiting.append(name)
        for dep in item.addon.depends_on:
            place(by_name[dep])
        visiting.pop()
        placed.add(name)
        ordered.append(item)

    for item in addons:
        place(item)
    return ordered


# --- rendering -------------------------------------------------------------------------


def _base_context(cluster: ResolvedCluster, inventory: Inventory) -> dict[str, Any]:
    # Namespaces rather than dicts: in jinja2, ``addon.values`` on a dict would be the
    # dict's .values method, not the key.
    network = cluster.network
    return {
        "cluster": SimpleNamespace(
            name=cluster.name,
            site=cluster.site,
            tier=str(cluster.tier),
            region=cluster.region,
            kubernetes_version=cluster.kubernetes_version,
            distribution=str(cluster.distribution),
            api_endpoint=cluster.api_endpoint,
            network=SimpleNamespace(
                pod_cidr=network.pod_cidr,
                service_cidr=network.service_cidr,
                node_cidr=network.node_cidr,
                control_plane_endpoint=network.control_plane_endpoint,
            ),
            labels=dict(cluster.labels),
        ),
        "artifacts": SimpleNamespace(base_url=inventory.fleet.spec.artifacts.base_url),
    }


def _render_addon(
    item: _PlannedAddon, inventory: Inventory, base: dict[str, Any]
) -> list[tuple[dict[str, Any], str]]:
    """The add-on's objects, each with the path of the template it came from."""
    addon = item.addon
    context = {
        **base,
        "addon": SimpleNamespace(
            name=addon.name, version=addon.version, values=copy.deepcopy(addon.values)
        ),
        "addon_set": SimpleNamespace(name=item.set_name, version=item.set_version),
    }
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_ADDON: addon.name,
        LABEL_ADDON_VERSION: addon.version,
    }
    objects: list[tuple[dict[str, Any], str]] = []
    for manifest in addon.manifests:
        path = posixpath.normpath(posixpath.join(item.folder, manifest))
        text = inventory.files.get(path)
        if text is None:
            raise PermanentError(
                f"add-on {addon.name!r}: manifest template {path} is not in the inventory"
            )
        rendered = _render_template(addon.name, path, text, context)
        for obj in _parse_objects(addon.name, path, rendered):
            metadata = obj.setdefault("metadata", {})
            metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
            objects.append((obj, path))
    return objects


# Sandboxed: templates come from the inventory repository, and a template should never be
# able to reach past its context (into the process, the secret store, the file system).
_env = jinja2.sandbox.SandboxedEnvironment(
    undefined=jinja2.StrictUndefined,  # a misspelt value fails loudly instead of rendering ""
    keep_trailing_newline=True,
    autoescape=False,
)


@functools.lru_cache(maxsize=512)
def _compile(path: str, text: str) -> jinja2.Template:
    """Compile once per template text: a fleet renders the same add-ons for every cluster."""
    code = _env.compile(text, name=path, filename=path)
    return _env.template_class.from_code(_env, code, _env.make_globals(None))


def _render_template(addon: str, path: str, text: str, context: dict[str, Any]) -> str:
    try:
        return _compile(path, text).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise PermanentError(
            f"add-on {addon!r}: {path}:{exc.lineno}: template syntax error: {exc.message}"
        ) from exc
    except Exception as exc:
        line = _template_line(exc, path)
        where = f"{path}:{line}" if line else path
        raise PermanentError(
            f"add-on {addon!r}: {where}: cannot render: {type(exc).__name__}: {exc}"
        ) from exc


def _template_line(exc: BaseException, path: str) -> int | None:
    """The template line that failed: jinja2 rewrites tracebacks so that frames of the
    template carry its file name and its own line numbers."""
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == path:
            line = lineno
    return line


def _parse_objects(addon: str, path: str, rendered: str) -> list[dict[str, Any]]:
    try:
        documents = list(yaml.load_all(rendered, Loader=SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (rendered output line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PermanentError(
            f"add-on {addon!r}: {path}{where}: rendered YAML does not parse: {problem}"
        ) from exc
    objects = []
    for index, doc in enumerate(documents, start=1):
        if doc is None:  # an empty document between two '---'
            continue
        if (
            not isinstance(doc, dict)
            or not doc.get("apiVersion")
            or not doc.get("kind")
            or not isinstance(doc.get("metadata"), dict)
            or not doc["metadata"].get("name")
        ):
            raise PermanentError(
                f"add-on {addon!r}: {path}: document {index} is not a Kubernetes object "
                "(needs apiVersion, kind and metadata.name)"
            )
        objects.append(doc)
    return objects
