"""Request counters: how many calls werft made, and how many of them could change something.

Tests assert "a re-run on a finished fleet makes zero mutating calls" with these. Requests
to the admin API (/_sim) are never counted.
"""

from __future__ import annotations

from collections import Counter

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TARGETS = ("bmc", "hypervisor", "clusters")


class Stats:
    __slots__ = ("_by_target", "_mutations", "requests")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self._by_target: dict[str, Counter[str]] = {t: Counter() for t in TARGETS}
        self._mutations: dict[str, Counter[str]] = {t: Counter() for t in TARGETS}

    def record(self, target: str | None, name: str | None, method: str) -> None:
        """Count one request; ``target`` is "bmc", "hypervisor", "clusters" or None."""
        self.requests += 1
        if target is None or name is None:
            return
        self._by_target[target][name] += 1
        if method in MUTATING:
            self._mutations[target][name] += 1

    def mutations(self, target: str, name: str) -> int:
        return self._mutations[target][name]

    def snapshot(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "mutations": {t: dict(c) for t, c in self._mutations.items()},
            "requestsByTarget": {t: dict(c) for t, c in self._by_target.items()},
        }
