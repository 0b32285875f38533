"""The three NoCloud documents a machine boots with: user-data, meta-data, network-config.

The user-data is a ``#cloud-config`` whose ``write_files`` carry the node's identity
(/etc/werft/node.yaml), the cluster CA (and, on control planes, the CA keys and werft's
token file) and the kubeadm or k3s configuration; ``runcmd`` bootstraps the node. The
output is a pure function of its inputs, so the seed built from it is byte-stable.
Secrets appear in the returned text and nowhere else: nothing here logs.
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from werft.inventory.model import Distribution, Machine
from werft.inventory.resolved import ResolvedCluster
from werft.render.k3s import k3s_commands, k3s_files
from werft.render.kubeadm import kubeadm_commands, kubeadm_files
from werft.render.node import SeedFile, common_files, machine_in
from werft.render.pki import ClusterPKI
from werft.yamlsafe import SafeDumper


class _BlockDumper(SafeDumper):
    """Multi-line strings (PEM, embedded YAML) as ``|`` blocks, so a person can read them."""


def _str_representer(dumper: yaml.BaseDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


class _Command(list[str]):
    """A runcmd entry, written on one line as a flow sequence: ``- [kubeadm, init, ...]``."""


def _command_representer(dumper: yaml.BaseDumper, value: _Command) -> yaml.SequenceNode:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


_BlockDumper.add_representer(str, _str_representer)
_BlockDumper.add_representer(_Command, _command_representer)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, width=4096)


def render_user_data(
    cluster: ResolvedCluster,
    machine: Machine,
    pki: ClusterPKI,
    *,
    artifacts_url: str | None = None,
) -> str:
    """The ``#cloud-config`` for one machine. ``artifacts_url`` (the fleet's
    ``artifacts.baseUrl``) is where k3s nodes fetch their binary and images; kubeadm
    nodes find kubeadm/kubelet/containerd in their OS image and do not need it."""
    machine = machine_in(cluster, machine.name)
    files: list[SeedFile] = common_files(cluster, machine, pki)
    if cluster.distribution == Distribution.K3S:
        files += k3s_files(cluster, machine, pki)
        commands = k3s_commands(cluster, machine, artifacts_url)
    else:
        files += kubeadm_files(cluster, machine, pki)
        commands = kubeadm_commands(cluster, machine)
    config = {
        "hostname": machine.name,
        "preserve_hostname": False,
        "manage_etc_hosts": True,
        # Nodes are cattle: no passwords, no root login; access is through Kubernetes.
        "ssh_pwauth": False,
        "disable_root": True,
        # Sites may be air-gapped and every node of a cluster must run the same bits:
        # the OS image is the package set, cloud-init does not update it.
        "package_update": False,
        "package_upgrade": False,
        "write_files": [f.as_cloud_config() for f in files],
        "runcmd": [_Command(command) for command in commands],
        "final_message": f"werft: {machine.name} bootstrapped ({cluster.distribution}) "
        "after $UPTIME seconds",
    }
    return "#cloud-config\n" + _dump(config)


def render_meta_data(machine: Machine, user_data: str) -> str:
    """NoCloud meta-data. The instance-id changes whenever the user-data does, which is
    what makes cloud-init apply a re-rendered seed instead of treating it as a reboot."""
    digest = hashlib.sha256(user_data.encode()).hexdigest()[:12]
    return _dump({"instance-id": f"{machine.name}-{digest}", "local-hostname": machine.name})


def render_network_config(machine: Machine) -> str:
    """Netplan-style network config v2: DHCP on the boot NIC, matched by MAC when the
    inventory knows it, else on the first Ethernet-named interface."""
    if machine.boot_mac_address:
        match = {"macaddress": machine.boot_mac_address.lower()}
    else:
        match = {"name": "e*"}
    return _dump({"version": 2, "ethernets": {"boot": {"match": match, "dhcp4": True}}})
