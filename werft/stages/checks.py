"""Pure judgements over observed Kubernetes objects, shared by the stages, verify and
observe: are the nodes there, Ready and at the right version; are the add-ons present,
undrifted and healthy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from werft.inventory.resolved import ResolvedCluster
from werft.kube import describe, health
from werft.render.node import CONTROL_PLANE_TAINTS, runs_workloads

Obj = Mapping[str, Any]

# Kinds whose rollout the add-on stage waits for.
WORKLOAD_KINDS = frozenset({"Deployment", "DaemonSet", "StatefulSet", "APIService"})


def bare_version(version: str) -> str:
    """``v1.31.1+k3s1`` -> ``1.31.1``: what the inventory's kubernetesVersion means."""
    return version.removeprefix("v").split("+", 1)[0].split("-", 1)[0]


@dataclass
class NodeCheck:
    """Every machine of the cluster registered as a Node, Ready, at the desired version,
    and, in a cluster without workers, its control planes free of the control-plane taint
    (nothing new could be scheduled: a restarted add-on pod would stay Pending).

    ``ok`` (all four) is what Verified requires; ``registered_at_version`` (Ready or not)
    is what Bootstrapped requires."""

    expected: int
    ready: list[str] = field(default_factory=list)  # Ready, whatever their version
    missing: list[str] = field(default_factory=list)
    not_ready: list[str] = field(default_factory=list)
    wrong_version: dict[str, str] = field(default_factory=dict)  # node -> kubeletVersion
    tainted: dict[str, str] = field(default_factory=dict)  # node -> "key:Effect"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.not_ready or self.wrong_version or self.tainted)

    @property
    def registered(self) -> int:
        return self.expected - len(self.missing)

    @property
    def at_version(self) -> int:
        return self.registered - len(self.wrong_version)

    @property
    def registered_at_version(self) -> bool:
        """Every machine joined as a Node with the desired kubelet: what Bootstrapped
        means. Ready may still be missing -- a kubelet is NotReady until a CNI runs, and
        the CNI is an add-on."""
        return not (self.missing or self.wrong_version)

    @property
    def all_registered(self) -> bool:
        """Every machine joined: waiting longer cannot change a kubelet's version."""
        return not self.missing

    def summary(self) -> str:
        parts = [f"{len(self.ready)}/{self.expected} Ready"]
        if self.missing:
            parts.append("not registered: " + ", ".join(self.missing))
        if self.not_ready:
            parts.append("not Ready: " + ", ".join(self.not_ready))
        if self.wrong_version:
            parts.append(
                "wrong version: " + ", ".join(f"{n} {v}" for n, v in self.wrong_version.items())
            )
        if self.tainted:
            parts.append("tainted: " + ", ".join(f"{n} {t}" for n, t in self.tainted.items()))
        return "; ".join(parts)


def check_nodes(cluster: ResolvedCluster, nodes: Iterable[Obj]) -> NodeCheck:
    by_name = {(n.get("metadata") or {}).get("name"): n for n in nodes}
    result = NodeCheck(expected=len(cluster.machines))
    for machine in cluster.machines:
        node = by_name.get(machine.name)
        if node is None:
            result.missing.append(machine.name)
            continue
        ok, _ = health(node)
        (result.ready if ok else result.not_ready).append(machine.name)
        kubelet = ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
        if bare_version(kubelet) != cluster.kubernetes_version:
            result.wrong_version[machine.name] = kubelet or "unknown"
        if runs_workloads(cluster, machine) and (taint := control_plane_taint(node)):
            result.tainted[machine.name] = taint
    return result


def control_plane_taint(node: Obj) -> str:
    """``key:Effect`` of a taint that keeps workloads off the node ("" if none)."""
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("key") in CONTROL_PLANE_TAINTS and taint.get("effect") in (
            "NoSchedule",
            "NoExecute",
        ):
            return f"{taint['key']}:{taint['effect']}"
    return ""


@dataclass
class AddonCheck:
    """One desired add-on object against its live counterpart."""

    desired: Obj
    live: Obj | None
    drift: list[str] = field(default_factory=list)
    healthy: bool = False
    health: str = ""

    @property
    def name(self) -> str:
        return describe(self.desired)

    @property
    def present(self) -> bool:
        return self.live is not None

    @property
    def ok(self) -> bool:
        return self.present and not self.drift and self.healthy


def check_addon(desired: Obj, live: Obj | None, drift: Sequence[str]) -> AddonCheck:
    """``drift`` is the server's answer (``KubeClient.diff``): fields an apply would
    change, ``["."]`` when absent."""
    check = AddonCheck(desired, live, drift=[] if live is None else list(drift))
    if live is not None:
        check.healthy, check.health = health(live)
    else:
        check.health = "absent"
    return check


def summarise_addons(checks: Sequence[AddonCheck]) -> str:
    bad = [c for c in checks if not c.ok]
    if not bad:
        return f"{len(checks)} add-on object(s) present, undrifted, healthy"
    first = bad[0]
    what = (
        "absent"
        if not first.present
        else (f"drifted at {', '.join(first.drift[:3])}" if first.drift else first.health)
    )
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    return f"{first.name}: {what}{more}"
