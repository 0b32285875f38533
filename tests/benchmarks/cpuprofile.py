"""A CPU-weighted sampling profiler over every thread of this process, for benchmarks.

Why not cProfile: it profiles one thread, counts time blocked in ``recv`` or a queue as
time spent, and doubles the cost of every Python call (a 300-site rollout took 6x as
long under it). This sampler wakes ``HZ`` times a second, reads each thread's CPU time
from ``/proc/self/task/<tid>/stat`` (in clock ticks; ``pthread_getcpuclockid`` would be
finer, but asking it about a thread that has just ended is undefined behaviour and
crashed the process) and charges the CPU that thread used since the last wake-up to the
stack it is in now: a thread waiting on a socket or a lock uses no CPU and is charged
nothing. Statistical, like any sampler: shares are meaningful over many samples, single
lines are not.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

HZ = 100
ROOT = Path(__file__).resolve().parents[2]
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
# Where a frame's file lives, by the first path fragment that matches.
CATEGORIES = (
    ("werft/sim/", "simulator (werft/sim)"),
    ("werft/render/", "werft rendering + PKI (werft/render)"),
    ("werft/stages/", "werft stages"),
    ("/werft/", "werft (other)"),
    ("/flows/", "werft flows"),
    ("/tasks/", "werft tasks"),
    ("/prefect/", "Prefect client"),
    ("/kubernetes/", "kubernetes client"),
    ("/urllib3/", "urllib3 (kubernetes client's HTTP)"),
    ("/httpx/", "httpx"),
    ("/httpcore/", "httpcore"),
    ("/h11/", "h11"),
    ("/uvicorn/", "uvicorn (simulator's server)"),
    ("/starlette/", "starlette (simulator's app)"),
    ("/yaml/", "PyYAML"),
    ("/cryptography/", "cryptography"),
    ("/pydantic", "pydantic"),
    ("/sqlalchemy/", "sqlalchemy"),
    ("/asyncio/", "asyncio"),
    ("/anyio/", "anyio"),
)


def category(filename: str) -> str:
    for fragment, name in CATEGORIES:
        if fragment in filename:
            return name
    return "stdlib/other" if "python3" in filename else f"other ({os.path.basename(filename)})"


def _where(frame: FrameType) -> str:
    code = frame.f_code
    return f"{_short(code.co_filename)}:{code.co_firstlineno}({code.co_name})"


def _short(filename: str) -> str:
    """The path from the package on: ``prefect/flow_engine.py``, ``werft/kube.py``."""
    for marker in ("site-packages/", f"{ROOT}/", "lib/python3."):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker == "lib/python3." else rest
    return filename


@dataclass
class Profile:
    own: Counter[str] = field(default_factory=Counter)  # CPU s in the function itself
    inclusive: Counter[str] = field(default_factory=Counter)  # CPU s under the function
    by_category: Counter[str] = field(default_factory=Counter)  # by the leaf's package
    cpu_s: float = 0.0
    samples: int = 0

    def charge(self, frame: FrameType, cpu: float) -> None:
        self.samples += 1
        self.cpu_s += cpu
        self.own[_where(frame)] += cpu
        self.by_category[category(frame.f_code.co_filename)] += cpu
        seen = set()
        walk: FrameType | None = frame
        while walk is not None:
            where = _where(walk)
            if where not in seen:
                seen.add(where)
                self.inclusive[where] += cpu
            walk = walk.f_back

    def report(self, top: int = 40) -> str:
        def table(counter: Counter[str], title: str) -> list[str]:
            lines = [f"== {title}", f"{'CPU s':>8} {'share':>6}  where"]
            for where, seconds in counter.most_common(top):
                lines.append(f"{seconds:8.2f} {seconds / self.cpu_s:6.1%}  {where}")
            return [*lines, ""]

        head = [f"{self.cpu_s:.1f} CPU s in {self.samples} samples at {HZ} Hz", ""]
        return "\n".join(
            head
            + table(self.by_category, "by package of the running function (own CPU)")
            + table(self.own, "by function, own CPU (where the CPU is spent)")
            + table(self.inclusive, "by function, inclusive CPU (which calls it is spent under)")
        )


@contextmanager
def sampling() -> Iterator[Profile]:
    profile = Profile()
    stop = threading.Event()
    last: dict[int, float] = {}
    stat_fds: dict[int, int] = {}  # native thread id -> its open /proc stat file

    def cpu_of(native_id: int) -> float | None:
        try:
            if native_id not in stat_fds:
                stat_fds[native_id] = os.open(f"/proc/self/task/{native_id}/stat", os.O_RDONLY)
            data = os.pread(stat_fds[native_id], 1024, 0)
        except OSError:
            return None  # the thread ended in between
        # After the command name in parentheses: state is field 3, utime 14, stime 15.
        fields = data.rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * TICK_S

    def run() -> None:
        while not stop.wait(1 / HZ):
            native = {t.ident: t.native_id for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                native_id = native.get(ident)
                if ident == sampler.ident or native_id is None:
                    continue
                now = cpu_of(native_id)
                if now is None:
                    continue
                used = now - last.get(native_id, now)
                last[native_id] = now
                if used > 0:
                    profile.charge(frame, used)

    sampler = threading.Thread(target=run, name="cpu-sampler", daemon=True)
    sampler.start()
    try:
        yield profile
    finally:
        stop.set()
        sampler.join()
        for fd in stat_fds.values():
            os.close(fd)
