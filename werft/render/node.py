"""Facts about one machine of a cluster that every bootstrap flavour (kubeadm, k3s) shares."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from werft.errors import PermanentError
from werft.inventory.model import Machine, Role
from werft.inventory.resolved import ResolvedCluster
from werft.render.kubeconfig import ADMIN_USER
from werft.render.pki import ClusterPKI
from werft.yamlsafe import safe_dump

NODE_FILE = "/etc/werft/node.yaml"
TOKENS_FILE = "/etc/werft/pki/tokens.csv"
# Where every node finds the cluster CA, whatever the distribution. (kubeadm's own
# /etc/kubernetes/pki/ca.crt is written on control planes only: `kubeadm join` on a worker
# refuses to start when that file already exists.)
WERFT_CA_FILE = "/etc/werft/pki/ca.crt"


@dataclass(frozen=True)
class SeedFile:
    """One cloud-init ``write_files`` entry."""

    path: str
    content: str
    permissions: str = "0644"
    owner: str = "root:root"

    def as_cloud_config(self) -> dict[str, str]:
        return {
            "path": self.path,
            "owner": self.owner,
            "permissions": self.permissions,
            "content": self.content,
        }

    def __repr__(self) -> str:
        # Contents include keys and tokens: show only where the file goes.
        return f"SeedFile(path={self.path!r}, permissions={self.permissions!r})"


def machine_in(cluster: ResolvedCluster, machine_name: str) -> Machine:
    for machine in cluster.machines:
        if machine.name == machine_name:
            return machine
    raise PermanentError(f"machine {machine_name!r} is not part of cluster {cluster.name!r}")


def is_control_plane(machine: Machine) -> bool:
    return machine.role == Role.CONTROL_PLANE


# kubeadm taints a control plane NoSchedule with the first unless told otherwise; the
# second is the key before Kubernetes 1.24. k3s taints nothing.
CONTROL_PLANE_TAINTS = frozenset(
    {"node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"}
)


def runs_workloads(cluster: ResolvedCluster, machine: Machine) -> bool:
    """A control plane of a cluster without workers must take the workloads (the add-ons
    too): werft registers it untainted, and it must stay so."""
    return is_control_plane(machine) and not cluster.workers


def is_first_control_plane(cluster: ResolvedCluster, machine: Machine) -> bool:
    """The machine that initialises the cluster; every other machine joins it."""
    control_planes = cluster.control_plane
    if not control_planes:
        raise PermanentError(f"cluster {cluster.name!r} has no control-plane machine")
    return control_planes[0].name == machine.name


def api_host_port(cluster: ResolvedCluster) -> tuple[str, int]:
    """Host and port of ``cluster.api_endpoint`` (the port defaults from the scheme)."""
    url = urlsplit(cluster.api_endpoint)
    if not url.hostname:
        raise PermanentError(
            f"cluster {cluster.name!r}: API endpoint {cluster.api_endpoint!r} has no host"
        )
    try:
        port = url.port or (80 if url.scheme == "http" else 443)
    except ValueError as exc:
        raise PermanentError(f"cluster {cluster.name!r}: bad API endpoint port: {exc}") from exc
    return url.hostname, port


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def version_tuple(kubernetes_version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in kubernetes_version.lstrip("v").split("."))
    return major, minor, patch


def node_labels(cluster: ResolvedCluster) -> dict[str, str]:
    """Labels every node registers with, so workloads and werft can find a cluster's nodes."""
    return {
        "werft.dev/cluster": cluster.name,
        "werft.dev/site": cluster.site,
        "werft.dev/tier": str(cluster.tier),
    }


def node_file(cluster: ResolvedCluster, machine: Machine) -> SeedFile:
    """``/etc/werft/node.yaml``: what the machine is, in werft's terms."""
    content = safe_dump(
        {
            "cluster": cluster.name,
            "role": str(machine.role),
            "nodeName": machine.name,
            "kubernetesVersion": cluster.kubernetes_version,
            "distribution": str(cluster.distribution),
        },
        sort_keys=False,
    )
    return SeedFile(NODE_FILE, content)


def tokens_file(pki: ClusterPKI) -> SeedFile:
    """The kube-apiserver ``--token-auth-file`` that makes werft's admin token work."""
    line = f'{pki.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
    return SeedFile(TOKENS_FILE, line, permissions="0600")


def common_files(cluster: ResolvedCluster, machine: Machine, pki: ClusterPKI) -> list[SeedFile]:
    files = [node_file(cluster, machine), SeedFile(WERFT_CA_FILE, pki.ca.cert_pem)]
    if is_control_plane(machine):
        files.append(tokens_file(pki))
    return files
