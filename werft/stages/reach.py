"""Is a site unreachable, or did it blink? A judgement over persistence, not one error.

Edge WAN links drop a connection now and then; a site whose link is down refuses or times
out every connection for minutes. Only the second is *Unreachable* (and, in tiers that
defer, Deferred to the next run). So a stage judges reachability over time:

- an *unreachable* failure is one where nothing answered: connection refused, reset or
  lost, a timeout, DNS. A 5xx is an answer (the site is there, its server is busy);
- the site is judged unreachable when such failures have followed each other, with no
  answer in between, for at least the grace period (the tier's ``deferAfter``) and over
  at least ``STRIKES`` observations -- the first refused connection and a probe again;
- then the stage raises ``SiteUnreachable`` (reason ``Unreachable``, transient), at any
  stage, within a poll interval or two of the grace running out, not at the deadline.

Every stage gets a ``Reachability`` on its ``Progress`` (``progress.reach``); wait loops
feed it what each probe saw: ``progress.reach.saw(exc)`` after a failed probe,
``progress.reach.saw(None)`` after an answer (``failure_of`` turns a probe into either).
``run_stage`` feeds it the errors a stage body raises and runs the body again while the
judgement is open. While a cluster's API has not come up yet, refusing connections is
normal (its machine is installing): a wait for the API asks the site's BMC or hypervisor
instead (``site_failure``), so only a site that does not answer there either is lost.

The grace comes from the batch being run (``grace_for_batch``), set by whoever runs the
batch from the tier's rollout policy; a stage run on its own uses ``DEFAULT_GRACE_POLLS``
poll intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from werft.errors import GENERIC_REASONS, TransientError, WerftError
from werft.kube import WaitTimeout

if TYPE_CHECKING:
    from werft.inventory.resolved import ResolvedCluster
    from werft.stages.context import StageContext

UNREACHABLE = "Unreachable"

# Observations in a row, the first failure included, before a site can be unreachable:
# with request-level retries under each, a blip cannot fill them.
STRIKES = 2
# Without a tier policy (a stage run on its own): this many poll intervals of grace.
DEFAULT_GRACE_POLLS = 3

# Words in what the wire said (``TransientError.cause``: "connection refused", "timed
# out", "ConnectionResetError" ...) or, for errors raised without a cause, in the message,
# when nothing answered. Status codes ("503") never match: they are answers.
_NOTHING_ANSWERED = (
    "refused",
    "reset",
    "connection lost",
    "connection failed",
    "cannot connect",
    "connectionerror",
    "brokenpipe",
    "timed out",
    "timeout",
    "unreachable",
    "name resolution",
    "dns",
)

_grace: ContextVar[float | None] = ContextVar("werft_unreachable_grace", default=None)


@contextlib.contextmanager
def grace_for_batch(seconds: float | None) -> Iterator[None]:
    """Stages started inside the block judge unreachability over ``seconds``."""
    token = _grace.set(seconds)
    try:
        yield
    finally:
        _grace.reset(token)


def current_grace(poll_interval: float) -> float:
    grace = _grace.get()
    return DEFAULT_GRACE_POLLS * poll_interval if grace is None else grace


def is_unreachable(exc: BaseException | None) -> bool:
    """Did nothing answer? (refused, reset, lost, timed out, DNS -- not a 5xx, not a wait
    that ran out)."""
    if not isinstance(exc, TransientError) or isinstance(exc, WaitTimeout):
        return False
    if exc.reason == UNREACHABLE:
        return True
    cause = getattr(exc, "cause", None)
    if not cause and exc.reason not in GENERIC_REASONS:
        return False  # classified at the source as something else ("ProviderError": a 5xx)
    # Without a cause, the message: a server's own text could only mislead if the error
    # had been raised for an answer, and those carry their status as the cause.
    text = str(cause if cause else exc).lower()
    return any(words in text for words in _NOTHING_ANSWERED)


async def failure_of(call: Callable[[], Awaitable[object]]) -> BaseException | None:
    """Ask once: None when ``call()`` got an answer (any status), else the transient
    error it failed with. For wait loops whose own probe says only yes or no."""
    try:
        await call()
    except TransientError as exc:
        return exc
    except WerftError:
        return None  # a permanent error is an answer too (401, 404 ...)
    return None


async def site_failure(
    cluster: ResolvedCluster, ctx: StageContext, within: float | None = None
) -> BaseException | None:
    """Does the site answer at all? One read-only look at the power of the cluster's first
    machine through its BMC or hypervisor, given at most ``within`` seconds (the stage's time
    left; by default one HTTP timeout): None when it answered, else the error."""
    machine = cluster.machines[0]
    limit = ctx.timeouts.http if within is None else max(within, 0.0)
    try:
        async with asyncio.timeout(limit):
            failure = await failure_of(
                lambda: ctx.with_provider(machine, lambda p: p.observe_power(machine))
            )
    except TimeoutError:
        failure = TransientError(f"{machine.name}: no answer within {limit:.3g}s", cause="timeout")
    if failure is not None and is_unreachable(failure):
        # Said so for Reachability.saw, whatever words the provider used.
        return TransientError(str(failure), reason=UNREACHABLE)
    return failure


class SiteUnreachable(TransientError):
    """The judgement: nothing answered for the grace period. Final for this stage run."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason=UNREACHABLE, cause="unreachable", retry=False)


# The two ways werft reaches a site: its cluster's API, and its machines' BMCs or
# hypervisor. Each is judged on its own: an API answering says nothing about a BMC.
API = "api"
MACHINES = "machines"


def endpoint_of(exc: BaseException) -> str:
    """Which way an error came: providers name their failures (``reason``), the kube
    client says what the wire did (``cause``)."""
    return MACHINES if getattr(exc, "reason", None) == UNREACHABLE else API


@dataclass
class _Streak:
    since: float  # monotonic time of the first failure of the streak
    strikes: int = 1
    last: str = ""


@dataclass
class Reachability:
    """Unreachable failures in a row, per endpoint, for one cluster in one stage run."""

    cluster: str
    grace: float
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _streaks: dict[str, _Streak] = field(default_factory=dict, repr=False)

    def saw(self, exc: BaseException | None, via: str | None = None) -> None:
        """Record one probe of ``via`` (API or MACHINES; by default where ``exc`` came
        from, else the API): an answer -- ``None``, or any error that is one -- ends that
        endpoint's streak; an unreachable failure adds to it, and raises
        ``SiteUnreachable`` once it has lasted the grace period."""
        endpoint = via or (endpoint_of(exc) if exc is not None else API)
        if not is_unreachable(exc):
            self._streaks.pop(endpoint, None)
            return
        streak = self._streaks.get(endpoint)
        if streak is None:
            streak = self._streaks[endpoint] = _Streak(self._now(), 0)
        streak.strikes += 1
        streak.last = str(exc)
        if self._judged(streak):
            raise SiteUnreachable(
                f"cluster {self.cluster}: unreachable for {self._now() - streak.since:.3g}s "
                f"({streak.strikes} probes in a row, grace {self.grace:g}s): {streak.last}"
            )

    @property
    def open(self) -> bool:
        """Failures seen, judgement not reached yet: worth probing again."""
        return bool(self._streaks) and not self.persistent

    @property
    def persistent(self) -> bool:
        return any(self._judged(s) for s in self._streaks.values())

    def unreachable_for(self) -> float:
        """The longest current streak, in seconds (0 when everything answered last)."""
        now = self._now()
        return max((now - s.since for s in self._streaks.values()), default=0.0)

    def _judged(self, streak: _Streak) -> bool:
        return streak.strikes >= STRIKES and self._now() - streak.since >= self.grace

    def _now(self) -> float:
        return self.clock()
