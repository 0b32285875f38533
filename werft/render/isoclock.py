"""A pinned clock for pycdlib, so the ISO images werft builds are byte-deterministic.

pycdlib stamps volume descriptors, directory records and Rock Ridge entries with
``time.time()`` (some of them only when the image is written) and renders them in local
time. It has no option for a fixed date (like genisoimage's SOURCE_DATE_EPOCH), so
werft replaces the ``time`` name inside pycdlib's modules with a proxy that behaves like
the real module except inside ``pinned_clock()``: there, on that thread only, ``time()``
returns a fixed instant and ``localtime`` is UTC. Other threads and other users of pycdlib
see the real clock, so the swap is safe under concurrent seed builds.
"""

from __future__ import annotations

import threading
import time as _time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

# 2024-01-01T00:00:00Z: any fixed instant works; a plausible one keeps tools from warning.
PINNED_EPOCH = 1_704_067_200.0


class _ClockProxy:
    def __init__(self, real: ModuleType) -> None:
        self._real = real
        self._state = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    @property
    def pinned(self) -> float | None:
        return getattr(self._state, "epoch", None)

    def time(self) -> float:
        epoch = self.pinned
        return self._real.time() if epoch is None else epoch

    def localtime(self, secs: float | None = None) -> _time.struct_time:
        epoch = self.pinned
        if epoch is None:
            return self._real.localtime(secs)
        return self._real.gmtime(epoch if secs is None else secs)


_proxy = _ClockProxy(_time)
_installed = False
_install_lock = threading.Lock()


def _install() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        # The modules of pycdlib that read the clock (`import time` at their top).
        from pycdlib import dates, headervd, pycdlib, rockridge, utils

        for module in (dates, headervd, pycdlib, rockridge, utils):
            if getattr(module, "time", None) is _time:
                module.time = _proxy  # type: ignore[attr-defined]
        _installed = True


@contextmanager
def pinned_clock(epoch: float = PINNED_EPOCH) -> Iterator[None]:
    """Within this block (on this thread), pycdlib sees ``epoch`` as now, in UTC."""
    _install()
    previous = _proxy.pinned
    _proxy._state.epoch = epoch
    try:
        yield
    finally:
        _proxy._state.epoch = previous
