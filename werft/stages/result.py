"""Turning a stage's work into exactly one Condition, whatever happens.

A stage body does its work and returns ``Done``; it raises ``StageFailed`` for failures
it understands (nodes not Ready, an add-on not Available) and lets werft errors from
providers and clients propagate. ``run_stage`` catches everything for the cluster,
enforces the cluster's deadline, and never lets one cluster's failure escape into the
batch.

A body that fails because nothing answered (refused, reset, timed out) is run again,
a poll interval later, while the deadline allows and until ``progress.reach`` judges the
site unreachable (``werft.stages.reach``): one dropped connection is a blip that the
next attempt outlives, not an unreachable site. Bodies are observe-first and idempotent,
so running one again is what a task retry would do, only sooner. An unreachable failure
that never became the judgement (the deadline came first) is reported as
``ConnectionFailed``, transient, so the task retries it and no tier defers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from werft.conditions import Condition, ConditionType, Status
from werft.errors import TransientError, WerftError, is_transient
from werft.inventory.resolved import ResolvedCluster
from werft.kube import WaitTimeout
from werft.redact import redact
from werft.retry import request_deadline
from werft.stages.context import Deadline, StageContext
from werft.stages.reach import (
    UNREACHABLE,
    Reachability,
    SiteUnreachable,
    current_grace,
    is_unreachable,
)

if TYPE_CHECKING:
    from werft.inventory.model import Machine
    from werft.providers.base import Provider

log = logging.getLogger("werft.stages")

INTERNAL_ERROR = "InternalError"
TIMEOUT = "Timeout"
# Nothing answered, but not for long enough to call the site unreachable (see above).
CONNECTION_FAILED = "ConnectionFailed"


class StageFailed(WerftError):
    """A failure the stage recognised and named, e.g. ``NodesNotReady``."""

    def __init__(self, reason: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.transient = transient


@dataclass
class Done:
    reason: str
    message: str = ""
    status: Status = "True"


@dataclass
class Progress:
    """What a stage has done so far; kept on failure too (mutations made before it)."""

    deadline: Deadline
    reach: Reachability
    mutations: int = 0
    checks: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def counting(self, provider: Provider, machine: Machine) -> Iterator[None]:
        """Adds the mutating calls ``provider`` sends for ``machine`` inside the block --
        also when the block fails or is cancelled (the stage's hard stop): a call that
        was sent changed the machine whether or not the operation finished."""
        before = provider.mutations_sent(machine)
        try:
            yield
        finally:
            self.mutations += provider.mutations_sent(machine) - before


Body = Callable[[Progress], Awaitable[Done]]
Classify = Callable[[WerftError], str]


async def run_stage(
    stage: ConditionType,
    cluster: ResolvedCluster,
    ctx: StageContext,
    body: Body,
    classify: Classify,
) -> Condition:
    grace = current_grace(ctx.timeouts.poll_interval)
    progress = Progress(Deadline(ctx.timeouts.deadline(stage)), Reachability(cluster.name, grace))
    # The body watches its own deadline and says what it was waiting for; this hard
    # stop (a little later, so an in-flight request can finish) catches anything that
    # does not, such as a provider call that hangs.
    hard_stop = progress.deadline.seconds + ctx.timeouts.http + 1.0
    status: Status = "False"
    transient = False
    try:
        # Every request retry of the stage (BMCs, hypervisors, cluster APIs) stops at its
        # deadline.
        with request_deadline(progress.deadline.instant):
            async with asyncio.timeout(hard_stop):
                done = await _until_judged(body, progress, ctx)
        status, reason, message = done.status, done.reason, done.message
    except SiteUnreachable as exc:
        reason, message, transient = UNREACHABLE, str(exc), True
    except StageFailed as exc:
        reason, message, transient = exc.reason, str(exc), exc.transient
    except WerftError as exc:
        reason, message, transient = classify(exc), str(exc), is_transient(exc)
    except TimeoutError:
        reason, transient = TIMEOUT, True
        message = f"cluster {cluster.name}: {stage} not reached within {hard_stop:.3g}s"
    except Exception as exc:  # a bug: report it for this cluster, keep the batch going
        log.exception("cluster %s: %s failed unexpectedly", cluster.name, stage)
        reason = INTERNAL_ERROR
        # werft.redact masks every secret handed out (the Condition does it too).
        message = redact(f"{type(exc).__name__}: {exc}")[:500]
    if reason == UNREACHABLE and not progress.reach.persistent:
        # Nothing answered, but not for the grace period: a blip, not a site to defer.
        reason = CONNECTION_FAILED
    condition = Condition(
        type=stage,
        status=status,
        reason=reason,
        message=message,
        duration_s=round(progress.deadline.elapsed(), 3),
        mutations=progress.mutations,
        transient=transient,
        checks=progress.checks,
    )
    log.debug("cluster %s: %s=%s (%s)", cluster.name, stage, status, reason)
    return condition


async def _until_judged(body: Body, progress: Progress, ctx: StageContext) -> Done:
    """``body(progress)``, run again while it fails because nothing answered and the
    reachability judgement is still open; raises ``SiteUnreachable`` once it is reached."""
    while True:
        try:
            return await body(progress)
        except (StageFailed, WerftError) as exc:
            if not _nothing_answered(exc):
                raise
            progress.reach.saw(_as_unreachable(exc))  # raises SiteUnreachable when judged
            pause = min(ctx.timeouts.poll_interval, progress.deadline.remaining())
            if progress.deadline.expired or pause <= 0:
                raise
        await asyncio.sleep(pause)  # the poll interval before probing again


def _nothing_answered(exc: BaseException) -> bool:
    if isinstance(exc, SiteUnreachable):
        return False  # already the judgement
    if isinstance(exc, StageFailed):
        return exc.transient and exc.reason == UNREACHABLE
    return is_unreachable(exc)


def _as_unreachable(exc: BaseException) -> BaseException:
    """A StageFailed(Unreachable) wraps a provider's error; the tracker wants the error."""
    if isinstance(exc, StageFailed):
        return TransientError(str(exc), reason=UNREACHABLE)
    return exc


def default_classify(exc: WerftError, *, transient_reason: str, permanent_reason: str) -> str:
    if isinstance(exc, WaitTimeout):
        return TIMEOUT
    return transient_reason if is_transient(exc) else permanent_reason
