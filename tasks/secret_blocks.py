"""Prefect Secret blocks as a backend of ``werft.secrets``.

werft looks for a ``credentialsRef`` in the environment and the local store first; this
backend adds Prefect Secret blocks, so a team can keep BMC credentials in the Prefect
server (`prefect block create secret`, or the UI: Blocks -> Secret) instead of on the
machine that runs the flow. Block names allow only ``[a-z0-9-]``, so ``bmc_fra1.lab`` is
looked up as the block ``bmc-fra1-lab``.

A value found is cached for ``CACHE_SECONDS`` (a batch of a hundred machines behind one
BMC credential asks the server once, not a hundred times) and dropped early by
``werft.secrets.invalidate`` after the endpoint refused it, so a rotated password is
picked up within minutes, or at the next attempt after a 401, without restarting the
worker. A missing block is asked again next time, so creating it fixes the next attempt.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from prefect.blocks.system import Secret

from werft import secrets
from werft.redact import register_secret

CACHE_SECONDS = 300.0


class _TimedCache:
    """ref -> (value, monotonic time it was read); entries older than ``ttl`` are misses."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._values: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, ref: str) -> str | None:
        with self._lock:
            hit = self._values.get(ref)
            if hit is None:
                return None
            if self._clock() - hit[1] >= self.ttl:
                del self._values[ref]
                return None
            return hit[0]

    def put(self, ref: str, value: str) -> None:
        with self._lock:
            self._values[ref] = (value, self._clock())

    def drop(self, ref: str) -> None:
        with self._lock:
            self._values.pop(ref, None)


_cache = _TimedCache(CACHE_SECONDS)


def block_name(ref: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", ref.lower())


def read_block(ref: str) -> str | None:
    """The block's value from the Prefect server, uncached; None when there is none."""
    try:
        block = Secret.load(block_name(ref), _sync=True)  # type: ignore[call-overload]
    except ValueError:  # "Unable to find block document named ..."
        return None
    value = str(block.get())
    register_secret(value)
    return value


def secret_block(ref: str) -> str | None:
    value = _cache.get(ref)
    if value is not None:
        return value
    value = read_block(ref)
    if value is not None:
        _cache.put(ref, value)
    return value


def forget(ref: str) -> None:
    """Drop the cached value of ``ref`` (``werft.secrets.invalidate`` calls this)."""
    _cache.drop(ref)


def use_secret_blocks() -> None:
    """Register the backend (idempotent)."""
    secrets.register_backend(secret_block, invalidate=forget)
