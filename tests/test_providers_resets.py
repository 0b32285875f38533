"""Never restart a machine twice, and retry at the request (issue 9), for the Redfish
provider: against sushy-tools (whose fake driver applies power changes 1-11 s late, as
hardware does), the simulator's slow POST, and a small loopback BMC that fails exactly
the requests a test names.

A "re-run" is a new ProviderPool on the same secret store: another run or another worker,
sharing nothing with the first but the store (where werft keeps its reset records).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
    minimal_redfish,
    seed_url,
    start_sushy,
    stop_sushy,
)
from tests.simfixtures import running_sim, seed_iso, user_data
from werft.errors import TransientError
from werft.providers import HttpOptions, ProviderPool
from werft.providers.records import MachineRecords
from werft.retry import STATS, RetryPolicy
from werft.secrets import SecretStore
from werft.sim.machines import SimMachineSpec

USER, PASSWORD = "admin", "r3set-Pa55word"
SYSTEMS = {
    "power-pending": "22222222-0000-0000-0000-000000000001",
    "restart-pending": "22222222-0000-0000-0000-000000000002",
}
TWO_CDS = {
    "Cd": {"Name": "Virtual CD 1", "MediaTypes": ["CD", "DVD"]},
    "Cd2": {"Name": "Virtual CD 2", "MediaTypes": ["CD", "DVD"]},
}
# Real settle time (600 s): sushy-tools runs in real time. Fast retries for loopback BMCs.
OPTIONS = HttpOptions(retry=RetryPolicy(attempts=4, base=0.01, cap=0.05))
SYSTEM = "/redfish/v1/Systems/System.Embedded.1"
MEDIA = f"{SYSTEM}/VirtualMedia"
RESET = f"{SYSTEM}/Actions/ComputerSystem.Reset"


@pytest.fixture(scope="module")
def artifacts() -> Iterator[str]:
    with artifact_server() as base:
        yield base


@pytest.fixture(scope="module")
def sushy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SushyEmulator]:
    emulator = start_sushy(
        tmp_path_factory.mktemp("sushy-resets"),
        SYSTEMS,
        user=USER,
        password=PASSWORD,
        devices=TWO_CDS,
        power={"restart-pending": "On"},
    )
    yield emulator
    stop_sushy(emulator)


@pytest.fixture
def secrets(tmp_path: Path) -> SecretStore:
    store = SecretStore(tmp_path / "secrets")
    store.put("bmc-test", f"{USER}:{PASSWORD}")
    return store


# --- sushy-tools: delayed power changes ------------------------------------------------------


async def test_rerun_while_a_power_on_is_pending_sends_no_second_reset(
    sushy: SushyEmulator, secrets: SecretStore, artifacts: str
) -> None:
    name = "power-pending"
    machine = bmc_machine(name, sushy.address(name))
    image, seed = f"{artifacts}/images/os.iso", seed_url(artifacts, "c1", name)
    async with ProviderPool(secrets, options=OPTIONS) as first:
        assert await first.get(machine).ensure(machine, image, seed) == 4  # media x2, boot, On

    async with ProviderPool(secrets, options=OPTIONS) as rerun:
        provider = rerun.get(machine)
        pending = await provider.observe(machine)
        # sushy-tools has not applied the power-on yet: the machine looks like werft never
        # powered it on -- off, media in, override to the CD.
        assert not pending.powered_on and pending.cd_override and pending.media == [image, seed]

        assert await provider.ensure(machine, image, seed) == 0
        assert provider.mutations_sent(machine) == 0

        await provider.wait_powered_on(machine, timeout=20, poll_interval=0.1)
        assert await provider.ensure(machine, image, seed) == 0
    record = MachineRecords(secrets).last_reset(name)
    assert record is not None and (record.reset_type, record.seen) == ("On", True)


async def test_rerun_while_a_restart_is_pending_sends_no_second_reset(
    sushy: SushyEmulator, secrets: SecretStore, artifacts: str
) -> None:
    # Running something else: werft inserts its media and restarts it into the installer.
    # sushy-tools reports the machine off until the restart is applied.
    name = "restart-pending"
    machine = bmc_machine(name, sushy.address(name))
    image, seed = f"{artifacts}/images/os.iso", seed_url(artifacts, "c1", name)
    async with ProviderPool(secrets, options=OPTIONS) as first:
        assert await first.get(machine).ensure(machine, image, seed) == 4  # media x2, boot, reset

    async with ProviderPool(secrets, options=OPTIONS) as rerun:
        provider = rerun.get(machine)
        assert not (await provider.observe(machine)).powered_on

        assert await provider.ensure(machine, image, seed) == 0  # no "On" on top of it

        await provider.wait_powered_on(machine, timeout=20, poll_interval=0.1)
        assert await provider.ensure(machine, image, seed) == 0
        assert provider.mutations_sent(machine) == 0
    record = MachineRecords(secrets).last_reset(name)
    assert record is not None and record.reset_type == "ForceRestart"


# --- the simulator: a slow POST ------------------------------------------------------------


async def test_rerun_during_a_slow_post_does_not_restart_the_machine(
    tmp_path: Path, secrets: SecretStore
) -> None:
    # 30 s of POST on a 10x clock: 3 s in which the Once override is still pending.
    artifacts = tmp_path / "artifacts"
    spec = SimMachineSpec(
        name="slow-post",
        cluster="c1",
        site="s1",
        role="control-plane",
        credentials=(USER, PASSWORD),
    )
    with running_sim(
        machines=[spec], clusters={"c1": "s1"}, artifacts_dir=artifacts, time_scale=10
    ) as sim:
        folder = artifacts / "seeds" / "c1"
        folder.mkdir(parents=True)
        (folder / "slow-post-0123456789ab.iso").write_bytes(
            seed_iso(user_data(cluster="c1", role="control-plane", node_name="slow-post"))
        )
        image = f"{sim.url}/images/os.iso"
        seed = f"{sim.url}/artifacts/seeds/c1/slow-post-0123456789ab.iso"
        machine = bmc_machine(
            "slow-post", f"redfish+http://127.0.0.1:{sim.port}/bmc/slow-post/redfish/v1/Systems/1"
        )
        async with ProviderPool(secrets, options=OPTIONS) as first:
            assert await first.get(machine).ensure(machine, image, seed) == 4
        sim.reset_stats()

        for _ in range(3):  # a retry storm of re-runs
            async with ProviderPool(secrets, options=OPTIONS) as rerun:
                state = await rerun.get(machine).observe(machine)
                assert state.powered_on and state.boot_pending  # still in POST
                assert await rerun.get(machine).ensure(machine, image, seed) == 0

        assert sim.stats()["mutations"]["bmc"] == {}
        sim.wait_phase("slow-post", "installing", timeout=20)  # POST done: the installer
        assert sim.machine("slow-post")["installsStarted"] == 1


async def test_a_reset_the_bmc_reports_applied_does_not_hold_the_next_one(
    tmp_path: Path, secrets: SecretStore
) -> None:
    # werft powered the machine on and never saw it on: someone powered it off at once.
    # The BMC's LastResetTime moved since werft's record, so the record is no reason to
    # wait out the settle time (600 s here): it is powered on again now.
    artifacts = tmp_path / "artifacts"
    spec = SimMachineSpec(
        name="seen-by-bmc",
        cluster="c1",
        site="s1",
        role="control-plane",
        credentials=(USER, PASSWORD),
    )
    # A 3 s POST (10x clock): powered off before it boots, its Once override still set.
    with running_sim(
        machines=[spec], clusters={"c1": "s1"}, artifacts_dir=artifacts, time_scale=10
    ) as sim:
        folder = artifacts / "seeds" / "c1"
        folder.mkdir(parents=True)
        (folder / "seen-by-bmc-0123456789ab.iso").write_bytes(
            seed_iso(user_data(cluster="c1", role="control-plane", node_name="seen-by-bmc"))
        )
        image = f"{sim.url}/images/os.iso"
        seed = f"{sim.url}/artifacts/seeds/c1/seen-by-bmc-0123456789ab.iso"
        system = "/bmc/seen-by-bmc/redfish/v1/Systems/1"
        machine = bmc_machine("seen-by-bmc", f"redfish+http://127.0.0.1:{sim.port}{system}")
        async with ProviderPool(secrets, options=OPTIONS) as first:
            assert await first.get(machine).ensure(machine, image, seed) == 4
        async with httpx.AsyncClient(base_url=sim.url, auth=(USER, PASSWORD)) as client:
            off = await client.post(
                f"{system}/Actions/ComputerSystem.Reset", json={"ResetType": "ForceOff"}
            )
            assert off.status_code == 204
        record = MachineRecords(secrets).last_reset("seen-by-bmc")
        assert record is not None and not record.seen  # werft never saw it on

        async with ProviderPool(secrets, options=OPTIONS) as rerun:
            assert await rerun.get(machine).ensure(machine, image, seed) == 1  # On

        assert sim.machine("seen-by-bmc")["powerState"] == "On"


# --- a loopback BMC: retry at the request, observe before repeating ------------------------


class FakeBmc:
    """A loopback BMC whose documents follow the writes; ``fail`` programs the replies of
    the next requests to a (method, path)."""

    def __init__(self, bmc: LoopbackHttp, *, power: str = "Off") -> None:
        self.bmc = bmc
        minimal_redfish(bmc)
        self.system: dict[str, Any] = bmc.routes[("GET", SYSTEM)].body
        self.system["PowerState"] = power
        self.system["Actions"] = {
            "#ComputerSystem.Reset": {
                "target": RESET,
                "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "ForceRestart"],
            }
        }
        self.device(1)["Image"], self.device(1)["Inserted"] = None, False
        self.planned: dict[tuple[str, str], list[Reply]] = {}
        self.normal: dict[tuple[str, str], Reply] = {}
        bmc.routes.update({(m, p): Reply(204) for m, p in self._writes()})
        bmc.on_request = self._react

    def device(self, n: int) -> dict[str, Any]:
        return self.bmc.routes[("GET", f"{MEDIA}/CD{n}")].body

    def fail(self, method: str, path: str, *replies: Reply) -> None:
        self.planned[(method, path)] = list(replies)

    def sent(self, method: str, path: str) -> int:
        return sum(1 for s in self.bmc.seen if (s.method, s.path) == (method, path))

    @staticmethod
    def _writes() -> list[tuple[str, str]]:
        writes = [("PATCH", SYSTEM), ("POST", RESET)]
        for n in (1, 2):
            for action in ("InsertMedia", "EjectMedia"):
                writes.append(("POST", f"{MEDIA}/CD{n}/Actions/VirtualMedia.{action}"))
        return writes

    def _react(self, seen: Seen) -> None:
        key = (seen.method, seen.path)
        planned = self.planned.get(key)
        if planned:
            self.normal.setdefault(key, self.bmc.routes[key])
            reply = self.bmc.routes[key] = planned.pop(0)
        else:
            reply = self.bmc.routes[key] = self.normal.get(key) or self.bmc.routes[key]
        if seen.method == "GET" or reply.status >= 400 or (reply.drop and not reply.delay):
            return  # a read, refused, or lost before the BMC read it: nothing changes
        body = json.loads(seen.body) if seen.body else {}
        if seen.method == "PATCH":
            self.system["Boot"].update(body["Boot"])
        elif seen.path == RESET:
            self.system["PowerState"] = "Off" if body["ResetType"] == "ForceOff" else "On"
        elif seen.path.endswith("InsertMedia"):
            device = self.device(1 if "/CD1/" in seen.path else 2)
            device["Image"], device["Inserted"] = body["Image"], True
        elif seen.path.endswith("EjectMedia"):
            device = self.device(1 if "/CD1/" in seen.path else 2)
            device["Image"], device["Inserted"] = None, False


@pytest.fixture
async def fake() -> Any:
    bmc = await LoopbackHttp().start()
    try:
        yield FakeBmc(bmc)
    finally:
        await bmc.stop()


def _machine(fake: FakeBmc, name: str) -> Any:
    return bmc_machine(name, f"redfish+http://127.0.0.1:{fake.bmc.port}{SYSTEM}")


async def test_reads_and_the_override_patch_are_retried_honouring_retry_after(
    fake: FakeBmc, secrets: SecretStore, artifacts: str
) -> None:
    busy = Reply(503, {"error": {"message": "busy"}}, headers={"Retry-After": "0"})
    fake.fail("GET", SYSTEM, busy)
    fake.fail("PATCH", SYSTEM, Reply(502), busy)
    machine = _machine(fake, "retry-reads")
    image, seed = f"{artifacts}/images/os.iso", seed_url(artifacts, "c1", "retry-reads")
    STATS.reset()

    async with ProviderPool(secrets, options=OPTIONS) as pool:
        assert await pool.get(machine).ensure(machine, image, seed) == 6  # 3 PATCH tries

    assert fake.sent("PATCH", SYSTEM) == 3
    assert fake.system["Boot"]["BootSourceOverrideTarget"] == "Cd"
    assert fake.system["PowerState"] == "On" and fake.sent("POST", RESET) == 1
    assert STATS.snapshot() == {"503": 2, "502": 1}


async def test_a_refused_reset_is_observed_then_sent_again(
    fake: FakeBmc, secrets: SecretStore, artifacts: str
) -> None:
    fake.fail("POST", RESET, Reply(503, {"error": {"message": "busy"}}))
    machine = _machine(fake, "refused-reset")
    image, seed = f"{artifacts}/images/os.iso", seed_url(artifacts, "c1", "refused-reset")

    async with ProviderPool(secrets, options=OPTIONS) as pool:
        await pool.get(machine).ensure(machine, image, seed)

    # The 503 said it was not applied; a read confirmed the machine was still off.
    assert fake.sent("POST", RESET) == 2 and fake.system["PowerState"] == "On"


async def test_a_reset_whose_answer_is_lost_is_never_sent_again(
    fake: FakeBmc, secrets: SecretStore, artifacts: str
) -> None:
    # The connection drops before an answer: applied or not, nobody knows. Sending it again
    # might restart a machine in POST; the record keeps every later reset away until the
    # settle time has passed.
    fake.fail("POST", RESET, Reply(drop=True))
    machine = _machine(fake, "lost-reset")
    image, seed = f"{artifacts}/images/os.iso", seed_url(artifacts, "c1", "lost-reset")

    async with ProviderPool(secrets, options=OPTIONS) as pool:
        await pool.get(machine).ensure(machine, image, seed)
    async with ProviderPool(secrets, options=OPTIONS) as rerun:
        assert await rerun.get(machine).ensure(machine, image, seed) == 0

    assert fake.sent("POST", RESET) == 1
    record = MachineRecords(secrets).last_reset("lost-reset")
    assert record is not None and not record.seen
    settled = HttpOptions(retry=OPTIONS.retry, reset_settle=0.0)
    async with ProviderPool(secrets, options=settled) as later:  # the settle time passed
        assert await later.get(machine).ensure(machine, image, seed) == 1
    assert fake.sent("POST", RESET) == 2


async def test_an_insert_whose_answer_is_lost_is_not_inserted_twice(
    fake: FakeBmc, secrets: SecretStore, artifacts: str
) -> None:
    # Applied, then the answer timed out: a read shows the image, so no second insert
    # (most BMCs would refuse it with 409, some would re-download the image).
    insert = f"{MEDIA}/CD2/Actions/VirtualMedia.InsertMedia"
    fake.fail("POST", insert, Reply(204, delay=2.0))
    machine = _machine(fake, "lost-insert")
    image, seed = f"{artifacts}/images/os.iso", seed_url(artifacts, "c1", "lost-insert")
    options = HttpOptions(
        timeout=httpx.Timeout(0.5), action_timeout=httpx.Timeout(0.5), retry=OPTIONS.retry
    )

    async with ProviderPool(secrets, options=options) as pool:
        await pool.get(machine).ensure(machine, image, seed)

    assert fake.sent("POST", insert) == 1
    assert fake.device(2)["Image"] == seed and fake.system["PowerState"] == "On"


async def test_a_bmc_refusing_every_reset_fails_transient_after_the_policy(
    fake: FakeBmc, secrets: SecretStore, artifacts: str
) -> None:
    fake.fail("POST", RESET, *[Reply(500)] * 10)
    machine = _machine(fake, "no-reset")
    image, seed = f"{artifacts}/images/os.iso", seed_url(artifacts, "c1", "no-reset")

    async with ProviderPool(secrets, options=OPTIONS) as pool:
        with pytest.raises(TransientError) as caught:
            await pool.get(machine).ensure(machine, image, seed)

    assert caught.value.cause == "500"
    assert fake.sent("POST", RESET) == OPTIONS.retry.attempts
    # Refused every time: no record of a reset keeps the next run from trying again.
    assert MachineRecords(secrets).last_reset("no-reset") is None
