"""Check a whole inventory and report every problem at once.

Order of work: parse every YAML file (lines kept), check each document's schema, then the
fleet as a whole -- one Fleet, unique names, references that resolve, allowed Kubernetes
versions, control-plane counts, CIDRs within a site, BMC addresses and MACs unique across
YAML and CSV, add-on dependencies -- and the edge CSVs column by column. Nothing is built
for later stages here; ``werft.inventory.load`` does that only when the list is empty.
"""

from __future__ import annotations

import posixpath
import re
import string
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from werft.errors import Problem
from werft.inventory.edge_csv import EdgeTable, read_edge_csv
from werft.inventory.limits import (
    MAX_CSV_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_YAML_BYTES,
    read_bounded,
)
from werft.inventory.model import (
    AddonSet,
    Document,
    Fleet,
    Network,
    Policy,
    Site,
    Tier,
)
from werft.inventory.plaintext import plaintext_warnings
from werft.inventory.resolve import (
    CIDR_FIELDS,
    ClusterFacts,
    FleetContext,
    Place,
    Shape,
    place,
    profile_layers,
    resolve_cluster,
    resolve_shape,
)
from werft.inventory.resolved import ResolvedCluster, Source
from werft.inventory.rules import (
    FIX_LITERAL_SECRET,
    FIX_VERSION,
    VERSION_RE,
    http_url_problem,
    normalise_version,
    parse_cidr,
)
from werft.inventory.schema import validate_document
from werft.inventory.tree import Tree
from werft.inventory.yamldocs import RawDoc, parse_yaml_file

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class Checked:
    """Everything validation learned; turned into an ``Inventory`` when problems is empty."""

    ctx: FleetContext
    sites: dict[str, Site] = field(default_factory=dict)
    addon_sets: dict[str, tuple[RawDoc, AddonSet]] = field(default_factory=dict)
    policies: dict[str, tuple[RawDoc, Policy]] = field(default_factory=dict)
    clusters: dict[str, ResolvedCluster] = field(default_factory=dict)
    edges: list[EdgeTable] = field(default_factory=list)
    edge_shapes: dict[str, Shape] = field(default_factory=dict)
    sources: dict[tuple[str, str], Source] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def check_tree(tree: Tree) -> Checked:
    """Read and check every inventory file in ``tree``."""
    problems: list[Problem] = []
    paths = tree.files()
    docs, templates = _parse_yaml(tree, [p for p in paths if p.endswith(YAML_SUFFIXES)], problems)
    typed: dict[str, list[tuple[RawDoc, Document]]] = defaultdict(list)
    broken: dict[str, set[str]] = defaultdict(set)
    for doc in docs:
        model, doc_problems = validate_document(doc)
        problems += doc_problems
        if model is not None:
            typed[model.kind].append((doc, model))  # type: ignore[attr-defined]
        elif doc.kind is not None and doc.name is not None:
            broken[doc.kind].add(doc.name)
    problems += _unique_names(typed)
    # A second document of the same kind and name is reported above and left out below:
    # checking a copy-pasted cluster again would only repeat its MACs and BMCs as duplicates.
    typed = defaultdict(list, {k: list(_first_by_name(v).values()) for k, v in typed.items()})

    fleets = typed.get("Fleet", [])
    if fleets or "Fleet" not in broken:  # a broken Fleet has its own problems already
        problems += _one_fleet(tree, fleets)
    # With several Fleets (reported), the first still gives the checks below their context.
    fleet_doc, fleet = fleets[0] if fleets else (None, None)
    first = _first_by_name
    ctx = FleetContext(
        fleet=fleet,  # type: ignore[arg-type]
        fleet_doc=fleet_doc,
        sites={n: m for n, (_, m) in first(typed.get("Site", [])).items()},  # type: ignore[misc]
        profiles=first(typed.get("Profile", [])),  # type: ignore[arg-type]
        addon_sets=set(first(typed.get("AddonSet", []))),
        broken=broken,
    )
    checked = Checked(ctx=ctx, sites=ctx.sites)
    checked.addon_sets = first(typed.get("AddonSet", []))  # type: ignore[assignment]
    checked.policies = first(typed.get("Policy", []))  # type: ignore[assignment]
    for kind, items in typed.items():
        for doc, model in items:
            checked.sources.setdefault((kind, model.metadata.name), Source(doc.rel, doc.line))

    if fleet is not None and fleet_doc is not None:
        problems += _fleet_problems(fleet_doc, fleet)
    problems += _addon_set_problems(tree, checked)
    for doc, profile in ctx.profiles.values():
        problems += resolve_shape(profile_layers(doc, profile, ctx), ctx)[1]

    facts: list[ClusterFacts] = []
    for doc, cluster in typed.get("Cluster", []):
        resolved, cluster_facts, cluster_problems = resolve_cluster(doc, cluster, ctx)  # type: ignore[arg-type]
        problems += cluster_problems
        facts.append(cluster_facts)
        if resolved is not None:
            checked.clusters.setdefault(resolved.name, resolved)

    for rel in (p for p in paths if p.endswith(".csv") and p not in templates):
        data = read_bounded(tree, rel, MAX_CSV_BYTES, "csv")
        if isinstance(data, Problem):
            problems.append(data)
            continue
        table, csv_problems = read_edge_csv(rel, tree.display(rel), data)
        problems += csv_problems
        if table is not None:
            checked.edges.append(table)
    problems += _edge_problems(checked)
    problems += _cidr_overlaps(facts, checked)
    problems += _fleet_duplicates(typed, facts, checked.edges)
    problems += plaintext_warnings(
        facts,
        [doc for doc, _ in typed.get("Cluster", [])],
        checked.edges,
        fleet_doc,
        ctx.endpoint_template,
    )
    problems += _dependency_problems(checked)
    problems += _policy_problems(checked)
    checked.problems = _ordered(problems)
    return checked


# --- files and documents ---------------------------------------------------------------


def _parse_yaml(
    tree: Tree, paths: list[str], problems: list[Problem]
) -> tuple[list[RawDoc], set[str]]:
    """Parse every YAML file; files an AddonSet names as manifests are templates, not docs.

    Returns the documents and the set of template paths (to leave alone everywhere).
    """
    parsed: dict[str, tuple[list[RawDoc], list[Problem]]] = {}
    for rel in paths:
        file = tree.display(rel)
        data = read_bounded(tree, rel, MAX_YAML_BYTES, "yaml")
        if isinstance(data, Problem):  # dropped below if it is a template (its own limit)
            parsed[rel] = ([], [data])
            continue
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            parsed[rel] = (
                [],
                [
                    Problem(
                        file, None, "encoding", f"not UTF-8: {exc.reason}", "save the file as UTF-8"
                    )
                ],
            )
            continue
        parsed[rel] = parse_yaml_file(rel, file, text)
    templates = {
        key
        for docs, _ in parsed.values()
        for doc in docs
        if doc.kind == "AddonSet"
        for _, _, key in _manifest_refs(doc)
        if key is not None
    }
    docs: list[RawDoc] = []
    for rel, (file_docs, file_problems) in parsed.items():
        if rel not in templates:
            docs += file_docs
            problems += file_problems
    return docs, templates


def _manifest_refs(doc: RawDoc) -> list[tuple[int, int, str | None]]:
    """(addon index, manifest index, root-relative path or None if it leaves the root)."""
    refs = []
    addons = (doc.data.get("spec") or {}).get("addons") if isinstance(doc.data, dict) else None
    for i, addon in enumerate(addons if isinstance(addons, list) else []):
        manifests = addon.get("manifests") if isinstance(addon, dict) else None
        for j, manifest in enumerate(manifests if isinstance(manifests, list) else []):
            if isinstance(manifest, str):
                refs.append((i, j, manifest_key(doc.rel, manifest)))
    return refs


def manifest_key(doc_rel: str, manifest: str) -> str | None:
    """A manifest path as written in an AddonSet -> its path relative to the inventory root."""
    if manifest.startswith("/"):
        return None
    key = posixpath.normpath(posixpath.join(posixpath.dirname(doc_rel), manifest))
    return None if key == ".." or key.startswith("../") else key


def _first_by_name(items: list[tuple[RawDoc, Document]]) -> dict[str, tuple[RawDoc, Document]]:
    found: dict[str, tuple[RawDoc, Document]] = {}
    for doc, model in items:
        found.setdefault(model.metadata.name, (doc, model))
    return found


def _unique_names(typed: dict[str, list[tuple[RawDoc, Document]]]) -> list[Problem]:
    problems = []
    for kind, items in typed.items():
        first: dict[str, RawDoc] = {}
        for doc, model in items:
            name = model.metadata.name
            if name in first:
                other = first[name]
                problems.append(
                    doc.problem(
                        ("metadata", "name"),
                        f"{kind} {name!r} is defined twice (also at "
                        f"{other.file}:{other.line_of(('metadata', 'name'))})",
                        f"rename one of them or delete the duplicate {kind}",
                    )
                )
            first.setdefault(name, doc)
    return problems


def _one_fleet(tree: Tree, fleets: list[tuple[RawDoc, Document]]) -> list[Problem]:
    if not fleets:
        return [
            Problem(
                tree.display("fleet.yaml"),
                None,
                "kind",
                "the inventory has no Fleet document",
                "add fleet.yaml with kind: Fleet (kubernetesVersions, artifacts, rollout)",
            )
        ]
    first = fleets[0][0]
    return [
        doc.problem(
            ("kind",),
            f"a second Fleet (the first is at {first.file}:{first.line})",
            "an inventory has exactly one Fleet; merge them",
        )
        for doc, _ in fleets[1:]
    ]


# --- Fleet and AddonSets -----------------------------------------------------------------


def _fleet_problems(doc: RawDoc, fleet: Fleet) -> list[Problem]:
    problems = []
    spec = fleet.spec
    allowed = [normalise_version(v) for v in spec.kubernetes_versions]
    default = spec.defaults.kubernetes_version
    if default is not None and normalise_version(default) not in allowed:
        problems.append(
            doc.problem(
                ("spec", "defaults", "kubernetesVersion"),
                f"default {default} is not in spec.kubernetesVersions",
                "use one of " + ", ".join(allowed) + " or add it to the list",
            )
        )
    bad = http_url_problem(spec.artifacts.base_url, what="artifacts.baseUrl")
    if bad:
        problems.append(doc.problem(("spec", "artifacts", "baseUrl"), *bad))
    template = spec.defaults.api_endpoint_template
    if template is not None:
        problems += _template_problems(doc, template)
    order = spec.rollout.order
    for tier in Tier:
        if order.count(tier) > 1:
            problems.append(
                doc.problem(
                    ("spec", "rollout", "order"),
                    f"tier {tier.value!r} appears {order.count(tier)} times",
                    "list each tier once: core, near-edge, edge",
                )
            )
    return problems


def _template_problems(doc: RawDoc, template: str) -> list[Problem]:
    path = ("spec", "defaults", "apiEndpointTemplate")
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        return [
            doc.problem(
                path, f"not a valid template: {exc}", "use {cluster} and {site} as placeholders"
            )
        ]
    unknown = names - {"cluster", "site"}
    if unknown:
        return [
            doc.problem(
                path,
                "unknown placeholder(s) " + ", ".join(sorted(unknown)),
                "only {cluster} and {site} are replaced",
            )
        ]
    if "cluster" not in names:
        return [
            doc.problem(
                path,
                "the template has no {cluster}: every cluster would get the same API endpoint",
                "include {cluster}, e.g. https://{cluster}.k8s.example:6443",
            )
        ]
    bad = http_url_problem(template.format(cluster="c", site="s"), what="apiEndpointTemplate")
    return [doc.problem(path, *bad)] if bad else []


def _addon_set_problems(tree: Tree, checked: Checked) -> list[Problem]:
    problems: list[Problem] = []
    everywhere = {a.name for _, s in checked.addon_sets.values() for a in s.spec.addons}
    for doc, addon_set in checked.addon_sets.values():
        names: dict[str, int] = {}
        for i, addon in enumerate(addon_set.spec.addons):
            if addon.name in names:
                problems.append(
                    doc.problem(
                        ("spec", "addons", i, "name"),
                        f"add-on {addon.name!r} appears twice in the set",
                        "keep one entry per add-on",
                    )
                )
            names.setdefault(addon.name, i)
            for j, dep in enumerate(addon.depends_on):
                if dep not in everywhere:
                    problems.append(
                        doc.problem(
                            ("spec", "addons", i, "dependsOn", j),
                            f"add-on {dep!r} does not exist in any AddonSet",
                            "name an add-on defined in an AddonSet",
                        )
                    )
        for i, j, key in _manifest_refs(doc):
            path = ("spec", "addons", i, "manifests", j)
            written = addon_set.spec.addons[i].manifests[j]
            if key is None:
                problems.append(
                    doc.problem(
                        path,
                        f"{written!r} points outside the inventory",
                        "keep manifests inside the inventory folder, "
                        "relative to the AddonSet's file",
                    )
                )
            elif not tree.exists(key):
                problems.append(
                    doc.problem(
                        path,
                        f"manifest {written!r} not found ({key})",
                        "paths are relative to the folder of the AddonSet's file",
                    )
                )
            else:
                data = read_bounded(tree, key, MAX_MANIFEST_BYTES, "manifest")
                if isinstance(data, Problem):
                    problems.append(data)
                    continue
                try:
                    checked.files[key] = data.decode("utf-8")
                except UnicodeDecodeError:
                    problems.append(
                        doc.problem(path, f"manifest {key} is not UTF-8 text", "save it as UTF-8")
                    )
    problems += _dependency_cycles(checked)
    return problems


def _dependency_cycles(checked: Checked) -> list[Problem]:
    graph: dict[str, list[str]] = {}
    where: dict[str, tuple[RawDoc, int]] = {}
    for doc, addon_set in checked.addon_sets.values():
        for i, addon in enumerate(addon_set.spec.addons):
            graph.setdefault(addon.name, []).extend(addon.depends_on)
            where.setdefault(addon.name, (doc, i))
    problems, state = [], dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for dep in graph.get(name, []):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep] if dep in stack else [name, dep]
                doc, i = where[name]
                problems.append(
                    doc.problem(
                        ("spec", "addons", i, "dependsOn"),
                        "dependency cycle: " + " -> ".join(cycle),
                        "remove one of the dependsOn entries",
                    )
                )
            elif state.get(dep) == 0:
                visit(dep, [*stack, dep])
        state[name] = 2

    for name in graph:
        if state[name] == 0:
            visit(name, [name])
    return problems


def _dependency_problems(checked: Checked) -> list[Problem]:
    """Each add-on's dependencies must be in the sets of every cluster that gets it.

    Checked once per distinct combination of sets (100,000 edge clusters share one).
    """
    users: dict[tuple[str, ...], str] = {}
    for cluster in checked.clusters.values():
        users.setdefault(cluster.addon_sets, f"cluster {cluster.name}")
    for name, shape in checked.edge_shapes.items():
        users.setdefault(shape.addon_sets, f"edge rows with profile {name}")
    problems = []
    for sets, user in users.items():
        chosen = [checked.addon_sets[s] for s in sets if s in checked.addon_sets]
        present = {a.name for _, s in chosen for a in s.spec.addons}
        missing = [
            (doc, i, j, addon.name, dep)
            for doc, addon_set in chosen
            for i, addon in enumerate(addon_set.spec.addons)
            for j, dep in enumerate(addon.depends_on)
            if dep not in present
        ]
        for doc, i, j, name, dep in missing:
            message = (
                f"{name!r} needs {dep!r}, which is in none of the add-on sets "
                f"[{', '.join(sets)}] of {user}"
            )
            fix = f"add the set that holds {dep!r} to {user}'s addonSets"
            problems.append(doc.problem(("spec", "addons", i, "dependsOn", j), message, fix))
    return problems


# --- edge CSV against the fleet ------------------------------------------------------------


def _edge_problems(checked: Checked) -> list[Problem]:
    ctx = checked.ctx
    problems: list[Problem] = []
    allowed = ctx.allowed_versions
    for table in checked.edges:
        frame = table.frame
        profile = frame["profile"]
        used = profile.unique().tolist()
        known = [p for p in used if p in ctx.profiles]
        missing = profile.isin([p for p in used if p and p not in ctx.profiles])
        names = ", ".join(sorted(ctx.profiles)) or "none defined"
        table.report(
            problems,
            missing,
            "profile",
            lambda v: f"profile {v!r} does not exist",
            f"use one of: {names}",
        )
        version = frame["kubernetes_version"]
        if allowed is not None:
            # distinct values are few (a handful of versions), so decide per value
            refused = [
                v
                for v in version.unique().tolist()
                if v and re.fullmatch(VERSION_RE, v) and normalise_version(v) not in allowed
            ]
            table.report(
                problems,
                version.isin(refused),
                "kubernetes_version",
                lambda v: f"Kubernetes {v} is not in the fleet's kubernetesVersions",
                "use one of " + ", ".join(sorted(allowed)) + " or leave it empty",
            )
        for name in known:
            rows = (profile == name).to_numpy()
            at = Place(table.file, int(table.lines(np.flatnonzero(rows)[:1])[0]), "profile")
            doc, prof = ctx.profiles[name]
            shape, _ = resolve_shape(profile_layers(doc, prof, ctx), ctx)
            checked.edge_shapes[name] = shape
            problems += _edge_shape_problems(name, shape, at, ctx)
            unpinned = np.flatnonzero(rows & (version == "").to_numpy())
            if allowed is not None and shape.version is None and unpinned.size:
                problems.append(
                    Problem(
                        table.file,
                        int(table.lines(unpinned[:1])[0]),
                        "kubernetes_version",
                        f"empty, and profile {name!r} and the fleet defaults set no version",
                        "fill it in (" + FIX_VERSION + ") or set "
                        "defaults.kubernetesVersion in the Fleet",
                    )
                )
    return problems


def _edge_shape_problems(name: str, shape: Shape, at: Place, ctx: FleetContext) -> list[Problem]:
    problems = []
    if shape.control_plane not in (None, 1) or shape.workers not in (None, 0):
        problems.append(
            at.problem(
                f"profile {name!r} is not single-node (controlPlane {shape.control_plane}, "
                f"workers {shape.workers}); an edge row expands to one machine",
                "use a profile with controlPlane.replicas: 1 and workers.replicas: 0",
            )
        )
    if shape.os_image_url is None and ctx.base_url is not None:
        problems.append(
            at.problem(f"profile {name!r} sets no osImage", "set spec.osImage in the profile")
        )
    if shape.network.control_plane_endpoint is not None:
        problems.append(
            at.problem(
                f"profile {name!r} sets network.controlPlaneEndpoint: every edge row would share "
                "one API endpoint",
                "remove it from the profile; the Fleet's defaults.apiEndpointTemplate names each "
                "edge cluster's endpoint",
            )
        )
    elif ctx.fleet is not None and ctx.endpoint_template is None:
        problems.append(
            at.problem(
                "edge clusters have no API endpoint: the Fleet sets no "
                "defaults.apiEndpointTemplate",
                "set defaults.apiEndpointTemplate, e.g. https://{cluster}.edge.example:6443",
            )
        )
    return problems


# --- fleet-wide ------------------------------------------------------------------------------


def _cidr_overlaps(facts: list[ClusterFacts], checked: Checked) -> list[Problem]:
    """Node, pod and service CIDRs of different clusters at one site must not overlap.

    Only CIDRs written somewhere (cluster or profile) count: a schema default is the
    distribution's isolated in-cluster range.
    """
    by_site: dict[str, list[tuple[str, Network, dict[str, Place]]]] = defaultdict(list)
    for fact in facts:
        by_site[fact.site].append((fact.name, fact.network, fact.cidr_at))
    for table in checked.edges:  # an edge row at a site that also has YAML clusters
        shared = table.frame["site"].isin(list(by_site))
        for row in np.flatnonzero(shared.to_numpy()):
            site, profile = table.frame["site"].iat[row], table.frame["profile"].iat[row]
            shape = checked.edge_shapes.get(profile)
            if shape is not None:
                line = int(table.lines(np.array([row]))[0])
                at = {n: Place(table.file, line, "profile") for n in shape.cidr_at}
                by_site[site].append((site, shape.network, at))
    problems = []
    for site, clusters in by_site.items():
        for (name_a, net_a, at_a), (name_b, net_b, at_b) in combinations(clusters, 2):
            for field_a in CIDR_FIELDS:
                for field_b in CIDR_FIELDS:
                    a = _cidr(net_a, field_a, at_a)
                    b = _cidr(net_b, field_b, at_b)
                    if a is not None and b is not None and a.overlaps(b):
                        problems.append(
                            at_b[field_b].problem(
                                f"{_label(field_b)} {b} of cluster {name_b!r} overlaps "
                                f"{_label(field_a)} {a} of cluster {name_a!r} at site {site!r}",
                                "give each cluster at a site its own node, pod and service ranges",
                            )
                        )
    return problems


def _cidr(network: Network, name: str, at: dict[str, Place]) -> object:
    value = getattr(network, name)
    return parse_cidr(value) if value is not None and name in at else None


def _label(name: str) -> str:
    return {"node_cidr": "nodeCIDR", "pod_cidr": "podCIDR", "service_cidr": "serviceCIDR"}[name]


def _fleet_duplicates(
    typed: dict[str, list[tuple[RawDoc, Document]]],
    facts: list[ClusterFacts],
    edges: list[EdgeTable],
) -> list[Problem]:
    """Names, BMC addresses, MACs and API endpoints unique across YAML and CSV."""
    sites = [(m.metadata.name, place(d, ("metadata", "name"))) for d, m in typed.get("Site", [])]
    clusters = [
        (m.metadata.name, place(d, ("metadata", "name"))) for d, m in typed.get("Cluster", [])
    ]
    machines: list[tuple[str, Place]] = []
    bmcs: list[tuple[str, Place]] = []
    macs: list[tuple[str, Place]] = []
    endpoints: list[tuple[str, Place]] = []
    # facts are in Cluster document order, so each pairs with its document
    for fact, (doc, _) in zip(facts, typed.get("Cluster", []), strict=True):
        for machine, path in fact.machines:
            machines.append((machine.name, place(doc, (*path, "name"))))
            if machine.bmc is not None:
                bmcs.append((machine.bmc.address, place(doc, (*path, "bmc", "address"))))
            if machine.boot_mac_address is not None:
                macs.append(
                    (machine.boot_mac_address.lower(), place(doc, (*path, "bootMACAddress")))
                )
        if fact.endpoint is not None and fact.endpoint_at is not None:
            endpoints.append((fact.endpoint, fact.endpoint_at))

    def csv(
        column: str, transform: Callable[[pd.Series], pd.Series] | None = None
    ) -> list[tuple[EdgeTable, str, pd.Series]]:
        parts = []
        for table in edges:
            series = table.frame[column]
            parts.append((table, column, transform(series) if transform else series))
        return parts

    problems = []
    problems += _duplicates("site", sites, csv("site"), "rename one of the sites")
    problems += _duplicates(
        "cluster",
        clusters,
        csv("site"),
        "rename one of them (an edge row's cluster is named after its site)",
        csv_unique=True,
    )
    # an edge row's machine is "<site>-n0": only YAML names of that shape can collide
    edge_machines = {name[:-3] for name, _ in machines if name.endswith("-n0")}
    problems += _duplicates(
        "machine",
        machines,
        [(t, c, s[s.isin(edge_machines)] + "-n0") for t, c, s in csv("site")],
        "machine names are unique across the fleet (BMC and hypervisor paths use them); rename one",
        csv_unique=True,
    )
    problems += _duplicates(
        "BMC address",
        bmcs,
        csv("bmc_address"),
        "every machine has its own BMC; fix the address of one of them",
    )
    problems += _duplicates(
        "boot MAC",
        macs,
        csv("boot_mac", lambda s: s.str.lower()),
        "every machine has its own NIC; fix the MAC of one of them",
    )
    problems += _duplicates(
        "API endpoint", endpoints, [], "give each cluster its own controlPlaneEndpoint"
    )
    return problems


def _duplicates(
    what: str,
    yaml_items: list[tuple[str, Place]],
    csv_parts: list[tuple[EdgeTable, str, pd.Series]],
    fix: str,
    *,
    csv_unique: bool = False,
) -> list[Problem]:
    """Report every repeat of a value after its first use, YAML first, then CSV rows.

    With ``csv_unique``, repeats within the CSVs are left out (already reported under the
    column's own check, e.g. a repeated site is also a repeated edge cluster).
    """
    series = [pd.Series([v for v, _ in yaml_items], dtype=object)]
    offsets = [len(yaml_items)]
    yaml_values = set(series[0].tolist())
    for _, _, values in csv_parts:
        if csv_unique:
            # only collisions with YAML are new: keep the (few) CSV values YAML also has
            kept = values[values.isin(yaml_values)]
            kept = kept[~kept.duplicated()]
        else:
            kept = values[values != ""]
        series.append(kept)
        offsets.append(offsets[-1] + len(kept))
    combined = pd.concat(series, ignore_index=True)
    repeated = combined.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return []
    problems = []
    first: dict[str, Place] = {}
    for pos in np.flatnonzero(repeated).tolist():
        value = combined.iat[pos]
        here = _locate(pos, yaml_items, csv_parts, series, offsets)
        if value not in first:
            first[value] = here
            continue
        there = first[value]
        problems.append(
            here.problem(f"{what} {value!r} is also used at {there.file}:{there.line}", fix)
        )
    return problems


def _locate(
    pos: int,
    yaml_items: list[tuple[str, Place]],
    csv_parts: list[tuple[EdgeTable, str, pd.Series]],
    series: list[pd.Series],
    offsets: list[int],
) -> Place:
    if pos < offsets[0]:
        return yaml_items[pos][1]
    for k, (table, column, _) in enumerate(csv_parts):
        if pos < offsets[k + 1]:
            row_label = series[k + 1].index[pos - offsets[k]]
            return Place(table.file, int(row_label) + 2, column)
    raise IndexError(pos)


def _ordered(problems: list[Problem]) -> list[Problem]:
    """Deduplicated, in file order.

    An inherited bad value is found once per cluster using it; a literal secret is found by
    the document scan and again by the field's own rule: each is reported once.
    """
    unique: dict[object, Problem] = {}
    for problem in problems:
        secret = problem.fix == FIX_LITERAL_SECRET
        key = (problem.file, problem.line, problem.field) if secret else problem
        unique.setdefault(key, problem)
    return sorted(unique.values(), key=lambda p: (p.file, p.line or 0))


# --- Policies ----------------------------------------------------------------------------


def _policy_problems(checked: Checked) -> list[Problem]:
    """Every CEL expression of every Policy compiles (a typo is found here, not on a PR)."""
    if not checked.policies:
        return []
    from werft.gitops.cel import compile_error  # CEL is only loaded for inventories with rules

    problems = []
    for doc, policy in checked.policies.values():
        for index, rule in enumerate(policy.spec.rules):
            for key in ("when", "expression"):
                text = getattr(rule, key)
                error = compile_error(text) if text else None
                if error:
                    problems.append(
                        doc.problem(
                            ("spec", "rules", index, key),
                            f"rule {rule.name!r}: not a valid CEL expression: {error}",
                            "see https://github.com/google/cel-spec (e.g. "
                            "'request.author in object.spec.owners')",
                        )
                    )
    return problems
