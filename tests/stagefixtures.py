"""A small generated fleet served by the real simulator, and a StageContext for it.

    from tests.stagefixtures import stage_fleet_fixture  # noqa: F401 (the fixture)

    async def test_x(stage_fleet: StageFleet) -> None:
        cluster = stage_fleet.cluster("ne-muc1-a")          # bare metal, 2 machines
        condition = await ensure_infrastructure(cluster, stage_fleet.ctx)

The fleet (``write_fleet(edge_sites=2, core_sites=1, near_edge_sites=1)``) has bare-metal
clusters fra1-core-a/c (5 machines), ne-muc1-a (2), edge-00001/2 (1, k3s) and the VM
cluster fra1-core-b (3 machines on the simulator's hypervisor). BMC credentials are
generated into the test's own WERFT_HOME, which the simulator reads too.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest

from tests.simfixtures import SimHandle, reserve_port, running_sim
from werft.conditions import STAGE_ORDER, Condition
from werft.inventory.generate import write_fleet
from werft.inventory.load import load_inventory
from werft.inventory.model import Machine
from werft.inventory.resolved import Inventory, ResolvedCluster
from werft.providers import parse_bmc_address
from werft.secrets import SecretStore, basic_auth
from werft.stages import STAGES, StageContext, StageTimeouts

TIME_SCALE = 2000.0
# Generous: werft's own work is not scaled. Tests of deadlines pass shorter ones.
TIMEOUTS = StageTimeouts(
    infrastructure=20.0, bootstrap=20.0, addons=20.0, verify=20.0, poll_interval=0.02, http=5.0
)
BARE_METAL = "ne-muc1-a"
VMS = "fra1-core-b"
EDGE = "edge-00001"  # bare metal, one k3s node, 17 add-on objects: the cheapest cluster


@dataclass
class StageFleet:
    root: Path
    home: Path
    sim: SimHandle
    inventory: Inventory
    ctx: StageContext
    others: list[StageContext] = field(default_factory=list)

    def cluster(self, name: str) -> ResolvedCluster:
        return self.inventory.clusters[name]

    def with_timeouts(self, **changes: float) -> StageContext:
        """Another context on the same fleet (same providers) with some deadlines changed."""
        return self.with_inventory(self.inventory, **changes)

    def with_inventory(self, inventory: Inventory, **timeouts: float) -> StageContext:
        """Another context on the same fleet (same providers and secrets) for an edited
        inventory, with some deadlines changed."""
        ctx = StageContext(
            inventory=inventory,
            secrets=self.ctx.secrets,
            artifacts_dir=self.ctx.artifacts_dir,
            timeouts=replace(self.ctx.timeouts, **timeouts),
            providers=self.ctx.providers,
        )
        self.others.append(ctx)
        return ctx

    def mutations(self, cluster: str | None = None) -> int:
        """Mutating calls counted by the sim (BMCs, hypervisor, cluster APIs)."""
        counts = self.sim.stats()["mutations"]
        if cluster is None:
            return sum(sum(per.values()) for per in counts.values())
        machines = [m.name for m in self.cluster(cluster).machines]
        return counts["clusters"].get(cluster, 0) + sum(
            counts["bmc"].get(m, 0) + counts["hypervisor"].get(m, 0) for m in machines
        )

    def phases_until(self, machine: str, phase: str, *, timeout: float = 10.0) -> list[str]:
        """The phases the simulator reports for ``machine``, polled (with a deadline) until
        it reaches ``phase``: e.g. whether it went through "installing" on its way."""
        seen: list[str] = []

        def reached() -> bool:
            current = str(self.sim.machine(machine)["phase"])
            if not seen or seen[-1] != current:
                seen.append(current)
            return current == phase

        self.sim.wait_for(reached, timeout=timeout, what=f"{machine} to be {phase}")
        return seen

    def set_boot_override(self, machine: Machine, target: str, enabled: str) -> None:
        """Set a bare-metal machine's boot override behind werft's back, over its BMC (as
        a BMC that keeps every override Continuous leaves it after the install)."""
        assert machine.bmc is not None
        address = parse_bmc_address(machine.bmc.address)
        auth = basic_auth(machine.bmc.credentials_ref, self.ctx.secrets)
        boot = {"BootSourceOverrideTarget": target, "BootSourceOverrideEnabled": enabled}
        response = httpx.patch(
            f"{address.origin}{address.root}/Systems/{address.system_id}",
            json={"Boot": boot},
            auth=auth,
            timeout=5.0,
            trust_env=False,
        )
        assert response.status_code == 204, response.text


async def run_all(cluster: ResolvedCluster, ctx: StageContext) -> list[Condition]:
    """Every stage in order, stopping at the first that is not True."""
    results = []
    for stage in STAGE_ORDER:
        condition = await STAGES[stage](cluster, ctx)
        results.append(condition)
        if not condition.ok:
            break
    return results


@pytest.fixture(name="stage_fleet")
async def stage_fleet_fixture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StageFleet]:
    async with stage_fleet_of(tmp_path, monkeypatch) as fleet:
        yield fleet


@contextlib.asynccontextmanager
async def stage_fleet_of(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    edge_sites: int = 2,
    core_sites: int = 1,
    near_edge_sites: int = 1,
) -> AsyncIterator[StageFleet]:
    """The fleet of ``stage_fleet``, of another size."""
    home = tmp_path / "home"
    # The simulator resolves the BMC credentialsRefs from WERFT_HOME, as werft does.
    monkeypatch.setenv("WERFT_HOME", str(home))
    sock = reserve_port()
    root = tmp_path / "inventory"
    write_fleet(
        root,
        edge_sites=edge_sites,
        core_sites=core_sites,
        near_edge_sites=near_edge_sites,
        endpoint=f"http://127.0.0.1:{sock.getsockname()[1]}",
    )
    inventory = load_inventory(root)
    store = SecretStore(home / "secrets")
    for cluster in inventory.clusters.values():
        for machine in cluster.machines:
            if machine.bmc is not None and store.get(machine.bmc.credentials_ref) is None:
                store.put(machine.bmc.credentials_ref, f"admin:{secrets.token_urlsafe(12)}")
    artifacts = tmp_path / "artifacts"
    with running_sim(
        inventory,
        sock=sock,
        time_scale=TIME_SCALE,
        artifacts_dir=artifacts,
        default_credentials=None,
    ) as sim:
        ctx = StageContext.for_inventory(
            inventory, werft_home=home, timeouts=TIMEOUTS, artifacts_dir=artifacts
        )
        fleet = StageFleet(root, home, sim, inventory, ctx)
        try:
            yield fleet
        finally:
            for other in fleet.others:
                await other.aclose()
            await ctx.aclose()
