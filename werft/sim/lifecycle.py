"""The simulated fleet: machines, clusters, and the bridge between them.

Machines progress lazily (``SimMachine.evaluate``); a cluster only learns that its control
plane is installed or that a node booted when somebody looks. ``Fleet.advance(cluster)`` is
that look: the HTTP app calls it before serving any request for ``/clusters/<name>/...``
and the admin API calls it before describing a cluster. It evaluates the cluster's
machines (control planes first) and tells the ``SimCluster`` (werft/sim/cluster.py) what
happened, with the instants at which it happened:

  control plane OS up + delays.api_up           -> cluster.bring_up(token, version, distro)
  max(OS up, API up) + delays.node_join         -> cluster.join_node(name, ready_at=... +
                                                   delays.node_ready) (the kubelet runs;
                                                   the node is Ready once a CNI pod is)
  machine off / rebooting after it had joined   -> cluster.set_node_ready(name, False)
  no control plane of the cluster running       -> cluster.take_down() (API answers 503)
                                                   until a control plane is up again

Not modelled: reinstalling the last control plane does not wipe the cluster's objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from werft.sim.clock import Clock
from werft.sim.machines import SimMachine, SimMachineSpec


class ClusterLike(Protocol):
    """The part of werft.sim.kube.cluster.SimCluster the lifecycle drives (agreed contract)."""

    @property
    def api_up(self) -> bool: ...

    @property
    def token(self) -> str | None: ...

    def bring_up(self, *, token: str, kubernetes_version: str, distribution: str) -> None: ...

    def join_node(
        self,
        name: str,
        *,
        role: str,
        kubelet_version: str,
        ready_at: float,
        builtin_network: bool = False,
    ) -> None: ...

    def set_node_ready(self, name: str, ready: bool) -> None: ...

    def take_down(self) -> None: ...


ClusterFactory = Callable[[str, Clock], Any]


class Fleet:
    def __init__(
        self,
        machines: Iterable[SimMachineSpec],
        clusters: Mapping[str, str | None],
        clock: Clock,
        cluster_factory: ClusterFactory,
    ) -> None:
        self.clock = clock
        self.bmcs: dict[str, SimMachine] = {}
        self.domains: dict[str, SimMachine] = {}
        self.cluster_site: dict[str, str | None] = dict(clusters)
        self.registry: dict[str, Any] = {name: cluster_factory(name, clock) for name in clusters}
        self._index: dict[str, list[SimMachine]] = {name: [] for name in clusters}
        self._api_up_at: dict[str, float] = {}
        self._up_by_machines: set[str] = set()  # APIs a control plane brought up
        for spec in machines:
            machine = SimMachine.new(spec)
            table = self.bmcs if spec.kind == "bmc" else self.domains
            if spec.name in table:
                raise ValueError(f"machine {spec.name!r} is listed twice")
            table[spec.name] = machine
            if spec.cluster is not None:
                if spec.cluster not in self.registry:
                    raise ValueError(f"machine {spec.name!r}: unknown cluster {spec.cluster!r}")
                self._index[spec.cluster].append(machine)

    # --- lookups ------------------------------------------------------------------------

    def machine(self, name: str) -> SimMachine | None:
        return self.bmcs.get(name) or self.domains.get(name)

    def site_of_machine(self, name: str) -> str | None:
        machine = self.machine(name)
        return machine.spec.site if machine else None

    def machines_of(self, cluster: str) -> list[SimMachine]:
        return self._index.get(cluster, [])

    def new_domain(self, name: str) -> SimMachine:
        """A VM defined through the hypervisor API that the inventory does not list."""
        machine = SimMachine.new(SimMachineSpec(name=name, kind="vm"))
        self.domains[name] = machine
        return machine

    # --- lifecycle ----------------------------------------------------------------------

    def advance(self, cluster: str) -> None:
        """Bring ``cluster`` up to date with its machines' progress."""
        machines = self._index.get(cluster)
        if not machines:
            return
        now = self.clock.now()
        # Control planes first: a worker may join in the same look the API came up.
        for machine in sorted(machines, key=_control_planes_first):
            self._sync(machine, now)

    def observe(self, machine: SimMachine) -> None:
        """Evaluate one machine and report to its cluster (BMC and admin requests)."""
        self._sync(machine, self.clock.now())

    def _sync(self, machine: SimMachine, now: float) -> None:
        machine.evaluate(now, self.clock)
        running = machine.os_up_at is not None and machine.installed is not None
        if (
            machine.node_name is not None
            and not machine.node_down
            and (not running or machine.node_cycle != machine.cycle)
        ):
            cluster = self.registry.get(machine.node_cluster or "")
            if cluster is not None:
                cluster.set_node_ready(machine.node_name, False)
            machine.node_down = True
            if machine.installed is not None and machine.installed.role == "control-plane":
                self._maybe_take_down(machine.node_cluster or "", now)
        if not running:
            return
        seed = machine.installed
        assert seed is not None and machine.os_up_at is not None
        cluster = self.registry.get(seed.cluster)
        if cluster is None:
            machine.idle = f"cluster {seed.cluster!r} (from the seed) is unknown to the simulator"
            return
        if machine not in self._index[seed.cluster]:  # a VM or machine the inventory did not map
            self._index[seed.cluster].append(machine)
        delays = self.clock.delays
        if seed.role == "control-plane" and seed.token and not cluster.api_up:
            api_at = machine.os_up_at + self.clock.scaled(delays.api_up)
            if now < api_at:
                return
            cluster.bring_up(
                token=seed.token,
                kubernetes_version=seed.kubernetes_version,
                distribution=seed.distribution,
            )
            self._api_up_at[seed.cluster] = api_at
            self._up_by_machines.add(seed.cluster)
        if not cluster.api_up or machine.node_cycle == machine.cycle:
            return
        api_at = self._api_up_at.setdefault(seed.cluster, now)
        join_at = max(machine.os_up_at, api_at) + self.clock.scaled(delays.node_join)
        if now < join_at:
            return
        cluster.join_node(
            seed.node_name,
            role=seed.role,
            kubelet_version="v" + seed.kubernetes_version,
            ready_at=join_at + self.clock.scaled(delays.node_ready),
            taints=seed.taints,
        )
        machine.node_cluster, machine.node_name = seed.cluster, seed.node_name
        machine.node_cycle, machine.node_down = machine.cycle, False

    def _maybe_take_down(self, cluster_name: str, now: float) -> None:
        """The API server stops answering once no control plane of the cluster runs (an API
        brought up through the admin bootstrap endpoint has no machines and stays up)."""
        cluster = self.registry.get(cluster_name)
        if cluster is None or not cluster.api_up or cluster_name not in self._up_by_machines:
            return
        for other in self._index.get(cluster_name, []):
            other.evaluate(now, self.clock)
            seed = other.installed
            if (
                seed is not None
                and seed.role == "control-plane"
                and seed.cluster == cluster_name
                and other.os_up_at is not None
            ):
                return
        cluster.take_down()
        self._api_up_at.pop(cluster_name, None)
        self._up_by_machines.discard(cluster_name)

    # --- admin --------------------------------------------------------------------------

    def bootstrap(
        self,
        cluster: str,
        *,
        token: str,
        kubernetes_version: str,
        distribution: str = "kubeadm",
        nodes: int = 1,
        builtin_network: bool = False,
    ) -> list[str]:
        """Bring a cluster's API up directly with ``nodes`` registered nodes; returns their
        names. The nodes are NotReady until a CNI runs on them, unless ``builtin_network``
        (Ready at once, as with a distribution's embedded CNI).

        Node names are the cluster's inventory machines (control planes first), then
        ``<cluster>-node-<i>``.
        """
        sim = self.registry[cluster]
        now = self.clock.now()
        if not sim.api_up:
            sim.bring_up(
                token=token, kubernetes_version=kubernetes_version, distribution=distribution
            )
            self._api_up_at[cluster] = now
        known = sorted(self._index.get(cluster, []), key=_control_planes_first)
        names: list[str] = []
        for i in range(nodes):
            if i < len(known):
                name, role = known[i].name, known[i].spec.role or "worker"
            else:
                name, role = f"{cluster}-node-{i}", "control-plane" if i == 0 else "worker"
            sim.join_node(
                name, role=role, kubelet_version="v" + kubernetes_version.removeprefix("v"),
                ready_at=now, builtin_network=builtin_network,
            )
            names.append(name)
        return names

    def describe_cluster(self, cluster: str) -> dict[str, object]:
        self.advance(cluster)
        sim = self.registry[cluster]
        return {
            "name": cluster,
            "site": self.cluster_site.get(cluster),
            "apiUp": bool(sim.api_up),
            "machines": [
                {"name": m.name, "kind": m.spec.kind, "phase": m.phase(),
                 "node": m.node_name, "nodeNotReady": m.node_down if m.node_name else None}
                for m in self._index.get(cluster, [])
            ],
        }


def _control_planes_first(machine: SimMachine) -> int:
    installed = machine.installed
    role = installed.role if installed is not None else machine.spec.role
    return 0 if role == "control-plane" else 1
