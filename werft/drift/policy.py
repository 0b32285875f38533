"""Remediation policy: per finding group, which of its clusters to bring back now.

The policy of one finding on one cluster is the most specific one the inventory gives:
the AddonSet's ``spec.drift`` (for add-on objects), else the Fleet's
``spec.drift.tiers[<tier>]``, else the Fleet's ``spec.drift`` (default ``report``).

- ``report``: nothing is changed.
- ``remediate``: the provisioning stages run for the cluster.
- ``remediate`` with ``after: 30m``: only once the drift has persisted that long -- since
  the time the fleet reports (``managedFields``, a Node condition) or, where it reports
  none (a deleted object), since a check first saw the group.

Never remediated, whatever the policy: a field another manager owns when the AddonSet
does not say ``forceConflicts`` (the apply would be refused and must not take it over);
such a cluster is "blocked" until someone accepts the drift or sets ``forceConflicts``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from werft.drift.findings import ClusterReport, Finding
from werft.drift.triage import FindingGroup
from werft.inventory.model import DriftPolicy, Remediation
from werft.inventory.resolved import Inventory


def policy_for(inventory: Inventory, tier: str, finding: Finding) -> DriftPolicy:
    fleet = inventory.fleet.spec.drift
    addon_set = inventory.addon_sets.get(finding.addon_set) if finding.addon_set else None
    if addon_set is not None and addon_set.spec.drift is not None:
        return addon_set.spec.drift
    for key, policy in fleet.tiers.items():
        if str(key) == tier:
            return policy
    return fleet


def describe(policy: DriftPolicy) -> str:
    if policy.remediation is Remediation.REMEDIATE and policy.after:
        return f"remediate after {policy.after}"
    return str(policy.remediation)


@dataclass
class Decision:
    remediate: list[str] = field(default_factory=list)  # clusters to bring back now
    waiting: dict[str, float] = field(default_factory=dict)  # cluster -> seconds still to go
    blocked: dict[str, str] = field(default_factory=dict)  # cluster -> why not

    def summary(self) -> str:
        parts = []
        if self.remediate:
            parts.append(f"remediate {len(self.remediate)}")
        if self.waiting:
            parts.append(f"{len(self.waiting)} due in {min(self.waiting.values()) / 60:.0f} min")
        if self.blocked:
            parts.append(f"{len(self.blocked)} blocked: {next(iter(self.blocked.values()))}")
        return "; ".join(parts)


def decide(
    inventory: Inventory,
    clusters: Mapping[str, ClusterReport],
    groups: list[FindingGroup],
    first_seen: Mapping[str, datetime],
    now: datetime,
) -> dict[str, Decision]:
    """Per group id, what to do; also labels each group's ``policy`` and ``due``."""
    decisions: dict[str, Decision] = {}
    for group in groups:
        decision = decisions[group.id] = Decision()
        labels: set[str] = set()
        since = group.since or first_seen.get(group.id) or now
        for name in group.clusters:
            report = clusters[name]
            policy = policy_for(inventory, report.tier, group.finding)
            labels.add(describe(policy))
            if policy.remediation is not Remediation.REMEDIATE:
                continue
            if group.finding.conflict:
                labels.discard(describe(policy))
                labels.add(f"{describe(policy)} (blocked: forceConflicts off)")
                decision.blocked[name] = (f"{group.finding.manager or 'another manager'} owns "
                                          f"{group.finding.field}; forceConflicts is off")
                continue
            left = policy.after_seconds - (now - since) / timedelta(seconds=1)
            if left > 0:
                decision.waiting[name] = left
            else:
                decision.remediate.append(name)
        group.policy = ", ".join(sorted(labels)) or "report"
        group.due = bool(decision.remediate)
    return decisions


def clusters_to_remediate(decisions: Mapping[str, Decision]) -> tuple[list[str], dict[str, str]]:
    """(clusters to run the stages for, clusters held back and why). A cluster blocked by
    one group is not remediated for another: the add-ons stage would stop at the refused
    object anyway, and must not be asked to."""
    blocked: dict[str, str] = {}
    for decision in decisions.values():
        blocked.update(decision.blocked)
    chosen = [c for d in decisions.values() for c in d.remediate if c not in blocked]
    return list(dict.fromkeys(chosen)), blocked
