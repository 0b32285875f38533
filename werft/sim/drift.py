"""Drift injection: the fleet changes behind werft's back (``POST /_sim/drift``).

    {"kind": "power-off", "machine": NAME}
        the machine loses power; its node goes NotReady
    {"kind": "replace-machine", "machine": NAME}
        the machine is swapped for blank hardware behind the same BMC address (an RMA, a
        disk replaced): off, no OS on its disk, no media, no boot override
    {"kind": "delete-object", "cluster": C, "apiVersion": "apps/v1",
     "resource": "deployments" | "objectKind": "Deployment", "namespace"?: NS, "name": N}
        ("kind" names the drift, so the object's kind goes in "objectKind")
        the object disappears (as if someone ran kubectl delete)
    {"kind": "change-object", ... same target ..., "patch": {...}}
        a JSON merge patch is applied to the object (as if someone ran kubectl edit)
    {"kind": "kubelet-version", "cluster": C, "node": N, "version": "v1.30.0"}
        the node reports another kubelet version

Object changes go through the cluster's own store (werft/sim/cluster.py, objects.py), so
resourceVersion and generation move as they would on a real API server.
"""

from __future__ import annotations

from typing import Any

from werft.sim.kube.errors import ApiError
from werft.sim.lifecycle import Fleet


class DriftError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def apply_drift(fleet: Fleet, body: dict[str, Any]) -> dict[str, Any]:
    kind = body.get("kind")
    if kind in ("power-off", "replace-machine"):
        name = _str(body, "machine")
        machine = fleet.machine(name)
        if machine is None:
            raise DriftError(f"no machine {name!r}", 404)
        fleet.observe(machine)
        machine.power_off(fleet.clock.now())
        fleet.observe(machine)  # its cluster sees it go (while it still has its disk)
        if kind == "replace-machine":
            machine.blank()
        if machine.spec.cluster:
            fleet.advance(machine.spec.cluster)
        return {"kind": kind, "machine": name, "powerState": "Off"}
    if kind in ("delete-object", "change-object", "kubelet-version"):
        cluster_name = _str(body, "cluster")
        cluster = fleet.registry.get(cluster_name)
        if cluster is None:
            raise DriftError(f"no cluster {cluster_name!r}", 404)
        fleet.advance(cluster_name)
        if not cluster.api_up:
            raise DriftError(f"cluster {cluster_name!r} has no API up yet", 409)
        if kind == "kubelet-version":
            node, version = _str(body, "node"), _str(body, "version")
            _set_kubelet_version(cluster, node, version)
            return {"kind": kind, "cluster": cluster_name, "node": node, "version": version}
        api_version = _str(body, "apiVersion")
        namespace = body.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise DriftError("namespace must be a string")
        name = _str(body, "name")
        resource = body.get("resource")
        object_kind = body.get("objectKind")
        if resource is None and object_kind is None:
            raise DriftError("give the object's 'resource' (plural) or 'objectKind'")
        if kind == "delete-object":
            _delete_object(cluster, api_version, resource, object_kind, namespace, name)
        else:
            patch = body.get("patch")
            if not isinstance(patch, dict):
                raise DriftError("change-object needs a 'patch' object (JSON merge patch)")
            _change_object(cluster, api_version, resource, object_kind, namespace, name, patch)
        return {"kind": kind, "cluster": cluster_name, "name": name}
    raise DriftError(
        "drift kind must be power-off, replace-machine, delete-object, change-object or "
        "kubelet-version"
    )


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise DriftError(f"{key!r} must be a non-empty string")
    return value


# --- the cluster side: werft/sim/cluster.py and objects.py --------------------------------


def _set_kubelet_version(cluster: Any, node: str, version: str) -> None:
    try:
        cluster.set_kubelet_version(node, version)
    except KeyError:
        raise DriftError(f"no node {node!r} in cluster {cluster.name!r}", 404) from None


def _resource(store: Any, api_version: str, resource: str | None, kind: str | None) -> str:
    if resource is not None:
        return resource
    rt = store.kind_resource(api_version, kind)
    if rt is None:
        raise DriftError(f"{kind} in {api_version} is not served by the cluster", 404)
    return str(rt.plural)


def _split(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _delete_object(
    cluster: Any, api_version: str, resource: str | None, kind: str | None,
    namespace: str | None, name: str,
) -> None:
    store = cluster.store
    plural = _resource(store, api_version, resource, kind)
    try:
        found = store.delete(*_split(api_version), plural, namespace, name)
    except KeyError as exc:
        raise DriftError(str(exc).strip("'\""), 404) from None
    except ApiError as exc:
        raise DriftError(exc.message, exc.code) from None
    if not found:
        raise DriftError(f"no {plural} {name!r} in cluster {cluster.name!r}", 404)


def _change_object(
    cluster: Any, api_version: str, resource: str | None, kind: str | None,
    namespace: str | None, name: str, patch: dict[str, Any],
) -> None:
    store = cluster.store
    plural = _resource(store, api_version, resource, kind)
    try:
        changed = store.patch_merge(*_split(api_version), plural, namespace, name, patch)
    except KeyError as exc:
        raise DriftError(str(exc).strip("'\""), 404) from None
    except ApiError as exc:
        raise DriftError(exc.message, exc.code) from None
    if changed is None:
        raise DriftError(f"no {plural} {name!r} in cluster {cluster.name!r}", 404)
