"""k3s bootstrap: the config file, the custom-CA files and the air-gapped install commands."""

from __future__ import annotations

import hashlib

from werft.errors import PermanentError
from werft.inventory.model import Machine
from werft.inventory.resolved import ResolvedCluster
from werft.render.node import (
    TOKENS_FILE,
    SeedFile,
    api_host_port,
    host_port,
    is_control_plane,
    is_first_control_plane,
    node_labels,
)
from werft.render.pki import ClusterPKI
from werft.render.templating import render_template

CONFIG_FILE = "/etc/rancher/k3s/config.yaml"
TLS_DIR = "/var/lib/rancher/k3s/server/tls"
IMAGES_DIR = "/var/lib/rancher/k3s/agent/images"
INSTALLER = "/usr/local/bin/k3s-install.sh"
# The machines are amd64; another architecture would need its own artifact names.
AIRGAP_IMAGES = "k3s-airgap-images-amd64.tar.zst"


def k3s_release(kubernetes_version: str) -> str:
    return f"v{kubernetes_version}+k3s1"


def k3s_token(pki: ClusterPKI, *, server: bool = True) -> str:
    """k3s's "secure" token format: joining nodes check that the server's CA bundle hashes
    to the value in the token, so they pin werft's CA as kubeadm's caCertHashes do.

    Servers get the server token (k3s joins servers with nothing else and keys its
    datastore encryption with it); agents get the expiring bootstrap token
    (``K10<hash>::<id>.<secret>``, what ``k3s token create`` prints), which werft creates in
    the cluster (``werft.render.pki.bootstrap_token_secret``)."""
    ca_hash = hashlib.sha256(pki.ca.cert_pem.encode()).hexdigest()
    if server:
        return f"K10{ca_hash}::server:{pki.server_token or pki.bootstrap_token}"
    return f"K10{ca_hash}::{pki.bootstrap_token}"


def render_k3s_config(cluster: ResolvedCluster, machine: Machine, pki: ClusterPKI) -> str:
    host, port = api_host_port(cluster)
    return render_template(
        "k3s/config.yaml.j2",
        cluster_name=cluster.name,
        node_name=machine.name,
        node_labels=node_labels(cluster),
        token=k3s_token(pki, server=is_control_plane(machine)),
        server=is_control_plane(machine),
        first_server=is_first_control_plane(cluster, machine),
        server_url=f"https://{host_port(host, port)}",
        tls_sans=[host],
        pod_subnet=cluster.network.pod_cidr,
        service_subnet=cluster.network.service_cidr,
        tokens_file=TOKENS_FILE,
    )


def k3s_files(cluster: ResolvedCluster, machine: Machine, pki: ClusterPKI) -> list[SeedFile]:
    files = [SeedFile(CONFIG_FILE, render_k3s_config(cluster, machine, pki), "0600")]
    if is_first_control_plane(cluster, machine):
        # k3s uses CA files it finds at first start instead of generating its own; the
        # servers that join later receive them from the datastore.
        files += [
            SeedFile(f"{TLS_DIR}/server-ca.crt", pki.ca.cert_pem),
            SeedFile(f"{TLS_DIR}/server-ca.key", pki.ca.key_pem, "0600"),
            SeedFile(f"{TLS_DIR}/client-ca.crt", pki.ca.cert_pem),
            SeedFile(f"{TLS_DIR}/client-ca.key", pki.ca.key_pem, "0600"),
            SeedFile(f"{TLS_DIR}/request-header-ca.crt", pki.front_proxy_ca.cert_pem),
            SeedFile(f"{TLS_DIR}/request-header-ca.key", pki.front_proxy_ca.key_pem, "0600"),
            SeedFile(f"{TLS_DIR}/etcd/peer-ca.crt", pki.etcd_ca.cert_pem),
            SeedFile(f"{TLS_DIR}/etcd/peer-ca.key", pki.etcd_ca.key_pem, "0600"),
            SeedFile(f"{TLS_DIR}/etcd/server-ca.crt", pki.etcd_ca.cert_pem),
            SeedFile(f"{TLS_DIR}/etcd/server-ca.key", pki.etcd_ca.key_pem, "0600"),
            SeedFile(f"{TLS_DIR}/service.key", pki.service_account_key_pem, "0600"),
        ]
    return files


def k3s_commands(
    cluster: ResolvedCluster, machine: Machine, artifacts_url: str | None
) -> list[list[str]]:
    """runcmd entries: the air-gap install, every artifact from the fleet's artifacts
    server (machines at a site do not reach the internet)."""
    if not artifacts_url:
        raise PermanentError(
            f"cluster {cluster.name!r} uses k3s, whose binary and images come from the "
            "fleet's artifacts.baseUrl: pass artifacts_url"
        )
    release = k3s_release(cluster.kubernetes_version)
    base = f"{artifacts_url.rstrip('/')}/k3s/{release}"
    fetch = ["curl", "-fsSL", "--retry", "5", "-o"]
    return [
        ["mkdir", "-p", IMAGES_DIR],
        [*fetch, "/usr/local/bin/k3s", f"{base}/k3s"],
        ["chmod", "0755", "/usr/local/bin/k3s"],
        [*fetch, f"{IMAGES_DIR}/{AIRGAP_IMAGES}", f"{base}/{AIRGAP_IMAGES}"],
        [*fetch, INSTALLER, f"{base}/install.sh"],
        [
            "env",
            "INSTALL_K3S_SKIP_DOWNLOAD=true",
            f"INSTALL_K3S_VERSION={release}",
            f"INSTALL_K3S_EXEC={'server' if is_control_plane(machine) else 'agent'}",
            "sh",
            INSTALLER,
        ],
    ]
