"""The cluster API clients of one run, kept from one stage of a cluster to the next.

A ``KubeClient`` made per stage opened new connections (a TCP and, on real clusters, a
TLS handshake) four times per cluster and parsed its kubeconfig each time; kept, its
connections serve every stage. Kept within bounds: a client nobody is using is closed
once more than ``idle_limit`` such clients are held (the least recently used first), so a
10,000-cluster run does not hold 10,000 clusters' sockets; one in use is never closed
under its user.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from werft.kube import KubeClient

IDLE_LIMIT = 128  # twice an edge tier's default clusters in flight


@dataclass
class _Held:
    kubeconfig: str
    client: KubeClient
    users: int = 0


class KubeClients:
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
