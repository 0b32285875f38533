"""The retry policy and the tags of every stage task, decided in one place.

- Retries: ``RETRIES`` attempts after the first, exponential backoff (``BACKOFF_S`` * 2^n)
  with jitter (``JITTER``), so 300 edge batches hit by the same 503 storm do not come
  back in lock step. A run can change both (``ProvisionRequest.retries`` /
  ``retry_backoff_s``) through ``with_retry_policy``.
- Only transient failures are retried: the condition asks ``werft.errors.is_transient``
  about the exception the task raised, and nothing else. A task raises
  ``TransientError`` only while some of its clusters failed transiently and attempts
  remain (see ``tasks.batch``); a permanent failure is a result, never a retry.
- Tags (``concurrency_tags``): ``tier:<tier>`` and ``site:<site>`` on the task runs of a
  single-site batch, for Prefect's tag-based concurrency limits; none on a multi-site one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.states import State
from prefect.tasks import exponential_backoff

from werft.errors import is_transient

RETRIES = 3
BACKOFF_S = 2.0
JITTER = 0.5


async def retry_if_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's ``retry_condition_fn``: retry when the raised exception is transient."""
    exc = await state.aresult(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


def retry_options(retries: int = RETRIES, backoff_s: float = BACKOFF_S) -> dict[str, Any]:
    """Keyword arguments for ``@task`` / ``Task.with_options``."""
    return {
        "retries": retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=backoff_s),
        "retry_jitter_factor": JITTER,
        "retry_condition_fn": retry_if_transient,
    }


def with_retry_policy(task: Task[Any, Any], retries: int, backoff_s: float) -> Task[Any, Any]:
    """The same task with this run's retry policy."""
    if retries == task.retries and backoff_s == BACKOFF_S:
        return task
    return task.with_options(**retry_options(retries, backoff_s))


def task_run_key() -> str:
    """The id of the task run this code runs in ("" outside Prefect)."""
    context = TaskRunContext.get()
    return str(context.task_run.id) if context else ""


def attempts_left() -> bool:
    """Inside a task run: will Prefect retry if this attempt raises a transient error?"""
    context = TaskRunContext.get()
    if context is None:  # called outside Prefect (tests of the core): no retries
        return False
    return context.task_run.run_count <= context.task.retries


def concurrency_tags(tier: str, sites: Iterable[str]) -> list[str]:
    """The tags of a stage's task run. Any tag makes the task run ask the Prefect server
    for slots of the tag-based concurrency limits before it starts, limit or not: one
    round trip on the path of every stage of every batch (0.4 s on average against a
    loaded server, a fifth of an edge rollout's time). So only a single-site batch --
    core, near-edge: where a limit protects a site's shared BMCs or hypervisor across
    runs -- carries them; a multi-site batch, throttled by its tier's rollout policy,
    carries none."""
    distinct = set(sites)
    if len(distinct) != 1:
        return []
    return [f"tier:{tier}", f"site:{distinct.pop()}"]
