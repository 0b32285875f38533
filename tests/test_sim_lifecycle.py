"""Machine lifecycle in the simulator: power on with media -> install -> API up -> nodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kubefixtures import apply_cni
from tests.simfixtures import (
    DEFAULT_CREDENTIALS,
    SimHandle,
    follow,
    provision_bmc,
    publish_seed,
    running_sim,
    seed_iso,
    small_fleet,
    user_data,
    wait_for,
)

TOKEN = "sim-admin-token-0123456789"
IMAGE = "/images/ubuntu-24.04-server.iso"


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def sim(artifacts: Path) -> Iterator[SimHandle]:
    machines, sites = small_fleet(3, control_planes=1, workers=1)
    vms, _ = small_fleet(1, vms=True)
    vms = [
        m.__class__(
            **{**_fields(m), "cluster": "c2", "site": "s2", "name": m.name.replace("c0", "vm")}
        )
        for m in vms
    ]
    with running_sim(
        machines=machines + vms,
        clusters=sites,
        artifacts_dir=artifacts,
        time_scale=2000,
    ) as handle:
        yield handle


def _fields(spec: Any) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in spec.__slots__}


def _seed_url(
    sim: SimHandle,
    artifacts: Path,
    cluster: str,
    machine: str,
    role: str,
    *,
    token: str | None = None,
    version: str = "1.31.1",
    b64: bool = True,
) -> str:
    data = seed_iso(
        user_data(
            cluster=cluster,
            role=role,
            node_name=machine,
            token=token,
            kubernetes_version=version,
            b64=b64,
        )
    )
    return sim.url + publish_seed(artifacts, cluster, machine, data)


def _nodes(sim: SimHandle, cluster: str, token: str = TOKEN) -> dict[str, dict[str, Any]]:
    response = httpx.get(
        f"{sim.url}/clusters/{cluster}/api/v1/nodes",
        headers={"Authorization": f"Bearer {token}"},
        trust_env=False,
    )
    if response.status_code != 200:
        return {}
    out = {}
    for item in response.json()["items"]:
        ready = next(c for c in item["status"]["conditions"] if c["type"] == "Ready")
        out[item["metadata"]["name"]] = {
            "ready": ready["status"] == "True",
            "reason": ready["reason"],
            "taints": {(t["key"], t["effect"]) for t in item["spec"].get("taints", [])},
            "kubelet": item["status"]["nodeInfo"]["kubeletVersion"],
        }
    return out


def _all_ready(sim: SimHandle, cluster: str, names: set[str], token: str = TOKEN) -> bool:
    """Every node registered and Ready. Nodes stay NotReady until a CNI runs, so once they
    are registered this installs one (an idempotent apply), as werft's add-ons stage does."""
    nodes = _nodes(sim, cluster, token)
    if set(nodes) != names:
        return False
    apply_cni(f"{sim.url}/clusters/{cluster}", token)
    return all(n["ready"] for n in nodes.values())


@pytest.fixture
def bmc(sim: SimHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, auth=DEFAULT_CREDENTIALS, trust_env=False) as client:
        yield client


def _provision_c0(
    sim: SimHandle,
    bmc: httpx.Client,
    artifacts: Path,
    *,
    once: bool = True,
    version: str = "1.31.1",
) -> None:
    cp = _seed_url(sim, artifacts, "c0", "c0-cp1", "control-plane", token=TOKEN, version=version)
    worker = _seed_url(sim, artifacts, "c0", "c0-w1", "worker", version=version, b64=False)
    provision_bmc(bmc, "/bmc/c0-cp1/redfish/v1/", sim.url + IMAGE, cp, once=once)
    provision_bmc(bmc, "/bmc/c0-w1/redfish/v1/", sim.url + IMAGE, worker, once=once)


def test_bare_metal_machines_install_and_form_a_ready_cluster(
    sim: SimHandle, bmc: httpx.Client, artifacts: Path
) -> None:
    _provision_c0(sim, bmc, artifacts, version="1.30.4")
    assert sim.machine("c0-cp1")["phase"] in ("post", "installing", "running")
    registered = wait_for(
        lambda: len(nodes := _nodes(sim, "c0")) == 2 and nodes, timeout=10, what="both nodes"
    )
    # No CNI yet (kubeadm installs none): registered, NotReady, tainted not-ready.
    for node in registered.values():
        assert not node["ready"] and node["reason"] == "KubeletNotReady"
        assert ("node.kubernetes.io/not-ready", "NoSchedule") in node["taints"]
    wait_for(
        lambda: _all_ready(sim, "c0", {"c0-cp1", "c0-w1"}), timeout=10, what="both nodes Ready"
    )
    nodes = _nodes(sim, "c0")
    assert {n["kubelet"] for n in nodes.values()} == {"v1.30.4"}
    state = sim.machine("c0-cp1")
    assert state["phase"] == "running"
    assert state["installed"]["role"] == "control-plane"
    assert state["installed"]["kubernetesVersion"] == "1.30.4"
    assert "token" not in str(state).lower().replace("hasadmintoken", "")
    # The Once override was consumed by the boot, as on real hardware.
    boot = follow(bmc, "/bmc/c0-cp1/redfish/v1/Systems/1")["Boot"]
    assert (boot["BootSourceOverrideEnabled"], boot["BootSourceOverrideTarget"]) == (
        "Disabled",
        "None",
    )
    cluster = sim.cluster("c0")
    assert cluster["apiUp"] is True
    assert TOKEN not in str(cluster)
    assert TOKEN in sim.kubeconfig("c0")
    # Other clusters are untouched.
    assert sim.cluster("c1")["apiUp"] is False


def test_nothing_happens_before_the_scaled_delays(
    artifacts: Path,
) -> None:
    machines, sites = small_fleet(1)
    with (
        running_sim(
            machines=machines,
            clusters=sites,
            artifacts_dir=artifacts,
            time_scale=1.0,
        ) as sim,
        httpx.Client(base_url=sim.url, auth=DEFAULT_CREDENTIALS, trust_env=False) as bmc,
    ):
        cp = _seed_url(sim, artifacts, "c0", "c0-cp1", "control-plane", token=TOKEN)
        provision_bmc(bmc, "/bmc/c0-cp1/redfish/v1/", sim.url + IMAGE, cp)
        assert sim.machine("c0-cp1")["phase"] == "post"  # 30 s of POST at time scale 1
        assert sim.cluster("c0")["apiUp"] is False
        boot = follow(bmc, "/bmc/c0-cp1/redfish/v1/Systems/1")["Boot"]
        assert boot["BootSourceOverrideEnabled"] == "Once"  # not booted yet: not consumed


def test_continuous_override_survives_the_boot(
    sim: SimHandle, bmc: httpx.Client, artifacts: Path
) -> None:
    _provision_c0(sim, bmc, artifacts, once=False)
    wait_for(lambda: _all_ready(sim, "c0", {"c0-cp1", "c0-w1"}), timeout=10)
    boot = follow(bmc, "/bmc/c0-w1/redfish/v1/Systems/1")["Boot"]
    assert (boot["BootSourceOverrideEnabled"], boot["BootSourceOverrideTarget"]) == (
        "Continuous",
        "Cd",
    )


def test_power_off_makes_the_node_not_ready_and_power_on_brings_it_back(
    sim: SimHandle, bmc: httpx.Client, artifacts: Path
) -> None:
    _provision_c0(sim, bmc, artifacts)
    wait_for(lambda: _all_ready(sim, "c0", {"c0-cp1", "c0-w1"}), timeout=10)
    reset = "/bmc/c0-w1/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
    assert bmc.post(reset, json={"ResetType": "ForceOff"}).status_code == 204
    nodes = _nodes(sim, "c0")
    assert nodes["c0-w1"]["ready"] is False and nodes["c0-cp1"]["ready"] is True
    assert sim.machine("c0-w1")["phase"] == "off"
    # Boots from disk now (the Once override is spent): the installed OS comes back.
    assert bmc.post(reset, json={"ResetType": "On"}).status_code == 204
    wait_for(
        lambda: _all_ready(sim, "c0", {"c0-cp1", "c0-w1"}), timeout=10, what="the worker to rejoin"
    )
    assert sim.machine("c0-w1")["phase"] == "running"


def test_force_restart_re_evaluates_the_boot(
    sim: SimHandle, bmc: httpx.Client, artifacts: Path
) -> None:
    _provision_c0(sim, bmc, artifacts)
    wait_for(lambda: _all_ready(sim, "c0", {"c0-cp1", "c0-w1"}), timeout=10)
    system = "/bmc/c0-w1/redfish/v1/Systems/1"
    bmc.patch(
        system,
        json={"Boot": {"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Pxe"}},
    )
    bmc.post(system + "/Actions/ComputerSystem.Reset", json={"ResetType": "ForceRestart"})
    state = sim.wait_phase("c0-w1", "idle")
    assert "PXE" in state["reason"]
    assert _nodes(sim, "c0")["c0-w1"]["ready"] is False
    bmc.post(system + "/Actions/ComputerSystem.Reset", json={"ResetType": "ForceRestart"})
    wait_for(lambda: _all_ready(sim, "c0", {"c0-cp1", "c0-w1"}), timeout=10)


def test_unparsable_cloud_init_leaves_the_machine_stuck(
    sim: SimHandle, bmc: httpx.Client, artifacts: Path
) -> None:
    broken = seed_iso("#cloud-config\nwrite_files: [ {path: /etc/werft/node.yaml, content: ")
    url = sim.url + publish_seed(artifacts, "c1", "c1-cp1", broken)
    provision_bmc(bmc, "/bmc/c1-cp1/redfish/v1/", sim.url + IMAGE, url)
    state = sim.wait_phase("c1-cp1", "stuck")
    assert "cloud-init" in state["reason"] and "YAML" in state["reason"]
    assert state["installed"] is None
    assert sim.cluster("c1")["apiUp"] is False


def test_a_seed_without_node_identity_or_no_seed_at_all_is_stuck(
    sim: SimHandle, bmc: httpx.Client, artifacts: Path
) -> None:
    no_node = seed_iso("#cloud-config\nwrite_files: []\n")
    url = sim.url + publish_seed(artifacts, "c1", "c1-w1", no_node)
    provision_bmc(bmc, "/bmc/c1-w1/redfish/v1/", sim.url + IMAGE, url)
    assert "/etc/werft/node.yaml" in sim.wait_phase("c1-w1", "stuck")["reason"]
    # The installer alone: it waits for input.
    cd1 = "/bmc/c2-cp1/redfish/v1/Managers/1/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia"
    assert bmc.post(cd1, json={"Image": sim.url + IMAGE}).status_code == 204
    system = "/bmc/c2-cp1/redfish/v1/Systems/1"
    bmc.patch(
        system,
        json={"Boot": {"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Cd"}},
    )
    bmc.post(system + "/Actions/ComputerSystem.Reset", json={"ResetType": "On"})
    assert "no NoCloud seed" in sim.wait_phase("c2-cp1", "stuck")["reason"]


def test_booting_without_an_os_or_media_is_idle(sim: SimHandle, bmc: httpx.Client) -> None:
    reset = "/bmc/c2-w1/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
    bmc.post(reset, json={"ResetType": "On"})
    assert "no operating system" in sim.wait_phase("c2-w1", "idle")["reason"]


def test_vm_lifecycle_through_the_hypervisor_api(sim: SimHandle, artifacts: Path) -> None:
    seed_cp = _seed_url(sim, artifacts, "c2", "vm-cp1", "control-plane", token=TOKEN)
    seed_w = _seed_url(sim, artifacts, "c2", "vm-w1", "worker")
    spec = {"cpus": 2, "memoryMiB": 4096, "diskGiB": 40, "mac": "52:54:00:00:00:01"}
    with httpx.Client(base_url=sim.url + "/hypervisor/v1", trust_env=False) as hv:
        assert hv.get("/domains/vm-cp1").status_code == 404
        created = hv.put("/domains/vm-cp1", json={**spec, "media": [sim.url + IMAGE, seed_cp]})
        assert created.status_code == 201
        assert created.json() == {
            "name": "vm-cp1",
            "state": "shutoff",
            **spec,
            "media": [sim.url + IMAGE, seed_cp],
        }
        same = hv.put("/domains/vm-cp1", json={**spec, "media": [sim.url + IMAGE, seed_cp]})
        assert same.status_code == 200
        assert hv.post("/domains/vm-cp1/start").json()["state"] == "running"
        other = hv.put("/domains/vm-cp1", json={**spec, "media": [sim.url + IMAGE, seed_w]})
        assert other.status_code == 409
        hv.put("/domains/vm-w1", json={**spec, "media": [sim.url + IMAGE, seed_w]})
        hv.post("/domains/vm-w1/start")
        wait_for(lambda: _all_ready(sim, "c2", {"vm-cp1", "vm-w1"}), timeout=10)
        assert hv.post("/domains/vm-w1/stop").json()["state"] == "shutoff"
        assert _nodes(sim, "c2")["vm-w1"]["ready"] is False
        assert hv.delete("/domains/vm-w1").status_code == 204
        assert hv.get("/domains/vm-w1").status_code == 404
        bad = hv.put("/domains/vm-w1", json={**spec, "media": [sim.url + "/artifacts/no.iso"]})
        assert bad.status_code == 400 and "could not fetch image" in bad.json()["error"]
        assert hv.put("/domains/vm-w1", json={"cpus": 0}).status_code == 400
        assert hv.post("/domains/nope/start").status_code == 404
    stats = sim.stats()
    assert stats["mutations"]["hypervisor"]["vm-cp1"] == 4  # 2 PUT, start, refused PUT


def test_bootstrap_endpoint_brings_an_api_up_directly(sim: SimHandle) -> None:
    with httpx.Client(base_url=sim.url, trust_env=False) as client:
        before = client.get("/_sim/clusters/c1/kubeconfig")
        assert before.status_code == 409
        result = sim.bootstrap(
            "c1", "boot-token", kubernetes_version="1.31.1", nodes=3, cni=True
        )
        assert result["nodes"] == ["c1-cp1", "c1-w1", "c1-node-2"]
        nodes = _nodes(sim, "c1", "boot-token")
        assert set(nodes) == {"c1-cp1", "c1-w1", "c1-node-2"}
        assert all(n["ready"] and n["kubelet"] == "v1.31.1" for n in nodes.values())
        assert "boot-token" in sim.kubeconfig("c1")
        assert "boot-token" not in client.get("/_sim/clusters/c1").text
        assert client.post("/_sim/clusters/c1/bootstrap", json={}).status_code == 400
        assert client.get("/_sim/clusters/nope").status_code == 404
        assert client.get("/_sim/machines/nope").status_code == 404


def test_machine_listing_by_cluster(sim: SimHandle) -> None:
    listing = sim.admin.get("/_sim/machines", params={"cluster": "c0"}).json()["machines"]
    assert {m["name"] for m in listing} == {"c0-cp1", "c0-w1"}
    everything = sim.admin.get("/_sim/machines").json()["machines"]
    assert len(everything) == 8


def test_boot_progress_tells_post_from_a_booted_machine(
    sim: SimHandle, bmc: httpx.Client, artifacts: Path
) -> None:
    system = "/bmc/c0-cp1/redfish/v1/Systems/1"
    assert follow(bmc, system)["BootProgress"]["LastState"] == "None"
    _provision_c0(sim, bmc, artifacts)
    sim.wait_phase("c0-cp1", "running")
    assert follow(bmc, system)["BootProgress"]["LastState"] == "OSRunning"
