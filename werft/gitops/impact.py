"""Per affected cluster: what a merge of the change would run, and how far it reaches.

Stages build on each other (werft.plan): a change to what the machines are runs every stage
from infrastructure on; a change to what is applied on a cluster runs add-ons and verify.
Two kinds of change are flagged instead of planned: a Kubernetes version change (an
upgrade, which werft cannot do yet) and a cluster that is gone from the inventory (a
decommission: destructive, so never run without an explicit approval rule).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from werft.conditions import STAGE_ORDER, ConditionType
from werft.inventory.model import Tier
from werft.inventory.resolved import Inventory, ResolvedCluster

# Fields that describe the machines and how they boot: changing one rebuilds from
# infrastructure on (a new machine, another image, another network or distribution).
INFRASTRUCTURE_FIELDS = (
    "machines", "os_image_url", "distribution", "control_plane_replicas", "worker_replicas",
    "network", "api_endpoint",
)  # fmt: skip
ADDON_STAGES = (ConditionType.ADDONS_READY, ConditionType.VERIFIED)


class Action(StrEnum):
    CREATE = "create"  # a new cluster: every stage
    UPDATE = "update"  # some stages again
    UPGRADE = "upgrade"  # a Kubernetes version change: refused (not supported yet)
    DECOMMISSION = "decommission"  # gone from the inventory: destructive, needs approval
    NONE = "none"  # changed in ways that run nothing (owners, labels no template reads)


@dataclass(frozen=True)
class ClusterImpact:
    name: str
    tier: Tier
    site: str
    region: str
    action: Action
    stages: tuple[ConditionType, ...]
    reasons: tuple[str, ...]
    owners: tuple[str, ...] = ()

    @property
    def destructive(self) -> bool:
        return self.action is Action.DECOMMISSION

    @property
    def refused(self) -> str:
        """Why a merge would not run this cluster's change (empty when it would)."""
        if self.action is Action.UPGRADE:
            return (
                "Kubernetes upgrades are not supported yet: revert kubernetesVersion "
                f"({', '.join(self.reasons)}) or upgrade the cluster by hand first"
            )
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.name,
            "tier": str(self.tier),
            "site": self.site,
            "region": self.region,
            "action": str(self.action),
            "stages": [str(s) for s in self.stages],
            "reasons": list(self.reasons),
            "destructive": self.destructive,
            "refused": self.refused,
        }


def cluster_impacts(
    base: Inventory, head: Inventory, addon_changed: set[str]
) -> list[ClusterImpact]:
    """Every cluster the change touches, by name. ``addon_changed``: clusters whose rendered
    add-ons differ (werft.gitops.manifests)."""
    impacts = []
    for name in sorted(base.clusters.keys() | head.clusters.keys()):
        before, after = base.clusters.get(name), head.clusters.get(name)
        impact = _impact(before, after, name in addon_changed)
        if impact is not None:
            impacts.append(impact)
    return impacts


def _impact(
    before: ResolvedCluster | None, after: ResolvedCluster | None, addons: bool
) -> ClusterImpact | None:
    if after is None:
        assert before is not None
        return _make(before, Action.DECOMMISSION, (), ["removed from the inventory"])
    if before is None:
        return _make(after, Action.CREATE, STAGE_ORDER, ["new cluster"])
    if before.kubernetes_version != after.kubernetes_version:
        change = f"{before.kubernetes_version} -> {after.kubernetes_version}"
        return _make(after, Action.UPGRADE, (), [f"kubernetesVersion {change}"])
    infra = [f for f in INFRASTRUCTURE_FIELDS if getattr(before, f) != getattr(after, f)]
    if infra:
        return _make(after, Action.UPDATE, STAGE_ORDER, [f"{_shown(f)} changed" for f in infra])
    if addons:
        return _make(after, Action.UPDATE, ADDON_STAGES, ["rendered add-ons changed"])
    other = [
        f
        for f in ("tier", "region", "site", "labels", "owners", "profile", "addon_sets")
        if getattr(before, f) != getattr(after, f)
    ]
    if other:
        return _make(after, Action.NONE, (), [f"{_shown(f)} changed" for f in other])
    return None


def _make(
    cluster: ResolvedCluster,
    action: Action,
    stages: Sequence[ConditionType],
    reasons: list[str],
) -> ClusterImpact:
    return ClusterImpact(
        cluster.name,
        cluster.tier,
        cluster.site,
        cluster.region,
        action,
        tuple(stages),
        tuple(reasons),
        tuple(cluster.owners),
    )


def _shown(field_name: str) -> str:
    return {
        "os_image_url": "osImage",
        "control_plane_replicas": "controlPlane.replicas",
        "worker_replicas": "workers.replicas",
        "api_endpoint": "apiEndpoint",
        "addon_sets": "addonSets",
    }.get(field_name, field_name)


# --- blast radius ------------------------------------------------------------------------


@dataclass
class BlastRadius:
    clusters: int = 0
    by_tier: dict[str, int] = field(default_factory=dict)
    by_region: dict[str, int] = field(default_factory=dict)
    by_site: dict[str, int] = field(default_factory=dict)
    tier_totals: dict[str, int] = field(default_factory=dict)

    def share(self, tier: str) -> float:
        """The fraction of the tier's clusters the change runs on (0..1)."""
        total = self.tier_totals.get(tier, 0)
        return self.by_tier.get(tier, 0) / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "clusters": self.clusters,
            "by_tier": self.by_tier,
            "tier_share": {t: round(self.share(t), 4) for t in self.by_tier},
            "tier_totals": self.tier_totals,
            "by_region": self.by_region,
            "sites": len(self.by_site),
            "by_site": dict(sorted(self.by_site.items(), key=lambda i: (-i[1], i[0]))[:50]),
        }


def blast_radius(
    impacts: Iterable[ClusterImpact], base: Inventory, head: Inventory
) -> BlastRadius:
    """Counts of the clusters a merge would act on (stages to run, or decommission)."""
    acting = [i for i in impacts if i.stages or i.action is not Action.NONE]
    totals = Counter(str(c.tier) for c in head.clusters.values())
    # A tier's share counts removed clusters against the tier they were in.
    for name, cluster in base.clusters.items():
        if name not in head.clusters:
            totals[str(cluster.tier)] += 1
    return BlastRadius(
        clusters=len(acting),
        by_tier=dict(Counter(str(i.tier) for i in acting)),
        by_region=dict(sorted(Counter(i.region for i in acting).items())),
        by_site=dict(Counter(i.site for i in acting)),
        tier_totals=dict(totals),
    )
