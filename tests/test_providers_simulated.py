"""The simulated-hypervisor provider against the werft simulator's hypervisor API."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.providerfixtures import free_port, vm_machine
from werft.errors import PermanentError, TransientError
from werft.inventory.model import Machine
from werft.providers import HttpOptions, ProviderPool, SimulatedProvider, provider_for
from werft.providers.simulated import domain_spec, sim_origin
from werft.secrets import SecretStore

simfixtures = pytest.importorskip(
    "tests.simfixtures", reason="the werft simulator (tests/simfixtures.py) is not available"
)

VMS = (
    "vm-fresh",
    "vm-stopped",
    "vm-crashed",
    "vm-foreign",
    "vm-installed",
    "vm-noseed",
    "vm-faulty",
    "vm-poweron",
)
FAST = HttpOptions(timeout=httpx.Timeout(5.0), action_timeout=httpx.Timeout(15.0))


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from werft.sim.machines import SimMachineSpec

    specs = [
        SimMachineSpec(name=name, kind="vm", cluster="c1", site="s1", role="worker") for name in VMS
    ]
    artifacts_dir = tmp_path_factory.mktemp("sim-artifacts")
    with simfixtures.running_sim(
        machines=specs,
        clusters={"c1": "s1"},
        artifacts_dir=artifacts_dir,
        time_scale=1000,
        **simfixtures.kube_factories(),
    ) as handle:
        handle.artifacts_dir = artifacts_dir
        yield handle


@pytest.fixture
async def provider(sim: Any) -> AsyncIterator[SimulatedProvider]:
    hypervisor = SimulatedProvider(sim.url, options=FAST)
    yield hypervisor
    await hypervisor.aclose()


def host(sim: Any) -> str:
    return f"sim+http://127.0.0.1:{sim.port}"


def seed(sim: Any, machine: str, digest: str = "0123456789ab") -> str:
    """Publish a real NoCloud seed for ``machine``; its URL."""
    data = simfixtures.seed_iso(
        simfixtures.user_data(cluster="c1", role="worker", node_name=machine)
    )
    folder: Path = sim.artifacts_dir / "seeds" / "c1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{machine}-{digest}.iso").write_bytes(data)
    return f"{sim.url}/artifacts/seeds/c1/{machine}-{digest}.iso"


def image(sim: Any, name: str = "ubuntu-24.04-server") -> str:
    return f"{sim.url}/images/{name}.iso"


def hypervisor_mutations(sim: Any, machine: str) -> int:
    return int(sim.stats()["mutations"].get("hypervisor", {}).get(machine, 0))


def phases_until(sim: Any, machine: str, phase: str) -> list[str]:
    """The phases the simulator reports for ``machine``, polled until ``phase``."""
    seen: list[str] = []

    def reached() -> bool:
        current = str(sim.machine(machine)["phase"])
        if not seen or seen[-1] != current:
            seen.append(current)
        return current == phase

    sim.wait_for(reached, timeout=10, what=f"{machine} to be {phase}")
    return seen


def test_sim_host_becomes_an_http_origin() -> None:
    assert sim_origin("sim+http://127.0.0.1:8686") == "http://127.0.0.1:8686"
    assert sim_origin("sim+https://127.0.0.1:8443/") == "https://127.0.0.1:8443"
    with pytest.raises(PermanentError, match="sim\\+http"):
        sim_origin("qemu+ssh://hv1/system")


async def test_ensure_defines_and_starts_the_domain_then_reruns_make_no_calls(
    sim: Any, provider: SimulatedProvider
) -> None:
    machine = vm_machine("vm-fresh", host(sim))
    img, sd = image(sim), seed(sim, "vm-fresh")
    assert not (await provider.observe(machine)).exists

    assert await provider.ensure(machine, img, sd) == 2  # PUT, start
    assert hypervisor_mutations(sim, "vm-fresh") == 2  # the simulator counted the same

    state = await provider.wait_powered_on(machine, timeout=5, poll_interval=0.05)
    assert state.boots(img, sd) and state.media == [img, sd]
    sim.wait_phase("vm-fresh", "running", timeout=10)  # it installed from werft's media
    domain = sim.machine("vm-fresh")
    assert domain["installed"] is not None

    assert await provider.ensure(machine, img, sd) == 0
    assert hypervisor_mutations(sim, "vm-fresh") == 2


async def test_defined_but_stopped_domain_is_only_started(
    sim: Any, provider: SimulatedProvider
) -> None:
    machine = vm_machine("vm-stopped", host(sim))
    img, sd = image(sim), seed(sim, "vm-stopped")
    await provider.ensure(machine, img, sd)
    assert await provider.power_off(machine) == 1
    assert await provider.power_off(machine) == 0
    assert not (await provider.observe(machine)).powered_on

    assert await provider.ensure(machine, img, sd) == 1  # start only: the spec is unchanged


async def test_domain_defined_but_never_started_is_started_and_installs(
    sim: Any, provider: SimulatedProvider
) -> None:
    # werft defined the domain, then stopped before starting it. Reproduced by hand.
    machine = vm_machine("vm-crashed", host(sim))
    assert machine.vm is not None
    img, sd = image(sim), seed(sim, "vm-crashed")
    async with httpx.AsyncClient(base_url=sim.url) as client:
        spec = domain_spec(machine, machine.vm, img, sd)
        response = await client.put("/hypervisor/v1/domains/vm-crashed", json=spec, timeout=10)
        assert response.status_code == 201, response.text
    before = hypervisor_mutations(sim, "vm-crashed")

    assert await provider.ensure(machine, img, sd) == 1  # start, nothing else

    installed = sim.wait_for(
        lambda: sim.machine("vm-crashed")["installed"], timeout=10, what="vm-crashed installed"
    )
    assert installed["nodeName"] == "vm-crashed"
    # A domain boots its disk once installed: release only ejects the media (the seed
    # carries the cluster's keys), once.
    assert await provider.release(machine) == 1
    assert await provider.release(machine) == 0
    assert hypervisor_mutations(sim, "vm-crashed") == before + 2
    state = await provider.observe(machine)
    assert state.powered_on and state.media == []
    assert sim.machine("vm-crashed")["phase"] == "running"


async def test_running_domain_with_foreign_media_is_stopped_redefined_and_started(
    sim: Any, provider: SimulatedProvider
) -> None:
    machine = vm_machine("vm-foreign", host(sim))
    await provider.ensure(machine, image(sim, "some-other-os"), image(sim, "not-a-seed"))
    img, sd = image(sim), seed(sim, "vm-foreign")

    assert await provider.ensure(machine, img, sd) == 3  # stop, PUT, start
    state = await provider.observe(machine)
    assert state.powered_on and state.media == [img, sd]


async def test_running_domain_with_an_older_seed_of_its_own_is_left_alone(
    sim: Any, provider: SimulatedProvider
) -> None:
    machine = vm_machine("vm-installed", host(sim))
    img, old = image(sim), seed(sim, "vm-installed", "aaaaaaaaaaaa")
    await provider.ensure(machine, img, old)
    new = seed(sim, "vm-installed", "bbbbbbbbbbbb")
    before = hypervisor_mutations(sim, "vm-installed")

    assert await provider.ensure(machine, img, new) == 0
    assert hypervisor_mutations(sim, "vm-installed") == before
    state = await provider.observe(machine, image_url=img, seed_url=new)
    assert state.seed_outdated and not state.image_outdated


async def test_seed_the_hypervisor_cannot_fetch_is_permanent(
    sim: Any, provider: SimulatedProvider
) -> None:
    machine = vm_machine("vm-noseed", host(sim))
    missing = f"{sim.url}/artifacts/seeds/c1/vm-noseed-ffffffffffff.iso"
    sent = provider.mutations_sent(machine)
    with pytest.raises(PermanentError, match=r"machine vm-noseed \(hypervisor .*HTTP 400") as e:
        await provider.ensure(machine, image(sim), missing)
    assert "could not fetch image" in str(e.value) and missing in str(e.value)
    assert e.value.reason == "MediaUnavailable"
    # The refused PUT was sent: it counts, although ensure() returned nothing.
    assert provider.mutations_sent(machine) == sent + 1 == hypervisor_mutations(sim, "vm-noseed")


async def test_power_on_starts_an_installed_domain_from_its_disk(
    sim: Any, provider: SimulatedProvider
) -> None:
    machine = vm_machine("vm-poweron", host(sim))
    img, sd = image(sim), seed(sim, "vm-poweron")
    await provider.ensure(machine, img, sd)
    sim.wait_phase("vm-poweron", "running", timeout=10)
    assert await provider.power_on(machine) == 0  # on already
    await provider.power_off(machine)  # the host lost power
    before = hypervisor_mutations(sim, "vm-poweron")

    assert await provider.power_on(machine) == 1  # start; the definition stays as it is

    assert hypervisor_mutations(sim, "vm-poweron") == before + 1
    assert provider.mutations_sent(machine) == before + 1  # this provider sent every one
    assert "installing" not in phases_until(sim, "vm-poweron", "running")
    state = await provider.observe(machine)
    assert state.powered_on and state.media == [img, sd] and not state.cd_override


async def test_power_on_of_a_domain_never_defined_is_system_not_found(
    sim: Any, provider: SimulatedProvider
) -> None:
    machine = vm_machine("vm-never-defined", host(sim))
    with pytest.raises(PermanentError, match="never defined") as caught:
        await provider.power_on(machine)
    assert caught.value.reason == "SystemNotFound"
    assert provider.mutations_sent(machine) == 0


@pytest.mark.parametrize(
    ("rule", "error", "reason"),
    [
        ({"kind": "error", "status": 503}, TransientError, "ProviderError"),
        ({"kind": "offline"}, TransientError, "Unreachable"),
        ({"kind": "timeout", "seconds": 5}, TransientError, "Unreachable"),
    ],
)
async def test_simulator_faults_are_classified(
    sim: Any, rule: dict[str, Any], error: type[Exception], reason: str
) -> None:
    machine = vm_machine("vm-faulty", host(sim))
    rule_id = sim.add_fault(machine="vm-faulty", **rule)["id"]
    options = HttpOptions(timeout=httpx.Timeout(0.5), action_timeout=httpx.Timeout(0.5))
    hypervisor = SimulatedProvider(sim.url, options=options)
    try:
        with pytest.raises(error, match="machine vm-faulty") as caught:
            await hypervisor.observe(machine)
        assert caught.value.reason == reason  # type: ignore[attr-defined]
    finally:
        sim.remove_fault(rule_id)
        await hypervisor.aclose()


async def test_unreachable_hypervisor_is_transient() -> None:
    machine = vm_machine("vm-far", f"sim+http://127.0.0.1:{free_port()}")
    provider = provider_for(machine, secrets=SecretStore(Path("/nonexistent")))
    try:
        with pytest.raises(TransientError, match="cannot connect"):
            await provider.observe(machine)
    finally:
        await provider.aclose()


async def test_provider_choice_follows_the_inventory(tmp_path: Path) -> None:
    def bare_metal(name: str) -> Machine:
        return Machine.model_validate(
            {
                "name": name,
                "role": "worker",
                "bootMACAddress": "52:54:00:00:00:0a",
                "bmc": {
                    "address": f"redfish+http://127.0.0.1:8686/bmc/{name}/redfish/v1/Systems/1",
                    "credentialsRef": "bmc-x",
                },
            }
        )

    machines = [bare_metal("a"), bare_metal("b"), vm_machine("c", "sim+http://127.0.0.1:8686")]
    kinds = ["redfish", "redfish", "simulated"]
    if importlib.util.find_spec("libvirt") is not None:
        machines.append(vm_machine("d", "test:///default"))
        kinds.append("libvirt")
    async with ProviderPool(SecretStore(tmp_path)) as pool:
        assert [pool.get(m).kind for m in machines] == kinds
        # Every BMC behind one origin shares one provider (one connection pool).
        assert pool.get(machines[0]) is pool.get(machines[1])
        assert len(pool) == len(kinds) - 1
