"""What a run keeps per cluster from one stage to the next, within bounds.

Every stage of every cluster needs the cluster's PKI, its admin kubeconfig and an API
client. Read from the store, rendered and made afresh four times per cluster, they were
the largest werft-side CPU item of a rollout; kept for the run, they are made once.

``Recent``: the PKI and kubeconfigs, the ``limit`` most recently used clusters' (a
10,000-cluster run does not hold them all; an evicted one is read from the store again),
and the add-on objects rendered for the clusters in flight (the add-on stage and verify
render them once between them; an evicted cluster's are rendered again).

``KubeClients``: the API clients. A ``KubeClient`` made per stage opened new connections
(a TCP and, on real clusters, a TLS handshake) four times per cluster and parsed its
kubeconfig each time; kept, its connections serve every stage. Kept within bounds: a
client nobody is using is closed once more than ``idle_limit`` such clients are held
(the least recently used first), so a 10,000-cluster run does not hold 10,000 clusters'
sockets; one in use is never closed under its user.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from werft.kube import KubeClient

IDLE_LIMIT = 128  # twice an edge tier's default clusters in flight
RECENT_LIMIT = 1024

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recent(Generic[K, V]):
    """A mapping that keeps its ``limit`` most recently used entries; safe to use from
    the threads stages hand blocking work to."""

    def __init__(self, limit: int = RECENT_LIMIT) -> None:
        self.limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> V:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _Held:
    kubeconfig: str
    client: KubeClient
    users: int = 0


class KubeClients:
    """The run's cluster API clients, by cluster (see the module's docstring)."""

    def __init__(self, idle_limit: int = IDLE_LIMIT) -> None:
        self.idle_limit = idle_limit
        self._held: OrderedDict[str, _Held] = OrderedDict()  # by cluster, least recent first

    @contextlib.contextmanager
    def using(
        self, cluster: str, kubeconfig: str, make: Callable[[str], KubeClient]
    ) -> Iterator[KubeClient]:
        """The cluster's client for ``kubeconfig`` (made with ``make`` when there is none,
        or the kubeconfig changed), held for the block."""
        held = self._held.get(cluster)
        if held is None or held.kubeconfig != kubeconfig:
            if held is not None and held.users == 0:
                held.client.close()
            held = _Held(kubeconfig, make(kubeconfig))
            self._held[cluster] = held
        self._held.move_to_end(cluster)
        held.users += 1
        try:
            yield held.client
        finally:
            held.users -= 1
            if self._held.get(cluster) is not held and held.users == 0:
                held.client.close()  # replaced while in use: its last user closes it
            self._close_surplus()

    def close(self) -> None:
        for held in self._held.values():
            held.client.close()
        self._held.clear()

    def _close_surplus(self) -> None:
        idle = [name for name, held in self._held.items() if held.users == 0]
        for name in idle[: max(0, len(idle) - self.idle_limit)]:
            self._held.pop(name).client.close()
