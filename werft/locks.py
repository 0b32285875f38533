"""Per-cluster work locks, so drift remediation and provisioning never work on one cluster
at once -- in one process or across Prefect workers on many machines.

A lock is a lease named ``clusters/<cluster>.lock`` in the store every worker sees
(``werft.statestore``): the file ``<WERFT_HOME>/locks/clusters/<cluster>.lock`` by default,
a row of the SQL store when ``WERFT_STORE_URL`` is set. It holds who took it and until
when, and is created with create-if-absent (``put_if_absent``: of two workers, exactly
one creates it). That is the store the cluster CAs and kubeconfigs live in already, so the
lock needs no new infrastructure, costs one small request, and works the same in tests
and in production.

Why not Prefect concurrency limits keyed by cluster: Prefect hands out slots by polling
(seconds of slack per acquisition, DESIGN.md), a 10,000-cluster fleet would need 10,000
limit objects on the server and a request per cluster per run, and a check of the fleet
would have to ask the server about each cluster to know which ones are busy.

Locks are leases: a holder that died leaves a lease whose ``expires`` has passed (6 h,
longer than any rollout), or -- taken on this machine -- whose process is gone (a run
killed with kill -9: the next run resumes at once); the next taker replaces it with its
own by compare-and-set (``replace_if``: only while it is still the lease it judged
stale), so of two takers exactly one breaks it. A holder re-entering with the same id
(the drift run's remediation calling the provisioning rollout) keeps it; releasing
deletes the lease only while it is still the holder's own (``delete_if``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from werft.statestore import StateBackend, state_backend

DEFAULT_TTL_S = 6 * 3600.0  # longer than any rollout's stage deadlines add up to


class ClusterLocks:
    """Leases on clusters for ``holder``, in ``backend`` -- by default the store of the
    werft home ``home`` (``werft.statestore.state_backend``: the SQL store when
    ``WERFT_STORE_URL`` is set, else ``<home>/locks``)."""

    def __init__(
        self,
        home: Path,
        holder: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        backend: StateBackend | None = None,
    ) -> None:
        self.backend = backend or state_backend("locks", home)
        self.holder = holder
        self.ttl_s = ttl_s

    @staticmethod
    def _name(cluster: str) -> str:
        return f"clusters/{cluster}.lock"

    def holder_of(self, cluster: str) -> str | None:
        """Who holds the cluster now (None: nobody, or a lease that expired)."""
        info = _parse(self.backend.get(self._name(cluster)))
        if info is None or _stale(info):
            return None
        return str(info.get("holder", "?"))

    def busy(self, clusters: Iterable[str]) -> dict[str, str]:
        """The clusters another holder has: name -> holder."""
        found = {c: self.holder_of(c) for c in clusters}
        return {c: h for c, h in found.items() if h is not None and h != self.holder}

    def try_acquire(self, cluster: str) -> bool:
        name = self._name(cluster)
        lease = json.dumps({"holder": self.holder, "host": socket.gethostname(),
                            "pid": os.getpid(), "expires": time.time() + self.ttl_s}).encode()
        for _ in range(3):
            stored = self.backend.put_if_absent(name, lease)
            if stored == lease:
                return True
            info = _parse(stored)
            if info == {}:
                return False  # unreadable: its writer is there; treat as held
            if info is not None and info.get("holder") == self.holder:
                return True
            if info is not None and not _stale(info):
                return False
            if self.backend.replace_if(name, stored, lease):
                return True  # broke the stale lease: exactly one taker does
            # Another taker broke it first, or its holder released it: look again.
        return False

    def acquire(self, clusters: Iterable[str]) -> tuple[list[str], list[str]]:
        """(taken, busy): take every free lock now, without waiting."""
        taken, busy = [], []
        for cluster in clusters:
            (taken if self.try_acquire(cluster) else busy).append(cluster)
        return taken, busy

    async def acquire_waiting(
        self, clusters: Iterable[str], *, wait_s: float, poll_s: float = 1.0
    ) -> tuple[list[str], list[str]]:
        """Take what is free; poll for the rest until ``wait_s`` has passed."""
        taken, pending = self.acquire(clusters)
        deadline = time.monotonic() + wait_s
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
            more, pending = self.acquire(pending)
            taken += more
        return taken, pending

    async def wait_until_free(
        self, clusters: Iterable[str], *, wait_s: float, poll_s: float = 1.0
    ) -> dict[str, str]:
        """Poll until no other holder has any of ``clusters`` or ``wait_s`` has passed;
        the clusters still held then (name -> holder)."""
        names = list(clusters)
        busy = self.busy(names)
        deadline = time.monotonic() + wait_s
        while busy and time.monotonic() < deadline:
            await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
            busy = self.busy(busy)
        return busy

    def release(self, clusters: Iterable[str]) -> None:
        for cluster in clusters:
            name = self._name(cluster)
            stored = self.backend.get(name)
            info = _parse(stored)
            if stored is not None and info is not None and info.get("holder") == self.holder:
                # Only the lease read here: if it expired and another took the cluster
                # since, theirs stays.
                self.backend.delete_if(name, stored)

    @contextmanager
    def holding(self, clusters: Iterable[str]) -> Iterator[list[str]]:
        """Take the free locks for the block; yields the busy clusters (not taken)."""
        taken, busy = self.acquire(clusters)
        try:
            yield busy
        finally:
            self.release(taken)


def _parse(raw: bytes | None) -> dict[str, object] | None:
    """The lease (None: there is none; ``{}``: unreadable -- an empty file that a werft
    from before ``put_if_absent`` created with O_EXCL and is writing this instant)."""
    if raw is None:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _stale(info: dict[str, object]) -> bool:
    """The lease ran out, or its holder was a process on this machine that is gone (a
    run killed with kill -9 must not keep its clusters for hours: the next run resumes)."""
    expires = info.get("expires", 0)
    if not isinstance(expires, int | float) or expires < time.time():
        return True
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False  # another machine's: only its lease tells
    return not _running(pid)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) holds nothing any more
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
