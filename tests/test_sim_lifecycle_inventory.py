"""The simulator from an inventory: seeds as werft renders them, credentials, the CLI."""

from __future__ import annotations

import base64
import gzip
import io
from pathlib import Path

import httpx
import pycdlib
import pytest
import yaml
from typer.testing import CliRunner

from tests.simfixtures import (
    DEFAULT_CREDENTIALS,
    provision_bmc,
    reserve_port,
    running_sim,
    seed_iso,
    user_data,
    wait_for,
)
from werft.cli import app as cli
from werft.sim.fleetspec import CredentialsMissing, specs_from_inventory, system_id_of
from werft.sim.seed import NodeSeed, SeedError, parse_seed, parse_user_data


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    generate = pytest.importorskip("werft.inventory.generate")
    root = tmp_path_factory.mktemp("fleet")
    generate.write_fleet(
        root, edge_sites=4, core_sites=1, near_edge_sites=1, endpoint="http://127.0.0.1:8686"
    )
    return root


# --- seeds -------------------------------------------------------------------------------


def test_seed_with_plain_b64_and_gzip_content_is_understood() -> None:
    plain = parse_seed(seed_iso(user_data(cluster="c", role="worker", node_name="n", b64=False)))
    assert plain == NodeSeed("c", "worker", "n", "1.31.1", "kubeadm")
    token = parse_seed(
        seed_iso(
            user_data(
                cluster="c",
                role="control-plane",
                node_name="n",
                token="t0k",
                distribution="k3s",
                kubernetes_version="v1.30.2",
            )
        )
    )
    assert isinstance(token, NodeSeed)
    assert (token.token, token.distribution, token.kubernetes_version) == ("t0k", "k3s", "1.30.2")
    assert "t0k" not in repr(token)
    node = yaml.safe_dump(
        {
            "cluster": "c",
            "role": "worker",
            "nodeName": "n",
            "kubernetesVersion": "1.31.1",
            "distribution": "kubeadm",
        }
    )
    gz = base64.b64encode(gzip.compress(node.encode())).decode()
    doc = "#cloud-config\n" + yaml.safe_dump(
        {"write_files": [{"path": "/etc/werft/node.yaml", "encoding": "gz+b64", "content": gz}]}
    )
    assert parse_user_data(doc.encode()) == NodeSeed("c", "worker", "n", "1.31.1", "kubeadm")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("#!/bin/sh\necho hi\n", "#cloud-config"),
        ("#cloud-config\n: [\n", "YAML"),
        ("#cloud-config\nwrite_files: []\n", "/etc/werft/node.yaml"),
        (
            "#cloud-config\nwrite_files:\n- {path: /etc/werft/node.yaml, content: 'role: x'}\n",
            "lacks",
        ),
        (
            "#cloud-config\nwrite_files:\n- {path: /etc/werft/node.yaml, encoding: b64,"
            " content: '!!!'}\n",
            "node.yaml",
        ),
    ],
)
def test_unusable_user_data_says_why(text: str, reason: str) -> None:
    result = parse_user_data(text.encode())
    assert isinstance(result, SeedError)
    assert reason in result.reason


def test_seed_found_by_plain_iso9660_names() -> None:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="CIDATA")
    data = user_data(cluster="c", role="worker", node_name="n").encode()
    iso.add_fp(io.BytesIO(data), len(data), "/USER_DATA.;1")
    out = io.BytesIO()
    iso.write_fp(out)
    assert isinstance(parse_seed(out.getvalue()), NodeSeed)
    assert isinstance(parse_seed(b"not an iso" * 1000), SeedError)


def test_seed_rendered_by_werft_is_understood(tmp_path: Path, fleet_dir: Path) -> None:
    render_seed = pytest.importorskip("werft.render.seed")
    pki_mod = pytest.importorskip("werft.render.pki")
    from werft.inventory.load import load_inventory
    from werft.secrets import SecretStore

    inventory = load_inventory(fleet_dir)
    cluster = next(c for c in inventory.clusters.values() if c.control_plane)
    pki = pki_mod.ensure_cluster_pki(cluster, SecretStore(tmp_path / "secrets"))
    cp = cluster.control_plane[0]
    seed = parse_seed(render_seed.build_seed_iso(cluster, cp, pki))
    assert isinstance(seed, NodeSeed), seed
    assert (seed.cluster, seed.role, seed.node_name) == (cluster.name, "control-plane", cp.name)
    assert seed.kubernetes_version == cluster.kubernetes_version
    assert seed.token == pki.admin_token


# --- inventory -> simulator --------------------------------------------------------------


def test_unresolvable_credentials_name_every_ref(
    fleet_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from werft import secrets
    from werft.inventory.load import load_inventory
    from werft.secrets import SecretStore, env_var_for

    # Only the environment and the (empty) store may answer: a Prefect Secret-block
    # backend registered by another test's session fixture must not.
    monkeypatch.setattr(secrets, "_extra_backends", [])
    inventory = load_inventory(fleet_dir)
    refs = sorted(
        {m.bmc.credentials_ref for c in inventory.clusters.values() for m in c.machines if m.bmc}
    )
    store = SecretStore(tmp_path / "empty")
    with pytest.raises(CredentialsMissing) as failure:
        specs_from_inventory(inventory, store=store)
    assert failure.value.refs == refs
    for ref in refs:
        monkeypatch.setenv(env_var_for(ref), f"root:{ref}-pw")
    machines, clusters = specs_from_inventory(inventory, store=store)
    assert set(clusters) == set(inventory.clusters)
    bmc = next(m for m in machines if m.kind == "bmc")
    assert bmc.credentials is not None and bmc.credentials[1].endswith("-pw")
    assert "-pw" not in repr(bmc)


def test_system_id_comes_from_the_bmc_address() -> None:
    assert system_id_of("redfish+http://127.0.0.1:8686/bmc/m/redfish/v1/Systems/1") == "1"
    assert system_id_of("redfish://10.0.0.1/redfish/v1/Systems/System.Embedded.1") == (
        "System.Embedded.1"
    )


def test_sim_serves_a_generated_inventory_end_to_end(fleet_dir: Path, tmp_path: Path) -> None:
    from werft.inventory.generate import write_fleet
    from werft.inventory.load import load_inventory

    sock = reserve_port()
    port = sock.getsockname()[1]
    root = tmp_path / "fleet"
    write_fleet(
        root, edge_sites=2, core_sites=1, near_edge_sites=0, endpoint=f"http://127.0.0.1:{port}"
    )
    inventory = load_inventory(root)
    artifacts = tmp_path / "artifacts"
    cluster = next(
        c for c in inventory.clusters.values() if all(m.bmc is not None for m in c.machines)
    )
    with running_sim(root, sock=sock, artifacts_dir=artifacts, time_scale=2000) as sim:
        assert sim.cluster(cluster.name)["apiUp"] is False
        cp = cluster.control_plane[0]
        address = cp.bmc.address  # type: ignore[union-attr]
        root_path = "/" + address.split("/", 3)[3].rsplit("/Systems/", 1)[0] + "/"
        data = seed_iso(
            user_data(
                cluster=cluster.name,
                role="control-plane",
                node_name=cp.name,
                token="inv-token",
                kubernetes_version=cluster.kubernetes_version,
            )
        )
        (artifacts / "seeds").mkdir(parents=True)
        (artifacts / "seeds" / "cp.iso").write_bytes(data)
        with httpx.Client(base_url=sim.url, auth=DEFAULT_CREDENTIALS, trust_env=False) as bmc:
            provision_bmc(bmc, root_path, cluster.os_image_url, sim.url + "/artifacts/seeds/cp.iso")
        wait_for(lambda: sim.cluster(cluster.name)["apiUp"], timeout=10)
        assert sim.stats()["mutations"]["bmc"][cp.name] == 4


# --- CLI -----------------------------------------------------------------------------------


def test_cli_kubeconfig_prints_the_admin_kubeconfig() -> None:
    from tests.simfixtures import small_fleet

    machines, sites = small_fleet(1)
    with running_sim(
        machines=machines,
        clusters=sites,
    ) as sim:
        runner = CliRunner()
        early = runner.invoke(cli, ["sim", "kubeconfig", "c0", "--url", sim.url])
        assert early.exit_code == 1
        sim.bootstrap("c0", "cli-token")
        result = runner.invoke(cli, ["sim", "kubeconfig", "c0", "--url", sim.url])
        assert result.exit_code == 0, result.output
        config = yaml.safe_load(result.output)
        assert config["clusters"][0]["cluster"]["server"] == sim.url + "/clusters/c0"
        assert config["users"][0]["user"]["token"] == "cli-token"
        assert config["current-context"] == "c0"


def test_cli_serve_refuses_to_start_without_credentials(
    fleet_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WERFT_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(cli, ["sim", "serve", "--inventory", str(fleet_dir), "--port", "0"])
    assert result.exit_code == 2
    assert "cannot resolve the BMC credentials" in result.output
    assert "--default-credentials" in result.output
    bad = CliRunner().invoke(
        cli, ["sim", "serve", "--inventory", str(fleet_dir), "--default-credentials", "nocolon"]
    )
    assert bad.exit_code == 2


def test_kubectl_reaches_a_cluster_through_the_tls_listener(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from tests.simfixtures import small_fleet

    kubectl = shutil.which("kubectl")
    machines, sites = small_fleet(1)
    with running_sim(machines=machines, clusters=sites, tls=True) as sim:
        assert sim.tls_url is not None
        sim.bootstrap("c0", "kubectl-token", nodes=2)
        config = yaml.safe_load(sim.kubeconfig("c0"))
        cluster = config["clusters"][0]["cluster"]
        assert cluster["server"] == sim.tls_url + "/clusters/c0"
        assert cluster["certificate-authority-data"]
        plain = yaml.safe_load(sim.kubeconfig("c0", scheme="http"))
        assert plain["clusters"][0]["cluster"]["server"] == sim.url + "/clusters/c0"
        ca = tmp_path / "ca.crt"
        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        with httpx.Client(verify=str(ca), trust_env=False) as client:
            nodes = client.get(
                cluster["server"] + "/api/v1/nodes",
                headers={"Authorization": "Bearer kubectl-token"},
            )
            assert nodes.status_code == 200
            assert len(nodes.json()["items"]) == 2
        if kubectl is None:
            pytest.skip("kubectl is not installed (Debian: kubernetes-client)")
        path = tmp_path / "kubeconfig"
        path.write_text(sim.kubeconfig("c0"))
        done = subprocess.run(
            [kubectl, "--kubeconfig", str(path), "get", "nodes", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert sorted(done.stdout.split()) == ["node/c0-cp1", "node/c0-w1"]
