"""The defaults a real API server sets, per type, as its generated defaulters apply them.

Upstream OpenAPI does not carry them: the schemas that kubernetes-validate ships (and
``/openapi/v3`` of a real server) have no ``default`` for the built-in kinds, because the
defaults are Go code -- ``SetDefaults_<Type>`` functions that defaulter-gen calls on every
occurrence of ``<Type>`` in an object (``zz_generated.defaults.go``, "covering"
defaulters). So this module is the Python of those functions, keyed by the same type
names as the compiled schemas (schemas/k8s-v1.31.json), and schema.py's walk calls the
one of each type wherever that type occurs: a Container's defaults land in Deployments,
DaemonSets, StatefulSets, Jobs and Pods alike, as upstream. Each entry names its source
in k8s.io/kubernetes (v1.31):

- pkg/apis/core/v1/defaults.go and the declarative ``+default`` markers that
  pkg/apis/core/v1/zz_generated.defaults.go inlines (ContainerPort.protocol);
- pkg/apis/apps/v1/defaults.go; pkg/apis/rbac/v1/defaults.go;
- apiextensions-apiserver pkg/apis/apiextensions/v1/defaults.go;
- kube-aggregator pkg/apis/apiregistration/v1/defaults.go.

Feature-gated defaults follow the gates' 1.31 defaults. Defaulters return a new dict when
they change something and never modify their input. Not here: what registries allocate
(a Service's clusterIP, ipFamilies: objects.py), status set by controllers, and the
kinds werft does not apply (Jobs, CronJobs, Ingresses, ...: no defaults simulated).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

from werft.sim.kube import quantity

Obj = dict[str, Any]
Defaulter = Callable[[Obj], Obj]
_CORE = "io.k8s.api.core.v1."
_APPS = "io.k8s.api.apps.v1."


def _set(obj: Obj, **defaults: Any) -> Obj:
    """``obj`` with each absent field set (absent, null, or "" -- a Go string's zero
    value; a pointer field's 0 is a value and stays)."""
    missing = {k: v for k, v in defaults.items() if obj.get(k) is None or obj.get(k) == ""}
    return {**obj, **missing} if missing else obj


def _set_nonzero(obj: Obj, **defaults: Any) -> Obj:
    """For Go value-typed ints, where 0 means unset."""
    missing = {k: v for k, v in defaults.items() if not obj.get(k)}
    return {**obj, **missing} if missing else obj


def _pull_policy(image: str) -> str:
    """Always for ``:latest`` (or no tag), else IfNotPresent (parsers.ParseImageName)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ("" if "@" in image else "latest")
    return "Always" if tag == "latest" else "IfNotPresent"


# --- core/v1 ------------------------------------------------------------------------------


def container(obj: Obj) -> Obj:
    """SetDefaults_Container."""
    out = _set(
        obj,
        terminationMessagePath="/dev/termination-log",
        terminationMessagePolicy="File",
    )
    if not out.get("imagePullPolicy"):
        out = {**out, "imagePullPolicy": _pull_policy(str(out.get("image") or ""))}
    return out


def container_port(obj: Obj) -> Obj:
    """ContainerPort.protocol: ``+default="TCP"`` (inlined by defaulter-gen)."""
    return _set(obj, protocol="TCP")


def resource_requirements(obj: Obj) -> Obj:
    """SetDefaults_ResourceList on limits and requests: round up to milli units."""
    out = obj
    for field in ("limits", "requests"):
        values = obj.get(field)
        if not isinstance(values, dict):
            continue
        rounded = {k: _round_up_milli(v) for k, v in values.items()}
        if rounded != values:
            out = {**out, field: rounded}
    return out


def _round_up_milli(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        value, fmt, _ = quantity.parse(text)
    except quantity.QuantityError:
        return text
    milli = value * 1000
    if milli.denominator == 1:
        return text
    magnitude = -(-abs(milli.numerator) // milli.denominator)
    rounded = Fraction(magnitude if value > 0 else -magnitude, 1000)
    return quantity.format_quantity(rounded, fmt)


def pod_spec(obj: Obj) -> Obj:
    """SetDefaults_PodSpec."""
    out = _set(
        obj,
        dnsPolicy="ClusterFirst",
        restartPolicy="Always",
        terminationGracePeriodSeconds=30,
        schedulerName="default-scheduler",
    )
    if out.get("securityContext") is None:
        out = {**out, "securityContext": {}}
    return out


def pod(obj: Obj) -> Obj:
    """SetDefaults_Pod (Pods only, not templates): enableServiceLinks; requests from
    limits; host ports from container ports on the host network."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return obj
    new_spec = spec if "enableServiceLinks" in spec else {**spec, "enableServiceLinks": True}
    for field in ("containers", "initContainers"):
        items = new_spec.get(field)
        if isinstance(items, list):
            fixed = [_pod_container(c, bool(new_spec.get("hostNetwork"))) for c in items]
            if fixed != items:
                new_spec = {**new_spec, field: fixed}
    return obj if new_spec is spec else {**obj, "spec": new_spec}


def _pod_container(c: Any, host_network: bool) -> Any:
    if not isinstance(c, dict):
        return c
    resources = c.get("resources") or {}
    limits = resources.get("limits")
    if isinstance(limits, dict) and limits:
        requests = dict(resources.get("requests") or {})
        merged = {**limits, **requests}
        if merged != requests:
            c = {**c, "resources": {**resources, "requests": merged}}
    ports = c.get("ports")
    if host_network and isinstance(ports, list):
        fixed = [
            {**p, "hostPort": p.get("containerPort")}
            if isinstance(p, dict) and not p.get("hostPort")
            else p
            for p in ports
        ]
        if fixed != ports:
            c = {**c, "ports": fixed}
    return c


def probe(obj: Obj) -> Obj:
    """SetDefaults_Probe."""
    return _set_nonzero(
        obj, timeoutSeconds=1, periodSeconds=10, successThreshold=1, failureThreshold=3
    )


def http_get(obj: Obj) -> Obj:
    """SetDefaults_HTTPGetAction."""
    return _set(obj, path="/", scheme="HTTP")


def volume(obj: Obj) -> Obj:
    """SetDefaults_Volume: a volume without a source is an emptyDir."""
    sources = [k for k in obj if k != "name"]
    return obj if sources else {**obj, "emptyDir": {}}


def mode_420(obj: Obj) -> Obj:
    """SetDefaults_{Secret,ConfigMap,DownwardAPI,Projected}VolumeSource: 0644."""
    return obj if obj.get("defaultMode") is not None else {**obj, "defaultMode": 420}


def host_path(obj: Obj) -> Obj:
    """SetDefaults_HostPathVolumeSource: type "" (HostPathUnset)."""
    return obj if "type" in obj else {**obj, "type": ""}


def token_projection(obj: Obj) -> Obj:
    """SetDefaults_ServiceAccountTokenProjection: one hour."""
    return _set(obj, expirationSeconds=3600)


def field_selector(obj: Obj) -> Obj:
    """SetDefaults_ObjectFieldSelector."""
    return _set(obj, apiVersion="v1")


def service(obj: Obj) -> Obj:
    """SetDefaults_Service (the spec's part; clusterIP and families are allocated)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    new = _set(spec, sessionAffinity="None", type="ClusterIP")
    if new.get("sessionAffinity") == "None" and "sessionAffinityConfig" in new:
        new = {k: v for k, v in new.items() if k != "sessionAffinityConfig"}
    ports = new.get("ports")
    if isinstance(ports, list):
        fixed = []
        for port in ports:
            if isinstance(port, dict):
                port = _set(port, protocol="TCP")
                if port.get("targetPort") in (None, 0, ""):
                    port = {**port, "targetPort": port.get("port")}
            fixed.append(port)
        if fixed != ports:
            new = {**new, "ports": fixed}
    kind = new.get("type")
    if kind in ("NodePort", "LoadBalancer") and not new.get("externalTrafficPolicy"):
        new = {**new, "externalTrafficPolicy": "Cluster"}
    internal = kind in ("NodePort", "LoadBalancer", "ClusterIP")
    if internal and new.get("internalTrafficPolicy") is None:
        new = {**new, "internalTrafficPolicy": "Cluster"}
    if kind == "LoadBalancer" and new.get("allocateLoadBalancerNodePorts") is None:
        new = {**new, "allocateLoadBalancerNodePorts": True}
    return obj if new == obj.get("spec") else {**obj, "spec": new}


def secret(obj: Obj) -> Obj:
    """SetDefaults_Secret."""
    return _set(obj, type="Opaque")


def namespace(obj: Obj) -> Obj:
    """SetDefaults_Namespace (the name label) and SetDefaults_NamespaceStatus."""
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    out = obj
    labels = meta.get("labels") or {}
    if name and labels.get("kubernetes.io/metadata.name") != name:
        labels = {**labels, "kubernetes.io/metadata.name": name}
        out = {**out, "metadata": {**meta, "labels": labels}}
    return out


def pvc_spec(obj: Obj) -> Obj:
    """SetDefaults_PersistentVolumeClaimSpec."""
    return _set(obj, volumeMode="Filesystem")


# --- apps/v1 ------------------------------------------------------------------------------


def _spec(obj: Obj, fix: Callable[[Obj], Obj]) -> Obj:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return obj
    new = fix(spec)
    return obj if new is spec else {**obj, "spec": new}


def deployment(obj: Obj) -> Obj:
    """SetDefaults_Deployment."""

    def fix(spec: Obj) -> Obj:
        out = _set(spec, revisionHistoryLimit=10, progressDeadlineSeconds=600)
        if spec.get("replicas") is None:
            out = {**out, "replicas": 1}
        strategy = dict(out.get("strategy") or {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = dict(strategy.get("rollingUpdate") or {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
            strategy["rollingUpdate"] = rolling
        return out if strategy == out.get("strategy") else {**out, "strategy": strategy}

    return _spec(obj, fix)


def daemonset(obj: Obj) -> Obj:
    """SetDefaults_DaemonSet."""

    def fix(spec: Obj) -> Obj:
        out = _set(spec, revisionHistoryLimit=10)
        strategy = dict(out.get("updateStrategy") or {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = dict(strategy.get("rollingUpdate") or {})
            rolling.setdefault("maxUnavailable", 1)
            rolling.setdefault("maxSurge", 0)
            strategy["rollingUpdate"] = rolling
        if strategy == out.get("updateStrategy"):
            return out
        return {**out, "updateStrategy": strategy}

    return _spec(obj, fix)


def statefulset(obj: Obj) -> Obj:
    """SetDefaults_StatefulSet (StatefulSetAutoDeletePVC is on in 1.31)."""

    def fix(spec: Obj) -> Obj:
        out = _set(spec, podManagementPolicy="OrderedReady", revisionHistoryLimit=10)
        if spec.get("replicas") is None:
            out = {**out, "replicas": 1}
        strategy = dict(out.get("updateStrategy") or {})
        if not strategy.get("type"):
            rolling = strategy.get("rollingUpdate") or {}
            strategy = {"type": "RollingUpdate", "rollingUpdate": rolling}
        rolling = strategy.get("rollingUpdate")
        rolling_update = strategy["type"] == "RollingUpdate" and isinstance(rolling, dict)
        if rolling_update and rolling.get("partition") is None:
            strategy["rollingUpdate"] = {**rolling, "partition": 0}
        policy = dict(out.get("persistentVolumeClaimRetentionPolicy") or {})
        policy.setdefault("whenDeleted", "Retain")
        policy.setdefault("whenScaled", "Retain")
        out = {**out, "updateStrategy": strategy, "persistentVolumeClaimRetentionPolicy": policy}
        return spec if out == spec else out

    return _spec(obj, fix)


def replicaset(obj: Obj) -> Obj:
    """SetDefaults_ReplicaSet."""
    return _spec(obj, lambda s: s if s.get("replicas") is not None else {**s, "replicas": 1})


# --- other groups -------------------------------------------------------------------------


def role_binding(obj: Obj) -> Obj:
    """SetDefaults_(Cluster)RoleBinding: roleRef.apiGroup."""
    ref = obj.get("roleRef")
    if not isinstance(ref, dict) or ref.get("apiGroup"):
        return obj
    return {**obj, "roleRef": {**ref, "apiGroup": "rbac.authorization.k8s.io"}}


def subject(obj: Obj) -> Obj:
    """SetDefaults_Subject (a ServiceAccount's "" is omitted on the wire: omitempty)."""
    if obj.get("apiGroup") or obj.get("kind") not in ("User", "Group"):
        return obj
    return {**obj, "apiGroup": "rbac.authorization.k8s.io"}


def crd_spec(obj: Obj) -> Obj:
    """SetDefaults_CustomResourceDefinitionSpec (v1: preserveUnknownFields is not
    defaulted by the v1 API -- only the internal one -- so it is left out)."""
    names = dict(obj.get("names") or {})
    kind = names.get("kind")
    if kind:
        names.setdefault("singular", str(kind).lower())
        names.setdefault("listKind", f"{kind}List")
    out = obj if names == obj.get("names") else {**obj, "names": names}
    conversion = out.get("conversion")
    if conversion is None:
        out = {**out, "conversion": {"strategy": "None"}}
    return out


def crd_service_reference(obj: Obj) -> Obj:
    """apiextensions/v1 SetDefaults_ServiceReference."""
    return obj if obj.get("port") is not None else {**obj, "port": 443}


DEFAULTERS: dict[str, Defaulter] = {
    _CORE + "Container": container,
    _CORE + "EphemeralContainer": container,
    _CORE + "ContainerPort": container_port,
    _CORE + "ResourceRequirements": resource_requirements,
    _CORE + "PodSpec": pod_spec,
    _CORE + "Pod": pod,
    _CORE + "Probe": probe,
    _CORE + "HTTPGetAction": http_get,
    _CORE + "Volume": volume,
    _CORE + "SecretVolumeSource": mode_420,
    _CORE + "ConfigMapVolumeSource": mode_420,
    _CORE + "DownwardAPIVolumeSource": mode_420,
    _CORE + "ProjectedVolumeSource": mode_420,
    _CORE + "HostPathVolumeSource": host_path,
    _CORE + "ServiceAccountTokenProjection": token_projection,
    _CORE + "ObjectFieldSelector": field_selector,
    _CORE + "Service": service,
    _CORE + "Secret": secret,
    _CORE + "Namespace": namespace,
    _CORE + "PersistentVolumeClaimSpec": pvc_spec,
    _APPS + "Deployment": deployment,
    _APPS + "DaemonSet": daemonset,
    _APPS + "StatefulSet": statefulset,
    _APPS + "ReplicaSet": replicaset,
    "io.k8s.api.rbac.v1.RoleBinding": role_binding,
    "io.k8s.api.rbac.v1.ClusterRoleBinding": role_binding,
    "io.k8s.api.rbac.v1.Subject": subject,
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionSpec": (
        crd_spec
    ),
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.ServiceReference": (
        crd_service_reference
    ),
    "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.ServiceReference": (
        crd_service_reference
    ),
}
