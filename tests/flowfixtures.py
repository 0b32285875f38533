"""Helpers for the Prefect flow tests: a generated fleet served by the real simulator, and
runs of the real flows against the session's ``prefect_test_harness`` server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import State

from flows.models import FleetResult, ProvisionRequest
from flows.provision import provision_fleet
from tests.simfixtures import SimHandle, reserve_port, running_sim
from werft.demo import ensure_bmc_secrets
from werft.inventory.generate import write_fleet
from werft.inventory.load import load_inventory
from werft.inventory.resolved import Inventory

TIME_SCALE = 1000.0


@dataclass
class Fleet:
    root: Path  # the inventory folder
    sim: SimHandle
    inventory: Inventory

    def names(self, tier: str) -> list[str]:
        return sorted(c.name for c in self.inventory.clusters.values() if c.tier == tier)

    def machines(self, cluster: str) -> list[str]:
        return [m.name for m in self.inventory.clusters[cluster].machines]

    def request(self, **fields: Any) -> ProvisionRequest:
        return ProvisionRequest(inventory=str(self.root), time_scale=TIME_SCALE, **fields)

    def installs(self) -> dict[str, int]:
        """OS installs the simulator saw finish, per machine of the fleet."""
        return {
            m: self.sim.machine(m)["installs"]
            for cluster in self.inventory.clusters
            for m in self.machines(cluster)
        }

    def mutations_of(self, cluster: str) -> int:
        """Mutating calls the sim counted for the cluster's machines and its API."""
        counts = self.sim.stats()["mutations"]
        machines = self.machines(cluster)
        return sum(counts["bmc"].get(m, 0) + counts["hypervisor"].get(m, 0) for m in machines) + (
            counts["clusters"].get(cluster, 0)
        )


def set_rollout(root: Path, tiers: dict[str, dict[str, Any]]) -> None:
    """Change the rollout policy in the generated fleet.yaml (as a person would edit it)."""
    path = root / "fleet.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    for doc in docs:
        if doc and doc.get("kind") == "Fleet":
            for tier, policy in tiers.items():
                doc["spec"]["rollout"]["tiers"].setdefault(tier, {}).update(policy)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


@contextlib.contextmanager
def fleet(
    workdir: Path,
    *,
    core: int = 0,
    near: int = 1,
    edge: int = 3,
    time_scale: float = TIME_SCALE,
    rollout: dict[str, dict[str, Any]] | None = None,
    faults: Path | None = None,
) -> Iterator[Fleet]:
    """Generate a fleet under ``workdir`` (the current directory and WERFT_HOME/..), give
    its BMC refs credentials in the local store, and serve it with the simulator (with the
    fault rules of ``faults``, as ``werft sim serve --faults FILE`` does)."""
    sock = reserve_port()
    root = workdir / "inventory"
    endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    write_fleet(root, edge_sites=edge, core_sites=core, near_edge_sites=near, endpoint=endpoint)
    if rollout:
        set_rollout(root, rollout)
    ensure_bmc_secrets(root)
    inventory = load_inventory(root)
    artifacts = workdir / inventory.fleet.spec.artifacts.publish_dir
    artifacts.mkdir(parents=True, exist_ok=True)
    with running_sim(
        inventory,
        sock=sock,
        time_scale=time_scale,
        artifacts_dir=artifacts,
        default_credentials=None,
        faults=faults,
    ) as sim:
        yield Fleet(root, sim, inventory)


def provision(request: ProvisionRequest) -> tuple[State[Any], FleetResult]:
    """Run the provision-fleet flow in this process; its final state and result."""
    state = asyncio.run(provision_fleet(request, return_state=True))
    result = state.result(raise_on_failure=False)
    assert isinstance(result, FleetResult), result
    return state, result


def outcomes(result: FleetResult) -> dict[str, str]:
    return {c.cluster: str(c.outcome) for c in result.clusters}


def artifacts(flow_run_id: str) -> dict[str, Any]:
    """The run's artifacts by key (latest of each)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found if a.key}


def task_run_names(flow_run_id: str) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sorted(r.name for r in runs)


@contextlib.contextmanager
def lift_after_first_hit(sim: SimHandle, rule_id: str, hits: int = 1) -> Iterator[list[int]]:
    """Delete a fault rule as soon as it has hit ``hits`` times (a blip), from a watcher
    thread, while the code under test runs in this thread or on its event loop. Yields a
    list that receives the rule's hit count when it is lifted (empty: it never was)."""
    stop = threading.Event()
    lifted: list[int] = []

    def watch() -> None:
        while not stop.is_set():
            rules = {r["id"]: r for r in sim.faults()["rules"]}
            if rules[rule_id]["hits"] >= hits:
                sim.remove_fault(rule_id)
                lifted.append(rules[rule_id]["hits"])
                return
            stop.wait(0.005)  # the watcher's poll interval

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield lifted
    finally:
        stop.set()
        watcher.join(5)
