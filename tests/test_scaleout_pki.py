"""Two workers (processes) racing on one secret store end with one PKI per cluster.

DESIGN.md: generated state lives in a store every worker sees, created with
create-if-absent, so two workers never mint two CAs for one cluster. The processes start
together at a barrier and walk the same 50 clusters in the same order, so they contend
on every cluster; each reports the CA it returned. Once on a shared folder (files), once
on PostgreSQL (WERFT_STORE_URL), where the two workers share nothing but the URL -- not
even a WERFT_HOME.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.renderfixtures import make_cluster
from werft.postgres import LocalPostgres
from werft.render.pki import ensure_cluster_pki, secret_name
from werft.secrets import SecretStore
from werft.statestore import STORE_URL_ENV, TABLE, dispose_engines

CLUSTERS = [f"edge-{i:03d}" for i in range(50)]
WORKERS = 2


def _digest(pem: str) -> str:
    return hashlib.sha256(pem.encode()).hexdigest()


def _worker(
    root: str, barrier: Barrier, url: str | None = None
) -> dict[str, tuple[str, str, str]]:
    """Generate the PKI of every cluster; per cluster the digests of the CA certificate,
    the CA key and the admin token this process was handed. With ``url``, in the SQL store
    (``root`` is then this worker's own WERFT_HOME, which holds none of it)."""
    if url is None:
        store = SecretStore(Path(root))
    else:
        os.environ[STORE_URL_ENV] = url
        store = SecretStore.for_home(Path(root))
        store.get("warm-up")  # connected and the table made before the start
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


def _race(roots: list[Path], url: str | None = None) -> list[dict[str, tuple[str, str, str]]]:
    context = multiprocessing.get_context("spawn")  # no fork of a threaded pytest process
    barrier = context.Manager().Barrier(WORKERS)
    with ProcessPoolExecutor(WORKERS, mp_context=context) as pool:
        futures = [pool.submit(_worker, str(root), barrier, url) for root in roots]
        return [future.result(timeout=120) for future in futures]


def _assert_everyone_was_handed_the_stored_ca(
    store: SecretStore, results: list[dict[str, tuple[str, str, str]]]
) -> None:
    for name in CLUSTERS:
        cert, key = store.get(secret_name(name, "ca.crt")), store.get(secret_name(name, "ca.key"))
        assert cert is not None and key is not None
        stored = (_digest(cert), _digest(key))
        handed = {result[name][:2] for result in results}
        # Every process was handed the CA that is stored: the first writer's, adopted.
        assert handed == {stored}, name
        assert len({result[name][2] for result in results}) == 1, name


def test_two_processes_racing_on_50_clusters_end_with_50_cas_and_agree(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    results = _race([root] * WORKERS)

    assert len(list(root.glob("clusters/*/ca.crt"))) == len(CLUSTERS)
    _assert_everyone_was_handed_the_stored_ca(SecretStore(root), results)
    # No temporary file is left behind by the losers.
    assert not list(root.rglob("*.tmp"))


def test_two_processes_racing_on_50_clusters_in_postgres_end_with_50_cas_and_agree(
    postgres: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"pki_race_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    url = postgres.url(name, driver="psycopg")
    monkeypatch.setenv(STORE_URL_ENV, url)
    try:
        results = _race([tmp_path / f"worker-{n}" for n in range(WORKERS)], url)

        engine = sa.create_engine(url)
        with engine.connect() as conn:
            cas = conn.execute(
                sa.text(f"SELECT count(*) FROM {TABLE} WHERE name LIKE 'secrets/clusters/%/ca.crt'")
            ).scalar_one()
        engine.dispose()
        assert cas == len(CLUSTERS)
        _assert_everyone_was_handed_the_stored_ca(SecretStore(), results)
        # Nothing of it landed on either worker's disk.
        assert not list(tmp_path.rglob("ca.*"))
    finally:
        dispose_engines()
        postgres.query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_put_if_absent_keeps_the_first_value_and_hands_it_to_the_second(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "secrets")
    assert store.put_if_absent("clusters/c1/admin-token", "first") == "first"
    assert store.put_if_absent("clusters/c1/admin-token", "second") == "first"
    assert store.get("clusters/c1/admin-token") == "first"
    path = store.root / "clusters" / "c1" / "admin-token"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["admin-token"]
