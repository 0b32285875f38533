"""A drift check's report: groups first, then the clusters; as rows, markdown and JSON.

The exit status of ``werft drift`` follows from it: 0 every cluster checked and in shape,
3 drift found (even if some clusters could not be checked: drift is what a person acts
on), 1 no drift found but some clusters not checked (Unreachable, Unauthorized, Unknown,
Busy, NotProvisioned): "in shape" would be a claim the check cannot make.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from werft.drift.findings import ClusterReport, Outcome
from werft.drift.triage import FindingGroup, triage
from werft.exitcodes import ExitCode

# Outcomes that are neither drift nor shape; NotProvisioned and Busy are expected states.
NOT_CHECKED = (Outcome.UNREACHABLE, Outcome.UNAUTHORIZED, Outcome.UNKNOWN)
MARKDOWN_GROUPS = 20


class DriftReport(BaseModel):
    source: str = ""
    checked_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    duration_s: float = 0.0
    clusters: list[ClusterReport] = Field(default_factory=list)
    groups: list[FindingGroup] = Field(default_factory=list)
    # Filled by the flow: the run's remediation, if any.
    remediated: list[str] = Field(default_factory=list)
    pruned: int = 0
    skipped_busy: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, clusters: list[ClusterReport], source: str = "") -> DriftReport:
        return cls(source=source, clusters=clusters, groups=triage(clusters))

    def counts(self) -> dict[str, int]:
        counted = Counter(str(c.outcome) for c in self.clusters)
        return {str(o): counted[str(o)] for o in Outcome if counted[str(o)]}

    def group(self, gid: str) -> FindingGroup | None:
        return next((g for g in self.groups if g.id == gid or g.id == f"d-{gid}"), None)

    @property
    def drifted(self) -> list[ClusterReport]:
        return [c for c in self.clusters if c.outcome is Outcome.DRIFTED]

    def exit_code(self) -> int:
        if self.groups:
            return ExitCode.DRIFT
        if all(c.outcome is Outcome.IN_SHAPE for c in self.clusters):
            return ExitCode.OK
        return ExitCode.NOT_FINE

    def headline(self) -> str:
        counts = ", ".join(f"{n} {k}" for k, n in self.counts().items()) or "no clusters"
        return (f"{len(self.groups)} finding group(s) on {len(self.drifted)} of "
                f"{len(self.clusters)} cluster(s): {counts}")

    def group_rows(self) -> list[dict[str, str]]:
        return [g.row() for g in self.groups]

    def cluster_rows(self, *, all_clusters: bool = False) -> list[dict[str, str]]:
        """Clusters that are not in shape (all of them with ``all_clusters``), drifted
        first, then those that could not be checked."""
        order = {o: i for i, o in enumerate([Outcome.DRIFTED, *NOT_CHECKED, Outcome.BUSY,
                                             Outcome.NOT_PROVISIONED, Outcome.IN_SHAPE])}
        chosen = [c for c in self.clusters if all_clusters or c.outcome is not Outcome.IN_SHAPE]
        chosen.sort(key=lambda c: (order[c.outcome], c.cluster))
        return [c.row() for c in chosen]

    def markdown(self) -> str:
        lines = [f"# Drift check: {self.headline()}", ""]
        lines.append(f"Inventory `{self.source}`, checked {self.checked_at:%Y-%m-%d %H:%M:%S} "
                     f"UTC in {self.duration_s:.1f}s.")
        if self.groups:
            lines += ["", "## Findings, by reach", ""]
            for g in self.groups[:MARKDOWN_GROUPS]:
                lines.append(f"- `{g.id}` {g.headline()} — policy **{g.policy}**"
                             + (f": {g.action}" if g.action else ""))
            if len(self.groups) > MARKDOWN_GROUPS:
                lines.append(f"- … and {len(self.groups) - MARKDOWN_GROUPS} more "
                             "(table `werft-drift-groups`)")
            lines += ["", "Accept one as the desired state: `werft drift accept ID`."]
        unchecked = [c for c in self.clusters if c.outcome in NOT_CHECKED]
        if unchecked:
            lines += ["", f"{len(unchecked)} cluster(s) could not be checked (neither "
                      "drifted nor in shape): see table `werft-drift-clusters`."]
        if self.remediated:
            lines += ["", f"Remediation ran for {len(self.remediated)} cluster(s)"
                      + (f", pruned {self.pruned} object(s)" if self.pruned else "") + "."]
        if self.skipped_busy:
            lines += ["", f"{len(self.skipped_busy)} cluster(s) skipped: a provisioning run "
                      "holds them."]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "checked_at": self.checked_at.isoformat(),
            "counts": self.counts(),
            "exit_code": int(self.exit_code()),
            "groups": [g.model_dump(mode="json") | {"headline": g.headline()}
                       for g in self.groups],
            "clusters": [c.model_dump(mode="json", exclude={"findings"})
                         | {"findings": len(c.findings)} for c in self.clusters],
        }
