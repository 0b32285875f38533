"""What each simulated cluster serves: resource types and the discovery documents.

The built-in table is the subset of a v1.31 API server that add-ons use (a CNI, metrics-
server, Flux, node-exporter, ...). CustomResourceDefinitions add their own types per
cluster (``crd_resource_types``). Objects are stored by *group and plural*, not version,
so a CRD serving several versions shows the same objects under each (no conversion: the
"None" strategy).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One resource of one group version, as discovery describes it."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status: bool = False  # has a /status subresource: main writes ignore status
    scale: bool = False  # has a /scale subresource (spec.replicas)
    generation: bool = False  # metadata.generation is tracked (bumped on spec change)
    custom: bool = False  # served from a CRD: no strategic merge patch, generic semantics
    columns: tuple[tuple[str, str, str], ...] = ()  # extra Table columns: (name, type, jsonPath)
    verbs: tuple[str, ...] = VERBS  # ("create",) for reviews: answered, never stored

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Where the objects live in the store: the version does not matter."""
        return (self.group, self.plural)


def _rt(
    gv: str,
    plural: str,
    kind: str,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    **kw: Any,
) -> ResourceType:
    group, _, version = gv.rpartition("/")
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        singular=kind.lower(),
        kind=kind,
        namespaced=namespaced,
        short_names=short,
        **kw,
    )


_WORKLOAD = {"status": True, "generation": True, "categories": ("all",)}

BUILTIN: tuple[ResourceType, ...] = (
    # core/v1
    _rt("v1", "namespaces", "Namespace", False, ("ns",), status=True),
    _rt("v1", "nodes", "Node", False, ("no",), status=True),
    _rt("v1", "configmaps", "ConfigMap", short=("cm",)),
    _rt("v1", "secrets", "Secret"),
    _rt("v1", "services", "Service", short=("svc",), status=True, categories=("all",)),
    _rt("v1", "serviceaccounts", "ServiceAccount", short=("sa",)),
    _rt("v1", "pods", "Pod", short=("po",), status=True, categories=("all",)),
    _rt("v1", "events", "Event", short=("ev",)),
    _rt("v1", "endpoints", "Endpoints", short=("ep",)),
    _rt("v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=("pvc",), status=True),
    _rt("v1", "persistentvolumes", "PersistentVolume", False, ("pv",), status=True),
    _rt("v1", "limitranges", "LimitRange", short=("limits",)),
    _rt("v1", "resourcequotas", "ResourceQuota", short=("quota",), status=True),
    # apps/v1
    _rt("apps/v1", "deployments", "Deployment", short=("deploy",), scale=True, **_WORKLOAD),
    _rt("apps/v1", "daemonsets", "DaemonSet", short=("ds",), **_WORKLOAD),
    _rt("apps/v1", "statefulsets", "StatefulSet", short=("sts",), scale=True, **_WORKLOAD),
    _rt("apps/v1", "replicasets", "ReplicaSet", short=("rs",), scale=True, **_WORKLOAD),
    _rt("apps/v1", "controllerrevisions", "ControllerRevision"),
    # batch/v1
    _rt("batch/v1", "jobs", "Job", **_WORKLOAD),
    _rt("batch/v1", "cronjobs", "CronJob", short=("cj",), **_WORKLOAD),
    # autoscaling/v2
    _rt(
        "autoscaling/v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short=("hpa",),
        status=True,
        categories=("all",),
    ),
    # policy/v1
    _rt(
        "policy/v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        short=("pdb",),
        status=True,
        generation=True,
    ),
    # coordination.k8s.io/v1
    _rt("coordination.k8s.io/v1", "leases", "Lease"),
    # networking.k8s.io/v1
    _rt(
        "networking.k8s.io/v1",
        "networkpolicies",
        "NetworkPolicy",
        short=("netpol",),
        generation=True,
    ),
    _rt(
        "networking.k8s.io/v1", "ingresses", "Ingress", short=("ing",), status=True, generation=True
    ),
    _rt("networking.k8s.io/v1", "ingressclasses", "IngressClass", False),
    # discovery.k8s.io/v1
    _rt("discovery.k8s.io/v1", "endpointslices", "EndpointSlice"),
    # rbac.authorization.k8s.io/v1
    _rt("rbac.authorization.k8s.io/v1", "roles", "Role"),
    _rt("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
    _rt("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False),
    _rt("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False),
    # apiextensions.k8s.io/v1
    _rt(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        status=True,
        generation=True,
        categories=("api-extensions",),
    ),
    # apiregistration.k8s.io/v1
    _rt(
        "apiregistration.k8s.io/v1",
        "apiservices",
        "APIService",
        False,
        status=True,
        generation=True,
        categories=("api-extensions",),
    ),
    # admissionregistration.k8s.io/v1
    _rt(
        "admissionregistration.k8s.io/v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        False,
        generation=True,
        categories=("api-extensions",),
    ),
    _rt(
        "admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        False,
        generation=True,
        categories=("api-extensions",),
    ),
    # reviews: kubectl auth can-i / whoami (the admin token is in system:masters)
    _rt(
        "authorization.k8s.io/v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        False,
        verbs=("create",),
    ),
    _rt(
        "authorization.k8s.io/v1",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        False,
        verbs=("create",),
    ),
    _rt(
        "authentication.k8s.io/v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
        False,
        verbs=("create",),
    ),
    # scheduling.k8s.io/v1, storage.k8s.io/v1
    _rt("scheduling.k8s.io/v1", "priorityclasses", "PriorityClass", False, ("pc",)),
    _rt("storage.k8s.io/v1", "storageclasses", "StorageClass", False, ("sc",)),
    _rt("storage.k8s.io/v1", "csidrivers", "CSIDriver", False),
)

BUILTIN_BY_GV: dict[str, dict[str, ResourceType]] = {}
for _t in BUILTIN:
    BUILTIN_BY_GV.setdefault(_t.group_version, {})[_t.plural] = _t
BUILTIN_GROUPS: tuple[str, ...] = tuple(dict.fromkeys(t.group for t in BUILTIN if t.group))


# --- CustomResourceDefinitions -------------------------------------------------------------


def crd_resource_types(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The types a CRD serves: one per served version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    if not (group and plural and kind):
        return []
    types = []
    for version in spec.get("versions") or []:
        if not version.get("served", True) or not version.get("name"):
            continue
        subresources = version.get("subresources") or {}
        columns = tuple(
            (c.get("name", ""), c.get("type", "string"), c.get("jsonPath", ""))
            for c in version.get("additionalPrinterColumns") or []
            if c.get("name") and c.get("jsonPath")
        )
        types.append(
            ResourceType(
                group=group,
                version=version["name"],
                plural=plural,
                singular=names.get("singular") or kind.lower(),
                kind=kind,
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status="status" in subresources,
                scale="scale" in subresources,
                generation=True,
                custom=True,
                columns=columns,
            )
        )
    return types


# --- discovery documents -------------------------------------------------------------------

_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version order: GA before beta before alpha, higher numbers first."""
    match = _VERSION.match(version)
    if not match:
        return (0, 0, 0)  # "foo" versions sort last
    major, stage, minor = match.groups()
    level = {None: 3, "beta": 2, "alpha": 1}[stage]
    return (level, int(major), int(minor or 0))


def api_resource(t: ResourceType) -> list[Obj]:
    """The APIResourceList entries for one type: itself and its subresources."""
    entry: Obj = {
        "name": t.plural,
        "singularName": t.singular,
        "namespaced": t.namespaced,
        "kind": t.kind,
        "verbs": list(t.verbs),
    }
    if t.short_names:
        entry["shortNames"] = list(t.short_names)
    if t.categories:
        entry["categories"] = list(t.categories)
    entries = [entry]
    if t.status:
        entries.append(
            {
                "name": f"{t.plural}/status",
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": list(SUBRESOURCE_VERBS),
            }
        )
    if t.scale:
        entries.append(
            {
                "name": f"{t.plural}/scale",
                "singularName": "",
                "namespaced": t.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": list(SUBRESOURCE_VERBS),
            }
        )
    return entries


def resource_list(group_version: str, types: Iterable[ResourceType]) -> Obj:
    resources: list[Obj] = []
    for t in types:
        resources.extend(api_resource(t))
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group(group: str, versions: Iterable[str]) -> Obj:
    ordered = sorted(set(versions), key=version_priority, reverse=True)
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in ordered]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def api_group_list(groups: Mapping[str, Iterable[str]]) -> Obj:
    items = []
    for group, versions in groups.items():
        item = api_group(group, versions)
        del item["kind"], item["apiVersion"]
        items.append(item)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": items}
