"""load_inventory: the only way into a validated ``Inventory``.

Validation runs first and completely; if it found anything, ``InventoryError`` carries the
whole list and nothing is returned, so bad input never reaches a later stage. Only then are
edge CSV rows expanded into Site and single-node Cluster objects. That expansion is the hot
loop for 100,000 edge sites: the rows are already known to be valid, so objects are built
without re-validating them (pydantic's ``model_construct`` path, one shared fields-set per
class) -- a few microseconds a row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from werft.errors import InventoryError, Problem
from werft.inventory.edge_csv import EdgeTable
from werft.inventory.model import (
    API_VERSION,
    BMC,
    Location,
    Machine,
    Metadata,
    Role,
    Site,
    SiteSpec,
    Tier,
)
from werft.inventory.resolve import Shape, endpoint_from_template
from werft.inventory.resolved import Inventory, ResolvedCluster, Source
from werft.inventory.rules import normalise_version
from werft.inventory.tree import open_tree
from werft.inventory.validate import Checked, check_tree


def load_inventory(
    path: Path | str, *, git_ref: str | None = None, repo: Path | None = None
) -> Inventory:
    """The validated inventory in folder ``path`` (at revision ``git_ref`` of ``repo``).

    Raises ``InventoryError`` with every problem found, or ``InventoryNotFound`` (a usage
    error) when the folder, repository or revision does not exist.
    """
    tree = open_tree(path, git_ref=git_ref, repo=repo)
    try:
        checked = check_tree(tree)
    finally:
        close = getattr(tree, "close", None)
        if close is not None:
            close()
    if checked.problems:
        raise InventoryError(checked.problems)
    return _assemble(tree.origin, checked)


def validate_inventory(
    path: Path | str, *, git_ref: str | None = None, repo: Path | None = None
) -> list[Problem]:
    """Every problem of the inventory at ``path``; empty when it is valid."""
    try:
        load_inventory(path, git_ref=git_ref, repo=repo)
    except InventoryError as exc:
        return exc.problems
    return []


def _assemble(origin: str, checked: Checked) -> Inventory:
    ctx = checked.ctx
    assert ctx.fleet is not None  # a missing Fleet is a problem, so we never get here
    sites = dict(checked.sites)
    clusters = dict(checked.clusters)
    sources = dict(checked.sources)
    for table in checked.edges:
        _expand_edges(table, checked, sites, clusters, sources)
    return Inventory(
        origin=origin,
        fleet=ctx.fleet,
        sites=sites,
        profiles={name: profile for name, (_, profile) in ctx.profiles.items()},
        addon_sets={name: addon_set for name, (_, addon_set) in checked.addon_sets.items()},
        clusters=clusters,
        files=checked.files,
        sources=sources,
    )


class _Builder:
    """Builds already-validated models without validation, sharing one fields-set per class.

    Sharing is safe: models are frozen, and pydantic copies the set in ``model_copy``.
    """

    def __init__(self, cls: type[BaseModel], **defaults: Any) -> None:
        self.cls = cls
        self.defaults = {n: f.get_default(call_default_factory=True)
                         for n, f in cls.model_fields.items() if not f.is_required()}
        self.defaults.update(defaults)
        self.fields_set = set(cls.model_fields)
        self.new = cls.__new__

    def __call__(self, **values: Any) -> Any:
        obj = self.new(self.cls)
        data = dict(self.defaults)
        data.update(values)
        object.__setattr__(obj, "__dict__", data)
        object.__setattr__(obj, "__pydantic_fields_set__", self.fields_set)
        object.__setattr__(obj, "__pydantic_extra__", None)
        object.__setattr__(obj, "__pydantic_private__", None)
        return obj


def _expand_edges(
    table: EdgeTable,
    checked: Checked,
    sites: dict[str, Site],
    clusters: dict[str, ResolvedCluster],
    sources: dict[tuple[str, str], Source],
) -> None:
    """Each valid row -> one edge Site and one single-node Cluster named after the site."""
    ctx = checked.ctx
    assert ctx.fleet is not None
    defaults = ctx.fleet.spec.defaults
    template = defaults.api_endpoint_template or ""
    frame = table.frame
    make_site, make_spec = _Builder(Site, api_version=API_VERSION, kind="Site"), _Builder(SiteSpec)
    make_meta, make_location = _Builder(Metadata), _Builder(Location)
    make_machine, make_bmc = _Builder(Machine), _Builder(BMC)
    shapes: dict[str, Shape] = checked.edge_shapes
    fallback = normalise_version(defaults.kubernetes_version or "")
    columns = [frame[c].tolist() for c in (
        "site", "region", "latitude", "longitude", "profile", "kubernetes_version",
        "bmc_address", "bmc_credentials", "boot_mac", "owner",
    )]
    lines = table.lines().tolist()
    for line, site, region, lat, lon, profile, version, address, creds, mac, owner in zip(
        lines, *columns, strict=True
    ):
        shape = shapes[profile]
        source = Source(table.rel, line)
        owners = [owner] if owner else []
        sites[site] = make_site(
            metadata=make_meta(name=site, labels={}, annotations={}),
            spec=make_spec(
                tier=Tier.EDGE,
                region=region,
                location=make_location(latitude=float(lat), longitude=float(lon), address=""),
                owners=owners,
            ),
        )
        machine = make_machine(
            name=site + "-n0",
            role=Role.CONTROL_PLANE,
            bmc=make_bmc(address=address, credentials_ref=creds),
            boot_mac_address=mac,
            vm=None,
        )
        clusters[site] = ResolvedCluster(
            name=site,
            site=site,
            tier=Tier.EDGE,
            region=region,
            kubernetes_version=(version[1:] if version[:1] == "v" else version)
            or shape.version
            or fallback,
            distribution=shape.distribution,
            control_plane_replicas=1,
            worker_replicas=0,
            network=shape.network,
            addon_sets=shape.addon_sets,
            os_image_url=shape.os_image_url or "",
            api_endpoint=endpoint_from_template(template, site, site),
            machines=(machine,),
            labels={},
            owners=tuple(owners),
            profile=profile,
            source=source,
        )
        sources[("Site", site)] = source
        sources[("Cluster", site)] = source
