"""Rolling the plan out, wave by wave, batch by batch.

- Waves run one after the other (core, near-edge, edge), each only if the one before
  stayed within its failure budget.
- In a wave the canary batch runs alone and finishes completely; then the other
  batches run, ``maxConcurrency // batchSize`` at a time (so at most ``maxConcurrency``
  clusters are being worked on), each inside bounded by a local semaphore. Those that
  run side by side start one after another (``werft.plan.Ramp``).
- Each batch is its own pipeline: infrastructure -> bootstrap -> add-ons -> verify, a
  stage task as soon as the previous one is done; no barrier across the wave. A cluster
  that fails a stage leaves the pipeline; the others go on.
- When a wave's failures exceed its budget, no further batch starts (those in flight
  finish: interrupting a stage leaves nothing a re-run cannot finish, but there is no
  reason to), no later wave starts, and the run ends Failed with the reason.
- Tasks of a single-site batch carry tags ``tier:<tier>`` and ``site:<site>``
  (``concurrency_tags``). No limit exists by default; create one to protect a shared
  endpoint across concurrent runs, e.g. ``prefect concurrency-limit create site:fra1 2``.
  Prefect hands slots out by polling (seconds of slack), so throttling inside a run is
  the semaphores' job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prefect import Task, get_run_logger, tags

from flows.artifacts import WaveProgress, start_progress
from flows.dispatch import BatchOrder, dispatch_batch, stage_pipeline
from flows.models import ClusterRecord, ProvisionRequest, WaveReport
from tasks import STAGE_TASKS
from tasks.batch import BatchResult, BatchSpec, ClusterStageResult
from tasks.context import RunRef
from tasks.policy import concurrency_tags, with_retry_policy
from werft.conditions import STAGE_ORDER, Condition, ConditionType
from werft.inventory.model import Dispatch, Tier
from werft.inventory.resolved import Inventory
from werft.locks import ClusterLocks
from werft.plan import (
    Batch,
    Outcome,
    Plan,
    Ramp,
    Wave,
    WaveTally,
    outcome,
    ramp_bound,
    task_runs,
)
from werft.secrets import werft_home

TASK_FAILED = "TaskFailed"
ROLLOUT_HALTED = "RolloutHalted"
# Another run (a drift remediation, another rollout) holds the cluster: werft/locks.py.
CLUSTER_BUSY = "ClusterBusy"


@contextmanager
def log_levels(levels: dict[str, int], enabled: bool = True) -> Iterator[None]:
    """Raise the level of some loggers for a while (process-wide; waves run one at a time)."""
    loggers = {logging.getLogger(name): level for name, level in levels.items()}
    before = {logger: logger.level for logger in loggers}
    if enabled:
        for logger, level in loggers.items():
            logger.setLevel(level)
    try:
        yield
    finally:
        for logger, level in before.items():
            logger.setLevel(level)


# Edge waves run hundreds of task runs: their INFO lines ("Finished in state Completed()")
# cost a quarter of a task's client time and tell nobody anything. Warnings and errors
# stay; the flow logs one line per batch instead.
BULK = {"prefect.task_runs": logging.WARNING}


@dataclass
class Rollout:
    inventory: Inventory
    plan: Plan
    ref: RunRef
    request: ProvisionRequest
    records: dict[str, ClusterRecord] = field(default_factory=dict)
    halted: str = ""
    task_runs: int = 0
    busy: set[str] = field(default_factory=set)  # held by another run: Deferred, untouched
    _tasks: dict[ConditionType, Task[Any, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._tasks = {
            stage: with_retry_policy(task, self.request.retries, self.request.retry_backoff_s)
            for stage, task in STAGE_TASKS.items()
        }
        for cp in self.plan:
            self.records[cp.name] = ClusterRecord(
                cluster=cp.name,
                site=cp.site,
                tier=cp.tier,
                outcome=Outcome.VERIFIED if cp.in_shape else Outcome.NOT_STARTED,
                observed=[s for s in STAGE_ORDER if not cp.needs(s)],
                reason="AlreadyReady" if cp.in_shape else "",
            )

    async def run(self, waves: list[Wave]) -> list[WaveReport]:
        # One run works on a cluster at a time (drift remediation included): take the
        # clusters' locks for the rollout; those another run holds are Deferred.
        locks = ClusterLocks(werft_home(), holder=self.ref.key)
        with locks.holding([cp.name for cp in self.plan.work]) as busy:
            self.busy = set(busy)
            return await self._run(waves)

    async def _run(self, waves: list[Wave]) -> list[WaveReport]:
        reports = []
        for wave in waves:
            if self.halted:
                reports.append(self._report(WaveTally(wave), started=False, seconds=0.0))
                for name in wave.clusters:
                    self._not_started(name)
                continue
            reports.append(await self.run_wave(wave))
        return reports

    def not_started(self, waves: list[Wave]) -> list[WaveReport]:
        """The waves as planned (a dry run); ``task_runs`` counts the runs it would create."""
        self.task_runs = task_runs(self.plan, waves)
        return [self._report(WaveTally(w), started=False, seconds=0.0) for w in waves]

    async def run_wave(self, wave: Wave) -> WaveReport:
        start = time.monotonic()
        tally = WaveTally(wave)
        progress = await start_progress(wave)
        gate = asyncio.Semaphore(wave.batches_in_flight)
        ramp = Ramp(wave.rest, ramp_bound(self.ref.time_scale))

        async def gated(batch: Batch) -> None:
            async with gate:
                try:
                    await ramp.turn(batch)
                    if tally.exceeded:
                        for name in batch.clusters:
                            self._not_started(name)
                        return
                    await self.run_batch(
                        wave, batch, tally, progress, lambda: ramp.past_first_stage(batch)
                    )
                finally:
                    ramp.past_first_stage(batch)

        with log_levels(BULK, enabled=wave.tier == Tier.EDGE):
            if wave.canary:
                await self.run_batch(wave, wave.canary, tally, progress)
            await asyncio.gather(*(gated(b) for b in wave.rest))
        if tally.exceeded:
            self.halted = tally.halt_reason()
            get_run_logger().error(self.halted)
        return self._report(tally, started=True, seconds=time.monotonic() - start)

    async def run_batch(
        self,
        wave: Wave,
        batch: Batch,
        tally: WaveTally,
        progress: WaveProgress,
        past_first_stage: Callable[[], None] = lambda: None,
    ) -> None:
        """``past_first_stage`` is called when the batch's first stage task has ended, and
        after each later one, which changes nothing (a batch handed to the work pool: at
        once, its stages are not seen from here)."""
        start = time.monotonic()
        needs = {
            name: [stage for stage in STAGE_ORDER if self.plan[name].needs(stage)]
            for name in batch.clusters
            if name not in self.busy
        }
        if wave.policy.dispatch is Dispatch.POOL:  # a flow run on the work pool
            past_first_stage()
            outcome = await dispatch_batch(self._order(wave, batch, needs))
            self.task_runs += outcome.task_runs
            results = outcome.clusters
        else:

            async def run(stage: ConditionType, names: list[str]) -> BatchResult:
                try:
                    return await self.run_stage(stage, wave, batch, names)
                finally:
                    past_first_stage()

            results = await stage_pipeline(needs, run)
        for name, items in results.items():
            for item in items:
                self._record(name, item)

        outcomes = {name: self._finish(name, wave) for name in batch.clusters}
        for result in outcomes.values():
            tally.add(result)
        await progress.show(lambda: tally.progress)
        get_run_logger().info(
            "%s: %d cluster(s): %s in %.1fs",
            batch.path,
            len(batch.clusters),
            _describe(outcomes, self.records),
            time.monotonic() - start,
        )

    async def run_stage(
        self, stage: ConditionType, wave: Wave, batch: Batch, names: list[str]
    ) -> BatchResult:
        spec = BatchSpec(
            run=self.ref,
            path=batch.path,
            label=batch.label if names == list(batch.clusters) else _label(batch, names),
            tier=wave.tier,
            clusters=names,
            max_concurrency=wave.clusters_per_batch_in_flight,
            defer_unreachable=wave.policy.defer_unreachable,
            defer_after=wave.policy.defer_after,
        )
        sites = {self.inventory.clusters[n].site for n in names}
        self.task_runs += 1
        try:
            with tags(*concurrency_tags(wave.tier, sites)):
                return await self._tasks[stage](spec)
        except Exception as exc:  # the task itself broke (not a cluster): fail its clusters
            message = f"{type(exc).__name__}: {exc}"[:300]
            failed = Condition(type=stage, status="False", reason=TASK_FAILED, message=message)
            return BatchResult(
                stage=stage,
                batch=batch.path,
                clusters={n: ClusterStageResult(condition=failed) for n in names},
            )

    def _order(self, wave: Wave, batch: Batch, needs: dict[str, list[ConditionType]]) -> BatchOrder:
        return BatchOrder(
            run=self.ref,
            path=batch.path,
            label=batch.label,
            tier=wave.tier,
            needs=needs,
            sites=sorted({self.inventory.clusters[n].site for n in needs}),
            max_concurrency=wave.clusters_per_batch_in_flight,
            defer_unreachable=wave.policy.defer_unreachable,
            defer_after=wave.policy.defer_after,
            retries=self.request.retries,
            retry_backoff_s=self.request.retry_backoff_s,
        )

    # -- bookkeeping --

    def _record(self, name: str, item: ClusterStageResult) -> None:
        record = self.records[name]
        record.conditions[item.condition.type] = item.condition
        record.attempts[item.condition.type] = item.attempts

    def _finish(self, name: str, wave: Wave) -> Outcome:
        record = self.records[name]
        if name in self.busy:
            record.outcome, record.reason = Outcome.DEFERRED, CLUSTER_BUSY
            record.message = "another run holds the cluster; the next run picks it up"
            return record.outcome
        ran = [record.conditions[s] for s in STAGE_ORDER if s in record.conditions]
        record.outcome = outcome(ran, wave.policy)
        last = ran[-1] if ran else None
        if last is not None:
            record.reason, record.message = last.reason, "" if last.ok else last.message
        return record.outcome

    def _not_started(self, name: str) -> None:
        record = self.records[name]
        record.outcome, record.reason = Outcome.NOT_STARTED, ROLLOUT_HALTED

    def _report(self, tally: WaveTally, *, started: bool, seconds: float) -> WaveReport:
        wave = tally.wave
        return WaveReport(
            name=wave.name,
            tier=wave.tier,
            clusters=len(wave.clusters),
            batches=len(wave.batches),
            verified=tally.verified,
            failed=tally.failed,
            deferred=tally.deferred,
            failure_budget=wave.failure_budget,
            started=started,
            halted=started and tally.exceeded,
            duration_s=round(seconds, 3),
        )


def _label(batch: Batch, names: list[str]) -> str:
    return names[0] if len(names) == 1 else batch.path


def _describe(outcomes: dict[str, Outcome], records: dict[str, ClusterRecord]) -> str:
    parts = []
    for kind in (Outcome.VERIFIED, Outcome.FAILED, Outcome.DEFERRED, Outcome.NOT_STARTED):
        names = [n for n, o in outcomes.items() if o is kind]
        if not names:
            continue
        text = f"{len(names)} {kind}"
        if kind is not Outcome.VERIFIED:
            text += " (" + ", ".join(f"{n}: {records[n].reason}" for n in names[:3])
            text += ", ...)" if len(names) > 3 else ")"
        parts.append(text)
    return "; ".join(parts)
