"""Loading: the sample fleet, resolution of profiles and defaults, edge rows, Git revisions."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import git
import pytest

from tests.inventoryfixtures import SmallFleet
from werft.errors import InventoryError
from werft.inventory import InventoryNotFound, load_inventory
from werft.inventory.model import Distribution, Role, Tier
from werft.inventory.resolved import ResolvedCluster

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "inventory"


@pytest.fixture
def fleet(tmp_path: Path) -> SmallFleet:
    return SmallFleet(tmp_path / "inv")


# --- the sample fleet ----------------------------------------------------------------------


def test_sample_inventory_is_valid_and_has_the_promised_shape() -> None:
    inventory = load_inventory(SAMPLE)
    tiers = [site.spec.tier for site in inventory.sites.values()]
    assert (tiers.count(Tier.CORE), tiers.count(Tier.NEAR_EDGE), tiers.count(Tier.EDGE)) == (
        3,
        12,
        300,
    )
    core = [c for c in inventory.clusters.values() if c.tier == Tier.CORE]
    per_site = {c.site: 0 for c in core}
    for cluster in core:
        per_site[cluster.site] += 1
    assert set(per_site.values()) <= {2, 3}
    providers = {m.provider for c in core for m in c.machines}
    assert providers == {"redfish", "libvirt"}  # bare metal and VMs
    assert set(inventory.addon_sets) >= {"base", "observability", "gitops"}


def test_sample_core_cluster_is_resolved_from_profile_and_defaults() -> None:
    inventory = load_inventory(SAMPLE)
    cluster = inventory.clusters["fra1-core-a"]
    assert cluster.control_plane_replicas == 3 and len(cluster.control_plane) == 3
    assert cluster.worker_replicas == 2 and len(cluster.workers) == 2
    assert cluster.kubernetes_version == "1.31.4"  # the Fleet's default
    assert cluster.api_endpoint == "http://127.0.0.1:8686/clusters/fra1-core-a"
    assert cluster.os_image_url == "http://127.0.0.1:8686/images/ubuntu-24.04-server.iso"
    assert cluster.addon_sets == ("base", "observability", "gitops")
    machine = cluster.machines[0]
    assert machine.bmc is not None
    assert machine.bmc.address == (
        "redfish+http://127.0.0.1:8686/bmc/fra1-core-a-cp0/redfish/v1/Systems/1"
    )
    assert machine.bmc.credentials_ref == "bmc-fra1"


def test_sample_manifests_are_carried_in_inventory_files() -> None:
    inventory = load_inventory(SAMPLE)
    for name, addon_set in inventory.addon_sets.items():
        folder = Path(inventory.sources[("AddonSet", name)].file).parent
        for addon in addon_set.spec.addons:
            for manifest in addon.manifests:
                key = (folder / manifest).as_posix()
                assert inventory.files[key] == (SAMPLE / key).read_text()


# --- resolution ------------------------------------------------------------------------------


def test_profile_then_cluster_then_defaults(fleet: SmallFleet) -> None:
    inventory = load_inventory(fleet.root)
    a = inventory.clusters["fra1-a"]
    assert a.kubernetes_version == "1.30.6"  # the cluster's own "v1.30.6", normalised
    assert a.distribution == Distribution.KUBEADM  # schema default
    assert a.os_image_url == "http://127.0.0.1:8686/artifacts/images/ubuntu.iso"  # joined
    assert a.api_endpoint == "http://127.0.0.1:8686/clusters/fra1-a"  # template
    assert a.labels == {"env": "prod"}
    assert a.tier == Tier.CORE and a.region == "eu-central"
    b = inventory.clusters["fra1-b"]
    assert b.api_endpoint == "https://10.20.0.10:6443"  # controlPlaneEndpoint wins
    assert b.kubernetes_version == "1.31.4"  # fleet default
    assert (b.network.pod_cidr, b.network.service_cidr) == ("10.1.0.0/16", "10.97.0.0/16")


def test_vm_machines_merge_machine_cluster_and_profile_vm_specs(fleet: SmallFleet) -> None:
    b = load_inventory(fleet.root).clusters["fra1-b"]
    cp, worker = b.machines
    assert cp.vm is not None and worker.vm is not None
    assert (cp.vm.host, cp.vm.cpus, cp.vm.memory_mib) == ("sim+http://127.0.0.1:8686", 4, 4096)
    assert (worker.vm.host, worker.vm.cpus, worker.vm.memory_mib) == ("test:///default", 4, 2048)


def test_network_fields_merge_one_by_one(fleet: SmallFleet) -> None:
    fleet.edit(
        "profiles.yaml",
        "  osImage: images/ubuntu.iso\n",
        "  osImage: images/ubuntu.iso\n  network:\n    serviceCIDR: 10.200.0.0/16\n",
    )
    fleet.edit("sites/fra1.yaml", "    serviceCIDR: 10.96.0.0/16\n", "")
    a = load_inventory(fleet.root).clusters["fra1-a"]
    assert a.network.service_cidr == "10.200.0.0/16"  # from the profile
    assert a.network.pod_cidr == "10.0.0.0/16"  # from the cluster


def test_edge_rows_expand_to_a_site_and_a_single_node_cluster(fleet: SmallFleet) -> None:
    inventory = load_inventory(fleet.root)
    site = inventory.sites["edge-002"]
    assert site.spec.tier == Tier.EDGE and site.spec.region == "eu-west"
    assert site.spec.location is not None and site.spec.location.latitude == pytest.approx(45.764)
    cluster = inventory.clusters["edge-002"]
    assert cluster.tier == Tier.EDGE and cluster.site == "edge-002"
    assert cluster.distribution == Distribution.K3S
    assert cluster.kubernetes_version == "1.30.6"  # pinned in the row
    assert inventory.clusters["edge-001"].kubernetes_version == "1.31.4"  # fleet default
    assert inventory.clusters["edge-003"].kubernetes_version == "1.31.4"  # "v1.31.4"
    assert (cluster.control_plane_replicas, cluster.worker_replicas) == (1, 0)
    (machine,) = cluster.machines
    assert machine.name == "edge-002-n0" and machine.role == Role.CONTROL_PLANE
    assert machine.bmc is not None and machine.bmc.credentials_ref == "bmc-edge-eu-west"
    assert machine.boot_mac_address == "02:00:00:00:02:02"
    assert cluster.api_endpoint == "http://127.0.0.1:8686/clusters/edge-002"
    assert cluster.network.pod_cidr == "10.42.0.0/16"
    assert cluster.owners == ("edge-ops",) and inventory.clusters["edge-003"].owners == ()
    assert inventory.sources[("Cluster", "edge-002")].file == "edge-sites.csv"
    assert inventory.sources[("Cluster", "edge-002")].line == 3
    # built without validation, so check they still behave like validated models
    assert machine.model_dump(by_alias=True)["bootMACAddress"] == "02:00:00:00:02:02"
    assert machine.model_copy(update={"name": "x"}).name == "x" and machine.name == "edge-002-n0"


def test_manifests_are_read_relative_to_the_addon_set_file(fleet: SmallFleet) -> None:
    inventory = load_inventory(fleet.root)
    assert inventory.sources[("AddonSet", "base")].file == "addons/base.yaml"
    assert inventory.files == {
        "addons/cni/cni.yaml.j2": (fleet.root / "addons/cni/cni.yaml.j2").read_text(),
        "addons/dns.yaml": (fleet.root / "addons/dns.yaml").read_text(),
    }
    assert inventory.addon_sets["base"].spec.addons[0].manifests == ["cni/cni.yaml.j2"]


def test_select_by_tier_and_label(fleet: SmallFleet) -> None:
    inventory = load_inventory(fleet.root)
    assert [c.name for c in inventory.select(tiers=[Tier.EDGE])] == [
        "edge-001",
        "edge-002",
        "edge-003",
    ]
    assert [c.name for c in inventory.select(labels={"env": "prod"})] == ["fra1-a"]


def test_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryNotFound, match="does not exist"):
        load_inventory(tmp_path / "nope")


# --- Git revisions ---------------------------------------------------------------------------


def _commit(repo: git.Repo, message: str) -> str:
    repo.git.add(A=True)
    actor = git.Actor("werft tests", "tests@werft.invalid")
    return repo.index.commit(message, author=actor, committer=actor).hexsha


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def history(tmp_path: Path) -> tuple[git.Repo, SmallFleet, str, str]:
    """A repo whose first commit has a valid fleet and whose second commit breaks it."""
    repo = git.Repo.init(tmp_path / "repo")
    small = SmallFleet(tmp_path / "repo" / "inventory")
    good = _commit(repo, "a valid fleet")
    small.edit("sites/fra1.yaml", '"02:00:00:00:01:02"', '"not-a-mac"')
    bad = _commit(repo, "break a MAC")
    return repo, small, good, bad


def test_git_ref_reads_blobs_without_touching_the_working_tree(
    history: tuple[git.Repo, SmallFleet, str, str],
) -> None:
    repo, small, good, _ = history
    # uncommitted edits in the working tree must not leak into a revision read
    small.edit("sites/fra1.yaml", "region: eu-central", "region: eu-WORKTREE")
    status = repo.git.status(porcelain=True)  # (git status itself refreshes .git/index)
    before = _snapshot(Path(repo.working_tree_dir))  # includes .git: HEAD, index, refs

    inventory = load_inventory("inventory", git_ref="HEAD~1", repo=Path(repo.working_tree_dir))

    assert inventory.origin == f"{repo.working_tree_dir}@HEAD~1"
    assert inventory.sites["fra1"].spec.region == "eu-central"
    assert inventory.clusters["fra1-a"].machines[1].boot_mac_address == "02:00:00:00:01:02"
    assert inventory.files["addons/cni/cni.yaml.j2"].startswith("apiVersion: v1")
    assert len(inventory.clusters) == 5
    assert _snapshot(Path(repo.working_tree_dir)) == before  # byte for byte, same mtimes
    assert repo.head.commit.hexsha != good  # still on the newer commit
    assert repo.git.status(porcelain=True) == status


def test_git_ref_problems_name_the_revision_and_path(
    history: tuple[git.Repo, SmallFleet, str, str],
) -> None:
    _, small, _, bad = history
    with pytest.raises(InventoryError) as caught:
        load_inventory(small.root, git_ref=bad)  # repo found from the (absolute) path
    (problem,) = caught.value.problems
    assert problem.file == f"{bad}:inventory/sites/fra1.yaml"
    assert problem.line == small.line("sites/fra1.yaml", "not-a-mac")
    assert problem.field == "spec.machines[1].bootMACAddress"


def test_git_ref_works_for_a_folder_deleted_from_the_working_tree(
    history: tuple[git.Repo, SmallFleet, str, str],
) -> None:
    repo, small, good, _ = history
    subprocess.run(["rm", "-rf", str(small.root)], check=True)
    inventory = load_inventory("inventory", git_ref=good, repo=Path(repo.working_tree_dir))
    assert "fra1-a" in inventory.clusters


def test_unknown_git_ref_is_a_usage_error(
    history: tuple[git.Repo, SmallFleet, str, str],
) -> None:
    repo, _, _, _ = history
    with pytest.raises(InventoryNotFound, match="revision 'no-such-branch' not found"):
        load_inventory("inventory", git_ref="no-such-branch", repo=Path(repo.working_tree_dir))
    with pytest.raises(InventoryNotFound, match="does not exist at HEAD"):
        load_inventory("elsewhere", git_ref="HEAD", repo=Path(repo.working_tree_dir))


def test_edge_clusters_are_complete_resolved_clusters(fleet: SmallFleet) -> None:
    """Edge rows are built without ResolvedCluster.__init__: every field must still be set."""
    cluster = load_inventory(fleet.root).clusters["edge-001"]
    values = {f.name: getattr(cluster, f.name) for f in dataclasses.fields(cluster)}
    assert ResolvedCluster(**values) == cluster
    assert values["name"] == "edge-001" and values["source"].line == 2


def test_the_small_fleet_is_valid(fleet: SmallFleet) -> None:
    assert fleet.problems() == []


def test_line_helper_counts_from_one(fleet: SmallFleet) -> None:
    assert fleet.line("fleet.yaml", "apiVersion") == 1
    assert fleet.line("edge-sites.csv", "edge-002") == 3
