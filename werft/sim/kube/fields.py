"""Field management: server-side apply and ``metadata.managedFields``.

A faithful-enough model of structured-merge-diff, the library behind server-side apply:

- An object's *fields* are the paths to its leaves (scalars, atomic lists, empty maps)
  plus one path per item of an associative list (``k:{"name":"app"}``). They are written
  as FieldsV1, the nested-map format of ``managedFields[].fieldsV1``.
- Each manager owns a set of fields. An **Apply** by manager M with configuration C:
  conflicts with every other manager that owns a field C sets to a *different* value than
  the live one (409, unless ``force``, which takes the field over); merges C into the
  object; removes the fields M owned before but no longer applies, unless someone else
  owns them; and makes M own exactly the fields of C. Applying the same C again changes
  nothing at all, which is what lets werft re-apply a whole add-on set as a no-op.
- An **Update** (create, PUT, merge/JSON/strategic patch) never conflicts: its manager
  takes over every field it changed, and removed fields leave every manager.

Which lists are associative, and by which keys, comes from the object's schema (the
compiled upstream schemas, a CRD's structural schema: kubeschema.py), as in
structured-merge-diff: ``x-kubernetes-list-type: map`` with its ``list-map-keys``, or a
``patch-merge-key``; every other list is atomic, and so are lists in untyped parts
(``x-kubernetes-preserve-unknown-fields``). Only without any schema do the historical
heuristics apply (the built-in key table; a unique ``name`` makes a list associative).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from werft.sim.kube import schema as kubeschema
from werft.sim.kube.errors import ApiError

Obj = dict[str, Any]
Path = tuple[str, ...]

# Metadata fields a manager can own; the rest of metadata belongs to the server.
OWNED_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")

_LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "imagePullSecrets": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "hostAliases": ("ip",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "taints": ("key", "effect"),
    "webhooks": ("name",),
}
# Lists the built-in schemas mark atomic although their items carry a name.
_ATOMIC = frozenset({"subjects", "tolerations", "rules", "versions"})
_KEY_DEFAULTS = {"protocol": "TCP"}
_MISSING = object()


def list_key(field: str, items: Iterable[Any]) -> tuple[str, ...] | None:
    """The key fields of an associative list, or None for an atomic list."""
    items = list(items)
    if field in _ATOMIC or not items or not all(isinstance(i, dict) for i in items):
        return None
    if field == "ports":
        if all("containerPort" in i for i in items):
            return ("containerPort", "protocol")
        if all("port" in i for i in items):
            return ("port", "protocol")
        return None
    keys = _LIST_KEYS.get(field)
    if keys is not None:
        return keys if all(keys[0] in i for i in items) else None
    names = [i.get("name") for i in items]
    if all(isinstance(n, str) for n in names) and len(set(names)) == len(names):
        return ("name",)
    return None


# The schema of the part of an object being walked: a compiled node, None (no schema at
# all: heuristics) or _DEDUCED (an untyped part: maps are granular, lists atomic).
_DEDUCED: Mapping[str, Any] = {"t": "any"}
SchemaNode = Mapping[str, Any] | None


def _resolve(node: SchemaNode) -> SchemaNode:
    if node is None or node is _DEDUCED:
        return node
    name = node.get("$")
    return kubeschema.definition(name) if name is not None else node


def _field_node(node: SchemaNode, key: str) -> SchemaNode:
    node = _resolve(node)
    if node is None or node is _DEDUCED:
        return node
    props = node.get("o")
    if props is not None:
        return props.get(key) or _DEDUCED
    return node.get("x") or _DEDUCED


def _item_node(node: SchemaNode) -> SchemaNode:
    node = _resolve(node)
    if node is None or node is _DEDUCED:
        return node
    return node.get("l") or _DEDUCED


def _keys(node: SchemaNode, field: str, items: list[Any]) -> tuple[str, ...] | None:
    """The key fields of a list at ``node`` (None: atomic)."""
    node = _resolve(node)
    if node is None:
        return list_key(field, items)
    if node is _DEDUCED or not items or not all(isinstance(i, dict) for i in items):
        return None
    kind = node.get("lt")
    if kind == "map" and node.get("k"):
        keys = tuple(node["k"])
    elif kind is None and node.get("pk"):
        keys = (node["pk"],)
    else:
        return None
    present = all(all(k in i or k in _KEY_DEFAULTS for k in keys) for i in items)
    return keys if present else None


def _key_of(item: Mapping[str, Any], keys: tuple[str, ...]) -> Obj:
    return {k: item.get(k, _KEY_DEFAULTS.get(k)) for k in keys}


def _key_element(item: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    return "k:" + orjson.dumps(_key_of(item, keys)).decode()  # compact, like Go's encoder


# --- the fields of an object ---------------------------------------------------------------


def tracked(obj: Mapping[str, Any] | None, *, status_subresource: bool, only_status: bool) -> Obj:
    """The part of an object that managers own.

    Main-resource writes own everything but identity and server-set metadata (and status,
    when it has its own subresource); ``/status`` writes own only status.
    """
    if not obj:
        return {}
    if only_status:
        return {"status": obj["status"]} if "status" in obj else {}
    out: Obj = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "metadata") or (key == "status" and status_subresource):
            continue
        out[key] = value
    meta = obj.get("metadata") or {}
    owned = {k: meta[k] for k in OWNED_METADATA if k in meta}
    if owned:
        out["metadata"] = owned
    return out


def flatten(
    value: Any,
    prefix: Path = (),
    field: str = "",
    out: dict | None = None,
    node: SchemaNode = None,
) -> dict:
    """``{path: leaf value}``; associative list items also appear as paths of their own.
    ``node``: the schema of ``value`` (None: no schema, heuristics)."""
    if out is None:
        out = {}
    if isinstance(value, dict) and value:
        for key, child in value.items():
            flatten(child, (*prefix, f"f:{key}"), key, out, _field_node(node, key))
        return out
    if isinstance(value, list) and value:
        keys = _keys(node, field, value)
        if keys is not None:
            item_node = _item_node(node)
            for item in value:
                element = _key_element(item, keys)
                item_path = (*prefix, element)
                out[item_path] = element
                for key, child in item.items():
                    flatten(
                        child, (*item_path, f"f:{key}"), key, out, _field_node(item_node, key)
                    )
            return out
    if prefix:
        out[prefix] = value
    return out


def fields_v1(paths: Iterable[Path]) -> Obj:
    """A set of paths as FieldsV1 (``{"f:spec": {"f:replicas": {}}}``)."""
    paths = set(paths)
    root: Obj = {}
    for path in sorted(paths):
        node = root
        for element in path:
            node = node.setdefault(element, {})
    for path in paths:  # a member that also has children is marked with "."
        node = root
        for element in path:
            node = node[element]
        if node and "." not in node:
            node["."] = {}
    return root


def paths_of(fields: Mapping[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for element, child in fields.items():
        if element == ".":
            out.add(prefix)
        elif child:
            out |= paths_of(child, (*prefix, element))
        else:
            out.add((*prefix, element))
    return out


def path_text(path: Path) -> str:
    """``.spec.template.spec.containers[name="app"].image``, as conflict messages say."""
    text = ""
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            text += f".{rest}"
        elif kind == "k":
            key = json.loads(rest)
            text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(key.items())) + "]"
        elif kind == "v":
            text += f"[={rest}]"
        else:
            text += f"[{rest}]"
    return text


# --- merging -------------------------------------------------------------------------------


def drop_nulls(value: Any) -> Any:
    """An apply configuration's ``null`` means "not specified"."""
    if isinstance(value, dict) and b"null" not in orjson.dumps(value):
        return value  # the common case, checked in C
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def merge(live: Any, config: Any, field: str = "", node: SchemaNode = None) -> Any:
    """Apply ``config`` onto ``live``: maps and associative lists merge, the rest replaces."""
    if isinstance(config, dict) and isinstance(live, dict):
        out = dict(live)
        for key, value in config.items():
            out[key] = merge(live.get(key, _MISSING), value, key, _field_node(node, key))
        return out
    if isinstance(config, list) and isinstance(live, list) and config:
        keys = _keys(node, field, live + config)
        if keys is not None:
            item_node = _item_node(node)
            out_list = list(live)
            index = {_key_element(item, keys): n for n, item in enumerate(out_list)}
            for item in config:
                at = index.get(_key_element(item, keys))
                if at is None:
                    out_list.append(item)
                else:
                    out_list[at] = merge(out_list[at], item, "", item_node)
            return out_list
    return config


def _is_key_field(path: Path) -> bool:
    """A key field of a list item (``name`` in ``k:{"name":"app"}``) stays with its item."""
    if len(path) < 2 or not path[-2].startswith("k:") or not path[-1].startswith("f:"):
        return False
    return path[-1][2:] in json.loads(path[-2][2:])


def _remove(value: Any, path: Path) -> Any:
    """``value`` without the field at ``path`` (copying only along the path)."""
    if not path:
        return _MISSING
    element, rest = path[0], path[1:]
    kind, _, name = element.partition(":")
    if kind == "f" and isinstance(value, dict) and name in value:
        child = _remove(value[name], rest)
        out = dict(value)
        if child is _MISSING:
            del out[name]
        else:
            out[name] = child
        return out
    if kind == "k" and isinstance(value, list):
        want = json.loads(name)
        for n, item in enumerate(value):
            if isinstance(item, dict) and _key_of(item, tuple(want)) == want:
                child = _remove(item, rest)
                out_list = list(value)
                if child is _MISSING:
                    del out_list[n]
                else:
                    out_list[n] = child
                return out_list
    return value


# --- managedFields entries -----------------------------------------------------------------


class _Entry:
    __slots__ = ("api_version", "changed", "manager", "operation", "paths", "raw", "subresource")

    def __init__(
        self,
        raw: Obj | None,
        manager: str,
        operation: str,
        api_version: str,
        subresource: str,
        paths: set[Path],
    ) -> None:
        self.raw = raw
        self.manager = manager
        self.operation = operation
        self.api_version = api_version
        self.subresource = subresource
        self.paths = paths
        self.changed = raw is None

    def identity(self) -> tuple[str, str, str, str]:
        # Apply entries are one per manager; Update entries one per manager and version.
        version = "" if self.operation == "Apply" else self.api_version
        return (self.manager, self.operation, version, self.subresource)

    def render(self, now: str) -> Obj:
        if not self.changed and self.raw is not None:
            return self.raw
        entry: Obj = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(self.paths),
        }
        if self.subresource:
            entry["subresource"] = self.subresource
        return entry


def _entries(obj: Mapping[str, Any] | None) -> list[_Entry]:
    meta = (obj or {}).get("metadata") or {}
    out = []
    for raw in meta.get("managedFields") or []:
        if not isinstance(raw, dict) or not raw.get("manager"):
            continue
        out.append(
            _Entry(
                raw,
                raw["manager"],
                raw.get("operation", "Update"),
                raw.get("apiVersion", ""),
                raw.get("subresource", ""),
                paths_of(raw.get("fieldsV1") or {}),
            )
        )
    return out


def _find(entries: list[_Entry], identity: tuple[str, str, str, str]) -> _Entry | None:
    for entry in entries:
        if entry.identity() == identity:
            return entry
    return None


def _render(entries: list[_Entry], now: str) -> list[Obj]:
    return [e.render(now) for e in entries if e.paths]


def _manager_identifier(entry: _Entry) -> str:
    """The manager as structured-merge-diff names it: the managedFields entry without
    time and fields (and, for appliers, without apiVersion), JSON-encoded."""
    ident: Obj = {"manager": entry.manager, "operation": entry.operation}
    if entry.operation != "Apply":
        ident["apiVersion"] = entry.api_version
    if entry.subresource:
        ident["subresource"] = entry.subresource
    return json.dumps(ident, separators=(",", ":"))


def _who(entry: _Entry) -> str:
    """``"kubectl-edit" using apps/v1`` (apimachinery's printManager)."""
    text = json.dumps(entry.manager, ensure_ascii=False)
    if entry.subresource:
        text += f" with subresource {json.dumps(entry.subresource, ensure_ascii=False)}"
    if entry.operation == "Update":
        text += f" using {entry.api_version}"
    return text


def _conflict_error(conflicts: list[tuple[_Entry, Path]]) -> ApiError:
    """409 Conflict worded as apimachinery's managedfields NewConflictError."""
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {_who(e)}",
            "field": path_text(p),
        }
        for e, p in conflicts
    ]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {_who(entry)}: {path_text(path)}"
    else:
        by_manager: dict[str, tuple[_Entry, list[Path]]] = {}
        for entry, path in conflicts:
            by_manager.setdefault(_manager_identifier(entry), (entry, []))[1].append(path)
        lines = []
        for ident in sorted(by_manager):
            entry, paths = by_manager[ident]
            lines.append(f"conflicts with {_who(entry)}:")
            lines.extend(f"- {path_text(p)}" for p in paths)
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    # StatusCause's Type is serialised as "reason" (metav1.StatusCause json tags).
    return ApiError(409, "Conflict", message, {"causes": causes})


# --- the two operations --------------------------------------------------------------------


def apply(
    live: Obj,
    config: Obj,
    *,
    manager: str,
    force: bool,
    api_version: str,
    status_subresource: bool,
    subresource: str,
    now: str,
    schema: SchemaNode = None,
) -> Obj:
    """``live`` after an Apply of ``config`` by ``manager``, with its managedFields.

    ``live`` is the current object (for a create: just apiVersion, kind and metadata).
    Raises the 409 Conflict a real server answers when other managers own fields that the
    configuration would change.
    """
    only_status = subresource == "status"
    config = drop_nulls(config)
    cfg = tracked(config, status_subresource=status_subresource, only_status=only_status)
    old = tracked(live, status_subresource=status_subresource, only_status=only_status)
    cfg_flat = flatten(cfg, node=schema)
    old_flat = flatten(old, node=schema)
    entries = _entries(live)
    mine = _find(entries, (manager, "Apply", "", subresource))
    others = [e for e in entries if e is not mine and e.subresource == subresource]

    conflicts = []
    for entry in others:
        for path in sorted(entry.paths & cfg_flat.keys()):
            have = old_flat.get(path, _MISSING)
            if have is not _MISSING and have != cfg_flat[path]:
                conflicts.append((entry, path))
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for entry, path in conflicts:
        entry.paths.discard(path)
        entry.changed = True

    merged = merge(old, cfg, node=schema)
    previous = mine.paths if mine else set()
    owned_by_others: set[Path] = set()
    for entry in others:
        owned_by_others |= entry.paths
    # Parents first: removing a list item removes what is inside it too.
    for path in sorted(previous - cfg_flat.keys(), key=len):
        if (
            _is_key_field(path)
            or path in owned_by_others
            or any(p[: len(path)] == path for p in owned_by_others if len(p) > len(path))
        ):
            continue
        merged = _remove(merged, path)
        if merged is _MISSING:
            merged = {}

    new_paths = set(cfg_flat)
    if mine is None:
        mine = _Entry(None, manager, "Apply", api_version, subresource, new_paths)
        entries.append(mine)
    elif mine.paths != new_paths or mine.api_version != api_version:
        mine.paths, mine.api_version, mine.changed = new_paths, api_version, True
    result = _reassemble(
        live, merged, status_subresource=status_subresource, only_status=only_status
    )
    result["metadata"]["managedFields"] = _render(entries, now)
    if not result["metadata"]["managedFields"]:
        del result["metadata"]["managedFields"]
    return result


def update(
    old: Obj | None,
    new: Obj,
    *,
    manager: str,
    api_version: str,
    status_subresource: bool,
    subresource: str,
    now: str,
    schema: SchemaNode = None,
) -> list[Obj]:
    """The managedFields of ``new`` after ``manager`` wrote it over ``old`` (None: create)."""
    only_status = subresource == "status"
    before = flatten(
        tracked(old, status_subresource=status_subresource, only_status=only_status), node=schema
    )
    after = flatten(
        tracked(new, status_subresource=status_subresource, only_status=only_status), node=schema
    )
    changed = {p for p, v in after.items() if before.get(p, _MISSING) != v}
    removed = before.keys() - after.keys()
    entries = _entries(old)
    identity = (manager, "Update", api_version, subresource)
    mine = _find(entries, identity)
    for entry in entries:
        if entry is mine:
            continue
        lost = entry.paths & (changed | removed)
        if lost:
            entry.paths -= lost
            entry.changed = True
    if changed or removed:
        if mine is None:
            mine = _Entry(None, manager, "Update", api_version, subresource, set())
            entries.append(mine)
        grown = (mine.paths | changed) - removed
        if grown != mine.paths:
            mine.paths, mine.changed = grown, True
    return _render(entries, now)


def _reassemble(live: Obj, merged: Obj, *, status_subresource: bool, only_status: bool) -> Obj:
    """The whole object again: untracked parts from ``live``, tracked parts from ``merged``."""
    if only_status:
        out = {k: v for k, v in live.items() if k != "status"}
        if "status" in merged:
            out["status"] = merged["status"]
        out["metadata"] = dict(out.get("metadata") or {})
        return out
    out = {k: live[k] for k in ("apiVersion", "kind") if k in live}
    meta = {k: v for k, v in (live.get("metadata") or {}).items() if k not in OWNED_METADATA}
    meta.update(merged.get("metadata") or {})
    out["metadata"] = meta
    for key, value in merged.items():
        if key != "metadata":
            out[key] = value
    if status_subresource and "status" in live:
        out["status"] = live["status"]
    return out
