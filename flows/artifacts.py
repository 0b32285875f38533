"""What a person looks at instead of logs: the plan, wave progress, the fleet table, a summary.

Artifact keys (lowercase, digits, dashes) are stable, so the Artifacts page of the UI
keeps the history of each: ``werft-plan``, ``werft-fleet``, ``werft-summary``,
``werft-<wave>`` (progress), ``werft-inventory-problems``; the drift check publishes its
own (``flows/drift_publish.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)

from flows.models import FleetResult
from werft.errors import Problem
from werft.plan import Outcome, Plan, Wave

# The UI renders tables in the browser; past this many rows, show the clusters that need
# attention first and say that the table is cut.
MAX_ROWS = 5000

_ORDER = {Outcome.FAILED: 0, Outcome.DEFERRED: 1, Outcome.NOT_STARTED: 2, Outcome.VERIFIED: 3}


async def publish_problems(source: str, problems: Sequence[Problem]) -> None:
    lines = [
        f"# Inventory {source} is invalid: nothing was touched",
        "",
        f"{len(problems)} problem(s); fix them and run again.",
        "",
        "| where | field | problem | fix |",
        "|---|---|---|---|",
    ]
    for p in problems:
        where = f"{p.file}:{p.line}" if p.line else p.file
        lines.append(f"| `{where}` | `{p.field}` | {_cell(p.message)} | {_cell(p.fix)} |")
    await acreate_markdown_artifact(
        "\n".join(lines), key="werft-inventory-problems", description="inventory problems"
    )


async def publish_plan(plan: Plan, wave_list: Sequence[Wave], task_runs: int) -> None:
    get_run_logger().info(
        "plan: %d of %d cluster(s) need work: %d wave(s), %d task run(s)",
        len(plan.work),
        len(plan),
        len(wave_list),
        task_runs,
    )
    rows = plan.rows()
    work = [r for r in rows if r["needs"] != "nothing (in shape)"]
    wave_of = {name: w.name for w in wave_list for name in w.clusters}
    batch_of = {name: b.name for w in wave_list for b in w.batches for name in b.clusters}
    table = [
        {**r, "wave": wave_of.get(r["cluster"], ""), "batch": batch_of.get(r["cluster"], "")}
        for r in work[:MAX_ROWS]
    ]
    description = (
        f"Plan: {len(work)} of {len(rows)} cluster(s) need work, in {len(wave_list)} wave(s) "
        f"and {sum(len(w.batches) for w in wave_list)} batch(es): {task_runs} task run(s)"
    )
    if len(work) > MAX_ROWS:
        description += f"; first {MAX_ROWS} rows shown"
    await acreate_table_artifact(
        table or [{"cluster": "-", "needs": "nothing"}], key="werft-plan", description=description
    )


class WaveProgress:
    """A wave's progress artifact, updated by its batches as they finish.

    Batches finish concurrently, and two updates in flight may reach the server in either
    order: a 57% sent before a 100% could land after it and stay. So one update at a time,
    each sending the figure as it is when its turn comes.
    """

    def __init__(self, artifact: UUID) -> None:
        self.artifact = artifact
        self._turn = asyncio.Lock()

    async def show(self, percent: Callable[[], float]) -> None:
        async with self._turn:
            await aupdate_progress_artifact(self.artifact, min(100.0, percent()))


async def start_progress(wave: Wave) -> WaveProgress:
    artifact = await acreate_progress_artifact(
        0.0,
        key=f"werft-{wave.name}",
        description=f"{wave.name}: {len(wave.clusters)} cluster(s) in {len(wave.batches)} "
        f"batch(es), failure budget {wave.failure_budget}",
    )
    return WaveProgress(artifact)


async def publish_fleet(result: FleetResult) -> None:
    records = sorted(result.clusters, key=lambda c: (_ORDER[c.outcome], c.cluster))
    description = f"Fleet after this run: {_counts(result)}"
    if len(records) > MAX_ROWS:
        description += f"; first {MAX_ROWS} rows shown (problems first)"
    if records:
        await acreate_table_artifact(
            [c.row() for c in records[:MAX_ROWS]], key="werft-fleet", description=description
        )
    await acreate_markdown_artifact(summary(result), key="werft-summary", description="summary")


def summary(result: FleetResult) -> str:
    lines = [
        f"# werft provisioning: {result.headline()}",
        "",
        f"- inventory: `{result.source}`; selection: {result.selector}",
        f"- clusters: {len(result.clusters)} ({_counts(result)})",
        f"- task runs: {result.task_runs}; duration: {result.duration_s:.1f} s",
    ]
    if not result.dry_run:
        lines.append(f"- {result.retries_line()}")
    if result.reason and result.reason not in lines[0]:
        lines += ["", f"**{result.reason}**"]
    if result.waves:
        lines += [
            "",
            "| wave | clusters | batches | Verified | Failed | Deferred | budget | status |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for w in result.waves:
            status = "halted" if w.halted else ("done" if w.started else "not started")
            lines.append(
                f"| {w.name} | {w.clusters} | {w.batches} | {w.verified} | {w.failed} | "
                f"{w.deferred} | {w.failure_budget} | {status} |"
            )
    deferred = [c.cluster for c in result.clusters if c.outcome is Outcome.DEFERRED]
    if deferred:
        lines += ["", f"Deferred (unreachable, the next run retries): {', '.join(deferred[:50])}"]
    failed = [c for c in result.clusters if c.outcome is Outcome.FAILED]
    if failed:
        lines += ["", "| failed cluster | reason | message |", "|---|---|---|"]
        lines += [f"| {c.cluster} | {c.reason} | {_cell(c.message)} |" for c in failed[:50]]
    return "\n".join(lines)


def _counts(result: FleetResult) -> str:
    return ", ".join(f"{n} {k}" for k, n in result.counts().items()) or "none"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]
