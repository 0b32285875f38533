"""Fault injection, drift and request statistics of the simulator."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.kubefixtures import apply_cni
from tests.simfixtures import (
    DEFAULT_CREDENTIALS,
    SimHandle,
    provision_bmc,
    publish_seed,
    running_sim,
    seed_iso,
    small_fleet,
    user_data,
    wait_for,
)
from werft.sim.faults import FaultRuleError, FaultSet, Target

SYSTEM = "/bmc/c0-cp1/redfish/v1/Systems/1"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    machines, sites = small_fleet(3)
    with running_sim(
        machines=machines,
        clusters=sites,
        time_scale=2000,
        artifacts_dir=tmp_path_factory.mktemp("artifacts"),
    ) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _clean(sim: SimHandle) -> Iterator[None]:
    sim.clear_faults()
    yield
    sim.clear_faults()


@pytest.fixture
def bmc(sim: SimHandle) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sim.url, auth=DEFAULT_CREDENTIALS, trust_env=False, timeout=5.0
    ) as client:
        yield client


def test_error_rule_fails_every_matching_request_with_a_redfish_body(
    sim: SimHandle, bmc: httpx.Client
) -> None:
    rule = sim.add_fault(kind="error", machine="c0-cp1", status=500)
    assert rule["id"] and rule["kind"] == "error"
    response = bmc.get(SYSTEM)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "Base.1.8.GeneralError"
    assert bmc.get("/bmc/c0-w1/redfish/v1/Systems/1").status_code == 200  # other machine
    sim.remove_fault(rule["id"])
    assert bmc.get(SYSTEM).status_code == 200


def test_error_rate_is_reproducible_with_a_seed(sim: SimHandle, bmc: httpx.Client) -> None:
    def run() -> list[int]:
        sim.clear_faults()
        sim.load_faults(
            {"seed": 42, "rules": [{"id": "flaky", "kind": "error", "site": "s1", "rate": 0.5}]}
        )
        return [bmc.get("/bmc/c1-cp1/redfish/v1/Systems/1").status_code for _ in range(40)]

    first, second = run(), run()
    assert first == second
    assert set(first) == {200, 503}
    assert 8 <= first.count(503) <= 32
    assert sim.faults()["rules"][0]["hits"] == first.count(503)


def test_auth_rule_forces_401_for_bmc_and_cluster(sim: SimHandle, bmc: httpx.Client) -> None:
    sim.add_fault(kind="auth", site="s0")
    response = bmc.get(SYSTEM)
    assert response.status_code == 401
    assert "error" in response.json()
    kube = httpx.get(sim.url + "/clusters/c0/version", trust_env=False)
    assert kube.status_code == 401
    assert kube.json()["kind"] == "Status" and kube.json()["code"] == 401


def test_error_on_a_cluster_api_is_a_kubernetes_status(sim: SimHandle) -> None:
    sim.add_fault(kind="error", cluster="c2", status=503)
    response = httpx.get(sim.url + "/clusters/c2/api/v1/nodes", trust_env=False)
    assert response.status_code == 503
    body = response.json()
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "ServiceUnavailable", 503)


def test_timeout_hangs_past_the_client_timeout(sim: SimHandle) -> None:
    sim.add_fault(kind="timeout", machine="c0-w1", seconds=5)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(
            sim.url + "/bmc/c0-w1/redfish/v1/Systems/1",
            auth=DEFAULT_CREDENTIALS,
            timeout=0.3,
            trust_env=False,
        )
    # The client gave up at its own timeout, before the server's 5 s hang ended.
    assert time.monotonic() - started < 5
    sim.clear_faults()
    sim.add_fault(kind="timeout", machine="c0-w1", seconds=0.2)
    late = httpx.get(
        sim.url + "/bmc/c0-w1/redfish/v1/Systems/1",
        auth=DEFAULT_CREDENTIALS,
        timeout=3,
        trust_env=False,
    )
    assert late.status_code == 504


def test_slow_rule_adds_latency(sim: SimHandle, bmc: httpx.Client) -> None:
    bmc.get(SYSTEM)
    started = time.monotonic()
    bmc.get(SYSTEM)
    fast = time.monotonic() - started
    sim.add_fault(kind="slow", machine="c0-cp1", seconds=0.3)
    started = time.monotonic()
    assert bmc.get(SYSTEM).status_code == 200
    slow = time.monotonic() - started
    assert slow >= 0.3 > fast


def test_offline_site_drops_connections_for_bmcs_and_cluster_apis(
    sim: SimHandle, bmc: httpx.Client
) -> None:
    sim.add_fault(kind="offline", site="s2")
    with pytest.raises(httpx.TransportError):
        bmc.get("/bmc/c2-cp1/redfish/v1/Systems/1")
    with pytest.raises(httpx.TransportError):
        httpx.get(sim.url + "/clusters/c2/version", trust_env=False)
    assert bmc.get(SYSTEM).status_code == 200  # site s0 still answers
    sim.clear_faults()
    assert bmc.get("/bmc/c2-cp1/redfish/v1/Systems/1").status_code == 200


def test_offline_hang_mode_and_windows(sim: SimHandle, bmc: httpx.Client) -> None:
    sim.add_fault(kind="offline", site="s2", mode="hang", seconds=30)
    with pytest.raises(httpx.ReadTimeout):
        bmc.get("/bmc/c2-w1/redfish/v1/Systems/1", timeout=0.3)
    sim.clear_faults()
    # A window that starts later and ends: 0.3 s from now, for 0.4 s.
    sim.add_fault(kind="error", site="s2", start=0.3, duration=0.4)
    assert bmc.get("/bmc/c2-w1/redfish/v1/Systems/1").status_code == 200
    wait_for(
        lambda: bmc.get("/bmc/c2-w1/redfish/v1/Systems/1").status_code == 503,
        timeout=3,
        what="the window to open",
    )
    wait_for(
        lambda: bmc.get("/bmc/c2-w1/redfish/v1/Systems/1").status_code == 200,
        timeout=3,
        what="the window to close",
    )


def test_path_and_method_filters(sim: SimHandle, bmc: httpx.Client) -> None:
    sim.add_fault(kind="error", path="/bmc/*/redfish/v1/Managers/*", methods=["GET"])
    assert bmc.get("/bmc/c1-w1/redfish/v1/Managers/1").status_code == 503
    assert bmc.get("/bmc/c1-w1/redfish/v1/Systems/1").status_code == 200
    assert bmc.get("/bmc/c1-w1/redfish/v1/Managers").status_code == 200


def test_bad_rules_are_rejected(sim: SimHandle) -> None:
    for rule in (
        {"kind": "meteor"},
        {"kind": "error", "rate": 2},
        {"kind": "error", "colour": "red"},
        {"kind": "offline", "mode": "sideways"},
    ):
        assert sim.admin.post("/_sim/faults", json=rule).status_code == 400
    assert sim.faults()["rules"] == []
    assert sim.admin.delete("/_sim/faults/nope").status_code == 404


def test_fault_file_is_loaded_at_start(tmp_path: Path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text("seed: 3\nrules:\n  - {kind: error, machine: c0-w1, status: 502}\n")
    machines, sites = small_fleet(1)
    with running_sim(
        machines=machines,
        clusters=sites,
        faults=faults,
    ) as sim:
        response = httpx.get(
            sim.url + "/bmc/c0-w1/redfish/v1/Systems/1", auth=DEFAULT_CREDENTIALS, trust_env=False
        )
        assert response.status_code == 502
        assert sim.faults()["seed"] == 3
    faults.write_text("rules:\n  - {kind: nope}\n")
    with pytest.raises(FaultRuleError, match=r"faults\.yaml"):
        running_sim(machines=machines, clusters=sites, faults=faults).__enter__()


def test_fault_set_without_rules_decides_nothing() -> None:
    faults = FaultSet(seed=1)
    assert faults.decide(Target("bmc", machine="m"), "GET", "/bmc/m") is None
    faults.add({"kind": "slow", "seconds": 0.5})
    faults.add({"kind": "slow", "seconds": 0.25, "machine": "m"})
    decision = faults.decide(Target("bmc", machine="m"), "GET", "/bmc/m")
    assert decision is not None and decision.delay == 0.75 and decision.rule is None


def test_stats_count_requests_and_mutations_but_not_admin_calls(
    sim: SimHandle, bmc: httpx.Client
) -> None:
    sim.reset_stats()
    bmc.get(SYSTEM)
    bmc.patch(SYSTEM, json={"Boot": {"BootSourceOverrideTarget": "Hdd"}})
    bmc.post(SYSTEM + "/Actions/ComputerSystem.Reset", json={"ResetType": "ForceOff"})
    httpx.get(sim.url + "/clusters/c1/version", trust_env=False)
    httpx.delete(sim.url + "/hypervisor/v1/domains/ghost", trust_env=False)
    sim.machine("c0-cp1")
    sim.faults()
    stats = sim.stats()
    assert stats["requests"] == 5
    assert stats["mutations"] == {"bmc": {"c0-cp1": 2}, "hypervisor": {"ghost": 1}, "clusters": {}}
    assert stats["requestsByTarget"]["clusters"] == {"c1": 1}
    assert stats["requestsByTarget"]["bmc"] == {"c0-cp1": 3}
    sim.reset_stats()
    assert sim.stats()["requests"] == 0
    assert sim.mutations() == 0


def _provision(sim: SimHandle, bmc: httpx.Client, cluster: str, token: str) -> None:
    """Install the cluster's control plane and worker from fresh seeds."""
    artifacts = Path(str(sim.app._artifacts.app.directory))  # type: ignore[union-attr]
    for machine, role in ((f"{cluster}-cp1", "control-plane"), (f"{cluster}-w1", "worker")):
        seed = seed_iso(
            user_data(
                cluster=cluster,
                role=role,
                node_name=machine,
                token=token if role == "control-plane" else None,
            )
        )
        url = sim.url + publish_seed(artifacts, cluster, machine, seed)
        root = f"/bmc/{machine}/redfish/v1"
        bmc.post(f"{root}/Systems/1/Actions/ComputerSystem.Reset", json={"ResetType": "ForceOff"})
        for device in ("CD1", "CD2"):
            bmc.post(
                f"{root}/Managers/1/VirtualMedia/{device}/Actions/VirtualMedia.EjectMedia", json={}
            )
        provision_bmc(bmc, root + "/", sim.url + "/images/os.iso", url)


def _kube(sim: SimHandle, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=sim.url, headers={"Authorization": f"Bearer {token}"}, trust_env=False
    )


def _ready(kube: httpx.Client, cluster: str) -> dict[str, bool]:
    response = kube.get(f"/clusters/{cluster}/api/v1/nodes")
    if response.status_code != 200:
        return {}
    return {
        item["metadata"]["name"]: next(
            c["status"] for c in item["status"]["conditions"] if c["type"] == "Ready"
        )
        == "True"
        for item in response.json()["items"]
    }


def test_power_off_drift_makes_a_ready_node_not_ready(sim: SimHandle, bmc: httpx.Client) -> None:
    _provision(sim, bmc, "c1", "drift-token")
    with _kube(sim, "drift-token") as kube:
        wait_for(  # nodes are NotReady until a CNI runs: install one once they registered
            lambda: len(_ready(kube, "c1")) == 2
            and apply_cni(f"{sim.url}/clusters/c1", "drift-token")
            and _ready(kube, "c1") == {"c1-cp1": True, "c1-w1": True},
            timeout=10,
            what="both nodes Ready",
        )
        assert sim.drift(kind="power-off", machine="c1-w1")["powerState"] == "Off"
        assert _ready(kube, "c1") == {"c1-cp1": True, "c1-w1": False}
        assert sim.machine("c1-w1")["powerState"] == "Off"
        # The last control plane going away takes the API down until it is back.
        sim.drift(kind="power-off", machine="c1-cp1")
        assert kube.get("/clusters/c1/version").status_code == 503
        bmc.post(
            "/bmc/c1-cp1/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            json={"ResetType": "On"},
        )
        wait_for(
            lambda: _ready(kube, "c1").get("c1-cp1"),
            timeout=10,
            what="the control plane to come back",
        )
    missing = sim.admin.post("/_sim/drift", json={"kind": "power-off", "machine": "nope"})
    assert missing.status_code == 404
    assert sim.admin.post("/_sim/drift", json={"kind": "melt"}).status_code == 400


def test_object_and_kubelet_drift_go_through_the_cluster_store(sim: SimHandle) -> None:
    sim.bootstrap("c2", "store-token", kubernetes_version="1.31.1", nodes=1)
    with _kube(sim, "store-token") as kube:
        created = kube.post(
            "/clusters/c2/api/v1/namespaces/default/configmaps",
            json={
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings"},
                "data": {"colour": "blue"},
            },
        )
        assert created.status_code == 201
        path = "/clusters/c2/api/v1/namespaces/default/configmaps/settings"
        version = kube.get(path).json()["metadata"]["resourceVersion"]
        sim.drift(
            kind="change-object",
            cluster="c2",
            apiVersion="v1",
            objectKind="ConfigMap",
            namespace="default",
            name="settings",
            patch={"data": {"colour": "red"}},
        )
        changed = kube.get(path).json()
        assert changed["data"] == {"colour": "red"}
        assert changed["metadata"]["resourceVersion"] != version
        sim.drift(
            kind="delete-object",
            cluster="c2",
            apiVersion="v1",
            resource="configmaps",
            namespace="default",
            name="settings",
        )
        assert kube.get(path).status_code == 404
        again = sim.admin.post(
            "/_sim/drift",
            json={
                "kind": "delete-object",
                "cluster": "c2",
                "apiVersion": "v1",
                "resource": "configmaps",
                "namespace": "default",
                "name": "settings",
            },
        )
        assert again.status_code == 404
        node = sim.bootstrap("c2", "store-token", nodes=1)["nodes"][0]
        sim.drift(kind="kubelet-version", cluster="c2", node=node, version="v1.29.0")
        info = kube.get(f"/clusters/c2/api/v1/nodes/{node}").json()["status"]["nodeInfo"]
        assert info["kubeletVersion"] == "v1.29.0"
    not_up = sim.admin.post(
        "/_sim/drift",
        json={"kind": "kubelet-version", "cluster": "c0", "node": "x", "version": "v1.0.0"},
    )
    assert not_up.status_code == 409
