"""Turning a stage's work into exactly one Condition, whatever happens.

A stage body does its work and returns ``Done``; it raises ``StageFailed`` for failures
it understands (nodes not Ready, an add-on not Available) and lets werft errors from
providers and clients propagate. ``run_stage`` catches everything for the cluster,
enforces the cluster's deadline, and never lets one cluster's failure escape into the
batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from werft.conditions import Condition, ConditionType, Status
from werft.errors import WerftError, is_transient
from werft.inventory.resolved import ResolvedCluster
from werft.kube import WaitTimeout
from werft.render.pki import secret_name
from werft.stages.context import Deadline, StageContext

if TYPE_CHECKING:
    from werft.inventory.model import Machine
    from werft.providers.base import Provider

log = logging.getLogger("werft.stages")

INTERNAL_ERROR = "InternalError"
TIMEOUT = "Timeout"
UNREACHABLE = "Unreachable"


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
    progress = Progress(Deadline(ctx.timeouts.deadline(stage)))
    # The body watches its own deadline and says what it was waiting for; this hard
    # stop (a little later, so an in-flight request can finish) catches anything that
    # does not, such as a provider call that hangs.
    hard_stop = progress.deadline.seconds + ctx.timeouts.http + 1.0
    status: Status = "False"
    transient = False
    try:
        async with asyncio.timeout(hard_stop):
            done = await body(progress)
        status, reason, message = done.status, done.reason, done.message
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
        message = _redact(f"{type(exc).__name__}: {exc}", cluster, ctx)
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


def default_classify(exc: WerftError, *, transient_reason: str, permanent_reason: str) -> str:
    if isinstance(exc, WaitTimeout):
        return TIMEOUT
    return transient_reason if is_transient(exc) else permanent_reason


def _redact(text: str, cluster: ResolvedCluster, ctx: StageContext) -> str:
    """An unexpected exception's text may quote anything; strip the cluster's tokens."""
    for item in ("admin-token", "bootstrap-token"):
        try:
            value = ctx.secrets.get(secret_name(cluster.name, item))
        except (OSError, ValueError):
            value = None
        if value and value.strip():
            text = text.replace(value.strip(), "***")
    return text[:500]
