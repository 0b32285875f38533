"""The inventory after loading and validation: what every later stage consumes.

``Inventory`` is the whole desired fleet at one revision. ``ResolvedCluster`` is one
cluster with its profile merged, fleet defaults applied and edge CSV rows expanded, so
no stage has to know where a value came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from werft.errors import Problem
from werft.inventory.model import (
    AddonSet,
    Distribution,
    Fleet,
    Machine,
    Network,
    Policy,
    Profile,
    Site,
    Tier,
)


@dataclass(frozen=True, slots=True)
class Source:
    """Where a document or row came from, for error messages.

    ``file`` is relative to the inventory root (``Inventory.origin``), e.g.
    ``addons/gitops/addonset.yaml`` or ``edge-sites.csv`` (``line`` = the CSV row's line).
    """

    file: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class ResolvedCluster:
    name: str
    site: str
    tier: Tier
    region: str
    kubernetes_version: str  # normalised without the leading "v": "1.31.1"
    distribution: Distribution
    control_plane_replicas: int
    worker_replicas: int
    network: Network
    addon_sets: tuple[str, ...]
    os_image_url: str  # absolute URL of the installer image
    api_endpoint: str  # the Kubernetes API URL the cluster will answer on
    machines: tuple[Machine, ...]
    labels: dict[str, str] = field(default_factory=dict)
    owners: tuple[str, ...] = ()
    profile: str | None = None
    source: Source | None = None

    @property
    def control_plane(self) -> tuple[Machine, ...]:
        return tuple(m for m in self.machines if m.role == "control-plane")

    @property
    def workers(self) -> tuple[Machine, ...]:
        return tuple(m for m in self.machines if m.role == "worker")


@dataclass
class Inventory:
    """A validated fleet. Build it with ``werft.inventory.load_inventory``."""

    origin: str  # a folder path, or "<repo>@<ref>"
    fleet: Fleet
    sites: dict[str, Site]
    profiles: dict[str, Profile]
    addon_sets: dict[str, AddonSet]
    clusters: dict[str, ResolvedCluster]
    # Add-on manifest templates by their path relative to the inventory root
    # ("addons/cni/calico.yaml.j2" -> text), read from disk or from Git. An AddonSet names
    # them relative to its own file: join dirname(sources[("AddonSet", name)].file).
    files: dict[str, str] = field(default_factory=dict)
    sources: dict[tuple[str, str], Source] = field(default_factory=dict)
    # What validation warned about (http:// with credentials, ...): reported, never blocking.
    warnings: list[Problem] = field(default_factory=list)
    # Change policies (werft.gitops.policy): who may change what, by pull request.
    policies: dict[str, Policy] = field(default_factory=dict)

    def site_of(self, cluster: ResolvedCluster) -> Site:
        return self.sites[cluster.site]

    def select(
        self,
        *,
        clusters: list[str] | None = None,
        sites: list[str] | None = None,
        tiers: list[Tier] | None = None,
        labels: dict[str, str] | None = None,
    ) -> list[ResolvedCluster]:
        """Clusters matching every given filter (an empty filter matches all), in name order."""
        chosen = []
        for cluster in sorted(self.clusters.values(), key=lambda c: c.name):
            if clusters and cluster.name not in clusters:
                continue
            if sites and cluster.site not in sites:
                continue
            if tiers and cluster.tier not in tiers:
                continue
            if labels and any(cluster.labels.get(k) != v for k, v in labels.items()):
                continue
            chosen.append(cluster)
        return chosen
