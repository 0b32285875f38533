"""Triage: one finding per cause, not one per cluster.

Findings with the same (object, field, desired, live, manager) on many clusters are one
group -- "Deployment flux-system/source-controller .spec.replicas 1 → 0 by kubectl-edit
on 300 clusters (edge, eu-west …)". Groups are ranked by reach weighted by tier: a core
cluster counts as much as 100 edge sites (it serves a region; an edge site serves one
location), a near-edge one as 10; ties by the number of clusters, then by name.

A group's id is a hash of its key, so the same drift keeps its id from run to run (what
``werft drift accept ID`` names and what Prefect events carry as the resource).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime

from pydantic import BaseModel, Field

from werft.drift.findings import ClusterReport, Finding, Outcome

TIER_WEIGHT = {"core": 100, "near-edge": 10, "edge": 1}
TIER_ORDER = ("core", "near-edge", "edge")


class FindingGroup(BaseModel):
    id: str
    finding: Finding  # the first cluster's finding: what the group is about
    clusters: list[str] = Field(default_factory=list)
    tiers: dict[str, int] = Field(default_factory=dict)
    regions: list[str] = Field(default_factory=list)
    since: datetime | None = None  # the earliest time the fleet reports for it
    score: int = 0
    # Set by the policy: "report", "remediate", or "remediate after 30m" (and whether it
    # is due now), and what happened to it in this run.
    policy: str = "report"
    due: bool = False
    action: str = ""

    @property
    def count(self) -> int:
        return len(self.clusters)

    def where(self, limit: int = 3) -> str:
        tiers = [t for t in TIER_ORDER if t in self.tiers]
        parts = tiers + self.regions[:limit]
        more = " …" if len(self.regions) > limit else ""
        return ", ".join(parts) + more

    def headline(self) -> str:
        noun = "cluster" if self.count == 1 else "clusters"
        return f"{self.finding.describe()} on {self.count} {noun} ({self.where()})"

    def row(self) -> dict[str, str]:
        f = self.finding
        return {
            "id": self.id,
            "clusters": str(self.count),
            "object": f.object,
            "field": f.field or str(f.kind),
            "desired": f.desired,
            "live": f.live,
            "manager": f.manager,
            "where": self.where(),
            "since": self.since.isoformat(timespec="seconds") if self.since else "",
            "policy": self.policy,
            "action": self.action,
        }


def group_id(finding: Finding) -> str:
    text = "\0".join(finding.key())
    return "d-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def triage(reports: Iterable[ClusterReport]) -> list[FindingGroup]:
    """The groups of all drifted clusters' findings, highest rank first."""
    groups: dict[str, FindingGroup] = {}
    for report in reports:
        if report.outcome is not Outcome.DRIFTED:
            continue
        seen: set[str] = set()
        for finding in report.findings:
            gid = group_id(finding)
            group = groups.get(gid)
            if group is None:
                group = groups[gid] = FindingGroup(id=gid, finding=finding)
            if finding.since and (group.since is None or finding.since < group.since):
                group.since = finding.since
            if gid in seen:  # the same drift on two machines of one cluster: one cluster
                continue
            seen.add(gid)
            group.clusters.append(report.cluster)
            group.tiers[report.tier] = group.tiers.get(report.tier, 0) + 1
            if report.region not in group.regions:
                group.regions.append(report.region)
            group.score += TIER_WEIGHT.get(report.tier, 1)
    return rank(groups.values())


def rank(groups: Iterable[FindingGroup]) -> list[FindingGroup]:
    return sorted(groups, key=lambda g: (-g.score, -g.count, g.finding.describe()))


def affected(groups: Sequence[FindingGroup]) -> list[str]:
    """The clusters of these groups, each once, in rank order."""
    return list(dict.fromkeys(c for g in groups for c in g.clusters))
