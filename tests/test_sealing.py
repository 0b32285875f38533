"""The secret store sealed at rest (WERFT_STORE_KEY): on files, SQLite and PostgreSQL, what
the store holds does not reveal a key, a value opens only under its own name and with its
own key, and every primitive keeps its guarantee on sealed values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.stagefixtures import EDGE, run_all, stage_fleet_of
from tests.storefixtures import store_url_fixture  # noqa: F401
from werft.errors import PermanentError
from werft.sealing import MAGIC, STORE_KEY_ENV, new_store_key
from werft.secrets import SecretStore
from werft.statestore import STORE_URL_ENV, TABLE, FileBackend

CA_KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIOa0p1mXq1bWq3CBr6YyP6b0w6o8Yx\n"
NAME = "clusters/edge-001/ca.key"


def _raw(store: SecretStore, store_url: str | None, name: str) -> bytes | None:
    """What the store itself holds under ``name``, read past werft (a file, a table row)."""
    if store_url is None:
        path = store.root / name
        return path.read_bytes() if path.exists() else None
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(f"SELECT value FROM {TABLE} WHERE name = :n"), {"n": f"secrets/{name}"}
            ).first()
    finally:
        engine.dispose()
    return None if row is None else bytes(row[0])


def test_sealed_values_read_back_and_the_store_holds_no_key(
    store_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STORE_KEY_ENV, new_store_key())
    store = SecretStore.for_home(tmp_path)

    store.put(NAME, CA_KEY)
    assert store.put_if_absent("clusters/edge-001/admin-token", "token-1") == "token-1"

    assert store.get(NAME) == CA_KEY
    assert store.get("clusters/edge-001/admin-token") == "token-1"
    for name, plain in ((NAME, CA_KEY), ("clusters/edge-001/admin-token", "token-1")):
        raw = _raw(store, store_url, name)
        assert raw is not None and raw.startswith(MAGIC) and plain.encode() not in raw
    assert "values sealed with key" in store.where


def test_put_if_absent_replace_if_and_delete_if_keep_their_guarantees_when_sealed(
    store_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STORE_KEY_ENV, new_store_key())
    backend = SecretStore.for_home(tmp_path).backend
    name = "clusters/edge-002/server-token"

    assert backend.put_if_absent(name, b"first") == b"first"
    assert backend.put_if_absent(name, b"second") == b"first"  # the winner's, opened

    assert not backend.replace_if(name, b"second", b"third")  # not what is there
    assert backend.replace_if(name, b"first", b"third")
    assert backend.get(name) == b"third"

    assert not backend.delete_if(name, b"first")
    assert backend.delete_if(name, b"third")
    assert backend.get(name) is None


def test_a_sealed_value_opens_only_under_its_own_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copying one cluster's sealed CA key over another's is refused, not handed out."""
    monkeypatch.setenv(STORE_KEY_ENV, new_store_key())
    store = SecretStore.for_home(tmp_path)
    store.put(NAME, CA_KEY)
    other = "clusters/edge-002/ca.key"
    FileBackend(tmp_path / "secrets").put(other, (tmp_path / "secrets" / NAME).read_bytes())

    with pytest.raises(PermanentError, match="copied from another name"):
        store.get(other)


def test_without_its_key_a_sealed_value_is_refused_with_the_key_id_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_store_key()
    monkeypatch.setenv(STORE_KEY_ENV, key)
    sealed = SecretStore.for_home(tmp_path)
    sealed.put(NAME, CA_KEY)
    key_id = sealed.where.rsplit(" ", 1)[-1]

    monkeypatch.delenv(STORE_KEY_ENV)
    with pytest.raises(PermanentError) as unset:
        SecretStore.for_home(tmp_path).get(NAME)
    monkeypatch.setenv(STORE_KEY_ENV, new_store_key())
    with pytest.raises(PermanentError) as other_key:
        SecretStore.for_home(tmp_path).get(NAME)

    for refused in (unset.value, other_key.value):
        text = str(refused)
        assert NAME in text and key_id in text and STORE_KEY_ENV in text
        assert key not in text


def test_a_new_key_first_seals_and_the_old_one_after_it_still_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = new_store_key(), new_store_key()
    monkeypatch.setenv(STORE_KEY_ENV, old)
    SecretStore.for_home(tmp_path).put(NAME, CA_KEY)
    old_id = SecretStore.for_home(tmp_path).where.rsplit(" ", 1)[-1]

    monkeypatch.setenv(STORE_KEY_ENV, f"{new}, {old}")
    rotated = SecretStore.for_home(tmp_path)
    new_id = rotated.where.rsplit(" ", 1)[-1]
    assert rotated.get(NAME) == CA_KEY
    rotated.put("clusters/edge-001/admin-token", "token-2")

    def sealed_with(name: str) -> str:
        raw = (tmp_path / "secrets" / name).read_bytes()
        return raw[len(MAGIC) : len(MAGIC) + 8].hex()

    assert (sealed_with(NAME), sealed_with("clusters/edge-001/admin-token")) == (old_id, new_id)

    assert rotated.backend.seal_all() == (1, 1)  # type: ignore[attr-defined]
    monkeypatch.setenv(STORE_KEY_ENV, new)  # the old key retired
    assert SecretStore.for_home(tmp_path).get(NAME) == CA_KEY


def test_a_malformed_key_names_the_variable_and_how_to_make_one_never_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = "not-a-key-at-all"
    monkeypatch.setenv(STORE_KEY_ENV, f"{new_store_key()},{bad}")
    with pytest.raises(PermanentError, match=r"WERFT_STORE_KEY: key 2 .*new-store-key") as exc:
        SecretStore.for_home(tmp_path)
    assert bad not in str(exc.value)


def test_values_written_before_the_key_are_read_and_sealed_by_werft_secret_seal(
    store_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WERFT_HOME", str(tmp_path))
    monkeypatch.delenv(STORE_KEY_ENV, raising=False)
    plain = SecretStore.for_home(tmp_path)
    names = [NAME, "clusters/edge-001/seeds/edge-001-n0", "bmc-edge-us-west"]
    for name in names:
        plain.put(name, f"value of {name}")

    lock = tmp_path / "secrets" / ".locks" / "edge-001.pki.lock"  # werft.render.pki's
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.touch()

    monkeypatch.setenv(STORE_KEY_ENV, new_store_key())
    keyed = SecretStore.for_home(tmp_path)
    assert keyed.get(NAME) == f"value of {NAME}"  # read as it is until sealed
    keyed.put("clusters/edge-001/admin-token", "sealed-already")

    def seal() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "werft.cli", "secret", "seal"],
            capture_output=True, text=True, check=True,
        )
        return done.stdout

    assert seal().startswith(f"sealed {len(names)} value(s) in ")
    again = f"sealed 0 value(s) in {keyed.where}; {len(names) + 1} were sealed with this key"
    assert again in seal()
    for name in names:
        raw = _raw(keyed, store_url, name)
        assert raw is not None and raw.startswith(MAGIC)
        assert keyed.get(name) == f"value of {name}"
    assert lock.read_bytes() == b""  # a lock file is no value: left alone


def test_new_store_key_prints_a_key_the_store_seals_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "werft.cli", "secret", "new-store-key"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    monkeypatch.setenv(STORE_KEY_ENV, printed)
    store = SecretStore.for_home(tmp_path)
    store.put(NAME, CA_KEY)
    assert store.get(NAME) == CA_KEY
    assert (tmp_path / "secrets" / NAME).read_bytes().startswith(MAGIC)


async def test_a_cluster_provisioned_with_a_sealed_store_leaves_no_key_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every stage reads back what it sealed (CA, tokens, kubeconfig, seed references,
    machine records); the BMC credential stored before the key was set still works."""
    monkeypatch.delenv(STORE_URL_ENV, raising=False)
    monkeypatch.setenv(STORE_KEY_ENV, new_store_key())
    async with stage_fleet_of(tmp_path, monkeypatch, core_sites=0, near_edge_sites=0) as f:
        cluster = f.cluster(EDGE)
        conditions = await run_all(cluster, f.ctx)
        assert [c.reason for c in conditions][-1] == "Verified", conditions[-1].message
        admin_token = f.ctx.secrets.get(f"clusters/{cluster.name}/admin-token")

    generated = [
        path for path in (f.home / "secrets").rglob("*") if path.is_file()
        if not path.name.startswith("bmc-")  # stored by the fixture before, as a user would
    ]
    assert len(generated) >= 10
    for path in generated:
        raw = path.read_bytes()
        assert raw.startswith(MAGIC), path
        assert b"PRIVATE KEY" not in raw and (admin_token or "?").encode() not in raw
