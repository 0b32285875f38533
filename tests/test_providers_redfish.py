"""The Redfish provider against sushy-tools and the werft simulator (the same tests on
both), plus small loopback BMCs for the standard shapes and failures neither produces."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.providerfixtures import (
    LoopbackHttp,
    Reply,
    Seen,
    SushyEmulator,
    artifact_server,
    bmc_machine,
    free_port,
    minimal_redfish,
    seed_url,
    self_signed_tls,
    start_sushy,
    stop_sushy,
)
from werft.errors import PermanentError, TransientError
from werft.inventory.model import Machine
from werft.providers import (
    HttpOptions,
    Provider,
    ProviderPool,
    RedfishProvider,
    parse_bmc_address,
    request_deadline,
)
from werft.providers.redfish import CONNECTION_POOLS, BmcAddress
from werft.retry import RetryPolicy
from werft.secrets import SecretStore
from werft.statestore import FileBackend

try:
    from tests import simfixtures
except ImportError:  # the simulator is built in parallel; sushy-tools covers until then
    simfixtures = None  # type: ignore[assignment]

USER, PASSWORD = "admin", "s3cret-Pa55word"
SYSTEMS = {
    "node-fresh": "11111111-0000-0000-0000-000000000001",
    "node-stale": "11111111-0000-0000-0000-000000000002",
    "node-installed": "11111111-0000-0000-0000-000000000003",
    "node-creds": "11111111-0000-0000-0000-000000000004",
    "node-alias": "11111111-0000-0000-0000-000000000005",
    "node-release": "11111111-0000-0000-0000-000000000006",
    "node-poweron": "11111111-0000-0000-0000-000000000007",
}
# Machines in a previous life: powered on.
RUNNING = ("node-stale", "node-installed", "node-release")
SIM_ONLY = (
    "node-faulty", "node-crashed", "node-nomedia", "node-expand", "node-noexpand", "node-poll"
)
BATCH = [f"batch-{i:02d}" for i in range(12)]  # simulator only
TWO_CDS = {
    "Cd": {"Name": "Virtual CD 1", "MediaTypes": ["CD", "DVD"]},
    "Cd2": {"Name": "Virtual CD 2", "MediaTypes": ["CD", "DVD"]},
}
FAST = HttpOptions(
    timeout=httpx.Timeout(5.0),
    action_timeout=httpx.Timeout(15.0),
    retry=RetryPolicy(attempts=3, base=0.01, cap=0.05, max_retry_after=0.05),
)


@pytest.fixture(scope="module")
def artifacts() -> Iterator[str]:
    with artifact_server() as base:
        yield base


@pytest.fixture(scope="module")
def sushy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SushyEmulator]:
    emulator = start_sushy(
        tmp_path_factory.mktemp("sushy"),
        SYSTEMS,
        user=USER,
        password=PASSWORD,
        devices=TWO_CDS,
        power=dict.fromkeys(RUNNING, "On"),
    )
    yield emulator
    stop_sushy(emulator)


@pytest.fixture
def secrets(tmp_path: Path) -> SecretStore:
    store = SecretStore(tmp_path / "secrets")
    store.put("bmc-test", f"{USER}:{PASSWORD}")
    store.put("bmc-wrong", f"{USER}:not-the-Pa55word-42")
    return store


@pytest.fixture
async def provider(sushy: SushyEmulator, secrets: SecretStore) -> AsyncIterator[RedfishProvider]:
    redfish = RedfishProvider(sushy.origin, secrets=secrets, options=FAST)
    yield redfish
    await redfish.aclose()


# --- the two BMC emulators behind one face ---------------------------------------------------


@dataclass
class Backend:
    """A BMC emulator as the shared tests see it."""

    kind: str
    origin: str
    address: Callable[[str], str]
    media_paths: Callable[[str], list[str]]  # VirtualMedia devices of a machine, in order
    image_base: str
    make_seed: Callable[[str, str], str]  # (machine, digest) -> URL of a published seed
    power_on: Callable[[str], None]  # power a machine on behind werft's back, past POST
    # The boot override once the machine has booted: sushy-tools keeps "Continuous"
    # (it ignores Once); the simulator consumes a Once override at boot, like hardware.
    override_after_boot: str | None
    mutations: Callable[[str], int] | None = None  # the emulator's own count, if it keeps one
    # Wait until the machine booted the installer and installed (where observable).
    wait_installed: Callable[[str], None] = lambda name: None

    def machine(self, name: str, ref: str = "bmc-test") -> Machine:
        return bmc_machine(name, self.address(name), ref=ref)

    def image(self, name: str = "ubuntu-24.04-server") -> str:
        return f"{self.image_base}/{name}.iso"

    async def insert_raw(self, machine: str, device: int, url: str) -> None:
        """Put media in a device behind werft's back (a machine's previous life)."""
        async with httpx.AsyncClient(base_url=self.origin, auth=(USER, PASSWORD)) as client:
            path = self.media_paths(machine)[device]
            response = await client.post(
                f"{path}/Actions/VirtualMedia.InsertMedia", json={"Image": url}, timeout=10
            )
            assert response.status_code == 204, response.text

    async def set_boot_override(self, machine: str, target: str, enabled: str) -> None:
        """Set the boot override behind werft's back."""
        system = parse_bmc_address(self.address(machine))
        boot = {"BootSourceOverrideTarget": target, "BootSourceOverrideEnabled": enabled}
        async with httpx.AsyncClient(base_url=self.origin, auth=(USER, PASSWORD)) as client:
            response = await client.patch(
                f"{system.root}/Systems/{system.system_id}", json={"Boot": boot}, timeout=10
            )
            assert response.status_code == 204, response.text


def sushy_backend(sushy: SushyEmulator, artifacts: str) -> Backend:
    def media_paths(name: str) -> list[str]:
        return [f"/redfish/v1/Systems/{SYSTEMS[name]}/VirtualMedia/{d}" for d in TWO_CDS]

    def power_on(name: str) -> None:
        # The fake driver applies power changes 1-11 s late: these start powered on.
        assert name in RUNNING

    return Backend(
        kind="sushy",
        origin=sushy.origin,
        address=sushy.address,
        media_paths=media_paths,
        image_base=f"{artifacts}/images",
        make_seed=lambda machine, digest: seed_url(artifacts, "c1", machine, digest),
        power_on=power_on,
        override_after_boot="Cd/Continuous",
    )


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if simfixtures is None:
        pytest.skip("the werft simulator (tests/simfixtures.py) is not available")
    from werft.sim.machines import SimMachineSpec

    specs = [
        SimMachineSpec(
            name=name,
            kind="bmc",
            cluster="c1",
            site="s1",
            role="control-plane",
            credentials=(USER, PASSWORD),
        )
        for name in [*SYSTEMS, *SIM_ONLY, *BATCH]
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


def sim_backend(sim: Any) -> Backend:
    def address(name: str) -> str:
        return f"redfish+http://127.0.0.1:{sim.port}/bmc/{name}/redfish/v1/Systems/1"

    def make_seed(machine: str, digest: str) -> str:
        # A real NoCloud seed, so the simulated machine really installs from it.
        data = simfixtures.seed_iso(
            simfixtures.user_data(cluster="c1", role="control-plane", node_name=machine)
        )
        folder = sim.artifacts_dir / "seeds" / "c1"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{machine}-{digest}.iso").write_bytes(data)
        return f"{sim.url}/artifacts/seeds/c1/{machine}-{digest}.iso"

    def power_on(name: str) -> None:
        reset = f"/bmc/{name}/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
        response = httpx.post(
            f"{sim.url}{reset}", json={"ResetType": "On"}, auth=(USER, PASSWORD), timeout=10
        )
        assert response.status_code == 204, response.text
        # A running machine, as the tests mean it: past POST. A Once override werft sets
        # during POST is consumed by that very boot, and werft, reading it gone, takes the
        # BMC for one that drops Once (a sixth mutation: Cd/Continuous).
        sim.wait_for(lambda: sim.machine(name)["phase"] != "post", what=f"{name} past POST")

    def mutations(name: str) -> int:
        return int(sim.stats()["mutations"].get("bmc", {}).get(name, 0))

    return Backend(
        kind="sim",
        origin=sim.url,
        address=address,
        media_paths=lambda name: [
            f"/bmc/{name}/redfish/v1/Managers/1/VirtualMedia/{d}" for d in ("CD1", "CD2")
        ],
        image_base=f"{sim.url}/images",
        make_seed=make_seed,
        power_on=power_on,
        override_after_boot=None,
        mutations=mutations,
        wait_installed=lambda name: sim.wait_phase(name, "running", timeout=10),
    )


@pytest.fixture(params=["sushy", "sim"])
def backend(request: pytest.FixtureRequest, artifacts: str) -> Backend:
    if request.param == "sushy":
        return sushy_backend(request.getfixturevalue("sushy"), artifacts)
    return sim_backend(request.getfixturevalue("sim"))


@pytest.fixture
async def pool(secrets: SecretStore) -> AsyncIterator[ProviderPool]:
    async with ProviderPool(secrets, options=FAST) as providers:
        yield providers


# --- addresses ---------------------------------------------------------------------------


def test_bmc_address_forms_are_taken_apart() -> None:
    a = parse_bmc_address("redfish+http://127.0.0.1:8686/bmc/m1/redfish/v1/Systems/1")
    assert (a.origin, a.root, a.prefix, a.system_id) == (
        "http://127.0.0.1:8686",
        "/bmc/m1/redfish/v1",
        "/bmc/m1",
        "1",
    )
    assert parse_bmc_address("redfish://10.0.0.5/redfish/v1/Systems/abc").origin == (
        "https://10.0.0.5"
    )
    assert parse_bmc_address("redfish+https://h:8443/redfish/v1/Systems/x/").system_id == "x"


@pytest.mark.parametrize(
    "address",
    [
        "http://127.0.0.1/redfish/v1/Systems/1",
        "redfish+http://127.0.0.1/redfish/v1/Managers/1",
        "redfish+http://127.0.0.1/somewhere/else",
    ],
)
def test_unsupported_bmc_addresses_are_permanent(address: str) -> None:
    with pytest.raises(PermanentError, match="redfish"):
        parse_bmc_address(address)


def test_credentials_in_a_bmc_address_are_refused_and_not_echoed() -> None:
    with pytest.raises(PermanentError) as caught:
        parse_bmc_address("redfish+http://root:calvin@127.0.0.1/redfish/v1/Systems/1")
    assert "calvin" not in str(caught.value)
    assert "credentialsRef" in str(caught.value)


def _bare_metal(name: str, address: str) -> Machine:
    return Machine(
        name=name,
        role="worker",
        bmc={"address": address, "credentialsRef": "bmc"},
        boot_mac_address=f"52:54:00:00:00:{len(name):02x}",
    )


def _address(machine: Machine) -> BmcAddress:
    assert machine.bmc is not None
    return parse_bmc_address(machine.bmc.address)


async def test_a_providers_connections_are_split_by_bmc(tmp_path: Path) -> None:
    """httpcore looks at every connection of a pool on every request: the BMCs behind one
    gateway origin (the simulator's) get pools of their own, up to CONNECTION_POOLS, and
    one BMC's systems (blades, sushy-tools' domains) always the same pool."""
    gated = [
        _bare_metal(f"edge-{i}", f"redfish+http://10.0.0.8:8000/bmc/edge-{i}/redfish/v1/Systems/1")
        for i in range(64)
    ]
    blades = [
        _bare_metal(f"blade-{i}", f"redfish+http://10.0.0.8:8000/redfish/v1/Systems/{i}")
        for i in range(3)
    ]
    async with ProviderPool(SecretStore(tmp_path / "secrets")) as providers:
        provider = providers.get(gated[0])
        assert isinstance(provider, RedfishProvider)
        assert all(providers.get(m) is provider for m in gated + blades)
        pools = {id(provider.client_for(_address(m))) for m in gated}
        assert len(pools) == CONNECTION_POOLS
        assert len({id(provider.client_for(_address(m))) for m in blades}) == 1
        assert provider.client_for(_address(gated[5])) is provider.client_for(_address(gated[5]))


def _client_sockets(ports: list[int]) -> int:
    """Open TCP connections to any of ``ports`` (this test's own, on loopback), counted at
    the connecting end."""
    wanted = {f"{port:04X}" for port in ports}
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(
        1
        for line in lines
        if (fields := line.split())[3] == "01"  # ESTABLISHED
        and fields[2].split(":")[1] in wanted  # the remote end is one of the BMCs
    )


async def test_a_pool_closes_providers_nobody_uses_beyond_its_limit(
    secrets: SecretStore,
) -> None:
    """On a real fleet every BMC is an origin of its own: a run that kept a provider for
    each BMC it ever asked would hold an idle socket (a file descriptor) per BMC, 10,000
    on a large rollout. Five BMCs on five origins, room for two idle providers."""
    if simfixtures is None:
        pytest.skip("the werft simulator (tests/simfixtures.py) is not available")
    from werft.sim.machines import SimMachineSpec

    names = [f"origin-{i}" for i in range(5)]
    specs = [
        SimMachineSpec(name=name, kind="bmc", cluster="c1", site="s1", role="control-plane",
                       credentials=(USER, PASSWORD))
        for name in names
    ]
    # The simulator's own port has its admin client's connection: the BMCs get others.
    sockets = [simfixtures.reserve_port() for _ in names]
    ports = [int(sock.getsockname()[1]) for sock in sockets]
    machines = [
        bmc_machine(name, f"redfish+http://127.0.0.1:{port}/bmc/{name}/redfish/v1/Systems/1")
        for name, port in zip(names, ports, strict=True)
    ]
    with simfixtures.running_sim(machines=specs, clusters={"c1": "s1"}, more_sockets=sockets):
        async with ProviderPool(secrets, options=FAST, idle_limit=2) as pool:
            async with pool.using(machines[0]) as held:
                for machine in machines[1:]:
                    async with pool.using(machine) as provider:
                        assert (await provider.observe(machine)).exists
                assert len(pool) == 3  # the two most recent idle ones, and the one in use
                # In use all along, so never closed under its holder.
                assert (await held.observe(machines[0])).exists
            assert len(pool) == 2
            # The least recently used went: machine 0 was in use last, 3 was not.
            assert _client_sockets(ports) == 2
            assert _client_sockets([ports[0], ports[4]]) == 2
        assert _client_sockets(ports) == 0


# --- the same behaviour on sushy-tools and on the simulator ---------------------------------


async def test_discovery_follows_links_to_the_system_and_its_media(
    backend: Backend, pool: ProviderPool
) -> None:
    machine = backend.machine("node-fresh")
    state = await pool.get(machine).observe(machine)
    assert state.exists and state.provider == "redfish"
    system = parse_bmc_address(machine.bmc.address)  # type: ignore[union-attr]
    assert state.details["system"] == f"{system.root}/Systems/{system.system_id}"


@pytest.mark.parametrize("expands", [True, False], ids=["expanding-bmc", "refusing-bmc"])
async def test_the_media_collection_comes_with_its_devices_where_the_bmc_inlines_them(
    sim: Any, secrets: SecretStore, expands: bool
) -> None:
    """One read for all devices where the BMC serves ``$expand``; where it answers 501 (the
    standard's answer to an unsupported query), one wasted read, then never asked again."""
    backend = sim_backend(sim)
    machine = backend.machine("node-expand" if expands else "node-noexpand")

    def requests() -> int:
        return int(sim.stats()["requestsByTarget"]["bmc"].get(machine.name, 0))

    sim.app.redfish.expand_query = expands
    try:
        async with ProviderPool(secrets, options=FAST) as providers:
            provider = providers.get(machine)
            counts = []
            for _ in range(2):
                before = requests()
                state = await provider.observe(machine)
                counts.append(requests() - before)
                assert state.exists and state.media == []
    finally:
        sim.app.redfish.expand_query = True

    # The system, then the collection with its two devices; or, refused: the system, the
    # refused expansion, the collection, each device -- and then the system and devices.
    assert counts == ([2, 2] if expands else [5, 3])


class _ReadsSeen(FileBackend):
    """A file store that notes every name read from it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def get(self, name: str) -> bytes | None:
        self.reads.append(name)
        return super().get(name)


async def test_a_power_poll_reads_nothing_it_does_not_use_from_the_store(
    sim: Any, tmp_path: Path
) -> None:
    """Power polls and reach probes run every few seconds per machine; on a SQL store
    each read of werft's records is a query. A poll reads none of the install's."""
    backend = sim_backend(sim)
    seen = _ReadsSeen(tmp_path / "store")
    store = SecretStore(tmp_path / "store", backend=seen)
    store.put("bmc-test", f"{USER}:{PASSWORD}")
    machine = backend.machine("node-poll")
    async with ProviderPool(store, options=FAST) as providers:
        provider = providers.get(machine)
        await provider.observe(machine)
        assert "machines/node-poll/joined" in seen.reads  # an observe looks at the record
        seen.reads.clear()
        state = await provider.observe_power(machine)

    assert state.exists and state.joined_seed is None
    assert not [name for name in seen.reads if name.endswith("/joined")]


async def test_ensure_from_off_inserts_media_sets_override_and_powers_on(
    backend: Backend, pool: ProviderPool
) -> None:
    machine = backend.machine("node-fresh")
    provider = pool.get(machine)
    image, seed = backend.image(), backend.make_seed("node-fresh", "0123456789ab")
    before = await provider.observe(machine)
    assert not before.powered_on and before.media == []

    mutations = await provider.ensure(machine, image, seed)

    assert mutations == 4  # insert x2, boot override, power on
    if backend.mutations is not None:
        assert backend.mutations("node-fresh") == 4  # the emulator counted the same
    # sushy-tools' fake driver applies power changes 1-11 s late, as hardware is slow.
    on = await provider.wait_powered_on(machine, timeout=20, poll_interval=0.1)
    assert on.powered_on and on.media == []  # a power poll reads no media
    assert (await provider.observe(machine)).media == [image, seed]
    backend.wait_installed("node-fresh")  # the simulator installs from werft's media
    booted = await provider.observe(machine)
    assert booted.boots(image, seed)
    assert booted.boot_override == backend.override_after_boot

    assert await provider.ensure(machine, image, seed) == 0
    if backend.mutations is not None:
        assert backend.mutations("node-fresh") == 4


async def test_stale_media_is_ejected_and_a_running_machine_restarted(
    backend: Backend, pool: ProviderPool
) -> None:
    machine = backend.machine("node-stale")
    stale = backend.image("some-other-os")
    await backend.insert_raw("node-stale", 0, stale)
    backend.power_on("node-stale")
    provider = pool.get(machine)
    assert (await provider.observe(machine)).media == [stale]

    image, seed = backend.image(), backend.make_seed("node-stale", "0123456789ab")
    mutations = await provider.ensure(machine, image, seed)

    assert mutations == 5  # eject, insert x2, boot override, ForceRestart (it was on)
    state = await provider.observe(machine)
    assert state.media == [image, seed]


async def test_running_machine_with_an_older_seed_of_its_own_is_not_reimaged(
    backend: Backend, pool: ProviderPool
) -> None:
    machine = backend.machine("node-installed")
    image = backend.image()
    old_seed = backend.make_seed("node-installed", "aaaaaaaaaaaa")
    await backend.insert_raw("node-installed", 0, image)
    await backend.insert_raw("node-installed", 1, old_seed)
    backend.power_on("node-installed")
    new_seed = backend.make_seed("node-installed", "bbbbbbbbbbbb")
    provider = pool.get(machine)

    assert await provider.ensure(machine, image, new_seed) == 0

    state = await provider.observe(machine, image_url=image, seed_url=new_seed)
    assert state.seed_outdated and not state.image_outdated
    assert state.media == [image, old_seed]


async def test_release_clears_a_lingering_cd_override_and_ejects_the_media(
    backend: Backend, pool: ProviderPool
) -> None:
    # A machine werft installed through a BMC that ignores Once: it runs with werft's
    # media and a Cd/Continuous override that would reinstall it at every reboot.
    name = "node-release"
    image, seed = backend.image(), backend.make_seed(name, "0123456789ab")
    backend.power_on(name)
    await backend.insert_raw(name, 0, image)
    await backend.insert_raw(name, 1, seed)
    await backend.set_boot_override(name, "Cd", "Continuous")
    machine = backend.machine(name)
    provider = pool.get(machine)
    assert (await provider.observe(machine)).boot_override == "Cd/Continuous"
    before = backend.mutations(name) if backend.mutations is not None else 0

    made = await provider.release(machine)

    state = await provider.observe(machine)
    # Two ejects (the seed carries the cluster's keys) after the override change.
    if backend.kind == "sushy":
        # sushy-tools refuses to disable an override (400: it wants a target), so werft
        # points the override at the disk instead.
        assert (made, state.boot_override) == (2 + 2, "Hdd/Continuous")
    else:
        assert (made, state.boot_override) == (1 + 2, None)
    assert state.powered_on and state.media == []
    # werft remembers that it joined, from the seed it held: the evidence that it is
    # installed, now that the media are gone -- so ensure leaves it alone.
    assert state.joined_seed == seed and state.released(seed)
    assert await provider.release(machine) == 0
    assert await provider.ensure(machine, image, seed) == 0
    if backend.mutations is not None:
        assert backend.mutations(name) == before + made


async def test_power_on_boots_an_installed_machine_from_its_disk(
    backend: Backend, pool: ProviderPool, request: pytest.FixtureRequest
) -> None:
    # Installed through a BMC that keeps its overrides, then it lost power before werft
    # released it: powered on as it is, it would boot the installer and be re-imaged.
    name = "node-poweron"
    image, seed = backend.image(), backend.make_seed(name, "0123456789ab")
    await backend.insert_raw(name, 0, image)
    await backend.insert_raw(name, 1, seed)
    await backend.set_boot_override(name, "Cd", "Continuous")
    machine = backend.machine(name)
    provider = pool.get(machine)
    state = await provider.observe(machine)
    assert not state.powered_on and state.cd_override
    before = backend.mutations(name) if backend.mutations is not None else 0

    made = await provider.power_on(machine)

    state = await provider.observe(machine)
    if backend.kind == "sushy":
        # Disable refused (400), override to Hdd, power on.
        assert (made, state.boot_override) == (3, "Hdd/Continuous")
    else:
        assert (made, state.boot_override) == (2, None)  # disable the override, power on
    assert not state.cd_override
    assert state.media == [image, seed]  # the media are left alone
    assert provider.mutations_sent(machine) == made
    if backend.mutations is not None:
        assert backend.mutations(name) == before + made
    if backend.kind == "sim":
        sim = request.getfixturevalue("sim")
        # It booted its disk -- empty here, the simulator never installed it -- and never
        # the installer on its CD.
        idle = sim.wait_phase(name, "idle", timeout=10)
        assert idle["reason"] == "no operating system on the disk"
        assert await provider.power_on(machine) == 0  # on already: nothing to do
        assert backend.mutations(name) == before + made


async def test_refused_credentials_are_permanent_and_never_show_the_password(
    backend: Backend, pool: ProviderPool
) -> None:
    machine = backend.machine("node-creds", ref="bmc-wrong")
    with pytest.raises(PermanentError) as caught:
        await pool.get(machine).observe(machine)
    message = str(caught.value)
    assert "refused the credentials for bmc-wrong" in message
    assert "node-creds" in message and backend.origin.split("://")[1] in message
    assert "not-the-Pa55word-42" not in message and PASSWORD not in message
    assert caught.value.__cause__ is None  # no request (with its auth header) rides along
    assert caught.value.reason == "BMCUnauthorized"


async def test_unknown_system_is_permanent(backend: Backend, pool: ProviderPool) -> None:
    address = backend.address("node-fresh").rsplit("/", 1)[0] + "/no-such-system"
    machine = bmc_machine("node-fresh", address)
    with pytest.raises(PermanentError, match="unknown system 'no-such-system'") as caught:
        await pool.get(machine).observe(machine)
    assert caught.value.reason == "SystemNotFound"


async def test_missing_secret_is_permanent_and_names_the_machine(
    backend: Backend, pool: ProviderPool
) -> None:
    machine = backend.machine("node-fresh", ref="bmc-nowhere")
    with pytest.raises(PermanentError, match=r"node-fresh.*bmc-nowhere") as caught:
        await pool.get(machine).observe(machine)
    assert caught.value.reason == "CredentialsMissing"


@pytest.mark.parametrize(
    ("rule", "error", "text", "reason"),
    [
        ({"kind": "error", "status": 503}, TransientError, "HTTP 503", "ProviderError"),
        (
            {"kind": "error", "status": 500},
            TransientError,
            "HTTP 500: injected fault",
            "ProviderError",
        ),
        ({"kind": "offline"}, TransientError, "connection failed", "Unreachable"),
        ({"kind": "timeout", "seconds": 5}, TransientError, "timed out", "Unreachable"),
        (
            {"kind": "auth"},
            PermanentError,
            "refused the credentials for bmc-test",
            "BMCUnauthorized",
        ),
    ],
)
async def test_simulator_faults_are_classified(
    sim: Any,
    secrets: SecretStore,
    rule: dict[str, Any],
    error: type[Exception],
    text: str,
    reason: str,
) -> None:
    backend = sim_backend(sim)
    machine = backend.machine("node-faulty")
    rule_id = sim.add_fault(machine="node-faulty", **rule)["id"]
    options = HttpOptions(timeout=httpx.Timeout(0.5), action_timeout=httpx.Timeout(0.5))
    try:
        async with ProviderPool(secrets, options=options) as pool:
            with pytest.raises(error, match=text) as caught:
                await pool.get(machine).ensure(machine, backend.image(), "http://x/s.iso")
            assert caught.value.reason == reason  # type: ignore[attr-defined]
    finally:
        sim.remove_fault(rule_id)
    async with ProviderPool(secrets, options=FAST) as pool:  # and it heals
        assert (await pool.get(machine).observe(machine)).exists


async def test_one_pooled_provider_serves_a_batch_concurrently(
    sim: Any, pool: ProviderPool
) -> None:
    backend = sim_backend(sim)
    machines = [backend.machine(name) for name in BATCH]
    seeds = [backend.make_seed(name, "0123456789ab") for name in BATCH]

    async def provision(machine: Machine, seed: str) -> int:
        return await pool.get(machine).ensure(machine, backend.image(), seed)

    counts = await asyncio.gather(*(provision(m, s) for m, s in zip(machines, seeds, strict=True)))

    assert counts == [4] * len(BATCH)
    assert len(pool) == 1  # every BMC behind the simulator's origin shares one provider
    assert [backend.mutations(name) for name in BATCH] == [4] * len(BATCH)
    states = await asyncio.gather(*(pool.get(m).observe(m) for m in machines))
    assert all(s.powered_on and s.media[1] == seed for s, seed in zip(states, seeds, strict=True))


# --- the simulator only --------------------------------------------------------------------


async def test_image_the_bmc_cannot_fetch_is_media_unavailable_and_its_calls_count(
    sim: Any, pool: ProviderPool
) -> None:
    backend = sim_backend(sim)
    name = "node-nomedia"
    machine = backend.machine(name)
    provider = pool.get(machine)
    missing = f"{sim.url}/artifacts/images/does-not-exist.iso"

    with pytest.raises(PermanentError, match=r"does-not-exist\.iso") as caught:
        await provider.ensure(machine, missing, backend.make_seed(name, "0123456789ab"))

    assert caught.value.reason == "MediaUnavailable"
    # The refused InsertMedia was sent: ensure() returned no count, the ledger has it.
    assert provider.mutations_sent(machine) == backend.mutations(name) == 1


async def test_machine_set_up_but_never_restarted_is_restarted_and_installs(
    sim: Any, pool: ProviderPool
) -> None:
    # werft inserted the media and set a Once override on a running machine, then stopped
    # before the ForceRestart. Reproduced by hand, over Redfish.
    backend = sim_backend(sim)
    name = "node-crashed"
    image, seed = backend.image(), backend.make_seed(name, "0123456789ab")
    backend.power_on(name)
    sim.wait_phase(name, "idle")  # booted its empty disk (no override yet)
    await backend.insert_raw(name, 0, image)
    await backend.insert_raw(name, 1, seed)
    await backend.set_boot_override(name, "Cd", "Once")
    machine = backend.machine(name)
    provider = pool.get(machine)
    state = await provider.observe(machine)
    assert state.powered_on and state.media == [image, seed] and state.boot_pending
    assert not state.boots(image, seed)  # so the infrastructure stage calls ensure()
    before = backend.mutations(name)

    assert await provider.ensure(machine, image, seed) == 1  # ForceRestart, nothing else

    installed = sim.wait_for(
        lambda: sim.machine(name)["installed"], timeout=10, what=f"{name} installed"
    )
    assert installed["nodeName"] == name
    booted = await provider.observe(machine)
    assert booted.boots(image, seed) and booted.boot_override is None  # Once consumed
    assert await provider.ensure(machine, image, seed) == 0
    # A consumed Once leaves no override to clear: release ejects the two media only.
    assert await provider.release(machine) == 2
    assert backend.mutations(name) == before + 3


# --- sushy-tools only ----------------------------------------------------------------------


async def test_system_named_by_alias_is_found_through_the_bmc_redirect(
    sushy: SushyEmulator, provider: RedfishProvider
) -> None:
    # sushy-tools lists systems by UUID and redirects a name to its UUID.
    address = sushy.address("node-alias").rsplit("/", 1)[0] + "/node-alias"
    state = await provider.observe(bmc_machine("node-alias", address))
    assert state.details["system"].endswith(SYSTEMS["node-alias"])


async def test_seed_goes_on_the_usb_device_when_the_bmc_has_one_cd(
    tmp_path: Path, secrets: SecretStore, artifacts: str
) -> None:
    # sushy-tools' default devices: one CD ("Cd") and a Floppy/USBStick device.
    emulator = start_sushy(
        tmp_path / "sushy1cd", {"one-cd": SYSTEMS["node-fresh"]}, user=USER, password=PASSWORD
    )
    try:
        machine = bmc_machine("one-cd", emulator.address("one-cd"))
        image, seed = f"{artifacts}/images/ubuntu.iso", seed_url(artifacts, "c1", "one-cd")
        async with ProviderPool(secrets, options=FAST) as pool:
            assert await pool.get(machine).ensure(machine, image, seed) == 4
            assert (await pool.get(machine).observe(machine)).media == [image, seed]
        async with httpx.AsyncClient(base_url=emulator.origin, auth=(USER, PASSWORD)) as client:
            path = f"/redfish/v1/Systems/{SYSTEMS['node-fresh']}/VirtualMedia/Floppy"
            floppy = (await client.get(path)).json()
        assert floppy["Image"] == seed and "USBStick" in floppy["MediaTypes"]
    finally:
        stop_sushy(emulator)


# --- link following on standard trees sushy-tools does not produce ------------------------


async def test_virtual_media_on_the_manager_is_found_through_managed_by(
    secrets: SecretStore,
) -> None:
    bmc = await LoopbackHttp().start()
    try:
        minimal_redfish(bmc, prefix="/bmc/r640", on_manager=True)
        address = (
            f"redfish+http://127.0.0.1:{bmc.port}/bmc/r640/redfish/v1/Systems/System.Embedded.1"
        )
        machine = bmc_machine("r640", address)
        async with ProviderPool(secrets, options=FAST) as pool:
            state = await pool.get(machine).observe(machine)
        assert state.media == ["http://127.0.0.1:9/images/installer.iso"]
        assert state.boot_override is None
        read = [s.path for s in bmc.seen]
        # The address names the system: it is read first, and the service root and the
        # Systems collection not at all (they are only walked for a system not found so).
        assert read[0] == "/bmc/r640/redfish/v1/Systems/System.Embedded.1"
        assert "/bmc/r640/redfish/v1" not in read
        assert "/bmc/r640/redfish/v1/Systems" not in read
        assert "/bmc/r640/redfish/v1/Managers/iDRAC.Embedded.1" in read
        assert all(s.headers["authorization"].startswith("Basic ") for s in bmc.seen[1:])
    finally:
        await bmc.stop()


async def test_unprefixed_odata_ids_behind_a_path_prefix_are_rebased(
    secrets: SecretStore,
) -> None:
    bmc = await LoopbackHttp().start()
    try:
        minimal_redfish(bmc)  # ids without the prefix ...
        for (method, path), reply in list(bmc.routes.items()):  # ... served under it
            bmc.routes[(method, "/proxy/bmc7" + path)] = reply
        address = (
            f"redfish+http://127.0.0.1:{bmc.port}/proxy/bmc7/redfish/v1/Systems/System.Embedded.1"
        )
        machine = bmc_machine("bmc7", address)
        async with ProviderPool(secrets, options=FAST) as pool:
            state = await pool.get(machine).observe(machine)
        assert state.media == ["http://127.0.0.1:9/images/installer.iso"]
        assert all(s.path.startswith("/proxy/bmc7/") for s in bmc.seen)
    finally:
        await bmc.stop()


def boot_fake(bmc: LoopbackHttp, *, power: str, allowed_enabled: list[str] | None) -> dict:
    """A loopback BMC that accepts every write; returns its System document."""
    minimal_redfish(bmc)
    system = bmc.routes[("GET", SYSTEM)].body
    system["PowerState"] = power
    if allowed_enabled is not None:
        system["Boot"]["BootSourceOverrideEnabled@Redfish.AllowableValues"] = allowed_enabled
    for device in ("CD1", "CD2"):
        for action in ("InsertMedia", "EjectMedia"):
            bmc.routes[
                ("POST", f"{SYSTEM}/VirtualMedia/{device}/Actions/VirtualMedia.{action}")
            ] = Reply(204)
    bmc.routes[("PATCH", SYSTEM)] = Reply(204)
    bmc.routes[("POST", f"{SYSTEM}/Actions/ComputerSystem.Reset")] = Reply(204)
    return system


SYSTEM = "/redfish/v1/Systems/System.Embedded.1"


def patches(bmc: LoopbackHttp) -> list[dict]:
    return [json.loads(s.body)["Boot"] for s in bmc.seen if s.method == "PATCH"]


async def test_bmc_without_once_gets_a_continuous_override(
    secrets: SecretStore, artifacts: str
) -> None:
    bmc = await LoopbackHttp().start()
    try:
        system = boot_fake(bmc, power="On", allowed_enabled=["Disabled", "Continuous"])

        def apply(seen: Seen) -> None:
            if seen.method == "PATCH":
                system["Boot"].update(json.loads(seen.body)["Boot"])

        bmc.on_request = apply
        machine = bmc_machine("bmc-c", f"redfish+http://127.0.0.1:{bmc.port}{SYSTEM}")
        image, seed = f"{artifacts}/images/ubuntu.iso", seed_url(artifacts, "c1", "bmc-c")
        async with ProviderPool(secrets, options=FAST) as pool:
            mutations = await pool.get(machine).ensure(machine, image, seed)

        assert patches(bmc) == [
            {"BootSourceOverrideTarget": "Cd", "BootSourceOverrideEnabled": "Continuous"}
        ]
        resets = [json.loads(s.body) for s in bmc.seen if s.path.endswith(".Reset")]
        assert resets == [{"ResetType": "ForceRestart"}]  # it was on, with other media
        assert mutations == 5  # eject CD1, insert x2, PATCH, restart
    finally:
        await bmc.stop()


async def test_bmc_that_drops_a_once_override_gets_continuous(
    secrets: SecretStore, artifacts: str
) -> None:
    bmc = await LoopbackHttp().start()
    try:
        system = boot_fake(bmc, power="Off", allowed_enabled=None)

        def apply(seen: Seen) -> None:
            if seen.method == "PATCH":
                boot = json.loads(seen.body)["Boot"]
                # Takes the target, silently refuses "Once".
                system["Boot"]["BootSourceOverrideTarget"] = boot["BootSourceOverrideTarget"]
                enabled = boot["BootSourceOverrideEnabled"]
                system["Boot"]["BootSourceOverrideEnabled"] = (
                    "Disabled" if enabled == "Once" else enabled
                )

        bmc.on_request = apply
        machine = bmc_machine("bmc-d", f"redfish+http://127.0.0.1:{bmc.port}{SYSTEM}")
        image, seed = f"{artifacts}/images/ubuntu.iso", seed_url(artifacts, "c1", "bmc-d")
        async with ProviderPool(secrets, options=FAST) as pool:
            await pool.get(machine).ensure(machine, image, seed)
            state = await pool.get(machine).observe(machine)

        assert [p["BootSourceOverrideEnabled"] for p in patches(bmc)] == ["Once", "Continuous"]
        assert state.boot_override == "Cd/Continuous"
        resets = [json.loads(s.body) for s in bmc.seen if s.path.endswith(".Reset")]
        assert resets == [{"ResetType": "On"}]
    finally:
        await bmc.stop()


async def test_machine_still_in_post_is_not_restarted_again(
    secrets: SecretStore, artifacts: str
) -> None:
    # A BMC that reports BootProgress says whether the pending Once is still to be consumed
    # by a boot already under way (werft restarted it a moment ago) or forgotten.
    bmc = await LoopbackHttp().start()
    try:
        system = boot_fake(bmc, power="On", allowed_enabled=None)
        image, seed = f"{artifacts}/images/ubuntu.iso", seed_url(artifacts, "c1", "bmc-p")
        for device, url in (("CD1", image), ("CD2", seed)):
            bmc.routes[("GET", f"{SYSTEM}/VirtualMedia/{device}")].body.update(
                Image=url, Inserted=True
            )
        system["Boot"].update(BootSourceOverrideTarget="Cd", BootSourceOverrideEnabled="Once")
        system["BootProgress"] = {"LastState": "MemoryInitializationStarted"}
        machine = bmc_machine("bmc-p", f"redfish+http://127.0.0.1:{bmc.port}{SYSTEM}")
        async with ProviderPool(secrets, options=FAST) as pool:
            assert await pool.get(machine).ensure(machine, image, seed) == 0
            system["BootProgress"]["LastState"] = "OSRunning"  # booted, Once still there
            assert await pool.get(machine).ensure(machine, image, seed) == 1
        resets = [json.loads(s.body) for s in bmc.seen if s.path.endswith(".Reset")]
        assert resets == [{"ResetType": "ForceRestart"}]
        assert patches(bmc) == []
    finally:
        await bmc.stop()


# --- failures ------------------------------------------------------------------------------


async def test_connection_refused_is_transient(secrets: SecretStore) -> None:
    port = free_port()  # nothing listens there any more
    machine = bmc_machine("gone", f"redfish+http://127.0.0.1:{port}/redfish/v1/Systems/1")
    async with ProviderPool(secrets, options=FAST) as pool:
        with pytest.raises(TransientError, match=f"machine gone \\(BMC 127.0.0.1:{port}\\)"):
            await pool.get(machine).observe(machine)


async def test_busy_bmc_answering_503_is_transient(secrets: SecretStore) -> None:
    bmc = await LoopbackHttp().start()
    try:
        bmc.routes[("GET", "/redfish/v1/Systems/1")] = Reply(
            503,
            {
                "error": {
                    "code": "Base.1.8.GeneralError",
                    "@Message.ExtendedInfo": [
                        {
                            "MessageId": "Base.1.8.ServiceTemporarilyUnavailable",
                            "Message": "The service is temporarily unavailable. Retry in 30s.",
                        }
                    ],
                }
            },
            headers={"Retry-After": "30"},
        )
        machine = bmc_machine("busy", f"redfish+http://127.0.0.1:{bmc.port}/redfish/v1/Systems/1")
        patient = HttpOptions(retry=RetryPolicy(attempts=5))
        async with ProviderPool(secrets, options=patient) as pool:
            # The BMC asks for 30 s; the stage has 2 s left: werft does not wait past its
            # deadline for a retry that could not finish in time.
            busy = r"HTTP 503.*temporarily unavailable"
            with (
                request_deadline(time.monotonic() + 2.0),
                pytest.raises(TransientError, match=busy) as e,
            ):
                await pool.get(machine).observe(machine)
        assert (e.value.cause, e.value.retry_after) == ("503", 30.0)
        assert len(bmc.seen) == 1
    finally:
        await bmc.stop()


async def test_bmc_slower_than_the_timeout_is_transient(secrets: SecretStore) -> None:
    bmc = await LoopbackHttp().start()
    try:
        bmc.routes[("GET", "/redfish/v1/Systems/1")] = Reply(200, {}, delay=3.0)
        machine = bmc_machine("slow", f"redfish+http://127.0.0.1:{bmc.port}/redfish/v1/Systems/1")
        options = HttpOptions(
            timeout=httpx.Timeout(0.3),
            action_timeout=httpx.Timeout(0.3),
            retry=RetryPolicy(attempts=3, base=0.01),
        )
        async with ProviderPool(secrets, options=options) as pool:
            with pytest.raises(TransientError, match="timed out") as caught:
                await pool.get(machine).observe(machine)
        # Each try gives up after the request timeout (not the BMC's 3 s); a hung BMC gets
        # one more try (each costs the whole timeout), fewer than the policy's 3, then the
        # timeout is reported by its cause.
        assert [(r.method, r.path) for r in bmc.seen] == [("GET", "/redfish/v1/Systems/1")] * 2
        assert caught.value.cause == "timeout"
    finally:
        await bmc.stop()


async def test_a_bmc_answering_html_is_permanent(secrets: SecretStore) -> None:
    bmc = await LoopbackHttp().start()
    try:
        bmc.routes[("GET", "/redfish/v1")] = Reply(200, "<html>Login</html>")
        machine = bmc_machine("html", f"redfish+http://127.0.0.1:{bmc.port}/redfish/v1/Systems/1")
        async with ProviderPool(secrets, options=FAST) as pool:
            provider = pool.get(machine)
            assert isinstance(provider, Provider)
            with pytest.raises(PermanentError, match="did not return a JSON object"):
                await provider.observe(machine)
    finally:
        await bmc.stop()


async def test_tls_is_verified_by_default_and_a_ca_bundle_is_honoured(
    tmp_path: Path, secrets: SecretStore
) -> None:
    context, ca = self_signed_tls(tmp_path)
    bmc = await LoopbackHttp(tls=context).start()
    try:
        minimal_redfish(bmc)
        address = f"redfish+https://127.0.0.1:{bmc.port}/redfish/v1/Systems/System.Embedded.1"
        untrusted = bmc_machine("tls", address)
        trusted = bmc_machine("tls", address, ca_bundle=str(ca))
        insecure = bmc_machine("tls", address, disable_certificate_verification=True)
        async with ProviderPool(secrets, options=FAST) as pool:
            with pytest.raises(PermanentError, match="TLS certificate not trusted"):
                await pool.get(untrusted).observe(untrusted)
            assert (await pool.get(trusted).observe(trusted)).exists
            assert (await pool.get(insecure).observe(insecure)).exists
            assert len(pool) == 3  # TLS settings are part of the provider's identity
    finally:
        await bmc.stop()
