"""The fleet generator: deterministic bytes, valid output; the committed sample is its output."""

from __future__ import annotations

from pathlib import Path

from werft.inventory import load_inventory, write_fleet
from werft.inventory.model import Tier

SAMPLE = Path(__file__).resolve().parents[1] / "inventory"


def _files(root: Path, *, skip_addons: bool = False) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        # add-ons and change policies are written by hand, not generated
        if p.is_file()
        and not (skip_addons and p.relative_to(root).parts[0] in ("addons", "policies"))
    }


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    write_fleet(tmp_path / "a", edge_sites=50, seed=42)
    write_fleet(tmp_path / "b", edge_sites=50, seed=42)
    write_fleet(tmp_path / "c", edge_sites=50, seed=43)
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b
    assert a["edge-sites.csv"] != c["edge-sites.csv"]


def test_committed_sample_is_the_generator_output(tmp_path: Path) -> None:
    write_fleet(tmp_path / "sample", edge_sites=300, seed=1)
    assert _files(tmp_path / "sample", skip_addons=True) == _files(SAMPLE, skip_addons=True)


def test_generated_fleet_validates_with_the_asked_for_shape(tmp_path: Path) -> None:
    write_fleet(
        tmp_path / "f",
        edge_sites=120,
        seed=3,
        core_sites=10,
        near_edge_sites=30,
        endpoint="http://127.0.0.1:4321",
    )
    inventory = load_inventory(tmp_path / "f")
    tiers = [s.spec.tier for s in inventory.sites.values()]
    assert (tiers.count(Tier.CORE), tiers.count(Tier.NEAR_EDGE), tiers.count(Tier.EDGE)) == (
        10,
        30,
        120,
    )
    macs = [m.boot_mac_address for c in inventory.clusters.values() for m in c.machines]
    assert len(macs) == len(set(macs))
    assert all(
        c.api_endpoint == f"http://127.0.0.1:4321/clusters/{c.name}"
        for c in inventory.clusters.values()
    )
    vm_hosts = {m.vm.host for c in inventory.clusters.values() for m in c.machines if m.vm}
    assert vm_hosts == {"sim+http://127.0.0.1:4321"}


def test_addon_sets_are_copied_or_replaced_by_placeholders(tmp_path: Path) -> None:
    source = tmp_path / "my-addons"
    (source / "base").mkdir(parents=True)
    write_fleet(tmp_path / "placeholder", edge_sites=1, addons_from=None)
    names = set(load_inventory(tmp_path / "placeholder").addon_sets)
    assert names >= {"base", "observability", "gitops"}

    placeholder = tmp_path / "placeholder" / "addons"
    for path in placeholder.rglob("*"):
        if path.is_file():
            target = source / path.relative_to(placeholder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (source / "README.md").write_text("copied\n")
    write_fleet(tmp_path / "copied", edge_sites=1, addons_from=source)
    assert (tmp_path / "copied" / "addons" / "README.md").read_text() == "copied\n"
    assert set(load_inventory(tmp_path / "copied").addon_sets) == names
