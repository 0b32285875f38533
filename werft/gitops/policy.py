"""Change policy: who may change what, decided per changed object by CEL rules.

Rules come from the ``Policy`` documents of the *base* revision -- the one already merged
-- so a pull request cannot loosen the rules it is judged by (a change to a Policy is itself
a changed object the base rules judge). Every rule that matches a changed object (kind,
operation, and its ``when`` expression) must evaluate to true; an expression that fails to
evaluate denies (fail closed, as an admission policy with ``failurePolicy: Fail``).

What an expression sees (JSON values):

  object, oldObject   the object after and before the change (null when created / deleted);
                      a Cluster is its resolved form (profile and defaults applied)
  request             author, approvers (logins), groups (the author and the teams they are
                      in), approverGroups (the same for every approver)
  change              operation (CREATE, UPDATE, DELETE), fields (changed paths of this
                      object), and the whole change's reach: clusters, tiers, tierShare
                      (tier -> 0..1), regions, sites, decommissions
  affected            this object's reach: clusters, tiers, ownerSets (the distinct owner
                      lists of the clusters it changes)
  teams               team -> members, from every Policy

werft adds two rules of its own: a Kubernetes version change is refused (upgrades are not
supported yet), and a cluster removal is denied unless some rule explicitly matched it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from werft.gitops.cel import CelError, Evaluator
from werft.gitops.impact import Action, BlastRadius, ClusterImpact
from werft.gitops.objects import ObjectChange, Operation
from werft.inventory.model import Policy, PolicyRule
from werft.inventory.resolved import Inventory

RULE_UPGRADE = "werft/upgrade-unsupported"
RULE_DECOMMISSION = "werft/decommission-needs-approval-rule"


@dataclass(frozen=True)
class Request:
    """Who asks: the pull request's author and the people who approved it."""

    author: str
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Denial:
    """One rule's denial, for every object it denied with the same message (a rule about
    the whole change, like its blast radius, denies each changed object alike)."""

    rule: str  # "ownership/owner-or-platform"
    objects: tuple[str, ...]  # ("Site/edge-00001",)
    message: str
    could_approve: tuple[str, ...] = ()

    @property
    def object(self) -> str:
        shown = ", ".join(self.objects[:3])
        return shown + (f" (+{len(self.objects) - 3} more)" if len(self.objects) > 3 else "")

    def __str__(self) -> str:
        who = f"; could approve: {', '.join(self.could_approve)}" if self.could_approve else ""
        return f"denied by {self.rule} for {self.object}: {self.message}{who}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "objects": list(self.objects),
            "message": self.message,
            "could_approve": list(self.could_approve),
        }


@dataclass
class Verdicts:
    denials: list[Denial] = field(default_factory=list)
    checked: int = 0  # rule evaluations that allowed
    rules: int = 0  # rules in force (base revision)

    @property
    def allowed(self) -> bool:
        return not self.denials

    def as_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "rules": self.rules,
            "checks_passed": self.checked,
            "denials": [d.as_dict() for d in self.denials],
        }


def judge(
    changes: Sequence[ObjectChange],
    impacts: Sequence[ClusterImpact],
    radius: BlastRadius,
    request: Request,
    policies: dict[str, Policy],
    base: Inventory,
    head: Inventory,
) -> Verdicts:
    """Every rule of ``policies`` over every changed object, plus werft's own two."""
    teams = _teams(policies.values())
    rules = [(p.metadata.name, r) for p in policies.values() for r in p.spec.rules]
    verdicts = Verdicts(rules=len(rules))
    request_scope = {
        "author": request.author,
        "approvers": list(request.approvers),
        "groups": _groups(request.author, teams),
        "approverGroups": sorted({g for a in request.approvers for g in _groups(a, teams)}),
    }
    reach = {
        "clusters": radius.clusters,
        "tiers": sorted(radius.by_tier),
        "tierShare": {t: radius.share(t) for t in radius.by_tier},
        "regions": sorted(radius.by_region),
        "sites": len(radius.by_site),
        "decommissions": sum(1 for i in impacts if i.action is Action.DECOMMISSION),
    }
    by_name = {i.name: i for i in impacts}
    acting = [i for i in impacts if i.action is not Action.NONE]
    evaluator = Evaluator({"request": request_scope, "teams": teams})
    denied: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
    for change in changes:
        affected = _affected(change, acting, by_name, base, head)
        scope = evaluator.scope({
            "object": change.new,
            "oldObject": change.old,
            "change": {**reach, "operation": str(change.operation), "fields": list(change.fields)},
            "affected": _affected_scope(affected),
        })
        matched = False
        for policy_name, rule in rules:
            if not _matches(rule, change):
                continue
            name = f"{policy_name}/{rule.name}"
            try:
                if rule.when and not evaluator.evaluate(rule.when, scope):
                    continue
                matched = True
                allowed = evaluator.evaluate(rule.expression, scope)
                message = rule.message or f"{rule.expression} is false"
            except CelError as exc:
                allowed, message = False, f"the rule could not be evaluated ({exc}): denied"
            if allowed:
                verdicts.checked += 1
            else:
                key = (name, message, _who(rule.approvers, teams))
                denied.setdefault(key, []).append(change.key)
        if change.kind == "Cluster" and change.operation is Operation.DELETE and not matched:
            key = (RULE_DECOMMISSION, _NO_DECOMMISSION_RULE, _ADD_DECOMMISSION_RULE)
            denied.setdefault(key, []).append(change.key)
    for impact in impacts:
        if impact.refused:
            denied.setdefault((RULE_UPGRADE, impact.refused, ()), []).append(
                f"Cluster/{impact.name}"
            )
    verdicts.denials = [
        Denial(rule, tuple(objects), message, who)
        for (rule, message, who), objects in denied.items()
    ]
    return verdicts


_NO_DECOMMISSION_RULE = (
    "removing a cluster decommissions it (destructive); no Policy rule matches a Cluster "
    "DELETE, so it is never run"
)
_ADD_DECOMMISSION_RULE = ("add a Policy rule with match {kinds: [Cluster], operations: [DELETE]}",)


def _matches(rule: PolicyRule, change: ObjectChange) -> bool:
    kinds, operations = rule.match.kinds, rule.match.operations
    return (not kinds or change.kind in kinds) and (
        not operations or str(change.operation) in operations
    )


def _teams(policies: Iterable[Policy]) -> dict[str, list[str]]:
    teams: dict[str, list[str]] = {}
    for policy in policies:
        for team, members in policy.spec.teams.items():
            teams[team] = sorted({*teams.get(team, []), *members})
    return teams


def _groups(login: str, teams: dict[str, list[str]]) -> list[str]:
    """The login itself and every team it is a member of (owners name either)."""
    return [login, *sorted(team for team, members in teams.items() if login in members)]


def _who(approvers: Sequence[str], teams: dict[str, list[str]]) -> tuple[str, ...]:
    shown = []
    for name in approvers:
        members = teams.get(name)
        shown.append(f"{name} ({', '.join(members)})" if members else name)
    return tuple(shown)


def _affected(
    change: ObjectChange,
    acting: Sequence[ClusterImpact],
    by_name: dict[str, ClusterImpact],
    base: Inventory,
    head: Inventory,
) -> list[ClusterImpact]:
    """The clusters a change to this one object reaches (``acting``: those a merge acts on)."""
    if change.kind == "Cluster":
        found = by_name.get(change.name)
        return [found] if found is not None else []
    if change.kind == "Site":
        return [i for i in acting if i.site == change.name]
    if change.kind == "Fleet":
        return list(acting)
    if change.kind in ("Profile", "AddonSet"):
        uses = _users(change.kind, change.name, base) | _users(change.kind, change.name, head)
        return [i for i in acting if i.name in uses]
    return []  # a Policy changes no cluster


def _users(kind: str, name: str, inventory: Inventory) -> set[str]:
    if kind == "Profile":
        return {c.name for c in inventory.clusters.values() if c.profile == name}
    return {c.name for c in inventory.clusters.values() if name in c.addon_sets}


def _affected_scope(affected: Sequence[ClusterImpact]) -> dict[str, Any]:
    return {
        "clusters": len(affected),
        "tiers": sorted({str(i.tier) for i in affected}),
        "ownerSets": [list(s) for s in sorted({tuple(sorted(i.owners)) for i in affected})],
        "names": sorted(i.name for i in affected)[:100],
    }
