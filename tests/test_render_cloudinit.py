"""Rendered cloud-init, kubeadm and k3s configuration, checked field by field."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.renderfixtures import ARTIFACTS_URL, make_cluster
from werft.errors import PermanentError
from werft.inventory.resolved import ResolvedCluster
from werft.render.cloudinit import render_meta_data, render_network_config, render_user_data
from werft.render.kubeconfig import kubeconfig_for
from werft.render.pki import ClusterPKI, ca_cert_hash, ensure_cluster_pki
from werft.secrets import SecretStore

# The `cloud-init` package is not on PyPI, so its JSON schema cannot be installed in the
# venv. These are the top-level keys of cloud-init 22.4's schema-cloud-config-v1.json
# (Debian bookworm's cloud-init 22.4.2: the properties of every $defs entry referenced
# from its top-level allOf), and below, copied from the same schema, the definitions of
# the keys werft uses.
CLOUD_CONFIG_KEYS = frozenset(
    [
        "allow_public_ssh_keys",
        "ansible",
        "apk_repos",
        "apt",
        "apt_pipelining",
        "apt_reboot_if_required",
        "apt_update",
        "apt_upgrade",
        "authkey_hash",
        "autoinstall",
        "bootcmd",
        "byobu_by_default",
        "ca-certs",
        "ca_certs",
        "chef",
        "chpasswd",
        "cloud_config_modules",
        "cloud_final_modules",
        "cloud_init_modules",
        "device_aliases",
        "disable_ec2_metadata",
        "disable_root",
        "disable_root_opts",
        "disk_setup",
        "drivers",
        "fan",
        "final_message",
        "fqdn",
        "fs_setup",
        "groups",
        "growpart",
        "grub-dpkg",
        "grub_dpkg",
        "hostname",
        "keyboard",
        "landscape",
        "locale",
        "locale_configfile",
        "lxd",
        "manage_etc_hosts",
        "manage_resolv_conf",
        "mcollective",
        "migrate",
        "mount_default_fields",
        "mounts",
        "no_ssh_fingerprints",
        "ntp",
        "package_reboot_if_required",
        "package_update",
        "package_upgrade",
        "packages",
        "password",
        "phone_home",
        "power_state",
        "prefer_fqdn_over_hostname",
        "preserve_hostname",
        "puppet",
        "random_seed",
        "reporting",
        "resize_rootfs",
        "resolv_conf",
        "rh_subscription",
        "rsyslog",
        "runcmd",
        "salt_minion",
        "snap",
        "spacewalk",
        "ssh",
        "ssh_authorized_keys",
        "ssh_deletekeys",
        "ssh_fp_console_blacklist",
        "ssh_genkeytypes",
        "ssh_import_id",
        "ssh_key_console_blacklist",
        "ssh_keys",
        "ssh_publish_hostkeys",
        "ssh_pwauth",
        "ssh_quiet_keygen",
        "swap",
        "timezone",
        "ubuntu_advantage",
        "updates",
        "user",
        "users",
        "vendor_data",
        "wireguard",
        "write_files",
        "yum_repo_dir",
        "yum_repos",
        "zypper",
    ]
)
CLOUD_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"enum": sorted(CLOUD_CONFIG_KEYS)},
    "properties": {
        "hostname": {"type": "string"},
        "fqdn": {"type": "string"},
        "preserve_hostname": {"type": "boolean"},
        "manage_etc_hosts": {"enum": [True, False, "localhost", "template"]},
        "ssh_pwauth": {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
        "disable_root": {"type": "boolean"},
        "package_update": {"type": "boolean"},
        "package_upgrade": {"type": "boolean"},
        "final_message": {"type": "string"},
        "write_files": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["path"],
                "additionalProperties": False,
                "properties": {
                    "path": {"type": "string"},
                    "content": {"type": "string"},
                    "owner": {"type": "string"},
                    "permissions": {"type": "string"},
                    "encoding": {
                        "type": "string",
                        "enum": [
                            "gz",
                            "gzip",
                            "gz+base64",
                            "gzip+base64",
                            "gz+b64",
                            "gzip+b64",
                            "b64",
                            "base64",
                            "text/plain",
                        ],
                    },
                    "append": {"type": "boolean"},
                    "defer": {"type": "boolean"},
                },
            },
        },
        "runcmd": {
            "type": "array",
            "minItems": 1,
            "items": {
                "oneOf": [
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "string"},
                    {"type": "null"},
                ]
            },
        },
    },
}


@pytest.fixture
def store(tmp_path: Path) -> SecretStore:
    return SecretStore(tmp_path / "secrets")


def user_data(cluster: ResolvedCluster, index: int, pki: ClusterPKI) -> dict[str, Any]:
    text = render_user_data(cluster, cluster.machines[index], pki, artifacts_url=ARTIFACTS_URL)
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def files_of(config: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {entry["path"]: entry for entry in config["write_files"]}


def kubeadm_docs(config: dict[str, Any]) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(files_of(config)["/etc/kubernetes/kubeadm.yaml"]["content"]))


def k3s_config(config: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(files_of(config)["/etc/rancher/k3s/config.yaml"]["content"])


# --- cloud-config shape ----------------------------------------------------------------


@pytest.mark.parametrize("distribution", ["kubeadm", "k3s"])
@pytest.mark.parametrize("index", [0, 1, 2], ids=["first-cp", "second-cp", "worker"])
def test_user_data_follows_the_cloud_config_schema(
    store: SecretStore, distribution: str, index: int
) -> None:
    cluster = make_cluster(distribution=distribution, control_planes=2, workers=1)
    pki = ensure_cluster_pki(cluster, store)
    config = user_data(cluster, index, pki)

    jsonschema.validate(config, CLOUD_CONFIG_SCHEMA)
    assert config["hostname"] == cluster.machines[index].name
    assert config["ssh_pwauth"] is False
    assert config["runcmd"]


def test_the_schema_check_is_not_vacuous() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"write_file": []}, CLOUD_CONFIG_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"write_files": [{"path": "/x", "mode": "0600"}]}, CLOUD_CONFIG_SCHEMA)


@pytest.mark.parametrize("distribution", ["kubeadm", "k3s"])
def test_node_yaml_and_tokens_csv_follow_the_contract(
    store: SecretStore, distribution: str
) -> None:
    cluster = make_cluster(distribution=distribution, version="1.30.4", workers=1)
    pki = ensure_cluster_pki(cluster, store)
    cp, worker = user_data(cluster, 0, pki), user_data(cluster, 1, pki)

    node = yaml.safe_load(files_of(cp)["/etc/werft/node.yaml"]["content"])
    assert node == {
        "cluster": cluster.name,
        "role": "control-plane",
        "nodeName": cluster.machines[0].name,
        "kubernetesVersion": "1.30.4",
        "distribution": distribution,
    }
    assert yaml.safe_load(files_of(worker)["/etc/werft/node.yaml"]["content"])["role"] == "worker"

    tokens = files_of(cp)["/etc/werft/pki/tokens.csv"]
    assert tokens["content"] == f'{pki.admin_token},werft-admin,werft-admin,"system:masters"\n'
    assert tokens["permissions"] == "0600"
    assert "/etc/werft/pki/tokens.csv" not in files_of(worker)


def test_kubeadm_ca_files_and_keys_go_to_control_planes_only(store: SecretStore) -> None:
    cluster = make_cluster(control_planes=2, workers=1)
    pki = ensure_cluster_pki(cluster, store)
    for index in (0, 1):
        files = files_of(user_data(cluster, index, pki))
        assert files["/etc/kubernetes/pki/ca.crt"]["content"] == pki.ca.cert_pem
        assert files["/etc/kubernetes/pki/ca.key"]["content"] == pki.ca.key_pem
        for key in ("ca.key", "front-proxy-ca.key", "etcd/ca.key", "sa.key"):
            assert files[f"/etc/kubernetes/pki/{key}"]["permissions"] == "0600", key
        assert files["/etc/kubernetes/pki/sa.pub"]["content"] == pki.service_account_pub_pem

    worker_text = render_user_data(cluster, cluster.machines[2], pki)
    worker = files_of(yaml.safe_load(worker_text))
    # kubeadm join refuses a pre-existing ca.crt on a worker; werft's copy sits elsewhere.
    assert not any(path.startswith("/etc/kubernetes/pki/") for path in worker)
    assert worker["/etc/werft/pki/ca.crt"]["content"] == pki.ca.cert_pem
    key_lines = [pem.splitlines()[1] for pem in (pki.ca.key_pem, pki.etcd_ca.key_pem)]
    for secret in (*key_lines, pki.admin_token):
        assert secret not in worker_text


# --- kubeadm ---------------------------------------------------------------------------


def test_kubeadm_1_30_uses_v1beta3_with_map_extra_args(store: SecretStore) -> None:
    cluster = make_cluster(version="1.30.4", api_endpoint="https://10.20.0.10:6443")
    pki = ensure_cluster_pki(cluster, store)
    init, conf = kubeadm_docs(user_data(cluster, 0, pki))

    assert (init["apiVersion"], init["kind"]) == ("kubeadm.k8s.io/v1beta3", "InitConfiguration")
    assert (conf["apiVersion"], conf["kind"]) == ("kubeadm.k8s.io/v1beta3", "ClusterConfiguration")
    token = init["bootstrapTokens"][0]
    assert token["token"] == pki.bootstrap_token
    assert set(token["usages"]) == {"signing", "authentication"}
    assert init["nodeRegistration"]["name"] == cluster.machines[0].name
    assert init["nodeRegistration"]["kubeletExtraArgs"]["node-labels"].startswith(
        f"werft.dev/cluster={cluster.name},"
    )
    assert conf["kubernetesVersion"] == "v1.30.4"
    assert conf["clusterName"] == cluster.name
    assert conf["controlPlaneEndpoint"] == "10.20.0.10:6443"
    assert conf["networking"]["podSubnet"] == "10.244.0.0/16"
    assert conf["networking"]["serviceSubnet"] == "10.96.0.0/12"
    assert conf["apiServer"]["extraArgs"] == {"token-auth-file": "/etc/werft/pki/tokens.csv"}
    assert conf["apiServer"]["extraVolumes"] == [
        {
            "name": "werft-tokens",
            "hostPath": "/etc/werft/pki/tokens.csv",
            "mountPath": "/etc/werft/pki/tokens.csv",
            "readOnly": True,
            "pathType": "File",
        }
    ]
    assert "encryptionAlgorithm" not in conf  # a v1beta4 field


def test_kubeadm_1_31_uses_v1beta4_with_list_extra_args(store: SecretStore) -> None:
    cluster = make_cluster(version="1.31.1")
    pki = ensure_cluster_pki(cluster, store)
    init, conf = kubeadm_docs(user_data(cluster, 0, pki))

    assert init["apiVersion"] == conf["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert conf["apiServer"]["extraArgs"] == [
        {"name": "token-auth-file", "value": "/etc/werft/pki/tokens.csv"}
    ]
    kubelet_args = init["nodeRegistration"]["kubeletExtraArgs"]
    assert [arg["name"] for arg in kubelet_args] == ["node-labels"]
    assert conf["encryptionAlgorithm"] == "ECDSA-P256"  # matches werft's ECDSA CAs
    assert conf["kubernetesVersion"] == "v1.31.1"
    # the simulator's endpoint: host and port of the URL, the path does not belong here
    assert conf["controlPlaneEndpoint"] == "127.0.0.1:8686"


def test_kubeadm_refuses_a_release_older_than_v1beta3(store: SecretStore) -> None:
    cluster = make_cluster(version="1.21.14")
    pki = ensure_cluster_pki(cluster, store)
    with pytest.raises(PermanentError, match=r"1\.21\.14"):
        render_user_data(cluster, cluster.machines[0], pki)


@pytest.mark.parametrize("version", ["1.30.4", "1.31.1"])
def test_join_configs_pin_the_ca_and_use_the_bootstrap_token(
    store: SecretStore, version: str
) -> None:
    cluster = make_cluster(version=version, control_planes=2, workers=1)
    pki = ensure_cluster_pki(cluster, store)
    # kubeadm's documented computation: sha256 over the CA's DER SubjectPublicKeyInfo
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    spki = (
        x509.load_pem_x509_certificate(pki.ca.cert_pem.encode())
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    expected_hash = "sha256:" + hashlib.sha256(spki).hexdigest()
    assert ca_cert_hash(pki) == expected_hash

    for index, is_control_plane in ((1, True), (2, False)):
        (join,) = kubeadm_docs(user_data(cluster, index, pki))
        assert join["kind"] == "JoinConfiguration"
        assert join["apiVersion"].endswith("v1beta4" if version == "1.31.1" else "v1beta3")
        discovery = join["discovery"]["bootstrapToken"]
        assert discovery["caCertHashes"] == [expected_hash]
        assert discovery["token"] == pki.bootstrap_token
        assert discovery["apiServerEndpoint"] == "127.0.0.1:8686"
        assert join["nodeRegistration"]["name"] == cluster.machines[index].name
        assert ("controlPlane" in join) is is_control_plane
        assert "certificateKey" not in str(join)


def test_runcmd_initialises_on_the_first_control_plane_and_joins_elsewhere(
    store: SecretStore,
) -> None:
    cluster = make_cluster(control_planes=2, workers=1)
    pki = ensure_cluster_pki(cluster, store)
    commands = [user_data(cluster, i, pki)["runcmd"][-1] for i in range(3)]
    assert commands[0] == ["kubeadm", "init", "--config", "/etc/kubernetes/kubeadm.yaml"]
    assert (
        commands[1]
        == commands[2]
        == [
            "kubeadm",
            "join",
            "--config",
            "/etc/kubernetes/kubeadm.yaml",
        ]
    )


# --- k3s -------------------------------------------------------------------------------


def test_k3s_configs_for_first_server_joining_server_and_agent(store: SecretStore) -> None:
    cluster = make_cluster(
        distribution="k3s", control_planes=2, workers=1, api_endpoint="https://10.30.0.5:6443"
    )
    pki = ensure_cluster_pki(cluster, store)
    first, second, agent = (k3s_config(user_data(cluster, i, pki)) for i in range(3))

    ca_hash = hashlib.sha256(pki.ca.cert_pem.encode()).hexdigest()
    for config in (first, second):  # servers join with the server token only
        assert config["token"] == f"K10{ca_hash}::server:{pki.server_token}"
    # agents with the expiring bootstrap token, as `k3s token create` prints it
    assert agent["token"] == f"K10{ca_hash}::{pki.bootstrap_token}"
    assert pki.server_token != pki.bootstrap_token
    for config in (first, second, agent):
        assert f"werft.dev/cluster={cluster.name}" in config["node-label"]
    assert first["cluster-init"] is True
    assert "server" not in first
    assert first["node-name"] == cluster.machines[0].name
    assert first["tls-san"] == ["10.30.0.5"]
    assert first["kube-apiserver-arg"] == ["token-auth-file=/etc/werft/pki/tokens.csv"]
    assert first["cluster-cidr"] == "10.244.0.0/16"
    assert first["flannel-backend"] == "none"  # the CNI is the base add-on set's flannel
    assert "metrics-server" in first["disable"]
    assert second["server"] == agent["server"] == "https://10.30.0.5:6443"
    assert "cluster-init" not in second
    assert second["kube-apiserver-arg"] == first["kube-apiserver-arg"]
    assert "kube-apiserver-arg" not in agent and "cluster-init" not in agent

    first_files = files_of(user_data(cluster, 0, pki))
    tls = "/var/lib/rancher/k3s/server/tls"
    assert first_files[f"{tls}/server-ca.crt"]["content"] == pki.ca.cert_pem
    assert first_files[f"{tls}/server-ca.key"]["permissions"] == "0600"
    assert first_files[f"{tls}/service.key"]["content"] == pki.service_account_key_pem
    assert not any(p.startswith(tls) for p in files_of(user_data(cluster, 2, pki)))


def test_k3s_installs_the_pinned_release_from_the_artifacts_server(store: SecretStore) -> None:
    cluster = make_cluster(distribution="k3s", version="1.31.1", workers=1)
    pki = ensure_cluster_pki(cluster, store)
    server_text = render_user_data(cluster, cluster.machines[0], pki, artifacts_url=ARTIFACTS_URL)
    server, agent = user_data(cluster, 0, pki), user_data(cluster, 1, pki)

    install = server["runcmd"][-1]
    assert "INSTALL_K3S_VERSION=v1.31.1+k3s1" in install
    assert "INSTALL_K3S_SKIP_DOWNLOAD=true" in install
    assert "INSTALL_K3S_EXEC=server" in install
    assert "INSTALL_K3S_EXEC=agent" in agent["runcmd"][-1]
    urls = re.findall(r"https?://[^\s'\"]+", server_text)
    downloads = [u for u in urls if "/k3s/" in u]
    assert len(downloads) == 3  # binary, air-gap images, install script
    assert all(u.startswith(f"{ARTIFACTS_URL}/k3s/v1.31.1+k3s1/") for u in downloads)
    assert "get.k3s.io" not in server_text and "github.com" not in server_text


def test_k3s_without_an_artifacts_url_is_a_permanent_error(store: SecretStore) -> None:
    cluster = make_cluster(distribution="k3s")
    pki = ensure_cluster_pki(cluster, store)
    with pytest.raises(PermanentError, match="artifacts"):
        render_user_data(cluster, cluster.machines[0], pki)


# --- meta-data, network-config, determinism --------------------------------------------


def test_meta_data_instance_id_follows_the_user_data(store: SecretStore) -> None:
    cluster = make_cluster()
    pki = ensure_cluster_pki(cluster, store)
    machine = cluster.machines[0]
    text = render_user_data(cluster, machine, pki)
    meta = yaml.safe_load(render_meta_data(machine, text))
    assert meta["local-hostname"] == machine.name
    assert re.fullmatch(rf"{machine.name}-[0-9a-f]{{12}}", meta["instance-id"])
    assert yaml.safe_load(render_meta_data(machine, text)) == meta
    changed = yaml.safe_load(render_meta_data(machine, text + "# changed\n"))
    assert changed["instance-id"] != meta["instance-id"]


def test_network_config_matches_the_boot_mac_when_known(store: SecretStore) -> None:
    cluster = make_cluster(workers=1)
    bare_metal, vm = cluster.machines  # the helper gives control planes a BMC and a MAC
    config = yaml.safe_load(render_network_config(bare_metal))
    assert config["version"] == 2
    (nic,) = config["ethernets"].values()
    assert nic == {"match": {"macaddress": "52:54:00:aa:00:01"}, "dhcp4": True}
    (vm_nic,) = yaml.safe_load(render_network_config(vm))["ethernets"].values()
    assert vm_nic["dhcp4"] is True and "name" in vm_nic["match"]


def test_rendering_is_a_pure_function_of_its_inputs(store: SecretStore) -> None:
    cluster = make_cluster(distribution="k3s", workers=1)
    pki = ensure_cluster_pki(cluster, store)
    again = ensure_cluster_pki(cluster, store)
    for machine in cluster.machines:
        first = render_user_data(cluster, machine, pki, artifacts_url=ARTIFACTS_URL)
        assert render_user_data(cluster, machine, again, artifacts_url=ARTIFACTS_URL) == first


def test_a_machine_of_another_cluster_is_refused(store: SecretStore) -> None:
    cluster, other = make_cluster("a"), make_cluster("b")
    pki = ensure_cluster_pki(cluster, store)
    with pytest.raises(PermanentError, match="not part of cluster 'a'"):
        render_user_data(cluster, other.machines[0], pki)


def test_no_secret_reaches_the_logs(
    store: SecretStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cluster = make_cluster(control_planes=2)
    pki = ensure_cluster_pki(cluster, store)
    kubeconfig_for(cluster, store)
    for machine in cluster.machines:
        render_user_data(cluster, machine, pki)
    store.delete(f"clusters/{cluster.name}/ca.crt")
    ensure_cluster_pki(cluster, store)  # the warning path, too

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "generated" in logged  # the test sees the logs at all
    for secret in (pki.admin_token, pki.bootstrap_token, "PRIVATE KEY"):
        assert secret not in logged
