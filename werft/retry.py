"""Retry at the request: one policy for every idempotent call werft makes.

Edge links and BMCs fail a few percent of requests as a matter of course. Retrying a
whole stage cannot outlast that (a stage makes dozens of requests), so each *idempotent*
request -- a GET, a server-side apply, a Redfish PATCH of a setting -- is retried where it
is made: exponential backoff with full jitter (so a thousand clusters that failed together
do not retry together), ``Retry-After`` honoured, and never past the caller's deadline.

Requests that are not idempotent (``ComputerSystem.Reset``, ``InsertMedia``) never go
through here: their callers observe first, then decide.

A failure is retried when it is a ``TransientError`` whose ``retry`` says so; its
``cause`` (``503``, ``timeout``, ``connection refused`` ...) is counted in ``STATS`` (the
process) and in the counter of the run it was made for (``counting_retries``), so a run
can print "requests retried, by cause" without counting another run's in the same process.

The deadline reaches every client through ``request_deadline``, a context variable the
running stage sets once (``werft.stages.result.run_stage``): providers and the kube client
stay free of deadline parameters, and the calls for every machine and object of a stage
inherit it through ``asyncio.gather``, ``asyncio.to_thread`` and the kube thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from werft.errors import TransientError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently one request is retried.

    The defaults outlast a 10% transient fault rate by a wide margin (six tries all
    failing: one in a million) and cost a few seconds at most on a dead endpoint, where
    the stage's own deadline and deferral take over.
    """

    attempts: int = 6  # tries in all, the first included
    base: float = 0.1  # the first backoff's ceiling, seconds
    cap: float = 4.0  # no single backoff longer than this
    max_retry_after: float = 30.0  # a server asking for longer is not waited for here

    def backoff(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based): full jitter over an
        exponential ceiling, or the server's ``Retry-After`` when it gave one."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.cap, self.base * (2 ** (retry - 1)))
        return random.uniform(ceiling / 2, ceiling)


DEFAULT = RetryPolicy()
NEVER = RetryPolicy(attempts=1)


class RetryStats:
    """Requests retried in this process, by cause; thread-safe (the kube client retries on
    its thread pool)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, cause: str) -> None:
        with self._lock:
            self._counts[cause] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


STATS = RetryStats()

_deadline: ContextVar[float | None] = ContextVar("werft_request_deadline", default=None)
_run_stats: ContextVar[RetryStats | None] = ContextVar("werft_run_retries", default=None)


@contextlib.contextmanager
def counting_retries() -> Iterator[RetryStats]:
    """The retries of the requests made within this block, and of whatever it starts
    (tasks, threads of the kube pool: they inherit the context); another run in the same
    process counts its own."""
    stats = RetryStats()
    token = _run_stats.set(stats)
    try:
        yield stats
    finally:
        _run_stats.reset(token)


@contextlib.contextmanager
def request_deadline(instant: float | None) -> Iterator[None]:
    """Within this block, requests are retried only until ``instant`` (a
    ``time.monotonic()`` value, e.g. ``Deadline.instant`` of the running stage)."""
    token = _deadline.set(instant)
    try:
        yield
    finally:
        _deadline.reset(token)


def current_deadline() -> float | None:
    return _deadline.get()


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds: delta-seconds or an HTTP date; None when absent
    or unreadable (the backoff applies then)."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransientError) and getattr(exc, "retry", True)


def _cause(exc: BaseException) -> str:
    return str(getattr(exc, "cause", None) or getattr(exc, "reason", None) or type(exc).__name__)


def _wait_for(
    exc: BaseException, retry: int, policy: RetryPolicy, deadline: float | None
) -> float | None:
    """Seconds to sleep before the next try, or None when the caller must give up."""
    if retry >= policy.attempts or not retryable(exc):
        return None
    pause = policy.backoff(retry, getattr(exc, "retry_after", None))
    if deadline is not None and time.monotonic() + pause >= deadline:
        return None
    cause = _cause(exc)
    STATS.add(cause)
    run = _run_stats.get()
    if run is not None:
        run.add(cause)
    return pause


async def retry_async(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy = DEFAULT,
    deadline: float | None = None,
) -> T:
    """``await call()``, retried on transient failures; ``deadline`` is a
    ``time.monotonic()`` instant no backoff may cross (default: ``current_deadline()``).
    The last error propagates."""
    deadline = deadline if deadline is not None else current_deadline()
    retry = 0
    while True:
        try:
            return await call()
        except TransientError as exc:
            retry += 1
            pause = _wait_for(exc, retry, policy, deadline)
            if pause is None:
                raise
        await asyncio.sleep(pause)


def retry_sync(
    call: Callable[[], T],
    *,
    policy: RetryPolicy = DEFAULT,
    deadline: float | None = None,
) -> T:
    """``call()`` retried like ``retry_async``, for code on a worker thread."""
    deadline = deadline if deadline is not None else current_deadline()
    retry = 0
    while True:
        try:
            return call()
        except TransientError as exc:
            retry += 1
            pause = _wait_for(exc, retry, policy, deadline)
            if pause is None:
                raise
        time.sleep(pause)
