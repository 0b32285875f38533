"""One Redfish contract, two BMCs: the simulator and sushy-tools (its fake driver).

Both are driven the way a provisioning tool drives a BMC: start at the service root and
follow ``@odata.id`` links. Where sushy-tools departs from the standard (and from real
BMCs), the simulator follows the standard and the test names the quirk:

- ``boot-once-reads-continuous``: sushy-tools ignores BootSourceOverrideEnabled and always
  reports "Continuous" (its libvirt heritage); the standard and real BMCs keep "Once"
  until the next boot consumes it.
- ``power-is-delayed``: the fake driver applies power changes 1-11 s later (real BMCs take
  a moment too), so power state is polled with a deadline on both.
- ``empty-image-is-string``: empty drives report ``"Image": ""`` (the DMTF mockups and the
  simulator: ``null``); both read as "no image".
- VirtualMedia: sushy-tools hangs it under the System (the Manager links to it there) with
  drives ``Cd`` and ``Floppy``; the simulator hangs it under the Manager (the System links
  to it) with two CD drives ``CD1`` and ``CD2``. The test reaches both by links.
- Service root ``@odata.id``: both "/.../redfish/v1/"; systems are addressed by UUID on
  sushy-tools, by "1" on the simulator.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from tests.simfixtures import (
    file_server,
    free_port,
    running_sim,
    seed_iso,
    small_fleet,
    user_data,
    wait_for,
)
from werft.sim.media import synthetic_installer

USER, PASSWORD = "admin", "contract-password"


@dataclass(frozen=True)
class Backend:
    name: str
    url: str
    root: str
    quirks: frozenset[str]
    # Every service root of the backend (one BMC per machine on the simulator; one
    # sushy-tools serves several systems): the power test flips all systems at once.
    roots: tuple[str, ...] = ()

    def client(self, *, auth: bool = True) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            auth=(USER, PASSWORD) if auth else None,
            timeout=30.0,
            trust_env=False,
        )


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, str]]:
    files = {
        "/os.iso": synthetic_installer("os.iso"),
        "/seed.iso": seed_iso(user_data(cluster="c0", role="worker", node_name="c0-w1")),
    }
    with file_server(files) as base:
        yield {"os": base + "/os.iso", "seed": base + "/seed.iso", "missing": base + "/no.iso"}


@pytest.fixture(scope="module")
def sim_backend() -> Iterator[Backend]:
    machines, sites = small_fleet(1, credentials=(USER, PASSWORD))
    with running_sim(
        machines=machines,
        clusters=sites,
        time_scale=1000,
    ) as sim:
        reset = "/bmc/c0-cp1/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
        httpx.post(
            sim.url + reset, json={"ResetType": "On"}, auth=(USER, PASSWORD), trust_env=False
        ).raise_for_status()
        roots = ("/bmc/c0-w1/redfish/v1/", "/bmc/c0-cp1/redfish/v1/")
        yield Backend("werft-sim", sim.url, roots[0], frozenset(), roots)


@pytest.fixture(scope="module")
def sushy_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    emulator = Path(sys.executable).parent / "sushy-emulator"
    if not emulator.exists():
        pytest.skip("sushy-tools is not installed")
    folder = tmp_path_factory.mktemp("sushy")
    htpasswd = folder / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"{USER}:{hashed}\n")
    port = free_port()
    config = folder / "emulator.conf"
    config.write_text(
        "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
        f"SUSHY_EMULATOR_LISTEN_PORT = {port}\n"
        "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(folder / 'state')!r}\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}\n"
        "SUSHY_EMULATOR_FAKE_SYSTEMS = ["
        "{'uuid': '27946b59-9e44-4fa7-8e91-f3527a1ef094', 'name': 'fake',"
        " 'power_state': 'Off', 'external_notifier': False,"
        " 'nics': [{'mac': '00:5c:52:31:3a:9c', 'ip': '172.22.0.100'}]},"
        "{'uuid': '6a0d3b8c-8a4e-4b5e-9a43-2f0c1d7e5b11', 'name': 'fake-on',"
        " 'power_state': 'On', 'external_notifier': False,"
        " 'nics': [{'mac': '00:5c:52:31:3a:9d', 'ip': '172.22.0.101'}]}]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    log = (folder / "sushy.log").open("wb")
    process = subprocess.Popen(
        [str(emulator), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"sushy-emulator exited: {(folder / 'sushy.log').read_text()}")
            try:
                return httpx.get(url + "/redfish/v1/", trust_env=False).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, timeout=30, interval=0.05, what="sushy-emulator to start")
        yield Backend(
            "sushy-tools",
            url,
            "/redfish/v1/",
            frozenset({"boot-once-reads-continuous", "power-is-delayed", "empty-image-is-string"}),
            ("/redfish/v1/",),
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(params=["werft-sim", "sushy-tools"])
def backend(request: pytest.FixtureRequest) -> Backend:
    name = "sim_backend" if request.param == "werft-sim" else "sushy_backend"
    return request.getfixturevalue(name)


def get(client: httpx.Client, path: str) -> dict[str, Any]:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


def system_path(client: httpx.Client, backend: Backend) -> str:
    root = get(client, backend.root)
    systems = get(client, root["Systems"]["@odata.id"])
    assert systems["Members@odata.count"] == len(systems["Members"]) >= 1
    return systems["Members"][0]["@odata.id"]


def cd_drives(client: httpx.Client, backend: Backend) -> list[dict[str, Any]]:
    """CD-capable VirtualMedia of the first system's manager, found by links."""
    system = get(client, system_path(client, backend))
    manager = get(client, system["Links"]["ManagedBy"][0]["@odata.id"])
    collection = get(client, manager["VirtualMedia"]["@odata.id"])
    drives = [get(client, m["@odata.id"]) for m in collection["Members"]]
    return [d for d in drives if "CD" in d["MediaTypes"]]


def test_service_root(backend: Backend) -> None:
    with backend.client(auth=False) as anonymous:
        root = get(anonymous, backend.root)
    assert root["RedfishVersion"].count(".") == 2
    assert root["UUID"]
    assert root["@odata.id"].endswith("/redfish/v1/")
    assert root["Systems"]["@odata.id"].endswith("/redfish/v1/Systems")
    assert root["Managers"]["@odata.id"].endswith("/redfish/v1/Managers")


def test_system_and_manager_by_links(backend: Backend) -> None:
    with backend.client() as client:
        path = system_path(client, backend)
        system = get(client, path)
        assert system["@odata.id"] == path
        assert system["PowerState"] in ("On", "Off")
        assert "BootSourceOverrideTarget" in system["Boot"]
        assert "Cd" in system["Boot"]["BootSourceOverrideTarget@Redfish.AllowableValues"]
        reset = system["Actions"]["#ComputerSystem.Reset"]
        assert {"On", "ForceOff", "GracefulShutdown", "ForceRestart"} <= set(
            reset["ResetType@Redfish.AllowableValues"]
        )
        manager = get(client, system["Links"]["ManagedBy"][0]["@odata.id"])
        assert manager["ManagerType"] == "BMC"
        assert any(link["@odata.id"] == path for link in manager["Links"]["ManagerForServers"])
        drives = cd_drives(client, backend)
        assert drives
        for drive in drives:
            assert "#VirtualMedia.InsertMedia" in drive["Actions"]
            assert "#VirtualMedia.EjectMedia" in drive["Actions"]


def test_basic_auth(backend: Backend) -> None:
    with backend.client(auth=False) as anonymous:
        root = get(anonymous, backend.root)
        denied = anonymous.get(root["Systems"]["@odata.id"])
        assert denied.status_code == 401
        assert denied.json()["error"]["message"]
        wrong = anonymous.get(root["Systems"]["@odata.id"], auth=(USER, "wrong"))
        assert wrong.status_code == 401


def test_unknown_system_is_404(backend: Backend) -> None:
    with backend.client() as client:
        root = get(client, backend.root)
        response = client.get(root["Systems"]["@odata.id"] + "/no-such-system")
        assert response.status_code == 404
        assert "error" in response.json()


def _power(client: httpx.Client, path: str) -> str:
    return get(client, path)["PowerState"]


def test_power_on_and_off_via_reset(backend: Backend) -> None:
    """Every system flips at once (On -> ForceOff, Off -> On); both directions are covered."""
    with backend.client() as client:
        systems: list[str] = []
        for root in backend.roots:
            collection = get(client, get(client, root)["Systems"]["@odata.id"])
            systems += [m["@odata.id"] for m in collection["Members"]]
        before = {path: _power(client, path) for path in systems}
        assert set(before.values()) == {"On", "Off"}
        for path, state in before.items():
            target = get(client, path)["Actions"]["#ComputerSystem.Reset"]["target"]
            reset_type = "ForceOff" if state == "On" else "On"
            response = client.post(target, json={"ResetType": reset_type})
            assert response.status_code in (200, 202, 204), response.text
        flipped = {"On": "Off", "Off": "On"}
        wait_for(
            lambda: all(_power(client, p) == flipped[s] for p, s in before.items()),
            timeout=20,
            interval=0.2,
            what="every system to change power state",
        )


@pytest.mark.parametrize("enabled", ["Once", "Continuous"])
def test_boot_override_cd(backend: Backend, enabled: str) -> None:
    with backend.client() as client:
        path = system_path(client, backend)
        response = client.patch(
            path,
            json={"Boot": {"BootSourceOverrideEnabled": enabled, "BootSourceOverrideTarget": "Cd"}},
        )
        assert response.status_code in (200, 204)
        boot = get(client, path)["Boot"]
        assert boot["BootSourceOverrideTarget"] == "Cd"
        if "boot-once-reads-continuous" in backend.quirks:
            assert boot["BootSourceOverrideEnabled"] == "Continuous"
        else:
            assert boot["BootSourceOverrideEnabled"] == enabled


def test_insert_and_eject_media(backend: Backend, images: dict[str, str]) -> None:
    with backend.client() as client:
        drive = cd_drives(client, backend)[0]
        path = drive["@odata.id"]
        insert = drive["Actions"]["#VirtualMedia.InsertMedia"]["target"]
        eject = drive["Actions"]["#VirtualMedia.EjectMedia"]["target"]
        client.post(eject, json={})
        response = client.post(
            insert, json={"Image": images["os"], "Inserted": True, "WriteProtected": True}
        )
        assert response.status_code in (200, 202, 204), response.text
        inserted = get(client, path)
        assert inserted["Image"] == images["os"]
        assert inserted["Inserted"] is True
        assert inserted["WriteProtected"] is True
        assert client.post(eject, json={}).status_code in (200, 202, 204)
        ejected = get(client, path)
        assert ejected["Inserted"] is False
        assert not ejected["Image"]
        if "empty-image-is-string" not in backend.quirks:
            assert ejected["Image"] is None


def test_insert_of_an_unfetchable_image_fails(backend: Backend, images: dict[str, str]) -> None:
    with backend.client() as client:
        drive = cd_drives(client, backend)[0]
        insert = drive["Actions"]["#VirtualMedia.InsertMedia"]["target"]
        client.post(drive["Actions"]["#VirtualMedia.EjectMedia"]["target"], json={})
        response = client.post(insert, json={"Image": images["missing"]})
        assert 400 <= response.status_code < 600
        assert response.json()["error"]["message"]
        assert get(client, drive["@odata.id"])["Inserted"] is False
