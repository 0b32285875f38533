"""Simulated time. Delays are given in "real" seconds and divided by the time scale.

State changes are evaluated lazily, when something looks (``clock.elapsed(since) >=
delay``), instead of by background timers: 10,000 idle clusters then cost no CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Delays:
    """How long things take on real hardware, in seconds, before scaling."""

    post: float = 30.0  # power on -> firmware done, boots the override device
    install: float = 240.0  # OS installation from the virtual media
    api_up: float = 60.0  # first control plane installed -> API answers /readyz
    node_join: float = 20.0  # node installed (and API up) -> Node object registered
    node_ready: float = 30.0  # Node registered -> kubelet posting status (Ready needs a CNI)
    workload_available: float = 20.0  # Deployment/DaemonSet/StatefulSet applied -> Available
    media_fetch: float = 5.0  # BMC downloads an image for InsertMedia


@dataclass
class Clock:
    """``time_scale`` 60 makes a 4-minute install take 4 seconds."""

    time_scale: float = 1.0
    delays: Delays = field(default_factory=Delays)

    def now(self) -> float:
        return time.monotonic()

    def scaled(self, seconds: float) -> float:
        return seconds / self.time_scale

    def passed(self, since: float | None, delay: float) -> bool:
        """Has the scaled ``delay`` passed since the monotonic instant ``since``?"""
        return since is not None and self.now() - since >= self.scaled(delay)
