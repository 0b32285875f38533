"""The controllers of a simulated cluster, evaluated lazily when an object is read.

A real cluster runs the kubelet, the deployment controller, the DaemonSet controller...
Here each is a pure function ``(object, rollout, world) -> desired status``: the store
calls it whenever it serves the object, and writes the result back (with a new
resourceVersion) only when it differs from the stored status. So status changes at the
same instants it would on a real cluster, watches see them, and 10,000 idle clusters cost
nothing. Every timestamp is derived from the instant of the transition, never from the
instant of the read, so an unchanged status never looks changed.

Timing (``Clock.delays.workload_available``, scaled): a Deployment, StatefulSet,
ReplicaSet, Job or Pod is available that long after its last spec change; a DaemonSet's
pod on a node is ready that long after both its spec change and the node turning Ready.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

Obj = dict[str, Any]


@dataclass(slots=True)
class Rollout:
    """What a controller remembers about one object besides the object itself."""

    changed_at: float  # clock instant of the last spec change (or creation)
    was_available: bool = False  # the rollout before the current one had finished
    # The store's cache: the status of ``checked`` (the stored object) holds until
    # ``until`` unless the nodes change (``epoch``); reads skip the controller till then.
    checked: Any = None
    until: float = 0.0
    epoch: int = -1


class World(Protocol):
    """What controllers may look at."""

    now: float
    delay: float  # scaled workload_available

    def reached(self, instant: float) -> bool:
        """``now >= instant``; a future instant is remembered as the next change, so the
        store can skip this controller until then."""
        ...

    def wall(self, instant: float) -> str: ...

    def nodes(self) -> Iterable[tuple[Obj, float | None]]:
        """Every Node object with the instant it turned Ready (None: not Ready)."""
        ...

    def node_ready_since(self, name: str) -> tuple[float | None, float]:
        """(instant it turned Ready or None, instant it joined)."""
        ...


def _condition(type_: str, ok: bool, reason: str, message: str, since: str) -> Obj:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "lastUpdateTime": since,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    }


def _done_at(rollout: Rollout, world: World) -> float:
    return rollout.changed_at + world.delay


def _generation(obj: Mapping[str, Any]) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 1)


def deployment(obj: Obj, rollout: Rollout, world: World) -> Obj:
    name = obj["metadata"]["name"]
    replicas = int((obj.get("spec") or {}).get("replicas", 1))
    done_at = _done_at(rollout, world)
    done = replicas == 0 or world.reached(done_at)
    status: Obj = {"observedGeneration": _generation(obj), "replicas": replicas}
    if done:
        since = world.wall(done_at if replicas else rollout.changed_at)
        status.update(
            updatedReplicas=replicas,
            readyReplicas=replicas,
            availableReplicas=replicas,
        )
        available = _deployment_available(True, since)
        progressing = _condition(
            "Progressing",
            True,
            "NewReplicaSetAvailable",
            f'ReplicaSet "{name}" has successfully progressed.',
            since,
        )
    else:
        since = world.wall(rollout.changed_at)
        progressing = _condition(
            "Progressing",
            True,
            "ReplicaSetUpdated",
            f'ReplicaSet "{name}" is progressing.',
            since,
        )
        if rollout.was_available:  # a rolling update: the old pods keep serving
            status.update(
                updatedReplicas=0,
                readyReplicas=replicas,
                availableReplicas=replicas,
            )
            available = _deployment_available(True, since)
        else:
            status.update(updatedReplicas=replicas, unavailableReplicas=replicas)
            available = _deployment_available(False, since)
    status["conditions"] = [available, progressing]
    return status


def _deployment_available(available: bool, since: str) -> Obj:
    """The Available condition exactly as the Deployment controller words it."""
    if available:
        return _condition(
            "Available",
            True,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            since,
        )
    return _condition(
        "Available",
        False,
        "MinimumReplicasUnavailable",
        "Deployment does not have minimum availability.",
        since,
    )


def statefulset(obj: Obj, rollout: Rollout, world: World) -> Obj:
    replicas = int((obj.get("spec") or {}).get("replicas", 1))
    done = replicas == 0 or world.reached(_done_at(rollout, world))
    ready = replicas if (done or rollout.was_available) else 0
    revision = f"{obj['metadata']['name']}-{_generation(obj)}"
    status: Obj = {
        "observedGeneration": _generation(obj),
        "replicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": replicas if done else 0,
        "updatedReplicas": replicas if done else 0,
        "currentRevision": revision,
        "updateRevision": revision,
        "collisionCount": 0,
    }
    return status


def replicaset(obj: Obj, rollout: Rollout, world: World) -> Obj:
    replicas = int((obj.get("spec") or {}).get("replicas", 1))
    done = replicas == 0 or world.reached(_done_at(rollout, world))
    ready = replicas if done else 0
    return {
        "observedGeneration": _generation(obj),
        "replicas": replicas,
        "fullyLabeledReplicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
    }


def _tolerated(taint: Mapping[str, Any], tolerations: list[Mapping[str, Any]]) -> bool:
    if taint.get("effect") not in ("NoSchedule", "NoExecute"):
        return True
    for tol in tolerations:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists":
            if not tol.get("key") or tol.get("key") == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def _schedulable(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    selector = pod_spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    tolerations = pod_spec.get("tolerations") or []
    taints = (node.get("spec") or {}).get("taints") or []
    return all(_tolerated(t, tolerations) for t in taints)


def daemonset(obj: Obj, rollout: Rollout, world: World) -> Obj:
    pod_spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    desired = ready = 0
    for node, ready_since in world.nodes():
        if ready_since is None or not world.reached(ready_since):
            continue
        if not _schedulable(pod_spec, node):
            continue
        desired += 1
        if world.reached(max(rollout.changed_at, ready_since) + world.delay):
            ready += 1
    status: Obj = {
        "observedGeneration": _generation(obj),
        "currentNumberScheduled": desired,
        "desiredNumberScheduled": desired,
        "numberMisscheduled": 0,
        "numberReady": ready,
        "numberAvailable": ready,
        "updatedNumberScheduled": ready,
    }
    if desired > ready:
        status["numberUnavailable"] = desired - ready
    return status


def job(obj: Obj, rollout: Rollout, world: World) -> Obj:
    done_at = _done_at(rollout, world)
    started = world.wall(rollout.changed_at)
    if not world.reached(done_at):
        return {"active": 1, "startTime": started, "ready": 0}
    finished = world.wall(done_at)
    completions = int((obj.get("spec") or {}).get("completions") or 1)
    return {
        "startTime": started,
        "completionTime": finished,
        "succeeded": completions,
        "ready": 0,
        "conditions": [
            {
                "type": "Complete",
                "status": "True",
                "lastProbeTime": finished,
                "lastTransitionTime": finished,
            }
        ],
    }


def pod(obj: Obj, rollout: Rollout, world: World) -> Obj:
    done_at = _done_at(rollout, world)
    running = world.reached(done_at)
    since = world.wall(done_at if running else rollout.changed_at)
    started = world.wall(rollout.changed_at)
    containers = ((obj.get("spec") or {}).get("containers")) or []
    conditions = [
        {
            "type": t,
            "status": "True" if (running or t == "PodScheduled") else "False",
            "lastProbeTime": None,
            "lastTransitionTime": since if t != "PodScheduled" else started,
        }
        for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
    ]
    return {
        "phase": "Running" if running else "Pending",
        "conditions": conditions,
        "startTime": started,
        "containerStatuses": [
            {
                "name": c.get("name", ""),
                "image": c.get("image", ""),
                "ready": running,
                "started": running,
                "restartCount": 0,
                "state": {"running": {"startedAt": since}}
                if running
                else {"waiting": {"reason": "ContainerCreating"}},
            }
            for c in containers
        ],
    }


def apiservice(obj: Obj, rollout: Rollout, world: World) -> Obj:
    service = (obj.get("spec") or {}).get("service")
    if not service:  # served by the kube-apiserver itself
        since = world.wall(rollout.changed_at)
        return {
            "conditions": [
                _available(True, "Local", "Local APIServices are always available", since)
            ]
        }
    done_at = _done_at(rollout, world)
    if world.reached(done_at):
        return {
            "conditions": [_available(True, "Passed", "all checks passed", world.wall(done_at))]
        }
    where = f'service/{service.get("name")} in "{service.get("namespace")}"'
    return {
        "conditions": [
            _available(
                False,
                "MissingEndpoints",
                f'endpoints for {where} have no addresses with port name "https"',
                world.wall(rollout.changed_at),
            )
        ]
    }


def _available(ok: bool, reason: str, message: str, since: str) -> Obj:
    return {
        "type": "Available",
        "status": "True" if ok else "False",
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    }


def crd(obj: Obj, rollout: Rollout, world: World) -> Obj:
    spec = obj.get("spec") or {}
    names = dict(spec.get("names") or {})
    if names.get("kind"):
        names.setdefault("singular", str(names["kind"]).lower())
        names.setdefault("listKind", f"{names['kind']}List")
    since = world.wall(rollout.changed_at)
    stored = [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]
    previous = (obj.get("status") or {}).get("storedVersions") or []
    return {
        "acceptedNames": names,
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "lastTransitionTime": since,
                "reason": "NoConflicts",
                "message": "no conflicts found",
            },
            {
                "type": "Established",
                "status": "True",
                "lastTransitionTime": since,
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
            },
        ],
        "storedVersions": list(dict.fromkeys([*previous, *stored])),
    }


def node(obj: Obj, rollout: Rollout, world: World) -> Obj:
    ready_since, joined_at = world.node_ready_since(obj["metadata"]["name"])
    ready = ready_since is not None and world.reached(ready_since)
    joined = world.wall(joined_at)
    status = dict(obj.get("status") or {})
    conditions = [
        {
            "type": t,
            "status": "False",
            "lastHeartbeatTime": joined,
            "lastTransitionTime": joined,
            "reason": f"KubeletHasSufficient{what}",
            "message": f"kubelet has sufficient {what.lower()} available",
        }
        for t, what in (
            ("MemoryPressure", "Memory"),
            ("DiskPressure", "Disk"),
            ("PIDPressure", "PID"),
        )
    ]
    since = world.wall(ready_since) if ready and ready_since is not None else joined
    conditions.append(
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "lastHeartbeatTime": since,
            "lastTransitionTime": since,
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "kubelet is posting ready status"
            if ready
            else "container runtime network not ready: NetworkReady=false",
        }
    )
    status["conditions"] = conditions
    return status


Controller = Callable[[Obj, Rollout, World], Obj]

# Test hook: a workload annotated ``sim.werft.dev/unavailable: "<why>"`` never becomes
# available, as if its image could not be pulled; removing the annotation lets the rollout
# finish (timed from its last spec change, as before).
UNAVAILABLE_ANNOTATION = "sim.werft.dev/unavailable"


class _NeverDone:
    """The world as a stalled workload sees it: its rollout delay never passes."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.now = world.now
        self.delay = float("inf")

    def reached(self, instant: float) -> bool:
        # Never ask the real world about "never": it would remember it as the next change.
        return instant != self.delay and self._world.reached(instant)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._world, name)


def _stallable(controller: Controller) -> Controller:
    def reconcile(obj: Obj, rollout: Rollout, world: World) -> Obj:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if not annotations.get(UNAVAILABLE_ANNOTATION):
            return controller(obj, rollout, world)
        stalled = Rollout(changed_at=rollout.changed_at, was_available=False)
        return controller(obj, stalled, _NeverDone(world))  # type: ignore[arg-type]

    return reconcile


CONTROLLERS: dict[tuple[str, str], Controller] = {
    ("apps", "deployments"): _stallable(deployment),
    ("apps", "statefulsets"): _stallable(statefulset),
    ("apps", "replicasets"): replicaset,
    ("apps", "daemonsets"): _stallable(daemonset),
    ("batch", "jobs"): job,
    ("", "pods"): pod,
    ("", "nodes"): node,
    ("apiregistration.k8s.io", "apiservices"): _stallable(apiservice),
    ("apiextensions.k8s.io", "customresourcedefinitions"): crd,
}
