"""Profiles, cluster overrides and fleet defaults -> one ResolvedCluster.

Precedence, field by field: the Cluster's own value, then its Profile's, then the Fleet's
``spec.defaults``, then the schema default. Nested specs (``network``, ``vm``) merge field
by field the same way, so a cluster may set only ``network.nodeCIDR`` and keep the
profile's pod and service CIDRs. Every value remembers the document and line it came from,
so a bad inherited value is reported where it is written (the profile), not where it is used.

Machines are always the cluster's own list. A VM machine's ``vm`` is laid over the
cluster's ``vm``, then the profile's: a profile can fix cpus/memory/disk, the machine names
the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from werft.errors import Problem
from werft.inventory.model import (
    Cluster,
    Distribution,
    Fleet,
    Machine,
    Network,
    Profile,
    Role,
    Site,
    VMSpec,
)
from werft.inventory.resolved import ResolvedCluster, Source
from werft.inventory.rules import (
    FIX_CIDR,
    FIX_VERSION,
    bmc_address_problem,
    http_url_problem,
    normalise_version,
    parse_cidr,
    uri_problem,
    url_has_password,
)
from werft.inventory.yamldocs import Path_, RawDoc, format_path

CIDR_FIELDS = ("node_cidr", "pod_cidr", "service_cidr")


@dataclass(frozen=True)
class Place:
    """Where a value is written: enough to build a Problem."""

    file: str
    line: int | None
    field: str

    def problem(self, message: str, fix: str = "") -> Problem:
        return Problem(self.file, self.line, self.field, message, fix)


def place(doc: RawDoc, path: Path_) -> Place:
    return Place(doc.file, doc.line_of(path), format_path(path))


@dataclass(frozen=True)
class Layer:
    """One source of cluster settings: a Cluster's or Profile's spec, or Fleet defaults."""

    doc: RawDoc
    spec: BaseModel
    prefix: Path_


def pick(layers: list[Layer], *names: str) -> tuple[Any, Place | None]:
    """The first value explicitly set for ``names`` (a nested attribute path), and where."""
    for layer in layers:
        obj: Any = layer.spec
        path = layer.prefix
        for name in names:
            if obj is None or name not in obj.model_fields_set:
                break
            path = (*path, type(obj).model_fields[name].alias or name)
            obj = getattr(obj, name)
        else:
            if obj is not None:
                return obj, place(layer.doc, path)
    return None, None


def overlay(base: Any, top: Any) -> Any:
    """``top`` laid over ``base`` field by field (fields ``top`` sets explicitly win)."""
    if base is None or top is None:
        return top if base is None else base
    values = dict(base.__dict__)
    for name in top.model_fields_set:
        mine, theirs = getattr(top, name), values.get(name)
        both_models = isinstance(mine, BaseModel) and isinstance(theirs, BaseModel)
        values[name] = overlay(theirs, mine) if both_models else mine
    fields_set = base.model_fields_set | top.model_fields_set
    return type(top).model_construct(_fields_set=fields_set, **values)


@dataclass
class FleetContext:
    """What resolution needs to know about the fleet as a whole."""

    fleet: Fleet | None
    fleet_doc: RawDoc | None
    sites: dict[str, Site]
    profiles: dict[str, tuple[RawDoc, Profile]]
    addon_sets: set[str]
    # Names of documents that exist but failed their schema check, by kind: a reference to
    # one is not reported again as "does not exist".
    broken: dict[str, set[str]] = field(default_factory=dict)

    def is_broken(self, kind: str, name: str) -> bool:
        return name in self.broken.get(kind, ())

    @property
    def allowed_versions(self) -> set[str] | None:
        if self.fleet is None:
            return None
        return {normalise_version(v) for v in self.fleet.spec.kubernetes_versions}

    @property
    def base_url(self) -> str | None:
        return self.fleet.spec.artifacts.base_url if self.fleet else None

    @property
    def endpoint_template(self) -> str | None:
        return self.fleet.spec.defaults.api_endpoint_template if self.fleet else None

    def default_layer(self) -> list[Layer]:
        if self.fleet is None or self.fleet_doc is None:
            return []
        return [Layer(self.fleet_doc, self.fleet.spec.defaults, ("spec", "defaults"))]


@dataclass
class Shape:
    """The merged cluster shape, before machines."""

    version: str | None
    version_at: Place | None
    distribution: Distribution
    network: Network
    addon_sets: tuple[str, ...]
    os_image_url: str | None
    control_plane: int | None
    control_plane_at: Place | None
    workers: int | None
    workers_at: Place | None
    vm: VMSpec | None
    cidr_at: dict[str, Place] = field(default_factory=dict)
    endpoint_at: Place | None = None


def resolve_shape(layers: list[Layer], ctx: FleetContext) -> tuple[Shape, list[Problem]]:
    """Merge the layers; report bad values at the place each one is written."""
    problems: list[Problem] = []
    version, version_at = pick(layers, "kubernetes_version")
    if version is not None:
        version = normalise_version(version)
        allowed = ctx.allowed_versions
        if allowed is not None and version not in allowed and version_at is not None:
            problems.append(
                version_at.problem(
                    f"Kubernetes {version} is not in the fleet's kubernetesVersions",
                    "use one of " + ", ".join(sorted(allowed)) + " or add it to the Fleet's "
                    "spec.kubernetesVersions",
                )
            )
    distribution, _ = pick(layers, "distribution")
    addon_sets, sets_at = pick(layers, "addon_sets")
    for index, name in enumerate(addon_sets or ()):
        if (
            name not in ctx.addon_sets
            and sets_at is not None
            and not ctx.is_broken("AddonSet", name)
        ):
            known = ", ".join(sorted(ctx.addon_sets)) or "none defined"
            problems.append(
                Place(sets_at.file, sets_at.line, f"{sets_at.field}[{index}]").problem(
                    f"add-on set {name!r} does not exist", f"use one of: {known}"
                )
            )
    os_image, image_at = pick(layers, "os_image")
    os_image_url = os_image  # replaced by the absolute URL below when it can be made
    if os_image is not None:
        os_image_url, bad = _image_url(os_image, ctx.base_url)
        if bad and image_at is not None:
            problems.append(image_at.problem(*bad))

    network_values: dict[str, Any] = {}
    cidr_at: dict[str, Place] = {}
    for name in Network.model_fields:
        value, at = pick(layers, "network", name)
        if at is not None:
            network_values[name] = value
            cidr_at[name] = at
    network = Network.model_construct(_fields_set=set(network_values), **network_values)
    problems += _network_problems(network, cidr_at)

    control_plane, cp_at = pick(layers, "control_plane", "replicas")
    workers, workers_at = pick(layers, "workers", "replicas")
    vm = None
    for layer in reversed(layers):
        vm = overlay(vm, getattr(layer.spec, "vm", None))
    shape = Shape(
        version=version,
        version_at=version_at,
        distribution=distribution or Distribution.KUBEADM,
        network=network,
        addon_sets=tuple(addon_sets or ()),
        os_image_url=os_image_url,
        control_plane=control_plane,
        control_plane_at=cp_at,
        workers=workers,
        workers_at=workers_at,
        vm=vm,
        cidr_at=cidr_at,
        endpoint_at=cidr_at.get("control_plane_endpoint"),
    )
    return shape, problems


def _image_url(os_image: str, base_url: str | None) -> tuple[str | None, tuple[str, str] | None]:
    if "://" in os_image:
        bad = http_url_problem(os_image, what="osImage")
        return (os_image, bad) if bad else (os_image, None)
    if base_url is None:
        return os_image, None  # the missing Fleet is reported on its own
    return base_url.rstrip("/") + "/" + os_image.lstrip("/"), None


def _network_problems(network: Network, at: dict[str, Place]) -> list[Problem]:
    problems = []
    parsed = {}
    for name in CIDR_FIELDS:
        value = getattr(network, name)
        if value is None:
            continue
        cidr = parse_cidr(value)
        if cidr is None:
            if name in at:
                problems.append(at[name].problem(f"{value!r} is not a CIDR", FIX_CIDR))
        else:
            parsed[name] = cidr
    pod, service = parsed.get("pod_cidr"), parsed.get("service_cidr")
    if pod is not None and service is not None and pod.overlaps(service):
        where = at.get("pod_cidr") or at.get("service_cidr")
        if where is not None:
            problems.append(
                where.problem(
                    f"podCIDR {pod} overlaps serviceCIDR {service}",
                    "give pods and services disjoint ranges, e.g. 10.244.0.0/16 and 10.96.0.0/12",
                )
            )
    endpoint = network.control_plane_endpoint
    if endpoint is not None and "control_plane_endpoint" in at:
        bad = http_url_problem(endpoint, what="controlPlaneEndpoint")
        if bad:
            problems.append(at["control_plane_endpoint"].problem(*bad))
    return problems


def endpoint_from_template(template: str, cluster: str, site: str) -> str:
    return template.format(cluster=cluster, site=site)


@dataclass
class ClusterFacts:
    """What fleet-wide checks need from one YAML cluster."""

    name: str
    site: str
    network: Network
    cidr_at: dict[str, Place]
    machines: list[tuple[Machine, Path_]]
    endpoint: str | None
    endpoint_at: Place | None


def resolve_cluster(
    doc: RawDoc, cluster: Cluster, ctx: FleetContext
) -> tuple[ResolvedCluster | None, ClusterFacts, list[Problem]]:
    """One YAML Cluster resolved; None (with problems) when it cannot be."""
    spec = cluster.spec
    name = cluster.metadata.name
    problems: list[Problem] = []
    layers = [Layer(doc, spec, ("spec",))]
    unresolved = False  # a missing profile explains missing inherited values
    if spec.profile is not None:
        found = ctx.profiles.get(spec.profile)
        unresolved = found is None
        if found is None and ctx.is_broken("Profile", spec.profile):
            pass  # its own problems are reported
        elif found is None:
            known = ", ".join(sorted(ctx.profiles)) or "none defined"
            problems.append(
                doc.problem(
                    ("spec", "profile"),
                    f"profile {spec.profile!r} does not exist",
                    f"use one of: {known}",
                )
            )
        else:
            profile_doc, profile = found
            layers.append(Layer(profile_doc, profile.spec, ("spec",)))
    layers += ctx.default_layer()
    shape, shape_problems = resolve_shape(layers, ctx)
    problems += shape_problems

    site = ctx.sites.get(spec.site)
    if site is None and not ctx.is_broken("Site", spec.site):
        known = ", ".join(sorted(ctx.sites)[:10]) or "none defined"
        problems.append(
            doc.problem(
                ("spec", "site"),
                f"site {spec.site!r} does not exist",
                f"add a Site named {spec.site!r} or use an existing one ({known})",
            )
        )
    if shape.version is None and ctx.fleet is not None and not unresolved:
        problems.append(
            doc.problem(
                ("spec",),
                "no Kubernetes version: not set by the cluster, its profile or the fleet defaults",
                "set spec.kubernetesVersion, e.g. 1.31.4 (" + FIX_VERSION + ")",
            )
        )
    if shape.os_image_url is None and not unresolved:
        problems.append(
            doc.problem(
                ("spec",),
                "no osImage: not set by the cluster or its profile",
                "set spec.osImage in the profile, e.g. images/ubuntu-24.04-server.iso",
            )
        )

    endpoint, endpoint_at = _endpoint(doc, name, spec.site, shape, ctx, problems)
    machines, machine_problems = _machines(doc, cluster, shape)
    problems += machine_problems
    control_plane, workers = _replicas(doc, cluster, shape, problems)

    facts = ClusterFacts(
        name=name,
        site=spec.site,
        network=shape.network,
        cidr_at=shape.cidr_at,
        machines=[(m, ("spec", "machines", i)) for i, m in enumerate(machines)],
        endpoint=endpoint,
        endpoint_at=endpoint_at,
    )
    if problems or site is None or shape.version is None or endpoint is None:
        return None, facts, problems
    resolved = ResolvedCluster(
        name=name,
        site=spec.site,
        tier=site.spec.tier,
        region=site.spec.region,
        kubernetes_version=shape.version,
        distribution=shape.distribution,
        control_plane_replicas=control_plane,
        worker_replicas=workers,
        network=shape.network,
        addon_sets=shape.addon_sets,
        os_image_url=shape.os_image_url or "",
        api_endpoint=endpoint,
        machines=tuple(machines),
        labels=dict(cluster.metadata.labels),
        owners=tuple(spec.owners or site.spec.owners),
        profile=spec.profile,
        source=Source(doc.rel, doc.line),
    )
    return resolved, facts, problems


def _endpoint(
    doc: RawDoc, name: str, site: str, shape: Shape, ctx: FleetContext, problems: list[Problem]
) -> tuple[str | None, Place | None]:
    if shape.network.control_plane_endpoint is not None:
        return shape.network.control_plane_endpoint, shape.endpoint_at
    template = ctx.endpoint_template
    if template is None:
        if ctx.fleet is not None:
            problems.append(
                doc.problem(
                    ("spec", "network"),
                    "no API endpoint: neither spec.network.controlPlaneEndpoint nor the "
                    "Fleet's defaults.apiEndpointTemplate is set",
                    "set spec.network.controlPlaneEndpoint, e.g. https://10.20.0.10:6443, or "
                    "defaults.apiEndpointTemplate in the Fleet",
                )
            )
        return None, None
    try:
        return endpoint_from_template(template, name, site), None
    except (KeyError, IndexError, ValueError):
        return None, None  # the template itself is reported once, at the Fleet


def _machines(doc: RawDoc, cluster: Cluster, shape: Shape) -> tuple[list[Machine], list[Problem]]:
    problems: list[Problem] = []
    machines: list[Machine] = []
    if not cluster.spec.machines:
        problems.append(
            doc.problem(
                ("spec", "machines"),
                "the cluster has no machines",
                "list its machines under spec.machines (role, and bmc + "
                "bootMACAddress for bare metal or vm for a VM)",
            )
        )
    for index, machine in enumerate(cluster.spec.machines):
        path: Path_ = ("spec", "machines", index)
        if machine.bmc is not None:
            bad = bmc_address_problem(machine.bmc.address)
            if bad and not url_has_password(machine.bmc.address):  # reported by the scan
                problems.append(doc.problem((*path, "bmc", "address"), *bad))
        if machine.vm is not None:
            merged = overlay(shape.vm, machine.vm)
            bad = uri_problem(merged.host)
            if bad:
                problems.append(doc.problem((*path, "vm", "host"), *bad))
            if merged is not machine.vm:
                machine = machine.model_copy(update={"vm": merged})
        machines.append(machine)
    return machines, problems


def _replicas(
    doc: RawDoc, cluster: Cluster, shape: Shape, problems: list[Problem]
) -> tuple[int, int]:
    """Replica counts (declared, or counted from machines) checked against the machines."""
    listed = {
        Role.CONTROL_PLANE: sum(m.role == Role.CONTROL_PLANE for m in cluster.spec.machines),
        Role.WORKER: sum(m.role == Role.WORKER for m in cluster.spec.machines),
    }
    control_plane = (
        listed[Role.CONTROL_PLANE] if shape.control_plane is None else shape.control_plane
    )
    workers = listed[Role.WORKER] if shape.workers is None else shape.workers
    where_cp = shape.control_plane_at or place(doc, ("spec", "machines"))
    if control_plane < 1:
        problems.append(
            where_cp.problem(
                "a cluster needs at least one control-plane machine",
                "set controlPlane.replicas: 1 (or 3 for HA) and list the machines",
            )
        )
    elif control_plane > 1 and control_plane % 2 == 0:
        problems.append(
            where_cp.problem(
                f"{control_plane} control-plane nodes: an even count gives etcd no "
                "better fault tolerance than one fewer",
                "use an odd number of control-plane nodes: 1, 3 or 5",
            )
        )
    if cluster.spec.machines:
        for role, declared, at, label in (
            (Role.CONTROL_PLANE, shape.control_plane, shape.control_plane_at, "controlPlane"),
            (Role.WORKER, shape.workers, shape.workers_at, "workers"),
        ):
            if declared is not None and declared != listed[role]:
                problems.append(
                    doc.problem(
                        ("spec", "machines"),
                        f"{listed[role]} {role.value} machine(s) listed, but {label}.replicas "
                        f"is {declared}" + (f" ({at.file}:{at.line})" if at else ""),
                        f"list {declared} machine(s) with role {role.value} or change "
                        f"{label}.replicas",
                    )
                )
    return control_plane, workers


def profile_layers(doc: RawDoc, profile: Profile, ctx: FleetContext) -> list[Layer]:
    """The layers an edge CSV row resolves through: its profile, then fleet defaults."""
    return [Layer(doc, profile.spec, ("spec",)), *ctx.default_layer()]
