"""Two workers (processes) racing on one secret store end with one PKI per cluster.

DESIGN.md: generated state lives in a store every worker sees, created with
create-if-absent, so two workers never mint two CAs for one cluster. The processes start
together at a barrier and walk the same 50 clusters in the same order, so they contend
on every cluster; each reports the CA it returned.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.synchronize import Barrier
from pathlib import Path

from tests.renderfixtures import make_cluster
from werft.render.pki import ensure_cluster_pki, secret_name
from werft.secrets import SecretStore

CLUSTERS = [f"edge-{i:03d}" for i in range(50)]
WORKERS = 2


def _digest(pem: str) -> str:
    return hashlib.sha256(pem.encode()).hexdigest()


def _worker(root: str, barrier: Barrier) -> dict[str, tuple[str, str, str]]:
    """Generate the PKI of every cluster; per cluster the digests of the CA certificate,
    the CA key and the admin token this process was handed."""
    store = SecretStore(Path(root))
    clusters = [make_cluster(name) for name in CLUSTERS]
    barrier.wait(timeout=60)
    seen = {}
    for cluster in clusters:
        pki = ensure_cluster_pki(cluster, store)
        seen[cluster.name] = (
            _digest(pki.ca.cert_pem),
            _digest(pki.ca.key_pem),
            _digest(pki.admin_token),
        )
    return seen


def test_two_processes_racing_on_50_clusters_end_with_50_cas_and_agree(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    context = multiprocessing.get_context("spawn")  # no fork of a threaded pytest process
    barrier = context.Manager().Barrier(WORKERS)
    with ProcessPoolExecutor(WORKERS, mp_context=context) as pool:
        futures = [pool.submit(_worker, str(root), barrier) for _ in range(WORKERS)]
        results = [future.result(timeout=120) for future in futures]

    store = SecretStore(root)
    assert len(list(root.glob("clusters/*/ca.crt"))) == len(CLUSTERS)
    for name in CLUSTERS:
        cert, key = store.get(secret_name(name, "ca.crt")), store.get(secret_name(name, "ca.key"))
        assert cert is not None and key is not None
        stored = (_digest(cert), _digest(key))
        handed = {result[name][:2] for result in results}
        # Every process was handed the CA that is stored: the first writer's, adopted.
        assert handed == {stored}, name
        assert len({result[name][2] for result in results}) == 1, name
    # No temporary file is left behind by the losers.
    assert not list(root.rglob("*.tmp"))


def test_put_if_absent_keeps_the_first_value_and_hands_it_to_the_second(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "secrets")
    assert store.put_if_absent("clusters/c1/admin-token", "first") == "first"
    assert store.put_if_absent("clusters/c1/admin-token", "second") == "first"
    assert store.get("clusters/c1/admin-token") == "first"
    path = store.root / "clusters" / "c1" / "admin-token"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["admin-token"]
