"""Builders shared by the tests of werft.render (no tests here).

They build ``ResolvedCluster`` and ``Inventory`` objects directly, the way the loader
would, so the render tests do not depend on the sample fleet's clusters.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from werft.inventory.model import AddonSet, Distribution, Fleet, Machine, Network, Tier
from werft.inventory.resolved import Inventory, ResolvedCluster, Source

REPO = Path(__file__).resolve().parent.parent
SAMPLE_INVENTORY = REPO / "inventory"
ARTIFACTS_URL = "http://127.0.0.1:8686/artifacts"


def make_machine(name: str, role: str, *, mac: str | None = None) -> Machine:
    if mac is not None:
        bmc = {
            "address": f"redfish+http://127.0.0.1:8686/bmc/{name}/redfish/v1/Systems/1",
            "credentialsRef": "bmc-test",
        }
        return Machine(name=name, role=role, bmc=bmc, boot_mac_address=mac)
    return Machine(name=name, role=role, vm={"host": "sim+http://127.0.0.1:8686"})


def make_cluster(
    name: str = "fra1-core-a",
    *,
    version: str = "1.31.1",
    distribution: str = "kubeadm",
    control_planes: int = 1,
    workers: int = 1,
    api_endpoint: str | None = None,
    addon_sets: tuple[str, ...] = ("base", "observability", "gitops"),
    pod_cidr: str = "10.244.0.0/16",
) -> ResolvedCluster:
    machines = [
        make_machine(f"{name}-cp-{i}", "control-plane", mac=f"52:54:00:aa:00:{i:02X}")
        for i in range(1, control_planes + 1)
    ] + [make_machine(f"{name}-w-{i}", "worker") for i in range(1, workers + 1)]
    return ResolvedCluster(
        name=name,
        site="fra1",
        tier=Tier.CORE,
        region="eu-central",
        kubernetes_version=version,
        distribution=Distribution(distribution),
        control_plane_replicas=control_planes,
        worker_replicas=workers,
        network=Network(pod_cidr=pod_cidr, service_cidr="10.96.0.0/12"),
        addon_sets=addon_sets,
        os_image_url="http://127.0.0.1:8686/images/ubuntu-24.04-server.iso",
        api_endpoint=api_endpoint or f"http://127.0.0.1:8686/clusters/{name}",
        machines=tuple(machines),
        labels={"env": "test"},
    )


def make_fleet() -> Fleet:
    return Fleet.model_validate(
        {
            "apiVersion": "werft.dev/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "test"},
            "spec": {
                "kubernetesVersions": ["1.30.4", "1.31.1"],
                "artifacts": {"baseUrl": ARTIFACTS_URL},
            },
        }
    )


def make_inventory(files: dict[str, str], clusters: list[ResolvedCluster]) -> Inventory:
    """An Inventory from inventory-relative files: every ``*/addonset.yaml`` (or any file
    holding ``kind: AddonSet``) becomes an AddonSet whose source is that file."""
    addon_sets: dict[str, AddonSet] = {}
    sources: dict[tuple[str, str], Source] = {}
    for rel, text in sorted(files.items()):
        if not rel.endswith(".yaml"):
            continue
        doc = yaml.safe_load(text)
        if isinstance(doc, dict) and doc.get("kind") == "AddonSet":
            addon_set = AddonSet.model_validate(doc)
            addon_sets[addon_set.metadata.name] = addon_set
            sources[("AddonSet", addon_set.metadata.name)] = Source(rel)
    return Inventory(
        origin="test",
        fleet=make_fleet(),
        sites={},
        profiles={},
        addon_sets=addon_sets,
        clusters={c.name: c for c in clusters},
        files=files,
        sources=sources,
    )


def sample_addon_files() -> dict[str, str]:
    """The sample fleet's add-on folder, keyed as the loader keys it (relative to the root)."""
    root = SAMPLE_INVENTORY
    return {
        path.relative_to(root).as_posix(): path.read_text()
        for path in sorted((root / "addons").rglob("*"))
        if path.is_file()
    }
