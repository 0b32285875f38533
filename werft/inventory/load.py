"""load_inventory: the only way into a validated ``Inventory``.

Validation runs first and completely; if it found anything, ``InventoryError`` carries the
whole list and nothing is returned, so bad input never reaches a later stage. Only then are
edge CSV rows expanded into Site and single-node Cluster objects. That expansion is the hot
loop for 100,000 edge sites: the rows are already known to be valid, so objects are built
without re-validating them (pydantic's ``model_construct`` path, one shared fields-set per
class) -- a few microseconds a row.

``check_inventory`` stops after validation (what `werft validate` needs): it never builds
the per-row objects at all.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
from werft.inventory.resolve import Shape
from werft.inventory.resolved import Inventory, ResolvedCluster, Source
from werft.inventory.rules import normalise_version
from werft.inventory.tree import open_tree
from werft.inventory.validate import Checked, check_tree


def load_inventory(
    path: Path | str,
    *,
    git_ref: str | None = None,
    repo: Path | None = None,
    strict: bool = False,
) -> Inventory:
    """The validated inventory in folder ``path`` (at revision ``git_ref`` of ``repo``).

    Raises ``InventoryError`` with every error found, or ``InventoryNotFound`` (a usage
    error) when the folder, repository or revision does not exist. Warnings do not stop
    loading (they are in ``Inventory.warnings``) unless ``strict`` makes them errors.
    """
    with _bulk():
        origin, checked = _check(path, git_ref, repo)
        problems = _strictly(checked.problems) if strict else checked.problems
        errors = [p for p in problems if p.is_error]
        if errors:
            raise InventoryError(errors)
        inventory = _assemble(origin, checked)
        inventory.warnings = [p for p in problems if not p.is_error]
        return inventory


@dataclass
class Validation:
    """What `werft validate` reports: the problems, or the size of a valid fleet."""

    origin: str
    problems: list[Problem]
    sites: dict[str, int]  # per tier
    clusters: int
    machines: int

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.is_error]

    @property
    def valid(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors


def check_inventory(
    path: Path | str,
    *,
    git_ref: str | None = None,
    repo: Path | None = None,
    strict: bool = False,
) -> Validation:
    """Validate without building the inventory (no per-row objects for edge sites).

    ``problems`` holds errors and warnings in file order; ``strict`` makes every warning an
    error."""
    with _bulk():
        origin, checked = _check(path, git_ref, repo)
    sites = {tier.value: 0 for tier in Tier}
    for site in checked.sites.values():
        sites[site.spec.tier.value] += 1
    edge_rows = sum(len(table.frame) for table in checked.edges)
    sites[Tier.EDGE.value] += edge_rows
    return Validation(
        origin=origin,
        problems=_strictly(checked.problems) if strict else checked.problems,
        sites=sites,
        clusters=len(checked.clusters) + edge_rows,
        machines=sum(len(c.machines) for c in checked.clusters.values()) + edge_rows,
    )


def validate_inventory(
    path: Path | str,
    *,
    git_ref: str | None = None,
    repo: Path | None = None,
    strict: bool = False,
) -> list[Problem]:
    """Every error of the inventory at ``path``; empty when it is valid. Warnings are left
    out (``check_inventory`` has them) unless ``strict`` makes them errors."""
    return check_inventory(path, git_ref=git_ref, repo=repo, strict=strict).errors


def _strictly(problems: list[Problem]) -> list[Problem]:
    return [p if p.is_error else p.as_error() for p in problems]


def _check(path: Path | str, git_ref: str | None, repo: Path | None) -> tuple[str, Checked]:
    tree = open_tree(path, git_ref=git_ref, repo=repo)
    try:
        return tree.origin, check_tree(tree)
    finally:
        tree.close()


@contextmanager
def _bulk() -> Iterator[None]:
    """No cyclic GC while building: the objects made here form no cycles, and for 100,000
    edge sites (a million objects) repeated full collections cost as much as the work."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
        policies={name: policy for name, (_, policy) in checked.policies.items()},
    )


# Pydantic keeps a model's state in four slots; filling them directly is what
# ``model_construct`` does, minus its per-call bookkeeping (5 us -> under 1 us a model).
_SLOTS = BaseModel.__dict__
_set_dict = _SLOTS["__dict__"].__set__
_set_fields_set = _SLOTS["__pydantic_fields_set__"].__set__
_set_extra = _SLOTS["__pydantic_extra__"].__set__
_set_private = _SLOTS["__pydantic_private__"].__set__


def _maker(cls: type[BaseModel]) -> Callable[[dict[str, Any]], Any]:
    """A constructor for already-validated data that names every field of ``cls``.

    Instances share one fields-set; that is safe because the models are frozen and
    pydantic copies the set in ``model_copy``.
    """
    fields_set = set(cls.model_fields)
    new = object.__new__

    def make(data: dict[str, Any]) -> Any:
        obj = new(cls)
        _set_dict(obj, data)
        _set_fields_set(obj, fields_set)
        _set_extra(obj, None)
        _set_private(obj, None)
        return obj

    return make


_make_site, _make_site_spec = _maker(Site), _maker(SiteSpec)
_make_metadata, _make_location = _maker(Metadata), _maker(Location)
_make_machine, _make_bmc = _maker(Machine), _maker(BMC)

# ResolvedCluster is a frozen slots dataclass: its __init__ goes through object.__setattr__
# once per field. Filling the slots through their descriptors is three times faster.
_CLUSTER_FIELDS = (
    "name", "site", "tier", "region", "kubernetes_version", "distribution",
    "control_plane_replicas", "worker_replicas", "network", "addon_sets", "os_image_url",
    "api_endpoint", "machines", "labels", "owners", "profile", "source",
)  # fmt: skip
_cluster_setters = [ResolvedCluster.__dict__[name].__set__ for name in _CLUSTER_FIELDS]


def _make_cluster(*values: Any) -> ResolvedCluster:
    """A ResolvedCluster from values in ``_CLUSTER_FIELDS`` order (every field, no defaults)."""
    cluster = object.__new__(ResolvedCluster)
    for set_slot, value in zip(_cluster_setters, values, strict=True):
        set_slot(cluster, value)
    return cluster


def _expand_edges(
    table: EdgeTable,
    checked: Checked,
    sites: dict[str, Site],
    clusters: dict[str, ResolvedCluster],
    sources: dict[tuple[str, str], Source],
) -> None:
    """Each valid row -> one edge Site and one single-node Cluster named after the site.

    The hot loop for 100,000 edge sites: values come from the columns as plain lists,
    per-profile values are looked up once, and models are filled without re-validation.
    """
    ctx = checked.ctx
    assert ctx.fleet is not None
    defaults = ctx.fleet.spec.defaults
    # An edge cluster is named after its site, so {cluster} and {site} are the same value and
    # the endpoint is the template's pieces joined by the name (one C call, not a format).
    pieces = [
        piece.replace("{{", "{").replace("}}", "}")  # format()'s escapes, as validated
        for piece in re.split(r"\{(?:cluster|site)\}", defaults.api_endpoint_template or "")
    ]
    frame = table.frame
    shapes: dict[str, Shape] = checked.edge_shapes
    fallback = normalise_version(defaults.kubernetes_version or "")
    versions = {  # "" and "v1.31.4" -> what the row's cluster runs, per profile
        (profile, version): normalise_version(version) or shapes[profile].version or fallback
        for profile, version in frame[["profile", "kubernetes_version"]]
        .drop_duplicates()
        .itertuples(index=False)
    }
    assert table.latitude is not None and table.longitude is not None
    columns = [
        table.lines().tolist(),
        *(
            frame[c].tolist()
            for c in (
                "site",
                "region",
                "profile",
                "kubernetes_version",
                "bmc_address",
                "bmc_credentials",
                "boot_mac",
                "owner",
            )
        ),
        table.latitude.tolist(),
        table.longitude.tolist(),
    ]
    api_version, edge, control_plane = API_VERSION, Tier.EDGE, Role.CONTROL_PLANE
    for line, site, region, profile, version, address, creds, mac, owner, lat, lon in zip(
        *columns, strict=True
    ):
        shape = shapes[profile]
        owners = [owner] if owner else []
        sites[site] = _make_site(
            {
                "api_version": api_version,
                "metadata": _make_metadata({"name": site, "labels": {}, "annotations": {}}),
                "kind": "Site",
                "spec": _make_site_spec(
                    {
                        "tier": edge,
                        "region": region,
                        "location": _make_location(
                            {"latitude": lat, "longitude": lon, "address": ""}
                        ),
                        "owners": owners,
                    }
                ),
            }
        )
        machine = _make_machine(
            {
                "name": site + "-n0",
                "role": control_plane,
                "bmc": _make_bmc(
                    {
                        "address": address,
                        "credentials_ref": creds,
                        "disable_certificate_verification": False,
                        "ca_bundle": None,
                    }
                ),
                "boot_mac_address": mac,
                "vm": None,
            }
        )
        source = Source(table.rel, line)
        clusters[site] = _make_cluster(
            site,
            site,
            edge,
            region,
            versions[profile, version],
            shape.distribution,
            1,
            0,
            shape.network,
            shape.addon_sets,
            shape.os_image_url or "",
            site.join(pieces),
            (machine,),
            {},
            tuple(owners),
            profile,
            source,
        )
        sources[("Site", site)] = source
        sources[("Cluster", site)] = source
