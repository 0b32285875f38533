"""The controllers of a simulated cluster, evaluated lazily when an object is read.

A real cluster runs the kubelet, the deployment controller, the DaemonSet controller...
Here each is a pure function ``(object, rollout, world) -> desired status``: the store
calls it whenever it serves the object, and writes the result back (with a new
resourceVersion) only when it differs from the stored status. So status changes at the
same instants it would on a real cluster, watches see them, and 10,000 idle clusters cost
nothing. Every timestamp is derived from the instant of the transition, never from the
instant of the read, so an unchanged status never looks changed.

Timing (``Clock.delays.workload_available``, scaled): a pod is ready that long after both
its workload's last spec change and the instant it can start on a node
(kubescheduling.py: normally the node turning Ready, which needs a CNI). A Deployment,
StatefulSet, ReplicaSet, Job or Pod is available when its pods are, on the first node that
takes them; a DaemonSet counts its pods node by node. A workload whose pods fit no node
stays unavailable (a Deployment reports ``ProgressDeadlineExceeded`` after its
``progressDeadlineSeconds``, scaled like every delay).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from werft.sim.kube import scheduling
from werft.sim.kube.scheduling import NodeView

Obj = dict[str, Any]


@dataclass(slots=True)
class Rollout:
    """What a controller remembers about one object besides the object itself."""

    changed_at: float  # clock instant of the last spec change (or creation)
    was_available: bool = False  # the rollout before the current one had finished
    created_at: float = -1.0  # clock instant of the object's creation (-1: changed_at)
    finished: bool = False  # the controller has seen this rollout complete
    # The store's cache: the status of ``checked`` (the stored object) holds until
    # ``until`` unless the nodes change (``epoch``); reads skip the controller till then.
    checked: Any = None
    until: float = 0.0
    epoch: int = -1

    def __post_init__(self) -> None:
        if self.created_at < 0:
            self.created_at = self.changed_at


class World(Protocol):
    """What controllers may look at."""

    now: float
    delay: float  # scaled workload_available

    def reached(self, instant: float) -> bool:
        """``now >= instant``; a future instant is remembered as the next change, so the
        store can skip this controller until then."""
        ...

    def wall(self, instant: float) -> str: ...

    def scaled(self, seconds: float) -> float:
        """A duration of the real world in clock time (the time scale applied)."""
        ...

    def node_views(self) -> Iterable[NodeView]:
        """Every node with its kubelet and readiness instants."""
        ...

    def node_view(self, name: str, obj: Obj | None = None) -> NodeView | None:
        """One node's view; ``obj``: the Node object being written (not stored yet)."""
        ...

    def kubelet(self, name: str) -> Any:
        """The node's kubelet state (objects.NodeState) or None: no kubelet registered it."""
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


def _generation(obj: Mapping[str, Any]) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 1)


def _placed_at(obj: Obj, world: World) -> float | None:
    """When the first node can start this workload's pods (None: no node will)."""
    pod_spec = scheduling.pod_spec_of(obj)
    if pod_spec.get("nodeName"):  # bound by hand: the scheduler's filters do not apply
        view = world.node_view(str(pod_spec["nodeName"]))
        if view is None or view.kubelet_at is None:
            return None
        return view.kubelet_at if pod_spec.get("hostNetwork") else view.ready_at
    tolerations = list(pod_spec.get("tolerations") or [])
    starts = [scheduling.start_at(pod_spec, tolerations, v) for v in world.node_views()]
    return min((s for s in starts if s is not None), default=None)


def _done_at(obj: Obj, rollout: Rollout, world: World) -> float | None:
    """When the current rollout's pods are all available (None: never, as things stand)."""
    placed = _placed_at(obj, world)
    if placed is None:
        return None
    return max(rollout.changed_at, placed) + world.delay


def _reached(world: World, instant: float | None) -> bool:
    return instant is not None and world.reached(instant)


def deployment(obj: Obj, rollout: Rollout, world: World) -> Obj:
    name = obj["metadata"]["name"]
    spec = obj.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    done_at = None if replicas == 0 else _done_at(obj, rollout, world)
    done = replicas == 0 or _reached(world, done_at)
    status: Obj = {"observedGeneration": _generation(obj), "replicas": replicas}
    if done:
        rollout.finished = True
        since = world.wall(done_at if done_at is not None else rollout.changed_at)
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
        deadline = rollout.changed_at + world.scaled(
            float(spec.get("progressDeadlineSeconds") or 600)
        )
        if world.reached(deadline):
            progressing = _condition(
                "Progressing",
                False,
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{name}" has timed out progressing.',
                world.wall(deadline),
            )
        else:
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
    done = replicas == 0 or _reached(world, _done_at(obj, rollout, world))
    if done:
        rollout.finished = True
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
    done = replicas == 0 or _reached(world, _done_at(obj, rollout, world))
    ready = replicas if done else 0
    return {
        "observedGeneration": _generation(obj),
        "replicas": replicas,
        "fullyLabeledReplicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
    }


def daemonset(obj: Obj, rollout: Rollout, world: World) -> Obj:
    pod_spec = scheduling.pod_spec_of(obj)
    tolerations = scheduling.daemon_tolerations(pod_spec)
    desired = ready = 0
    for view in world.node_views():
        node_ready = _reached(world, view.ready_at)
        if not scheduling.scheduled_now(pod_spec, tolerations, view, node_ready):
            continue
        desired += 1
        start = scheduling.start_at(pod_spec, tolerations, view)
        if start is not None and world.reached(max(rollout.changed_at, start) + world.delay):
            ready += 1
    if desired and ready == desired:
        rollout.finished = True
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
    done_at = _done_at(obj, rollout, world)
    started = world.wall(rollout.changed_at)
    if done_at is None or not world.reached(done_at):
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
    done_at = _done_at(obj, rollout, world)
    running = _reached(world, done_at)
    since = world.wall(done_at if running and done_at is not None else rollout.changed_at)
    started = world.wall(rollout.changed_at)
    containers = ((obj.get("spec") or {}).get("containers")) or []
    scheduled = _placed_at(obj, world) is not None
    conditions = [
        {
            "type": t,
            "status": "True" if (running or (t == "PodScheduled" and scheduled)) else "False",
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
    done_at = rollout.changed_at + world.delay
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


# What a kubelet (>= 1.24, containerd) posts while the runtime has no CNI configuration.
NO_CNI_MESSAGE = (
    "container runtime network not ready: NetworkReady=false "
    "reason:NetworkPluginNotReady message:Network plugin returns error: "
    "cni plugin not initialized"
)
_PRESSURE = (("MemoryPressure", "Memory"), ("DiskPressure", "Disk"), ("PIDPressure", "PID"))


def node(obj: Obj, rollout: Rollout, world: World) -> Obj:
    """The kubelet's conditions; once it stops posting, the node lifecycle controller's."""
    name = obj["metadata"]["name"]
    state = world.kubelet(name)
    view = world.node_view(name, obj)
    status = dict(obj.get("status") or {})
    if state is None or view is None or view.kubelet_at is None:
        # The kubelet stopped (or no kubelet ever registered this Node): every condition
        # Unknown, as the node lifecycle controller sets them after the grace period.
        since = world.wall(state.since if state is not None else rollout.created_at)
        message = (
            "Kubelet stopped posting node status."
            if state is not None
            else "Kubelet never posted node status."
        )
        status["conditions"] = [
            {
                "type": t,
                "status": "Unknown",
                "lastHeartbeatTime": since,
                "lastTransitionTime": since,
                "reason": "NodeStatusUnknown",
                "message": message,
            }
            for t in (*(p for p, _ in _PRESSURE), "Ready")
        ]
        return status
    joined = world.wall(state.since)
    conditions = [
        {
            "type": t,
            "status": "False",
            "lastHeartbeatTime": joined,
            "lastTransitionTime": joined,
            "reason": f"KubeletHasSufficient{what}",
            "message": f"kubelet has sufficient {what.lower()} available",
        }
        for t, what in _PRESSURE
    ]
    ready = _reached(world, view.ready_at)
    since = world.wall(view.ready_at) if ready and view.ready_at is not None else joined
    conditions.append(
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "lastHeartbeatTime": since,
            "lastTransitionTime": since,
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "kubelet is posting ready status" if ready else NO_CNI_MESSAGE,
        }
    )
    status["conditions"] = conditions
    return status


def node_spec(obj: Obj) -> Obj:
    """The node's spec with the taints its Ready condition implies (and no other
    condition taints): what the node lifecycle controller maintains."""
    spec = obj.get("spec") or {}
    ready = next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"),
        None,
    )
    if ready is None:
        return spec
    own = [t for t in spec.get("taints") or [] if t.get("key") not in scheduling.CONDITION_TAINTS]
    taints = own + scheduling.condition_taints(ready["status"], ready["lastTransitionTime"])
    out = {k: v for k, v in spec.items() if k != "taints"}
    if taints:
        out["taints"] = taints
    return out


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


# Controllers that also own part of the spec (given the object with its new status).
SPEC_CONTROLLERS: dict[tuple[str, str], Callable[[Obj], Obj]] = {("", "nodes"): node_spec}

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
