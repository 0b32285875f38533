"""Desired state (the inventory) + observed state (the fleet) -> the work, in waves.

Pure: no I/O, no Prefect. The flow observes, calls ``plan_fleet``, cuts the plan into
``waves`` by the Fleet's rollout policy and runs the batches; ``Ramp`` spaces the starts
of the batches in flight, ``WaveTally`` keeps the score against the wave's failure budget.

- A cluster needs every stage from the first one it does not satisfy onwards: stages
  build on each other, so a cluster whose infrastructure is gone needs bootstrap,
  add-ons and verify again too (each is idempotent and cheap where nothing changed).
- A cluster that satisfies all four needs nothing and gets no task run at all: that is
  what makes a re-run of a provisioned 10,000-site fleet cheap.
- Waves follow the rollout order (core, near-edge, edge); a wave is numbered by its
  tier's place in that order, so "edge-wave-3" names the same thing in every run.
  Within a wave: the canary batch (``canarySize`` clusters) first, alone, and only
  when it is done the other batches of ``batchSize``. Batches do not grow past
  ``batchSize``: the rollout already grows from the canary to
  ``maxConcurrency // batchSize`` batches in flight, and a constant batch size keeps
  batch names stable between runs and makes one Prefect task run cost the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from werft.conditions import STAGE_ORDER, Condition, ConditionType
from werft.inventory.model import Dispatch, Rollout, Tier, TierPolicy
from werft.inventory.resolved import Inventory, ResolvedCluster

Observation = Mapping[ConditionType, bool]

UNREACHABLE = "Unreachable"


# --- selection and policy overrides -------------------------------------------------------


class Selector(BaseModel):
    """Which clusters a run is about; every given filter must match, an empty one matches all."""

    model_config = ConfigDict(extra="forbid")

    clusters: list[str] = Field(default_factory=list, description="cluster names")
    sites: list[str] = Field(default_factory=list, description="site names")
    tiers: list[Tier] = Field(default_factory=list, description="core, near-edge, edge")
    labels: dict[str, str] = Field(default_factory=dict, description="cluster labels")

    def select(self, inventory: Inventory) -> list[ResolvedCluster]:
        return inventory.select(
            clusters=self.clusters or None,
            sites=self.sites or None,
            tiers=self.tiers or None,
            labels=self.labels or None,
        )

    def unknown_names(self, inventory: Inventory) -> list[str]:
        """Named clusters and sites the inventory does not have (a typo is not 'nothing to do')."""
        missing = [f"cluster {c!r}" for c in self.clusters if c not in inventory.clusters]
        missing += [f"site {s!r}" for s in self.sites if s not in inventory.sites]
        return missing

    def describe(self) -> str:
        parts = [
            f"{what}={','.join(values)}"
            for what, values in (
                ("clusters", self.clusters),
                ("sites", self.sites),
                ("tiers", [str(t) for t in self.tiers]),
                ("labels", [f"{k}={v}" for k, v in self.labels.items()]),
            )
            if values
        ]
        return " ".join(parts) or "the whole fleet"


class TierOverride(BaseModel):
    """Changes to one tier's rollout policy for one run; unset fields keep the Fleet's value."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int | None = Field(None, ge=1, le=1000)
    max_concurrency: int | None = Field(None, ge=1, le=10000)
    canary_size: int | None = Field(None, ge=0)
    max_failures: int | str | None = Field(None, description='a count like 3 or a share like "5%"')
    defer_unreachable: bool | None = None
    defer_after: float | None = Field(None, ge=0, le=3600, description="seconds unreachable")
    dispatch: Dispatch | None = Field(None, description="inProcess, or pool: provision-batch runs")


def override_rollout(rollout: Rollout, overrides: Mapping[Tier, TierOverride]) -> Rollout:
    """The Fleet's rollout with ``overrides`` applied, validated like the Fleet's own policy."""
    tiers = dict(rollout.tiers)
    for tier, override in overrides.items():
        changes = override.model_dump(exclude_none=True)
        tiers[tier] = TierPolicy.model_validate({**rollout.policy(tier).model_dump(), **changes})
    return rollout.model_copy(update={"tiers": tiers})


# --- the plan ------------------------------------------------------------------------------


def needed_stages(observed: Observation) -> tuple[ConditionType, ...]:
    """Every stage from the first unsatisfied one on; () when the cluster is fully in shape."""
    for index, stage in enumerate(STAGE_ORDER):
        if not observed.get(stage, False):
            return STAGE_ORDER[index:]
    return ()


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    name: str
    tier: Tier
    site: str
    needed: tuple[ConditionType, ...]
    # Why the observation is incomplete ("Unreachable: connection refused"), if it is.
    note: str = ""

    @property
    def in_shape(self) -> bool:
        return not self.needed

    def needs(self, stage: ConditionType) -> bool:
        return stage in self.needed


@dataclass(frozen=True)
class Plan:
    clusters: tuple[ClusterPlan, ...]
    _by_name: dict[str, ClusterPlan] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {c.name: c for c in self.clusters})

    def __iter__(self) -> Iterator[ClusterPlan]:
        return iter(self.clusters)

    def __len__(self) -> int:
        return len(self.clusters)

    def __getitem__(self, name: str) -> ClusterPlan:
        return self._by_name[name]

    @property
    def work(self) -> list[ClusterPlan]:
        """Clusters that need at least one stage."""
        return [c for c in self.clusters if c.needed]

    def stage_counts(self) -> dict[ConditionType, int]:
        return {s: sum(1 for c in self.clusters if c.needs(s)) for s in STAGE_ORDER}

    def rows(self) -> list[dict[str, str]]:
        """One row per cluster, for the plan table."""
        return [
            {
                "cluster": c.name,
                "tier": str(c.tier),
                "site": c.site,
                "needs": ", ".join(c.needed) or "nothing (in shape)",
                "note": c.note,
            }
            for c in self.clusters
        ]


def plan_fleet(
    clusters: Iterable[ResolvedCluster],
    observed: Mapping[str, Observation],
    notes: Mapping[str, str] | None = None,
) -> Plan:
    """What each cluster needs. A cluster missing from ``observed`` needs every stage."""
    notes = notes or {}
    return Plan(
        tuple(
            ClusterPlan(
                name=c.name,
                tier=c.tier,
                site=c.site,
                needed=needed_stages(observed.get(c.name, {})),
                note=notes.get(c.name, ""),
            )
            for c in sorted(clusters, key=lambda c: c.name)
        )
    )


# --- waves and batches ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch:
    wave: str  # "edge-wave-3"
    name: str  # "batch-07" or "canary"
    clusters: tuple[str, ...]
    canary: bool = False

    @property
    def path(self) -> str:
        return f"{self.wave}/{self.name}"

    @property
    def label(self) -> str:
        """How task runs name the batch: the cluster itself when it is alone."""
        return self.clusters[0] if len(self.clusters) == 1 else self.path


@dataclass(frozen=True)
class Wave:
    name: str  # "edge-wave-3"
    tier: Tier
    number: int
    policy: TierPolicy
    batches: tuple[Batch, ...]

    @property
    def clusters(self) -> tuple[str, ...]:
        return tuple(name for batch in self.batches for name in batch.clusters)

    @property
    def canary(self) -> Batch | None:
        return self.batches[0] if self.batches and self.batches[0].canary else None

    @property
    def rest(self) -> tuple[Batch, ...]:
        return self.batches[1:] if self.canary else self.batches

    @property
    def failure_budget(self) -> int:
        return self.policy.failure_budget(len(self.clusters))

    @property
    def batches_in_flight(self) -> int:
        """How many batches run at once, so that at most ``maxConcurrency`` clusters do."""
        return max(1, self.policy.max_concurrency // self.policy.batch_size)

    @property
    def clusters_per_batch_in_flight(self) -> int:
        """The local semaphore inside one batch."""
        return max(1, min(self.policy.max_concurrency, self.policy.batch_size))


def rollout_order(rollout: Rollout) -> list[Tier]:
    """The Fleet's order, with any tier it forgot appended: no cluster is silently skipped."""
    order = list(dict.fromkeys(rollout.order))
    return order + [t for t in Tier if t not in order]


def waves(plan: Plan, rollout: Rollout) -> list[Wave]:
    """The clusters that need work, cut into waves (one per tier) of batches."""
    result = []
    for number, tier in enumerate(rollout_order(rollout), start=1):
        names = [c.name for c in plan.work if c.tier == tier]
        if not names:
            continue
        policy = rollout.policy(tier)
        wave = f"{tier}-wave-{number}"
        result.append(Wave(wave, tier, number, policy, _batches(wave, names, policy)))
    return result


def _batches(wave: str, names: Sequence[str], policy: TierPolicy) -> tuple[Batch, ...]:
    canary = names[: policy.canary_size] if len(names) > policy.canary_size else []
    rest = names[len(canary) :]
    chunks = [rest[i : i + policy.batch_size] for i in range(0, len(rest), policy.batch_size)]
    width = max(2, len(str(len(chunks))))
    batches = [Batch(wave, "canary", tuple(canary), canary=True)] if canary else []
    batches += [
        Batch(wave, f"batch-{i:0{width}d}", tuple(chunk)) for i, chunk in enumerate(chunks, 1)
    ]
    return tuple(batches)


def task_runs(plan: Plan, wave_list: Sequence[Wave]) -> int:
    """Prefect task runs a rollout creates: one per stage that any cluster of a batch needs."""
    return sum(
        len({stage for name in batch.clusters for stage in plan[name].needed})
        for wave in wave_list
        for batch in wave.batches
    )


# --- batches in flight start one after another ---------------------------------------------
#
# A wave runs ``batches_in_flight`` batches at once. Started together they stay in step,
# stage for stage, round after round: every BMC of every batch fetches its images at the
# same moment (one artifact server, one WAN link), and werft's own work for all of them --
# seeds and keys, the add-ons' requests, verify's -- comes as one burst behind each stage,
# where it delays every cluster instead of overlapping their waits for hardware. So a batch
# waits until the batch before it has finished its first stage (its machines powered on,
# for a first provisioning), but never longer than a bound: a batch whose first stage drags
# on (BMCs that do not answer) holds the next one back by at most that. Only the wave's
# start is spread: a batch that starts later, when another ends, finds its predecessor long
# past its first stage. At time scale 60 (300 edge sites, two batches of 25 in flight) the
# rollout takes 4-5% less time (README, "Measured").

# How long a batch waits at most for the one before it: a minute on real hardware, where
# the first stage of a batch (media inserted, machines reset) takes about that.
RAMP_BOUND_S = 60.0


class Ramp:
    """Call ``turn`` before a batch's first stage and ``past_first_stage`` after it (also
    for a batch that never runs: the next one must not wait for it in vain)."""

    def __init__(self, batches: Sequence[Batch], bound: float) -> None:
        self.bound = bound
        self._done = {batch.path: asyncio.Event() for batch in batches}
        self._before = {b.path: a.path for a, b in itertools.pairwise(batches)}

    async def turn(self, batch: Batch) -> None:
        """Until the batch before ``batch`` is past its first stage, ``bound`` at most."""
        before = self._before.get(batch.path)
        if before is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done[before].wait(), self.bound)

    def past_first_stage(self, batch: Batch) -> None:
        done = self._done.get(batch.path)  # None: not one of the ramp's (a canary)
        if done is not None:
            done.set()


def ramp_bound(time_scale: float) -> float:
    """``RAMP_BOUND_S`` in the run's time, but not under a second: the first stage is
    mostly werft's own work, which the simulator's time scale does not speed up."""
    return max(RAMP_BOUND_S / time_scale, 1.0)


# --- outcomes and the failure budget ---------------------------------------------------------


class Outcome(StrEnum):
    VERIFIED = "Verified"
    FAILED = "Failed"
    DEFERRED = "Deferred"  # unreachable in a tier that defers: the next run picks it up
    NOT_STARTED = "NotStarted"  # the rollout halted before this cluster's batch ran


def outcome(conditions: Sequence[Condition], policy: TierPolicy) -> Outcome:
    """A cluster's outcome from the conditions its stages returned, in stage order."""
    if not conditions:
        return Outcome.NOT_STARTED
    last = conditions[-1]
    if last.ok:
        return Outcome.VERIFIED if last.type == ConditionType.VERIFIED else Outcome.NOT_STARTED
    if policy.defer_unreachable and last.transient and last.reason == UNREACHABLE:
        return Outcome.DEFERRED
    return Outcome.FAILED


@dataclass
class WaveTally:
    """The score of one wave against its failure budget."""

    wave: Wave
    verified: int = 0
    failed: int = 0
    deferred: int = 0

    def add(self, result: Outcome) -> None:
        if result is Outcome.VERIFIED:
            self.verified += 1
        elif result is Outcome.FAILED:
            self.failed += 1
        elif result is Outcome.DEFERRED:
            self.deferred += 1

    @property
    def done(self) -> int:
        return self.verified + self.failed + self.deferred

    @property
    def exceeded(self) -> bool:
        return self.failed > self.wave.failure_budget

    @property
    def progress(self) -> float:
        """Percent of the wave's clusters that have an outcome."""
        total = len(self.wave.clusters)
        return 100.0 * self.done / total if total else 100.0

    def halt_reason(self) -> str:
        return (
            f"{self.wave.name}: {self.failed} of {len(self.wave.clusters)} clusters failed, "
            f"over its failure budget of {self.wave.failure_budget} "
            f"(maxFailures {self.wave.policy.max_failures!r}); the rollout halted"
        )
