"""One simulated Kubernetes cluster: its API server's state and its nodes' kubelets.

The lifecycle (werft/sim/lifecycle.py) drives it: ``bring_up`` when the first control
plane's API server would answer, ``join_node`` when a kubelet registers, and
``set_node_ready`` when a machine goes away or comes back. A registered node is Ready only
once its pod network is up, i.e. once a CNI DaemonSet's pod runs on it
(werft/sim/kube/scheduling.py), exactly as on a kubeadm or k3s (``flannel-backend: none``)
cluster. The HTTP side
(werft/sim/kubeapi.py) serves ``store``. A cluster that was never brought up holds no
store at all, so 10,000 clusters waiting for their machines cost a few hundred bytes each.
"""

from __future__ import annotations

from werft.sim.clock import Clock
from werft.sim.kube.discovery import BUILTIN_BY_GV
from werft.sim.kube.objects import NodeState, ObjectStore
from werft.sim.kube.scheduling import CNI_CONF_DIRS

_NODES = BUILTIN_BY_GV["v1"]["nodes"]
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


def _v(version: str) -> str:
    return version if version.startswith("v") else f"v{version}"


class SimCluster:
    """A cluster's API server and kubelets. ``registry[name]`` of ``kube_api_app``."""

    __slots__ = ("_api_up", "_distribution", "_store", "_token", "_version", "clock", "name")

    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self._api_up = False
        self._token: str | None = None
        self._version: str | None = None
        self._distribution: str | None = None
        self._store: ObjectStore | None = None

    def __repr__(self) -> str:  # never the token
        return f"SimCluster({self.name!r}, api_up={self._api_up}, version={self._version!r})"

    # --- state ---------------------------------------------------------------------------

    @property
    def api_up(self) -> bool:
        return self._api_up

    @property
    def token(self) -> str | None:
        return self._token

    @property
    def kubernetes_version(self) -> str | None:
        """As given to ``bring_up``, e.g. ``1.31.1`` (``/version`` says ``v1.31.1``)."""
        return self._version

    @property
    def distribution(self) -> str | None:
        return self._distribution

    @property
    def store(self) -> ObjectStore:
        """The objects; created on first use (normally by ``bring_up``)."""
        if self._store is None:
            self._store = ObjectStore(self.clock)
        return self._store

    @property
    def has_store(self) -> bool:
        return self._store is not None

    # --- lifecycle -----------------------------------------------------------------------

    def bring_up(self, *, token: str, kubernetes_version: str, distribution: str) -> None:
        """The API server answers from now on. Idempotent; keeps existing objects."""
        self._token = token
        self._version = kubernetes_version.removeprefix("v")
        self._distribution = distribution
        self.store.cni_conf_dir = CNI_CONF_DIRS.get(distribution, CNI_CONF_DIRS["kubeadm"])
        self.store.ensure_namespaces()
        self._api_up = True

    def take_down(self) -> None:
        """The API stops answering (503) but keeps its objects, like a stopped etcd member."""
        self._api_up = False

    def reset(self) -> None:
        """The cluster is wiped (machines reinstalled): no objects, API down, no token."""
        self._api_up = False
        self._token = None
        self._version = None
        self._distribution = None
        self._store = None

    # --- kubelets ------------------------------------------------------------------------

    def join_node(
        self,
        name: str,
        *,
        role: str,
        kubelet_version: str,
        ready_at: float,
        builtin_network: bool = False,
        taints: tuple[tuple[str, str, str], ...] | None = None,
    ) -> None:
        """A kubelet registers its Node; it runs (posts status) from ``ready_at`` on.
        ``taints``: kubeadm's ``nodeRegistration.taints`` from the machine's config (None:
        unset, kubeadm's default).

        The node turns Ready once its pod network is up too: when a CNI pod is Ready on
        it or, with ``builtin_network``, at once (a distribution that brings its own
        network; used by tests and the admin bootstrap, not by machines). Joining again
        (the machine rebooted) keeps the Node object; the network comes up anew.
        """
        store = self.store
        with store.lock:
            now = self.clock.now()
            state = store.node_states.get(name)
            if state is None:
                store.node_states[name] = NodeState(
                    joined_at=now,
                    kubelet_at=ready_at,
                    since=now,
                    builtin_network=builtin_network,
                )
            else:
                state.kubelet_at, state.since, state.network_at = ready_at, now, None
                state.builtin_network = state.builtin_network or builtin_network
            store.nodes_changed()
            existing = store.objects(_NODES.key).get(("", name))
            if existing is None:
                store.put_internal(_NODES, self._node(name, role, kubelet_version, taints))
            else:
                self._set_kubelet(existing, kubelet_version)

    def set_node_ready(self, name: str, ready: bool) -> None:
        """The kubelet stops (False) or resumes (True, from now on) posting status. After a
        stop, the pod network has to come up again (its CNI pod restarts)."""
        if self._store is None:
            return  # wiped or never up: no node to tell
        store = self._store
        with store.lock:
            state = store.node_states.get(name)
            if state is None:
                return
            now = self.clock.now()
            if not ready:
                if state.kubelet_at is not None:
                    state.kubelet_at, state.since, state.network_at = None, now, None
            elif state.kubelet_at is None or state.kubelet_at > now:
                state.kubelet_at, state.since = now, now
            store.nodes_changed()

    def set_kubelet_version(self, node: str, version: str) -> None:
        """Drift: the node now reports another kubelet version (KeyError: no such node)."""
        if self._store is None:
            raise KeyError(f"node {node!r} is not registered in cluster {self.name!r}")
        store = self._store
        with store.lock:
            existing = store.objects(_NODES.key).get(("", node))
            if existing is None:
                raise KeyError(f"node {node!r} is not registered in cluster {self.name!r}")
            self._set_kubelet(existing, version)

    def node_ready(self, name: str) -> bool:
        """Is the node's Ready condition True now (kubelet running and pod network up)?"""
        node = self.store.get("", "v1", "nodes", None, name) if self._store else None
        conditions = ((node or {}).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def _set_kubelet(self, node: dict, version: str) -> None:
        status = node.get("status") or {}
        info = status.get("nodeInfo") or {}
        if info.get("kubeletVersion") == _v(version):
            return
        info = {**info, "kubeletVersion": _v(version), "kubeProxyVersion": _v(version)}
        self.store.put_internal(_NODES, {**node, "status": {**status, "nodeInfo": info}})

    def _node(
        self,
        name: str,
        role: str,
        kubelet_version: str,
        taints: tuple[tuple[str, str, str], ...] | None = None,
    ) -> dict:
        k3s = self._distribution == "k3s"
        labels = {
            "beta.kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
        }
        spec: dict = {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}
        if role == "control-plane":
            labels[CONTROL_PLANE_LABEL] = "true" if k3s else ""
            if k3s:
                labels["node-role.kubernetes.io/master"] = "true"
        if taints is None:  # kubeadm taints its control planes unless told; k3s nothing
            control_plane = role == "control-plane" and not k3s
            taints = ((CONTROL_PLANE_LABEL, "", "NoSchedule"),) if control_plane else ()
        if taints:
            spec["taints"] = [
                {"key": key, **({"value": value} if value else {}), "effect": effect}
                for key, value, effect in taints
            ]
        runtime = "containerd://1.7.22-k3s1" if k3s else "containerd://1.7.22"
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": spec,
            "status": {
                "addresses": [{"type": "Hostname", "address": name}],
                "capacity": {
                    "cpu": "4",
                    "memory": "8148332Ki",
                    "pods": "110",
                    "ephemeral-storage": "101203600Ki",
                },
                "allocatable": {
                    "cpu": "4",
                    "memory": "8045932Ki",
                    "pods": "110",
                    "ephemeral-storage": "93269345827",
                },
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": "",
                    "containerRuntimeVersion": runtime,
                    "kernelVersion": "6.8.0-45-generic",
                    "kubeProxyVersion": _v(kubelet_version),
                    "kubeletVersion": _v(kubelet_version),
                    "machineID": "",
                    "operatingSystem": "linux",
                    "osImage": "Ubuntu 24.04.1 LTS",
                    "systemUUID": "",
                },
            },
        }
