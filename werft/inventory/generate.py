"""A deterministic fleet of any size, for the sample inventory, tests and benchmarks.

``write_fleet(root, edge_sites=300, seed=1)`` is exactly the committed sample in
``inventory/``. Everything random comes from one ``random.Random(seed)``, files are written
in a fixed order with fixed formatting, so the same arguments give the same bytes.

Shape: core sites with 2-3 clusters each (bare metal with 3 control planes, VMs on the
simulator's hypervisor), near-edge sites with one small bare-metal cluster, and edge sites
as CSV rows expanded through a single-node k3s profile. Every BMC and hypervisor points at
``endpoint`` (the simulator), CIDRs never overlap within a site, MACs never repeat.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from werft.inventory.edge_csv import COLUMNS
from werft.inventory.model import API_VERSION

K8S_VERSIONS = ["1.30.6", "1.31.4"]
DEFAULT_VERSION = "1.31.4"
OS_IMAGE = "images/ubuntu-24.04-server.iso"
ADDONS_DIR = Path(__file__).parents[2] / "inventory" / "addons"
HEADER = "# Written by `werft inventory generate` (same arguments, same bytes).\n"

# name, region, latitude, longitude
CORE_SITES = [
    ("fra1", "eu-central", 50.1109, 8.6821),
    ("ams1", "eu-west", 52.3676, 4.9041),
    ("iad1", "us-east", 38.9531, -77.4565),
    ("lhr1", "eu-west", 51.4700, -0.4543),
    ("sjc1", "us-west", 37.3382, -121.8863),
    ("sin1", "ap-southeast", 1.3521, 103.8198),
    ("nrt1", "ap-northeast", 35.7720, 140.3929),
    ("gru1", "sa-east", -23.4356, -46.4731),
]
NEAR_EDGE_SITES = [
    ("ne-muc1", "eu-central", 48.1351, 11.5820),
    ("ne-ham1", "eu-central", 53.5511, 9.9937),
    ("ne-ber1", "eu-central", 52.5200, 13.4050),
    ("ne-par1", "eu-west", 48.8566, 2.3522),
    ("ne-lyo1", "eu-west", 45.7640, 4.8357),
    ("ne-mad1", "eu-west", 40.4168, -3.7038),
    ("ne-mil1", "eu-central", 45.4642, 9.1900),
    ("ne-vie1", "eu-central", 48.2082, 16.3738),
    ("ne-bos1", "us-east", 42.3601, -71.0589),
    ("ne-chi1", "us-east", 41.8781, -87.6298),
    ("ne-dfw1", "us-west", 32.7767, -96.7970),
    ("ne-sea1", "us-west", 47.6062, -122.3321),
]
# region, latitude range, longitude range (roughly the land mass, good enough for maps)
EDGE_REGIONS = [
    ("eu-central", (46.0, 54.0), (6.0, 17.0)),
    ("eu-west", (37.0, 53.0), (-9.0, 5.0)),
    ("eu-north", (55.0, 68.0), (5.0, 28.0)),
    ("us-east", (30.0, 45.0), (-90.0, -70.0)),
    ("us-west", (32.0, 48.0), (-123.0, -105.0)),
    ("ap-southeast", (-38.0, -12.0), (115.0, 153.0)),
]
TIER_POLICIES = {
    "core": {"batchSize": 1, "maxConcurrency": 3, "canarySize": 0, "maxFailures": 0},
    "near-edge": {"batchSize": 1, "maxConcurrency": 6, "canarySize": 1, "maxFailures": 1},
    "edge": {
        "batchSize": 25,
        "maxConcurrency": 50,
        "canarySize": 5,
        "maxFailures": "5%",
        "deferUnreachable": True,
    },
}


def write_fleet(
    root: Path,
    *,
    edge_sites: int,
    seed: int = 1,
    core_sites: int = 3,
    near_edge_sites: int = 12,
    endpoint: str = "http://127.0.0.1:8686",
    addons_from: Path | None = None,
) -> None:
    """Write a fleet into ``root`` (created if missing; existing other files are kept)."""
    root = Path(root)
    endpoint = endpoint.rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"endpoint {endpoint!r} is not an http(s) URL")
    fleet = _FleetWriter(root, random.Random(seed), endpoint, parts.scheme, parts.netloc)
    fleet.write_fleet_doc()
    fleet.write_profiles()
    for index in range(core_sites):
        fleet.write_core_site(index)
    for index in range(near_edge_sites):
        fleet.write_near_edge_site(index)
    fleet.write_edge_csv(edge_sites)
    _write_addons(root, addons_from)


class _FleetWriter:
    def __init__(
        self, root: Path, rng: random.Random, endpoint: str, scheme: str, netloc: str
    ) -> None:
        self.root = root
        self.rng = rng
        self.endpoint = endpoint
        self.bmc_base = f"redfish+{scheme}://{netloc}/bmc"
        self.vm_host = f"sim+{scheme}://{netloc}"
        self.metal_macs = 0
        self.vm_macs = 0

    # --- output helpers -------------------------------------------------------------------

    def _write(self, rel: str, documents: list[dict[str, Any]]) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump_all(documents, sort_keys=False, width=100, explicit_start=True)
        path.write_text(HEADER + text, encoding="utf-8")

    @staticmethod
    def _doc(kind: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": {"name": name, **meta},
            "spec": spec,
        }

    def _metal_mac(self) -> str:
        # 02:... is a locally administered unicast range: never a real vendor's NIC.
        self.metal_macs += 1
        return _mac(0x02_00_00_00_00_00 + self.metal_macs)

    def _vm_mac(self) -> str:
        self.vm_macs += 1
        return _mac(0x52_54_00_00_00_00 + self.vm_macs)  # QEMU/libvirt's prefix

    def _bmc(self, machine: str, credentials: str) -> dict[str, Any]:
        return {
            "address": f"{self.bmc_base}/{machine}/redfish/v1/Systems/1",
            "credentialsRef": credentials,
        }

    # --- documents ------------------------------------------------------------------------

    def write_fleet_doc(self) -> None:
        spec = {
            "kubernetesVersions": K8S_VERSIONS,
            "defaults": {
                "kubernetesVersion": DEFAULT_VERSION,
                "distribution": "kubeadm",
                "addonSets": ["base"],
                "apiEndpointTemplate": f"{self.endpoint}/clusters/{{cluster}}",
            },
            "artifacts": {
                "baseUrl": f"{self.endpoint}/artifacts",
                "publishDir": ".werft/artifacts",
            },
            "rollout": {"order": ["core", "near-edge", "edge"], "tiers": TIER_POLICIES},
        }
        self._write("fleet.yaml", [self._doc("Fleet", "werft-sample", spec)])

    def write_profiles(self) -> None:
        image = f"{self.endpoint}/{OS_IMAGE}"
        all_sets = ["base", "observability", "gitops"]
        profiles = {
            "core-baremetal": {
                "description": "Core data-centre cluster on bare metal: 3 control planes (HA "
                "etcd) and 2 workers.",
                "distribution": "kubeadm",
                "controlPlane": {"replicas": 3},
                "workers": {"replicas": 2},
                "addonSets": all_sets,
                "osImage": image,
            },
            "core-vm": {
                "description": "Core services cluster on VMs: 1 control plane, 2 workers.",
                "distribution": "kubeadm",
                "controlPlane": {"replicas": 1},
                "workers": {"replicas": 2},
                "addonSets": all_sets,
                "osImage": image,
                "vm": {"host": self.vm_host, "cpus": 4, "memoryMiB": 8192, "diskGiB": 60},
            },
            "near-edge": {
                "description": "Near-edge (metro) cluster on bare metal: 1 control plane, "
                "1 worker.",
                "distribution": "kubeadm",
                "controlPlane": {"replicas": 1},
                "workers": {"replicas": 1},
                "addonSets": all_sets,
                "osImage": image,
            },
            "edge-single-node": {
                "description": "Edge location: one k3s node that is control plane and "
                "worker; one row of edge-sites.csv each.",
                "distribution": "k3s",
                "controlPlane": {"replicas": 1},
                "workers": {"replicas": 0},
                "addonSets": ["base", "gitops"],
                "osImage": image,
                "network": {"podCIDR": "10.42.0.0/16", "serviceCIDR": "10.43.0.0/16"},
            },
        }
        for name, spec in profiles.items():
            self._write(f"profiles/{name}.yaml", [self._doc("Profile", name, spec)])

    def _site(self, name: str, tier: str, region: str, lat: float, lon: float) -> dict[str, Any]:
        return self._doc(
            "Site",
            name,
            {
                "tier": tier,
                "region": region,
                "location": {"latitude": lat, "longitude": lon},
                "owners": [f"platform-{tier}"],
            },
        )

    @staticmethod
    def _network(index: int) -> dict[str, str]:
        # Per site: cluster i gets its own node, pod and service range.
        return {
            "nodeCIDR": f"172.{16 + index}.0.0/16",
            "podCIDR": f"10.{index * 16}.0.0/12",
            "serviceCIDR": f"10.{96 + index}.0.0/16",
        }

    def _metal_cluster(
        self,
        name: str,
        site: str,
        profile: str,
        control_planes: int,
        workers: int,
        index: int,
        tier: str,
    ) -> dict[str, Any]:
        machines = []
        roles = [("cp", "control-plane")] * control_planes + [("w", "worker")] * workers
        counters = {"cp": 0, "w": 0}
        for short, role in roles:
            machine = f"{name}-{short}{counters[short]}"
            counters[short] += 1
            machines.append(
                {
                    "name": machine,
                    "role": role,
                    "bmc": self._bmc(machine, f"bmc-{site}"),
                    "bootMACAddress": self._metal_mac(),
                }
            )
        return self._doc(
            "Cluster",
            name,
            {
                "site": site,
                "profile": profile,
                "network": self._network(index),
                "owners": [f"platform-{tier}"],
                "machines": machines,
            },
            labels={"tier": tier, "provider": "redfish"},
        )

    def _vm_cluster(self, name: str, site: str, index: int) -> dict[str, Any]:
        machines = []
        for short, role, count in (("cp", "control-plane", 1), ("w", "worker", 2)):
            for number in range(count):
                machines.append(
                    {
                        "name": f"{name}-{short}{number}",
                        "role": role,
                        "bootMACAddress": self._vm_mac(),
                        "vm": {"host": self.vm_host},
                    }
                )
        return self._doc(
            "Cluster",
            name,
            {
                "site": site,
                "profile": "core-vm",
                "network": self._network(index),
                "owners": ["platform-core"],
                "machines": machines,
            },
            labels={"tier": "core", "provider": "vm"},
        )

    def write_core_site(self, index: int) -> None:
        name, region, lat, lon = _pick(CORE_SITES, index, "core")
        docs = [self._site(name, "core", region, lat, lon)]
        docs.append(self._metal_cluster(f"{name}-core-a", name, "core-baremetal", 3, 2, 0, "core"))
        docs.append(self._vm_cluster(f"{name}-core-b", name, 1))
        if index % 2 == 0:  # every other core site runs a second bare-metal cluster
            docs.append(
                self._metal_cluster(f"{name}-core-c", name, "core-baremetal", 3, 2, 2, "core")
            )
        self._write(f"sites/{name}.yaml", docs)

    def write_near_edge_site(self, index: int) -> None:
        name, region, lat, lon = _pick(NEAR_EDGE_SITES, index, "ne")
        docs = [
            self._site(name, "near-edge", region, lat, lon),
            self._metal_cluster(f"{name}-a", name, "near-edge", 1, 1, 0, "near-edge"),
        ]
        self._write(f"sites/{name}.yaml", docs)

    def write_edge_csv(self, count: int) -> None:
        width = max(5, len(str(count)))
        rng = self.rng
        lines = [",".join(COLUMNS)]
        for number in range(1, count + 1):
            site = f"edge-{number:0{width}d}"
            region, (lat_lo, lat_hi), (lon_lo, lon_hi) = rng.choice(EDGE_REGIONS)
            version = "1.30.6" if rng.random() < 0.1 else ""  # a few sites pinned back
            machine = f"{site}-n0"
            lines.append(
                ",".join(
                    (
                        site,
                        region,
                        f"{rng.uniform(lat_lo, lat_hi):.4f}",
                        f"{rng.uniform(lon_lo, lon_hi):.4f}",
                        "edge-single-node",
                        version,
                        f"{self.bmc_base}/{machine}/redfish/v1/Systems/1",
                        f"bmc-edge-{region}",
                        self._metal_mac(),
                        f"edge-ops-{region}",
                    )
                )
            )
        path = self.root / "edge-sites.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _pick(
    pool: list[tuple[str, str, float, float]], index: int, prefix: str
) -> tuple[str, str, float, float]:
    if index < len(pool):
        return pool[index]
    _, region, lat, lon = pool[index % len(pool)]  # reuse a real place for the location
    return f"{prefix}-{index:04d}", region, lat, lon


def _mac(value: int) -> str:
    return ":".join(f"{(value >> shift) & 0xFF:02x}" for shift in range(40, -8, -8))


# --- add-on sets ---------------------------------------------------------------------------

PLACEHOLDER_SETS = {"base": "base", "observability": "metrics", "gitops": "flux"}


def _write_addons(root: Path, addons_from: Path | None) -> None:
    """Copy the repository's AddonSets, or write placeholders when there are none yet."""
    target = root / "addons"
    source = Path(addons_from) if addons_from is not None else ADDONS_DIR
    if source.is_dir():
        if source.resolve() != target.resolve():
            shutil.copytree(
                source,
                target,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(".*", "__pycache__"),
            )
        return
    if addons_from is not None:
        raise FileNotFoundError(f"add-on folder {addons_from} does not exist")
    docs = []
    for set_name, addon in PLACEHOLDER_SETS.items():
        docs.append(
            _FleetWriter._doc(
                "AddonSet",
                set_name,
                {
                    "version": "0.0.1",
                    "addons": [
                        {
                            "name": addon,
                            "version": "0.0.1",
                            "manifests": [f"placeholder/{addon}.yaml.j2"],
                        }
                    ],
                },
            )
        )
        manifest = target / "placeholder" / f"{addon}.yaml.j2"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            f"  name: werft-{addon}\n  namespace: kube-system\n"
            'data:\n  cluster: "{{ cluster.name }}"\n',
            encoding="utf-8",
        )
    target.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True)
    (target / "placeholder.yaml").write_text(HEADER + text, encoding="utf-8")
