"""The body every stage task shares: one stage over one batch of clusters.

Retrying a batch where only some clusters failed transiently:

- attempt 1 runs the stage for every cluster of the batch;
- if some failed transiently and Prefect will retry (attempts left), the task raises
  ``TransientError``; the retry condition sees a transient error and Prefect retries
  the task after an exponential, jittered backoff;
- a retry runs the stage only for the clusters that failed transiently: the outcomes
  of the others are kept in this process between attempts (and had they been run
  again, a satisfied stage makes no mutating call, so nothing would change);
- the last attempt returns the results, those clusters still failed. A permanent
  failure is never retried: it is a result from the first attempt.

In tiers that defer unreachable sites, an ``Unreachable`` cluster is not retried
within the run: a stage says ``Unreachable`` only after the site stayed unreachable, probe
after probe, for the tier's ``deferAfter`` (``werft.stages.reach``), so retrying it would
only delay its batch; the next run takes it. A shorter outage ends as ``ConnectionFailed``
and is retried like any transient failure. Each cluster's result carries how many
attempts it took.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tasks.context import RunRef, resources_for
from tasks.policy import attempts_left, task_run_key
from werft.conditions import Condition, ConditionType
from werft.errors import TransientError
from werft.inventory.model import Tier
from werft.plan import UNREACHABLE
from werft.redact import redacted_exceptions
from werft.retry import DEFAULT, RetryPolicy
from werft.stages import run_stage_batch


class BatchSpec(BaseModel):
    """What a stage task gets: small, serialisable, no secrets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: RunRef
    path: str  # "edge-wave-3/batch-07"
    label: str  # task runs are named "<stage>[<label>]": the path, or the cluster if alone
    tier: Tier
    clusters: list[str]
    max_concurrency: int = Field(ge=1)
    defer_unreachable: bool = False
    defer_after: float = Field(15.0, ge=0)  # the tier's deferAfter, in real seconds


class ClusterStageResult(BaseModel):
    condition: Condition
    attempts: int = 1


class BatchResult(BaseModel):
    stage: ConditionType
    batch: str
    clusters: dict[str, ClusterStageResult]

    def ok(self, name: str) -> bool:
        return self.clusters[name].condition.ok


# Outcomes so far of a task run that is being retried, by task run id.
_partial: dict[str, dict[str, ClusterStageResult]] = {}


def unreachable_grace(batch: BatchSpec, poll_interval: float) -> float:
    """The tier's ``deferAfter`` in the run's time (the simulator's time scale divides it
    like every deadline), but never under two poll intervals (a site is probed again
    before it is judged) nor under the wall-clock time one request takes to run all its
    retries: outages and request retries are wall-clock time, whatever the time scale."""
    return max(batch.defer_after / batch.run.time_scale, 2 * poll_interval, _retry_span())


def _retry_span(policy: RetryPolicy = DEFAULT) -> float:
    """The longest a request's retries back off in all (the ceilings, no Retry-After)."""
    return sum(min(policy.cap, policy.base * 2**i) for i in range(policy.attempts - 1))


def retry_worthy(condition: Condition, defer_unreachable: bool) -> bool:
    if condition.ok or not condition.transient:
        return False
    return not (defer_unreachable and condition.reason == UNREACHABLE)


async def run_batch(stage: ConditionType, batch: BatchSpec) -> BatchResult:
    with redacted_exceptions():  # Prefect stores a crash's text itself: mask secrets first
        return await _run_batch(stage, batch)


async def _run_batch(stage: ConditionType, batch: BatchSpec) -> BatchResult:
    attempt_key = task_run_key()
    resources = await resources_for(batch.run)
    results = _partial.pop(attempt_key, {})
    todo = [
        name
        for name in batch.clusters
        if name not in results or retry_worthy(results[name].condition, batch.defer_unreachable)
    ]
    clusters = [resources.inventory.clusters[name] for name in todo]
    conditions = await run_stage_batch(
        stage,
        clusters,
        resources.stages,
        batch.max_concurrency,
        unreachable_grace=unreachable_grace(batch, resources.stages.timeouts.poll_interval),
    )
    for name, condition in zip(todo, conditions, strict=True):
        attempts = results[name].attempts + 1 if name in results else 1
        results[name] = ClusterStageResult(condition=condition, attempts=attempts)

    again = [
        n for n in batch.clusters if retry_worthy(results[n].condition, batch.defer_unreachable)
    ]
    if again and attempts_left():
        _partial[attempt_key] = results
        raise TransientError(
            f"{stage} {batch.path}: {len(again)} of {len(batch.clusters)} cluster(s) failed "
            "transiently: "
            + ", ".join(f"{n} ({results[n].condition.reason})" for n in again[:5])
            + (" ..." if len(again) > 5 else "")
        )
    return BatchResult(
        stage=stage, batch=batch.path, clusters={n: results[n] for n in batch.clusters}
    )
