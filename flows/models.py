"""Flow parameters and results: pydantic models, so the Prefect UI renders a form for the
parameters and a result travels as JSON (through the API, into the CLI)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tasks.context import InventorySource
from werft.conditions import STAGE_ORDER, Condition, ConditionType
from werft.inventory.model import Tier
from werft.plan import Outcome, Selector, TierOverride

# Short names for the stages, for compact table cells ("1,1,3,1").
STAGE_SHORT = {
    ConditionType.INFRASTRUCTURE_READY: "infrastructure",
    ConditionType.BOOTSTRAPPED: "bootstrap",
    ConditionType.ADDONS_READY: "addons",
    ConditionType.VERIFIED: "verify",
}


class ProvisionRequest(BaseModel):
    """Provision the selected clusters of the inventory, in waves."""

    model_config = ConfigDict(extra="forbid")

    inventory: str = Field("inventory", description="Inventory folder (inside the repo if set)")
    repo: str | None = Field(None, description="Git repository holding the inventory")
    git_ref: str | None = Field(None, description="Git revision to provision (branch/tag/sha)")
    selector: Selector = Field(default_factory=Selector, description="Empty: the whole fleet")
    dry_run: bool = Field(False, description="Observe and plan only; change nothing")
    rollout: dict[Tier, TierOverride] = Field(
        default_factory=dict, description="Per-tier changes to the Fleet's rollout policy"
    )
    retries: int = Field(3, ge=0, le=10, description="Retries of transient failures per batch")
    retry_backoff_s: float = Field(2.0, ge=0, description="First retry delay; doubles each time")
    observe_concurrency: int = Field(32, ge=1, le=1000, description="Clusters observed at once")
    time_scale: float = Field(
        1.0, gt=0, description="Simulated time: divide stage deadlines by this (werft sim)"
    )

    @property
    def source(self) -> InventorySource:
        return InventorySource(path=self.inventory, repo=self.repo, git_ref=self.git_ref)


class ClusterRecord(BaseModel):
    """One cluster's line in the fleet table."""

    cluster: str
    site: str
    tier: Tier
    outcome: Outcome
    # Stages the run executed, with what they returned; stages satisfied at observation
    # (nothing to do) are in ``observed``.
    conditions: dict[ConditionType, Condition] = Field(default_factory=dict)
    observed: list[ConditionType] = Field(default_factory=list)
    attempts: dict[ConditionType, int] = Field(default_factory=dict)
    reason: str = ""
    message: str = ""

    def status(self, stage: ConditionType) -> str:
        if stage in self.conditions:
            return self.conditions[stage].status
        return "True" if stage in self.observed else "Unknown"

    @property
    def duration_s(self) -> float:
        return round(sum(c.duration_s for c in self.conditions.values()), 3)

    @property
    def mutations(self) -> int:
        return sum(c.mutations for c in self.conditions.values())

    def attempts_cell(self) -> str:
        return ",".join(str(self.attempts.get(s, "-")) for s in STAGE_ORDER)

    def row(self) -> dict[str, object]:
        return {
            "cluster": self.cluster,
            "site": self.site,
            "tier": str(self.tier),
            **{str(stage): self.status(stage) for stage in STAGE_ORDER},
            "outcome": str(self.outcome),
            "duration_s": self.duration_s,
            "attempts": self.attempts_cell(),
            "reason": self.reason,
        }


class WaveReport(BaseModel):
    name: str
    tier: Tier
    clusters: int
    batches: int
    verified: int = 0
    failed: int = 0
    deferred: int = 0
    failure_budget: int = 0
    started: bool = False
    halted: bool = False
    duration_s: float = 0.0


class FleetResult(BaseModel):
    """What a provisioning run returns (and what the fleet table shows)."""

    flow_run_id: str | None = None
    source: str
    selector: str
    dry_run: bool = False
    succeeded: bool = True
    reason: str = ""  # why the run failed: inventory problems, a halted rollout
    problems: list[str] = Field(default_factory=list)
    clusters: list[ClusterRecord] = Field(default_factory=list)
    waves: list[WaveReport] = Field(default_factory=list)
    task_runs: int = 0
    duration_s: float = 0.0
    # Requests retried at the request layer during the run, by cause ("503", "timeout",
    # "connection refused" ...): what the fleet's flakiness cost.
    retries: dict[str, int] = Field(default_factory=dict)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for c in self.clusters if c.outcome is outcome)

    @property
    def fleet_ok(self) -> bool:
        """Every selected cluster Verified, or Deferred (which only a tier whose policy
        defers unreachable sites produces): nothing failed, nothing left unstarted."""
        return all(c.outcome in (Outcome.VERIFIED, Outcome.DEFERRED) for c in self.clusters)

    def fleet_failure(self) -> str:
        """E.g. "3 of 320 clusters failed (2 deferred, 10 not started)"; "" when fleet_ok."""
        if self.fleet_ok:
            return ""
        failed = self.count(Outcome.FAILED)
        others = [
            f"{n} {what}"
            for what, n in (
                ("deferred", self.count(Outcome.DEFERRED)),
                ("not started", self.count(Outcome.NOT_STARTED)),
            )
            if n
        ]
        return f"{failed} of {len(self.clusters)} clusters failed" + (
            f" ({', '.join(others)})" if others else ""
        )

    def headline(self) -> str:
        """The summary's first words: the fleet's outcome, not only the waves'."""
        if self.dry_run and self.succeeded:
            return "Dry run: plan only"
        if self.succeeded:
            deferred = self.count(Outcome.DEFERRED)
            return "Succeeded" + (f" ({deferred} deferred to the next run)" if deferred else "")
        return "Failed: " + (self.fleet_failure() or self.reason or "see the reason below")

    def retries_line(self) -> str:
        """E.g. "requests retried: 41 (503: 20, timeout: 12, connection refused: 9)"."""
        total = sum(self.retries.values())
        if not total:
            return "requests retried: 0"
        causes = sorted(self.retries.items(), key=lambda item: (-item[1], item[0]))
        return f"requests retried: {total} (" + ", ".join(f"{c}: {n}" for c, n in causes) + ")"

    @property
    def all_verified(self) -> bool:
        return all(c.outcome is Outcome.VERIFIED for c in self.clusters)

    def counts(self) -> dict[str, int]:
        return {str(o): self.count(o) for o in Outcome if self.count(o)}
