"""A pull request's plan: the inventory at base vs head -> what a merge would do.

    head valid?  (every problem at once, as `werft validate`)
    changed objects  (werft.gitops.objects)
    rendered add-on diffs  (werft.gitops.manifests)
    per cluster: the stages a merge runs, or upgrade / decommission flagged  (impact)
    blast radius, rollout waves  (werft.plan.waves over the affected clusters)
    policy verdicts  (werft.gitops.policy, rules of the base revision)

Both revisions are read from Git blobs (no checkout), so planning never touches a
working tree and can run next to one being edited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from werft.errors import InventoryError, Problem
from werft.exitcodes import ExitCode
from werft.gitops.impact import Action, BlastRadius, ClusterImpact, blast_radius, cluster_impacts
from werft.gitops.manifests import ManifestChanges, manifest_changes
from werft.gitops.objects import ObjectChange, diff_objects
from werft.gitops.policy import Request, Verdicts, judge
from werft.gitops.revisions import Revisions, changed_files, resolve
from werft.inventory.load import load_inventory
from werft.inventory.resolved import Inventory
from werft.plan import ClusterPlan, Plan, Wave, waves


@dataclass
class ChangePlan:
    revisions: Revisions
    request: Request
    problems: list[Problem] = field(default_factory=list)  # head validation (errors)
    warnings: list[Problem] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)  # (A/M/D/R, path)
    changes: list[ObjectChange] = field(default_factory=list)
    impacts: list[ClusterImpact] = field(default_factory=list)
    manifests: ManifestChanges = field(default_factory=ManifestChanges)
    radius: BlastRadius = field(default_factory=BlastRadius)
    waves: list[Wave] = field(default_factory=list)
    verdicts: Verdicts = field(default_factory=Verdicts)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def allowed(self) -> bool:
        return self.valid and self.verdicts.allowed

    @property
    def exit_code(self) -> ExitCode:
        if not self.valid:
            return ExitCode.NOT_FINE
        return ExitCode.OK if self.verdicts.allowed else ExitCode.DENIED

    @property
    def state(self) -> str:
        """One word for a commit status: success, failure (invalid), denied."""
        return "success" if self.allowed else "failure" if not self.valid else "denied"

    def runnable(self) -> list[ClusterImpact]:
        """The clusters a merge provisions: stages to run, nothing refused or destructive."""
        return [i for i in self.impacts if i.stages and not i.refused]

    def headline(self) -> str:
        if not self.valid:
            return f"invalid: {len(self.problems)} problem(s) at {self.revisions.head_short}"
        acting = [i for i in self.impacts if i.action is not Action.NONE]
        verdict = "allowed" if self.verdicts.allowed else "DENIED"
        return (
            f"{verdict}: {len(self.changes)} object(s) changed, {len(acting)} cluster(s) "
            f"affected, {len(self.runnable())} to provision in {len(self.waves)} wave(s)"
        )

    def as_dict(self, *, diffs: int = 50) -> dict[str, Any]:
        return {
            "base": self.revisions.base_sha,
            "head": self.revisions.head_sha,
            "headline": self.headline(),
            "valid": self.valid,
            "allowed": self.allowed,
            "exit_code": int(self.exit_code),
            "request": {"author": self.request.author, "approvers": list(self.request.approvers)},
            "problems": [p.as_dict() for p in self.problems],
            "files": [{"change": c, "path": p} for c, p in self.files],
            "objects": [c.as_dict() for c in self.changes],
            "clusters": [i.as_dict() for i in self.impacts],
            "manifests": {
                "renders": self.manifests.renders,
                "problems": self.manifests.problems,
                "diffs": [d.as_dict() for d in self.manifests.diffs[:diffs]],
                "diffs_total": len(self.manifests.diffs),
            },
            "blast_radius": self.radius.as_dict(),
            "waves": [_wave(w) for w in self.waves],
            "policy": self.verdicts.as_dict(),
        }


def _wave(wave: Wave) -> dict[str, Any]:
    canary = wave.canary
    return {
        "name": wave.name,
        "tier": str(wave.tier),
        "clusters": len(wave.clusters),
        "batches": len(wave.batches),
        "canary": len(canary.clusters) if canary else 0,
        "failure_budget": wave.failure_budget,
    }


def plan_change(
    repo: Path | str,
    base: str,
    head: str,
    *,
    inventory: str = "inventory",
    author: str | None = None,
    approvers: tuple[str, ...] = (),
) -> ChangePlan:
    """What merging ``head`` onto ``base`` would do to the fleet, and whether it may.
    ``author`` defaults to the head commit's author name."""
    revisions = resolve(Path(repo), base, head)
    plan = ChangePlan(revisions, Request(author or revisions.head_author, tuple(approvers)))
    plan.files = changed_files(Path(repo), revisions, PurePosixPath(inventory))
    head_inventory = _load(repo, inventory, revisions.head_sha, plan)
    if head_inventory is None:
        return plan
    try:
        base_inventory = load_inventory(inventory, git_ref=revisions.base_sha, repo=Path(repo))
    except InventoryError as exc:
        # Without a valid base there is nothing to compare with and no rules to judge by
        # (they come from the base): refuse rather than guess.
        plan.problems.append(
            Problem(
                revisions.base_short,
                None,
                "base",
                f"the base revision is invalid ({len(exc.problems)} problem(s)); a change "
                "is judged against a valid base",
                "fix the base branch first (`werft validate --git-ref BASE`)",
            )
        )
        return plan
    _plan(plan, base_inventory, head_inventory)
    return plan


def plan_inventories(base: Inventory, head: Inventory, plan: ChangePlan) -> ChangePlan:
    """``plan_change`` for two inventories already loaded (tests, reconcile)."""
    _plan(plan, base, head)
    return plan


def _plan(plan: ChangePlan, base: Inventory, head: Inventory) -> None:
    plan.changes = diff_objects(base, head).changes
    plan.manifests = manifest_changes(base, head, head.clusters)
    plan.problems += [
        Problem(plan.revisions.head_short, None, "addons", message)
        for message in plan.manifests.problems
    ]
    plan.impacts = cluster_impacts(base, head, plan.manifests.changed)
    plan.radius = blast_radius(plan.impacts, base, head)
    runnable = sorted(plan.runnable(), key=lambda i: i.name)
    work = Plan(tuple(ClusterPlan(i.name, i.tier, i.site, i.stages) for i in runnable))
    plan.waves = waves(work, head.fleet.spec.rollout)
    plan.verdicts = judge(
        plan.changes, plan.impacts, plan.radius, plan.request, base.policies, base, head
    )


def _load(repo: Path | str, inventory: str, sha: str, plan: ChangePlan) -> Inventory | None:
    try:
        loaded = load_inventory(inventory, git_ref=sha, repo=Path(repo))
    except InventoryError as exc:
        plan.problems = exc.problems
        return None
    plan.warnings = loaded.warnings
    return loaded

