"""The three patch formats of PATCH requests (server-side apply lives in kubefields.py).

- ``application/merge-patch+json``: RFC 7386.
- ``application/strategic-merge-patch+json``: like a merge patch, except that lists the
  Go types mark ``patchStrategy:"merge"`` are merged item by item on their
  ``patchMergeKey`` (containers by name, ports by containerPort, ...), plus the directives
  kubectl's client-side apply sends (``$patch``, ``$setElementOrder/``, ``$retainKeys``,
  ``$deleteFromPrimitiveList/``). The merge keys come from a table keyed by field name
  instead of the Go struct tags, which is right for every built-in type add-ons use.
- ``application/json-patch+json``: RFC 6902, via the ``jsonpatch`` package.

Patches never mutate their target: they return new containers along the patched paths
and share untouched subtrees (the store is copy-on-write).
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer

from werft.sim.kube.errors import bad_request, unprocessable

# Field name -> patchMergeKey for lists with patchStrategy "merge" in the built-in types.
SMP_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "taints": "key",
    "resourceClaims": "name",
}
# Primitive lists with patchStrategy "merge": items are a set.
SMP_MERGED_PRIMITIVES = frozenset({"finalizers"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], patch: Any) -> dict[str, Any]:
    if not isinstance(patch, list):
        raise bad_request("json patch must be a list of operations")
    try:
        result = jsonpatch.JsonPatch(patch).apply(target)
    except jsonpatch.InvalidJsonPatch as exc:
        raise bad_request(f"invalid json patch: {exc}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise unprocessable(
            f"the server rejected our request due to an error in our request: {exc}"
        ) from None
    if not isinstance(result, dict):
        raise unprocessable("json patch must leave an object")
    return result


# --- strategic merge patch -----------------------------------------------------------------

_DELETE = object()  # a map patched with {"$patch": "delete"}


def _ports_key(items: list[Any]) -> str:
    # Container ports merge on containerPort, Service ports on port.
    if any(isinstance(i, dict) and "containerPort" in i for i in items):
        return "containerPort"
    return "port"


def smp_merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        return _ports_key(items)
    return SMP_MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    result = _smp_map(target if isinstance(target, dict) else {}, patch)
    if result is _DELETE:
        raise bad_request("a strategic merge patch may not delete the whole object")
    return result


def _strip(value: Any) -> Any:
    """A patch value written where nothing was: drop the directives inside it."""
    if isinstance(value, dict):
        if value.get("$patch") == "delete":
            return _DELETE
        out = {}
        for k, v in value.items():
            if k.startswith("$"):
                continue
            stripped = _strip(v)
            if stripped is not _DELETE and v is not None:
                out[k] = stripped
        return out
    if isinstance(value, list):
        return [s for s in (_strip(v) for v in value) if s is not _DELETE]
    return value


def _smp_map(target: dict[str, Any], patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _strip({k: v for k, v in patch.items() if k != "$patch"})
    result = dict(target)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                drop = value if isinstance(value, list) else [value]
                result[field] = [v for v in result[field] if v not in drop]
            continue
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict):
            merged = _smp_map(current if isinstance(current, dict) else {}, value)
        elif isinstance(value, list) and isinstance(current, list):
            merged = _smp_list(key, current, value)
        else:
            merged = _strip(value)
        if merged is _DELETE:
            result.pop(key, None)
        else:
            result[key] = merged
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        keep = set(retain)
        result = {k: v for k, v in result.items() if k in keep}
    for field, order in orders.items():
        if isinstance(result.get(field), list) and isinstance(order, list):
            result[field] = _reorder(field, result[field], order)
    return result


def _smp_list(field: str, current: list[Any], patch: list[Any]) -> list[Any]:
    if field in SMP_MERGED_PRIMITIVES:
        return current + [v for v in patch if v not in current]
    key = smp_merge_key(field, patch + current)
    if key is None or not all(isinstance(i, dict) for i in patch + current):
        return _strip(patch)
    if any(i.get("$patch") == "replace" for i in patch):
        return _strip([i for i in patch if i.get("$patch") != "replace"])
    result = list(current)
    index = {item.get(key): n for n, item in enumerate(result)}
    for item in patch:
        if key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {key}")
        at = index.get(item[key])
        if item.get("$patch") == "delete":
            if at is not None:
                result[at] = _DELETE
            continue
        if at is None:
            index[item[key]] = len(result)
            result.append(_strip(item))
        else:
            result[at] = _smp_map(result[at], item)
    return [i for i in result if i is not _DELETE]


def _reorder(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    """``$setElementOrder``: the patch's order first, items it does not name after."""
    if all(isinstance(i, dict) for i in items) and items:
        key = smp_merge_key(field, items)
        if key is None:
            return items
        rank = {o.get(key): n for n, o in enumerate(order) if isinstance(o, dict)}
        return sorted(items, key=lambda i: rank.get(i.get(key), len(rank)))
    rank = {repr(o): n for n, o in enumerate(order)}
    return sorted(items, key=lambda i: rank.get(repr(i), len(rank)))
