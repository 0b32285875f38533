"""Server-side printing: the ``Table`` kubectl asks for with ``Accept: ...;as=Table``.

``kubectl get nodes`` shows what the API server's table convertors say (NAME STATUS ROLES
AGE VERSION); without them it could only print names. The columns below follow
pkg/printers/internalversion for the types a person pokes at; every other type gets the
generic table (Name, Age), and custom resources their CRD's additionalPrinterColumns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from werft.sim.kube.discovery import ResourceType
from werft.sim.kube.selectors import lookup

Obj = dict[str, Any]
Column = tuple[str, str, int, Callable[[Obj], Any]]  # (name, type, priority, cell)


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """kubectl's human duration: 45s, 5m30s, 47m, 5h12m, 3d4h, 12d, 2y..."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<invalid>"
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    if seconds < 0:
        return "0s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def _age_cell(obj: Obj) -> str:
    return age(_meta(obj).get("creationTimestamp"))


def _condition(obj: Obj, type_: str) -> str | None:
    for cond in _status(obj).get("conditions") or []:
        if cond.get("type") == type_:
            return cond.get("status")
    return None


def _node_status(obj: Obj) -> str:
    text = "Ready" if _condition(obj, "Ready") == "True" else "NotReady"
    if _spec(obj).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _node_roles(obj: Obj) -> str:
    prefix = "node-role.kubernetes.io/"
    roles = sorted(
        k[len(prefix) :] for k in (_meta(obj).get("labels") or {}) if k.startswith(prefix)
    )
    return ",".join(roles) or "<none>"


def _ports(obj: Obj) -> str:
    ports = _spec(obj).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


NAME: Column = ("Name", "string", 0, lambda o: _meta(o).get("name", ""))
AGE: Column = ("Age", "string", 0, _age_cell)

COLUMNS: dict[tuple[str, str], list[Column]] = {
    ("", "nodes"): [
        NAME,
        ("Status", "string", 0, _node_status),
        ("Roles", "string", 0, _node_roles),
        AGE,
        ("Version", "string", 0, lambda o: _status(o).get("nodeInfo", {}).get("kubeletVersion")),
        ("OS-Image", "string", 1, lambda o: _status(o).get("nodeInfo", {}).get("osImage")),
        (
            "Container-Runtime",
            "string",
            1,
            lambda o: _status(o).get("nodeInfo", {}).get("containerRuntimeVersion"),
        ),
    ],
    ("", "namespaces"): [NAME, ("Status", "string", 0, lambda o: _status(o).get("phase")), AGE],
    ("", "configmaps"): [
        NAME,
        ("Data", "integer", 0, lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
        AGE,
    ],
    ("", "secrets"): [
        NAME,
        ("Type", "string", 0, lambda o: o.get("type", "Opaque")),
        ("Data", "integer", 0, lambda o: len(o.get("data") or {})),
        AGE,
    ],
    ("", "services"): [
        NAME,
        ("Type", "string", 0, lambda o: _spec(o).get("type", "ClusterIP")),
        ("Cluster-IP", "string", 0, lambda o: _spec(o).get("clusterIP") or "<none>"),
        ("External-IP", "string", 0, lambda o: "<none>"),
        ("Port(s)", "string", 0, _ports),
        AGE,
    ],
    ("", "pods"): [
        NAME,
        (
            "Ready",
            "string",
            0,
            lambda o: "{}/{}".format(
                sum(1 for c in _status(o).get("containerStatuses") or [] if c.get("ready")),
                len(_spec(o).get("containers") or []),
            ),
        ),
        ("Status", "string", 0, lambda o: _status(o).get("phase", "Pending")),
        ("Restarts", "string", 0, lambda o: "0"),
        AGE,
    ],
    ("apps", "deployments"): [
        NAME,
        (
            "Ready",
            "string",
            0,
            lambda o: "{}/{}".format(
                _status(o).get("readyReplicas", 0), _spec(o).get("replicas", 1)
            ),
        ),
        ("Up-to-date", "integer", 0, lambda o: _status(o).get("updatedReplicas", 0)),
        ("Available", "integer", 0, lambda o: _status(o).get("availableReplicas", 0)),
        AGE,
    ],
    ("apps", "daemonsets"): [
        NAME,
        ("Desired", "integer", 0, lambda o: _status(o).get("desiredNumberScheduled", 0)),
        ("Current", "integer", 0, lambda o: _status(o).get("currentNumberScheduled", 0)),
        ("Ready", "integer", 0, lambda o: _status(o).get("numberReady", 0)),
        ("Up-to-date", "integer", 0, lambda o: _status(o).get("updatedNumberScheduled", 0)),
        ("Available", "integer", 0, lambda o: _status(o).get("numberAvailable", 0)),
        (
            "Node Selector",
            "string",
            0,
            lambda o: (
                ",".join(
                    f"{k}={v}"
                    for k, v in (
                        ((_spec(o).get("template") or {}).get("spec") or {}).get("nodeSelector")
                        or {}
                    ).items()
                )
                or "<none>"
            ),
        ),
        AGE,
    ],
    ("apps", "statefulsets"): [
        NAME,
        (
            "Ready",
            "string",
            0,
            lambda o: "{}/{}".format(
                _status(o).get("readyReplicas", 0), _spec(o).get("replicas", 1)
            ),
        ),
        AGE,
    ],
    ("apiregistration.k8s.io", "apiservices"): [
        NAME,
        (
            "Service",
            "string",
            0,
            lambda o: (
                "{}/{}".format(
                    (_spec(o).get("service") or {}).get("namespace"),
                    (_spec(o).get("service") or {}).get("name"),
                )
                if _spec(o).get("service")
                else "Local"
            ),
        ),
        ("Available", "string", 0, lambda o: _condition(o, "Available") or "Unknown"),
        AGE,
    ],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [
        NAME,
        ("Created At", "date", 0, lambda o: _meta(o).get("creationTimestamp")),
    ],
}

_FILTER = re.compile(r'^(.*)\[\?\(@\.(\w+)\s*==\s*["\']([^"\']*)["\']\)\]\.?(.*)$')


def json_path(obj: Obj, path: str) -> Any:
    """The small part of JSONPath printer columns use: ``.a.b`` and ``[?(@.type=="X")]``."""
    path = path.strip().removeprefix("{").removesuffix("}").lstrip(".")
    match = _FILTER.match(path)
    if match:
        head, field, value, tail = match.groups()
        items = lookup(obj, head.rstrip(".")) or []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, Mapping) and str(item.get(field)) == value:
                return lookup(item, tail) if tail else item
        return None
    return lookup(obj, path) if path else obj


def _columns(rt: ResourceType) -> list[Column]:
    found = COLUMNS.get(rt.key)
    if found is not None:
        return found
    if rt.custom and rt.columns:
        cols: list[Column] = [NAME]
        for name, type_, path in rt.columns:
            if type_ == "date":
                cols.append(
                    (
                        name,
                        "string",
                        0,
                        lambda o, p=path: age(json_path(o, p)) if json_path(o, p) else "",
                    )
                )
            else:
                cols.append((name, type_, 0, lambda o, p=path: json_path(o, p)))
        cols.append(AGE)
        return cols
    return [NAME, AGE]


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": _meta(obj)}


def table(rt: ResourceType, items: list[Obj], resource_version: str, include: str) -> Obj:
    columns = _columns(rt)
    rows = []
    for obj in items:
        row: Obj = {"cells": [_cell(col[3], obj) for col in columns]}
        row_object = _row_object(obj, include)
        if row_object is not None:
            row["object"] = row_object
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": name,
                "type": type_,
                "format": "name" if name == "Name" else "",
                "description": name,
                "priority": priority,
            }
            for name, type_, priority, _ in columns
        ],
        "rows": rows,
    }


def _cell(fn: Callable[[Obj], Any], obj: Obj) -> Any:
    try:
        value = fn(obj)
    except (AttributeError, TypeError, KeyError, ValueError):
        return None
    return "<none>" if value is None else value


def maybe_table(rt: ResourceType, result: Obj, accept: str, query: Mapping[str, str]) -> Obj:
    """``result`` (an object or a list) as a Table when the client asked for one."""
    if not wants_table(accept):
        return result
    include = query.get("includeObject") or "Metadata"
    if "items" in result and result.get("kind", "").endswith("List"):
        rv = (result.get("metadata") or {}).get("resourceVersion", "")
        return table(rt, result["items"], rv, include)
    return table(rt, [result], _meta(result).get("resourceVersion", ""), include)
