"""kubeadm bootstrap: the config file, the PKI files and the commands for one machine."""

from __future__ import annotations

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
    runs_workloads,
    version_tuple,
)
from werft.render.pki import ClusterPKI, ca_cert_hash, rfc3339
from werft.render.templating import render_template

CONFIG_FILE = "/etc/kubernetes/kubeadm.yaml"
PKI_DIR = "/etc/kubernetes/pki"

# v1beta3 arrived in 1.22; v1beta4 (structured extraArgs) is the default from 1.31 on.
OLDEST_SUPPORTED = (1, 22)
V1BETA4_FROM = (1, 31)


def kubeadm_api_version(kubernetes_version: str) -> str:
    """The kubeadm config API the given Kubernetes release reads."""
    major, minor, _ = version_tuple(kubernetes_version)
    if (major, minor) < OLDEST_SUPPORTED:
        raise PermanentError(
            f"Kubernetes {kubernetes_version} is older than werft supports with kubeadm "
            f"(>= {OLDEST_SUPPORTED[0]}.{OLDEST_SUPPORTED[1]})"
        )
    return "kubeadm.k8s.io/v1beta4" if (major, minor) >= V1BETA4_FROM else "kubeadm.k8s.io/v1beta3"


def render_kubeadm_config(cluster: ResolvedCluster, machine: Machine, pki: ClusterPKI) -> str:
    """InitConfiguration + ClusterConfiguration for the first control plane,
    JoinConfiguration for every other machine."""
    api_version = kubeadm_api_version(cluster.kubernetes_version)
    host, port = api_host_port(cluster)
    labels = ",".join(f"{key}={value}" for key, value in node_labels(cluster).items())
    context = {
        "api_version": api_version,
        "v1beta4": api_version.endswith("v1beta4"),
        "cluster_name": cluster.name,
        "node_name": machine.name,
        "kubelet_args": {"node-labels": labels},
        "bootstrap_token": pki.bootstrap_token,
        "bootstrap_token_expires": (
            rfc3339(pki.bootstrap_token_expires) if pki.bootstrap_token_expires else None
        ),
        "control_plane_endpoint": host_port(host, port),
        "pki_dir": PKI_DIR,
        "untainted": runs_workloads(cluster, machine),
    }
    if is_first_control_plane(cluster, machine):
        return render_template(
            "kubeadm/init.yaml.j2",
            **context,
            kubernetes_version=f"v{cluster.kubernetes_version}",
            pod_subnet=cluster.network.pod_cidr,
            service_subnet=cluster.network.service_cidr,
            cert_sans=[host],
            api_server_args={"token-auth-file": TOKENS_FILE},
            tokens_file=TOKENS_FILE,
        )
    return render_template(
        "kubeadm/join.yaml.j2",
        **context,
        ca_cert_hash=ca_cert_hash(pki),
        control_plane=is_control_plane(machine),
    )


def kubeadm_files(cluster: ResolvedCluster, machine: Machine, pki: ClusterPKI) -> list[SeedFile]:
    files = [
        # The join configs hold the bootstrap token: root only.
        SeedFile(CONFIG_FILE, render_kubeadm_config(cluster, machine, pki), "0600"),
        # Kernel settings kubeadm's preflight checks demand.
        SeedFile("/etc/modules-load.d/kubernetes.conf", "overlay\nbr_netfilter\n"),
        SeedFile(
            "/etc/sysctl.d/90-kubernetes.conf",
            "net.bridge.bridge-nf-call-iptables = 1\n"
            "net.bridge.bridge-nf-call-ip6tables = 1\n"
            "net.ipv4.ip_forward = 1\n",
        ),
    ]
    if is_control_plane(machine):
        # The shared control-plane material (kubeadm's manual certificate distribution):
        # identical on every control plane, so each can sign and verify the same things.
        files += [
            SeedFile(f"{PKI_DIR}/ca.crt", pki.ca.cert_pem),
            SeedFile(f"{PKI_DIR}/ca.key", pki.ca.key_pem, "0600"),
            SeedFile(f"{PKI_DIR}/front-proxy-ca.crt", pki.front_proxy_ca.cert_pem),
            SeedFile(f"{PKI_DIR}/front-proxy-ca.key", pki.front_proxy_ca.key_pem, "0600"),
            SeedFile(f"{PKI_DIR}/etcd/ca.crt", pki.etcd_ca.cert_pem),
            SeedFile(f"{PKI_DIR}/etcd/ca.key", pki.etcd_ca.key_pem, "0600"),
            SeedFile(f"{PKI_DIR}/sa.pub", pki.service_account_pub_pem),
            SeedFile(f"{PKI_DIR}/sa.key", pki.service_account_key_pem, "0600"),
        ]
    return files


def kubeadm_commands(cluster: ResolvedCluster, machine: Machine) -> list[list[str]]:
    """runcmd entries. kubeadm, kubelet and containerd come with the OS image."""
    action = "init" if is_first_control_plane(cluster, machine) else "join"
    return [
        ["modprobe", "overlay"],
        ["modprobe", "br_netfilter"],
        ["sysctl", "--system"],
        ["kubeadm", action, "--config", CONFIG_FILE],
    ]
