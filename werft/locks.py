"""Per-cluster work locks, so drift remediation and provisioning never work on one cluster
at once -- in one process or across Prefect workers on many machines.

A lock is a file ``<WERFT_HOME>/locks/clusters/<cluster>.lock`` created with
``O_CREAT | O_EXCL`` (create-if-absent: of two workers, exactly one creates it), holding
who took it and until when. WERFT_HOME is already the store every worker sees (cluster
CAs, kubeconfigs: DESIGN.md), so the lock needs no new infrastructure, costs no request,
and works the same in tests and in production (on NFS, O_EXCL is atomic since v3).

Why not Prefect concurrency limits keyed by cluster: Prefect hands out slots by polling
(seconds of slack per acquisition, DESIGN.md), a 10,000-cluster fleet would need 10,000
limit objects on the server and a request per cluster per run, and a check of the fleet
would have to ask the server about each cluster to know which ones are busy.

Locks are leases: a holder that died leaves a file whose ``expires`` has passed (6 h,
longer than any rollout), or -- on the same machine -- whose process is gone (a run killed
with kill -9: the next run resumes at once); the next taker removes it (renaming it aside
first, so of two takers only one removes it) and takes the lock. A holder re-entering
with the same id (the drift run's remediation calling the provisioning rollout) keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_TTL_S = 6 * 3600.0  # longer than any rollout's stage deadlines add up to


class ClusterLocks:
    def __init__(self, home: Path, holder: str, *, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.folder = home / "locks" / "clusters"
        self.holder = holder
        self.ttl_s = ttl_s

    def _path(self, cluster: str) -> Path:
        return self.folder / f"{cluster}.lock"

    def holder_of(self, cluster: str) -> str | None:
        """Who holds the cluster now (None: nobody, or a lease that expired)."""
        info = self._read(self._path(cluster))
        if info is None or _stale(info):
            return None
        return str(info.get("holder", "?"))

    def busy(self, clusters: Iterable[str]) -> dict[str, str]:
        """The clusters another holder has: name -> holder."""
        found = {c: self.holder_of(c) for c in clusters}
        return {c: h for c, h in found.items() if h is not None and h != self.holder}

    def try_acquire(self, cluster: str) -> bool:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(cluster)
        body = json.dumps({"holder": self.holder, "host": socket.gethostname(),
                           "pid": os.getpid(), "expires": time.time() + self.ttl_s})
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                info = self._read(path)
                if info == {}:
                    return False  # being written this instant: held
                if info is not None and info.get("holder") == self.holder:
                    return True
                if info is not None and not _stale(info):
                    return False
                self._break(path, info)
                continue
            with os.fdopen(fd, "w") as out:
                out.write(body)
            return True
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
            path = self._path(cluster)
            info = self._read(path)
            if info is not None and info.get("holder") == self.holder:
                path.unlink(missing_ok=True)

    @contextmanager
    def holding(self, clusters: Iterable[str]) -> Iterator[list[str]]:
        """Take the free locks for the block; yields the busy clusters (not taken)."""
        taken, busy = self.acquire(clusters)
        try:
            yield busy
        finally:
            self.release(taken)

    def _break(self, path: Path, seen: dict[str, object] | None) -> None:
        """Remove an expired lease. Renaming is atomic: of two takers one gets the file;
        if what it got is not the lease it judged expired, it puts it back."""
        aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        if seen is not None and self._read(aside) != seen:
            with contextlib.suppress(FileExistsError):  # someone created a new lock since
                os.link(aside, path)
        aside.unlink(missing_ok=True)

    @staticmethod
    def _read(path: Path) -> dict[str, object] | None:
        try:
            info = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {}  # half written: its writer is there; treat as held until it expires
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
