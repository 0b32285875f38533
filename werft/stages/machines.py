"""Provider calls over a cluster's machines, shared by the stages that act on machines
(infrastructure: ensure / power_on; bootstrap: release).

Every machine concurrently; each one's mutating calls counted into the stage's
``Progress`` even when the call fails; the most telling error first; the reason a
provider gave its error kept for the Condition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from werft.errors import GENERIC_REASONS, PermanentError, TransientError, WerftError, is_transient
from werft.inventory.model import Machine
from werft.providers.base import Provider
from werft.stages.context import StageContext
from werft.stages.result import Progress

T = TypeVar("T")


async def each(
    machines: Sequence[Machine], call: Callable[[Machine], Awaitable[T]]
) -> tuple[dict[Machine, T], list[BaseException]]:
    """``call`` for every machine concurrently: the results that came back, the errors."""
    outcomes = await asyncio.gather(*(call(m) for m in machines), return_exceptions=True)
    results: dict[Machine, T] = {}
    errors: list[BaseException] = []
    for machine, outcome in zip(machines, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            errors.append(outcome)
        else:
            results[machine] = outcome
    return results, errors


async def act_on_each(
    machines: Sequence[Machine],
    ctx: StageContext,
    progress: Progress,
    act: Callable[[Provider, Machine], Awaitable[int]],
) -> list[BaseException]:
    """``act(provider, machine)`` for every machine concurrently; the errors. The mutating
    calls each provider sent are added to ``progress``, also for the calls of an ``act``
    that failed part-way (they changed the machine all the same)."""

    async def one(machine: Machine) -> int:
        async with ctx.provider(machine) as provider:
            with progress.counting(provider, machine):
                return await act(provider, machine)

    _, errors = await each(machines, one)
    return errors


def worst(errors: Sequence[BaseException]) -> BaseException | None:
    """The most telling error: a bug, then a permanent failure ("wrong password" must not
    hide behind "machine 3 was slow"), then a transient one."""
    if not errors:
        return None
    for error in errors:
        if not isinstance(error, WerftError):
            return error
    return next((e for e in errors if not isinstance(e, TransientError)), errors[0])


def raise_worst(errors: Sequence[BaseException]) -> None:
    error = worst(errors)
    if error is not None:
        raise error


def provider_reason(exc: BaseException, *, transient: str, permanent: str) -> str:
    """The Condition reason for a provider's error: the one it was classified with at the
    source (``werft.providers.errors``), else the stage's words for a transient or
    permanent failure."""
    if isinstance(exc, TransientError | PermanentError) and exc.reason not in GENERIC_REASONS:
        return exc.reason
    return transient if is_transient(exc) else permanent
