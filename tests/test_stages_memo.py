"""What a run keeps per cluster from stage to stage: bounded; a client never closed in use."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from tests.renderfixtures import SAMPLE_INVENTORY
from werft.inventory.load import load_inventory
from werft.kube import KubeClient
from werft.render.addons import render_addon_objects
from werft.stages.context import StageContext
from werft.stages.memo import IDLE_LIMIT, KubeClients, Recent


class _Client:
    """Stands in for a KubeClient: the cache only makes, hands out and closes clients."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.closed = False

    def close(self) -> None:
        assert not self.closed, "closed twice"
        self.closed = True


def _make(made: list[_Client]) -> Any:
    def make(kubeconfig: str) -> KubeClient:
        made.append(_Client(kubeconfig))
        return cast(KubeClient, made[-1])

    return make


def test_a_cluster_keeps_its_client_from_one_stage_to_the_next() -> None:
    made: list[_Client] = []
    clients = KubeClients()
    with clients.using("edge-1", "config-a", _make(made)) as first:
        pass
    with clients.using("edge-1", "config-a", _make(made)) as second:
        assert second is first
    assert len(made) == 1 and not made[0].closed
    clients.close()
    assert made[0].closed


def test_a_new_kubeconfig_gets_a_new_client_and_the_old_one_is_closed_by_its_last_user() -> None:
    made: list[_Client] = []
    clients = KubeClients()
    with clients.using("edge-1", "config-a", _make(made)) as old:
        with clients.using("edge-1", "config-b", _make(made)) as new:
            assert new is not old and not cast(_Client, old).closed  # still in use
        assert not cast(_Client, new).closed
    assert cast(_Client, old).closed and not cast(_Client, new).closed


def test_idle_clients_beyond_the_limit_are_closed_least_recent_first_never_one_in_use() -> None:
    made: list[_Client] = []
    clients = KubeClients(idle_limit=2)
    with clients.using("busy", "config", _make(made)):
        for name in ("a", "b", "c", "d"):
            with clients.using(name, "config", _make(made)):
                pass
        busy, *others = made  # made in the order asked for
        assert not busy.closed  # in use all along, however old
        assert [c.closed for c in others] == [True, True, False, False]


def test_recent_keeps_the_most_recently_used_entries() -> None:
    recent: Recent[str, int] = Recent(limit=2)
    recent.put("a", 1)
    recent.put("b", 2)
    assert recent.get("a") == 1  # used: now the most recent
    recent.put("c", 3)
    assert (recent.get("a"), recent.get("b"), recent.get("c")) == (1, None, 3)


def test_recent_is_safe_from_the_threads_stages_hand_blocking_work_to() -> None:
    # Stages read the PKI and kubeconfig in threads (asyncio.to_thread) while the
    # infrastructure stage replaces them: a plain dict rebuilt during an insert from
    # another thread raised "dictionary changed size during iteration" (3 clusters of a
    # 10,000-site run failed so).
    recent: Recent[int, int] = Recent(limit=64)

    def churn(offset: int) -> None:
        for i in range(20_000):
            key = (i * 7 + offset) % 256
            recent.put(key, i)
            recent.get((key + 1) % 256)

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(churn, n) for n in range(4)]:
            future.result()  # raises what the thread raised
    assert len(recent) <= recent.limit


def test_a_clusters_add_ons_are_rendered_once_while_it_is_in_flight(tmp_path: Path) -> None:
    inventory = load_inventory(SAMPLE_INVENTORY)
    clusters = list(inventory.clusters.values())
    assert len(clusters) > IDLE_LIMIT + 1
    ctx = StageContext.for_inventory(
        inventory, werft_home=tmp_path / ".werft", artifacts_dir=tmp_path / "artifacts"
    )
    try:
        first = ctx.addon_objects(clusters[0])
        assert ctx.addon_objects(clusters[0]) is first  # the add-on stage's, for verify
        fresh = render_addon_objects(clusters[0], inventory)
        assert [item.obj for item in first] == [item.obj for item in fresh] != []

        for cluster in clusters[1 : IDLE_LIMIT + 1]:  # a run moves on to other clusters
            ctx.addon_objects(cluster)
        again = ctx.addon_objects(clusters[0])
        assert again is not first  # evicted, and rendered afresh
        assert [item.obj for item in again] == [item.obj for item in fresh]
    finally:
        asyncio.run(ctx.aclose())
