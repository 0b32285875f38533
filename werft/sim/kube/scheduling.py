"""Where pods may run and when a node is Ready: taints, tolerations, the pod network.

A real node is Ready when its kubelet runs *and* the container runtime reports its pod
network ready; the runtime does once a CNI plugin has written its configuration into the
runtime's CNI configuration directory, which is what a CNI DaemonSet's pod does when it
starts on the node. Until then the kubelet posts Ready=False (``KubeletNotReady``, with
the runtime's "cni plugin not initialized" message) and the node carries the taints
``node.kubernetes.io/not-ready:NoSchedule`` and ``:NoExecute``.

**How the simulator recognises a CNI DaemonSet:** its pod template mounts, as a
``hostPath`` volume, the runtime's CNI configuration directory or a directory below it:
``/etc/cni/net.d`` on kubeadm (containerd's default), ``/var/lib/rancher/k3s/agent/etc/
cni/net.d`` on k3s (whose flannel is switched off: ``flannel-backend: none``). flannel,
Calico and Cilium all mount it. Its pod starts on a node that is not Ready yet only if it
tolerates the node's taints (with the tolerations the DaemonSet controller adds itself,
``DAEMON_TOLERATIONS``) and uses the host's network (``hostNetwork: true``): a pod on the
pod network cannot start before there is one. The node turns Ready when the first such
pod on it is Ready (``workload_available`` after the later of the DaemonSet's creation
and the kubelet's start), and stays Ready while its kubelet runs (the configuration stays
on the host), even if the DaemonSet is updated or deleted.

Every other pod (Deployments, StatefulSets, Jobs, plain Pods, other DaemonSets) starts on
a node only once it is Ready, unless it both tolerates the not-ready taints and uses the
host's network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
CONDITION_TAINTS = frozenset({NOT_READY, UNREACHABLE})

# The runtime's CNI configuration directory per distribution.
CNI_CONF_DIRS = {
    "kubeadm": "/etc/cni/net.d",
    "k3s": "/var/lib/rancher/k3s/agent/etc/cni/net.d",
}

# What the DaemonSet controller adds to every daemon pod
# (pkg/controller/daemon/util AddOrUpdateDaemonPodTolerations): notably NOT
# not-ready:NoSchedule, so a DaemonSet that must run on NotReady nodes (a CNI) says so.
DAEMON_TOLERATIONS: tuple[Obj, ...] = (
    {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute"},
    {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
_HOST_NETWORK_TOLERATION: Obj = {
    "key": "node.kubernetes.io/network-unavailable",
    "operator": "Exists",
    "effect": "NoSchedule",
}


@dataclass(slots=True)
class NodeView:
    """A node as the schedulers see it at one instant."""

    name: str
    obj: Obj
    kubelet_at: float | None  # the kubelet runs from then on (None: stopped, or never ran)
    ready_at: float | None  # Ready from then on, possibly in the future (None: not foreseen)

    def own_taints(self) -> list[Obj]:
        """The taints that do not come from the node's conditions (control plane, ...)."""
        taints = (self.obj.get("spec") or {}).get("taints") or []
        return [t for t in taints if t.get("key") not in CONDITION_TAINTS]


def condition_taints(ready: str, since: str) -> list[Obj]:
    """The taints the node lifecycle controller keeps on a node whose Ready condition is
    ``ready`` ("True", "False", "Unknown"); NoExecute ones carry ``timeAdded``."""
    if ready == "True":
        return []
    key = NOT_READY if ready == "False" else UNREACHABLE
    return [
        {"key": key, "effect": "NoSchedule"},
        {"key": key, "effect": "NoExecute", "timeAdded": since},
    ]


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """core/v1 Toleration.ToleratesTaint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    if (toleration.get("operator") or "Equal") == "Exists":
        return True
    return (toleration.get("value") or "") == (taint.get("value") or "")


def tolerated(taints: Iterable[Mapping[str, Any]], tolerations: list[Mapping[str, Any]]) -> bool:
    """The scheduler's TaintToleration filter: every NoSchedule / NoExecute taint tolerated."""
    return all(
        taint.get("effect") not in ("NoSchedule", "NoExecute")
        or any(tolerates(t, taint) for t in tolerations)
        for taint in taints
    )


def daemon_tolerations(pod_spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    own = list(pod_spec.get("tolerations") or [])
    extra = list(DAEMON_TOLERATIONS)
    if pod_spec.get("hostNetwork"):
        extra.append(_HOST_NETWORK_TOLERATION)
    return own + extra


def _expression_holds(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op = expr.get("key"), expr.get("operator")
    values = expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False  # Gt / Lt: not used by the add-ons werft ships; never matches here


def node_matches(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """``nodeSelector`` and required node affinity (label expressions) against a node."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    selector = pod_spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    required = (
        ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    )
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    return any(
        all(_expression_holds(e, labels) for e in term.get("matchExpressions") or [])
        for term in terms
    )


def pod_spec_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod spec of a workload (its template's) or of a Pod."""
    spec = obj.get("spec") or {}
    template = spec.get("template")
    if isinstance(template, dict):
        return template.get("spec") or {}
    return spec


def is_cni(daemonset: Mapping[str, Any], conf_dir: str) -> bool:
    """Does this DaemonSet's pod mount the runtime's CNI configuration directory?"""
    for volume in pod_spec_of(daemonset).get("volumes") or []:
        path = str(((volume or {}).get("hostPath") or {}).get("path") or "").rstrip("/")
        if path == conf_dir or path.startswith(conf_dir + "/"):
            return True
    return False


def start_at(
    pod_spec: Mapping[str, Any], tolerations: list[Mapping[str, Any]], node: NodeView
) -> float | None:
    """When a pod of ``pod_spec`` can start on ``node`` (before the workload delay), or
    None: the node does not take it, or is not foreseen to be Ready."""
    if node.kubelet_at is None or not node_matches(pod_spec, node.obj):
        return None
    if not tolerated(node.own_taints(), tolerations):
        return None
    early = pod_spec.get("hostNetwork") and tolerated(
        condition_taints("False", ""), tolerations
    )
    return node.kubelet_at if early else node.ready_at


def scheduled_now(
    pod_spec: Mapping[str, Any], tolerations: list[Mapping[str, Any]], node: NodeView, ready: bool
) -> bool:
    """Would the scheduler (or the DaemonSet controller) place a pod on ``node`` now?"""
    if node.kubelet_at is None or not node_matches(pod_spec, node.obj):
        return False
    taints = node.own_taints() + condition_taints("True" if ready else "False", "")
    return tolerated(taints, tolerations)
