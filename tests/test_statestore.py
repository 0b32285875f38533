"""The state store every worker sees: one set of semantics on files, SQLite and PostgreSQL
(WERFT_STORE_URL), and -- on the SQL stores -- processes with nothing in common but the
URL sharing secrets, machine records and cluster leases.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from tests.simfixtures import reserve_port
from tests.storefixtures import sql_store_url_fixture, store_url_fixture  # noqa: F401
from werft import redact
from werft.errors import PermanentError, TransientError
from werft.locks import ClusterLocks
from werft.providers.records import MachineRecords
from werft.sealing import SealedBackend
from werft.secrets import SecretStore
from werft.statestore import STORE_URL_ENV, FileBackend, SqlBackend, state_backend

CLUSTERS = [f"edge-{i:03d}" for i in range(50)]
WORKERS = 2
KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"


def _store(home: Path) -> SecretStore:
    return SecretStore.for_home(home)


# --- semantics, every backend ----------------------------------------------------------


def test_the_environment_chooses_the_backend(store_url: str | None, tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert isinstance(store.backend, SealedBackend)  # sealed once WERFT_STORE_KEY is set
    if store_url is None:
        assert isinstance(store.backend.inner, FileBackend)
        assert store.where == str(tmp_path / "secrets")
    else:
        assert isinstance(store.backend.inner, SqlBackend)
        assert "@" not in store.where and "werft:" not in store.where  # no credentials
    # SecretStore() with no folder is the same shared store.
    shared = SecretStore().backend
    assert isinstance(shared, SealedBackend) and type(shared.inner) is type(store.backend.inner)


def test_put_get_delete_and_overwrite(store_url: str | None, tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.get("clusters/c1/admin-token") is None
    store.put("clusters/c1/admin-token", "first-token-value")
    assert store.get("clusters/c1/admin-token") == "first-token-value"
    store.put("clusters/c1/admin-token", b"second-token-value")
    assert store.get("clusters/c1/admin-token") == "second-token-value"
    store.delete("clusters/c1/admin-token")
    store.delete("clusters/c1/admin-token")  # deleting what is gone is fine
    assert store.get("clusters/c1/admin-token") is None


def test_a_folder_removed_under_a_running_store_is_made_again(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "secrets")
    backend.put("clusters/c1/ca.key", b"one")
    (tmp_path / "secrets" / "clusters" / "c1" / "ca.key").unlink()
    (tmp_path / "secrets" / "clusters" / "c1").rmdir()  # by hand, while werft runs
    backend.put("clusters/c1/ca.key", b"two")
    assert backend.put_if_absent("clusters/c1/token", b"three") == b"three"
    assert (backend.get("clusters/c1/ca.key"), backend.get("clusters/c1/token")) == (
        b"two",
        b"three",
    )
    (tmp_path / "secrets" / "clusters" / "c1" / "ca.key").unlink()
    (tmp_path / "secrets" / "clusters" / "c1" / "token").unlink()
    (tmp_path / "secrets" / "clusters" / "c1").rmdir()
    assert backend.put_if_absent("clusters/c1/token", b"four") == b"four"
    assert oct((tmp_path / "secrets" / "clusters" / "c1").stat().st_mode & 0o777) == "0o700"


def test_put_if_absent_keeps_the_first_value_and_hands_it_to_the_second(
    store_url: str | None, tmp_path: Path
) -> None:
    store = _store(tmp_path)
    assert store.put_if_absent("clusters/c1/ca.key", KEY) == KEY
    assert store.put_if_absent("clusters/c1/ca.key", "another key") == KEY
    assert store.get("clusters/c1/ca.key") == KEY
    # put overwrites (a repair), and put_if_absent then keeps the repaired value.
    store.put("clusters/c1/ca.key", "repaired")
    assert store.put_if_absent("clusters/c1/ca.key", KEY) == "repaired"


def test_replace_if_and_delete_if_act_only_on_the_expected_value(
    store_url: str | None, tmp_path: Path
) -> None:
    backend = state_backend("locks", tmp_path)
    assert not backend.replace_if("clusters/a.lock", b"x", b"y")  # nothing there
    assert backend.get("clusters/a.lock") is None
    backend.put("clusters/a.lock", b"old")
    assert not backend.replace_if("clusters/a.lock", b"other", b"new")
    assert backend.get("clusters/a.lock") == b"old"
    assert backend.replace_if("clusters/a.lock", b"old", b"new")
    assert not backend.replace_if("clusters/a.lock", b"old", b"newer")  # only once
    assert backend.get("clusters/a.lock") == b"new"
    assert not backend.delete_if("clusters/a.lock", b"old")
    assert backend.get("clusters/a.lock") == b"new"
    assert backend.delete_if("clusters/a.lock", b"new")
    assert backend.get("clusters/a.lock") is None
    assert not backend.delete_if("clusters/a.lock", b"new")


def test_names_lists_one_folder_not_recursive_and_escapes_wildcards(
    store_url: str | None, tmp_path: Path
) -> None:
    store = _store(tmp_path)
    # "_" is a LIKE wildcard (the only one a valid name can hold): "aXb" must not match.
    for name in ["c/a_b/x", "c/a_b/y", "c/a_b/deeper/z", "c/aXb/w", "c/a_bc/u"]:
        store.put(name, "value-of-" + name)
    assert store.names("c/a_b/") == ["c/a_b/x", "c/a_b/y"]
    assert store.names("c/aXb/") == ["c/aXb/w"]
    assert store.names("c/nothing/") == []


def test_the_areas_do_not_see_each_other(store_url: str | None, tmp_path: Path) -> None:
    state_backend("secrets", tmp_path).put("clusters/x.lock", b"a secret")
    assert state_backend("locks", tmp_path).get("clusters/x.lock") is None


@pytest.mark.parametrize("name", ["../escape", "/absolute", "a/../b", "", ".hidden", "a b"])
def test_invalid_names_are_refused_by_every_backend(
    store_url: str | None, tmp_path: Path, name: str
) -> None:
    store = _store(tmp_path)
    with pytest.raises(ValueError, match="invalid secret name"):
        store.put(name, "value")
    with pytest.raises(ValueError, match="invalid secret name"):
        store.get(name)


def test_secrets_are_masked_and_records_and_public_items_are_not(
    store_url: str | None, tmp_path: Path
) -> None:
    redact.forget_all()
    store = _store(tmp_path)
    store.backend.put("clusters/c1/admin-token", b"token-put-elsewhere-0123")
    store.backend.put("clusters/c1/ca.crt", b"public-certificate-body")
    assert redact.redact("token-put-elsewhere-0123") == "token-put-elsewhere-0123"
    assert store.get("clusters/c1/admin-token") == "token-put-elsewhere-0123"
    assert store.get("clusters/c1/ca.crt") == "public-certificate-body"
    assert redact.redact("t=token-put-elsewhere-0123") == "t=***"  # read: masked from now on
    assert redact.redact("public-certificate-body") == "public-certificate-body"
    assert store.put_if_absent("clusters/c2/sa.key", "won-the-race-9876") == "won-the-race-9876"
    assert redact.redact("won-the-race-9876") == "***"

    records = MachineRecords(store)
    records.record_reset("m-1", "ForceRestart", bmc_before="bmc-time-before-reset")
    assert records.last_reset("m-1") is not None
    assert "bmc-time-before-reset" in redact.redact("bmc-time-before-reset")
    redact.forget_all()


def test_machine_records_round_trip(store_url: str | None, tmp_path: Path) -> None:
    records = MachineRecords(_store(tmp_path))
    previous = records.record_reset("m-1", "On")
    assert previous is None
    assert records.may_reset("m-1", powered_on=False) is False  # not seen to take effect
    records.saw_power_on("m-1")
    record = records.last_reset("m-1")
    assert record is not None and record.seen and record.reset_type == "On"
    records.undo_reset("m-1", None)
    assert records.last_reset("m-1") is None
    records.record_joined("m-1", "https://seeds/m-1.iso")
    joined = records.joined("m-1")
    assert joined is not None and joined.seed == "https://seeds/m-1.iso"
    records.forget_joined("m-1")
    assert records.joined("m-1") is None


def test_lock_is_exclusive_reentrant_released_by_its_holder_only_and_expires(
    store_url: str | None, tmp_path: Path
) -> None:
    a, b = ClusterLocks(tmp_path, "run-a"), ClusterLocks(tmp_path, "run-b")
    assert a.try_acquire("edge-1") and a.try_acquire("edge-1")  # re-entrant for its holder
    assert not b.try_acquire("edge-1")
    assert b.busy(["edge-1", "edge-2"]) == {"edge-1": "run-a"} and a.busy(["edge-1"]) == {}
    b.release(["edge-1"])  # not b's to release
    assert not b.try_acquire("edge-1")
    a.release(["edge-1"])
    assert b.try_acquire("edge-1")

    name = "clusters/edge-1.lock"
    lease = json.loads(b.backend.get(name) or b"")
    b.backend.put(name, json.dumps({**lease, "expires": 0}).encode())  # b's lease ran out
    assert a.holder_of("edge-1") is None and a.try_acquire("edge-1")
    assert a.holder_of("edge-1") == "run-a"
    b.release(["edge-1"])  # b's old lease is gone: a's stays
    assert a.holder_of("edge-1") == "run-a"

    # a run on this machine killed with kill -9: its process is gone, its lease is not
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lease = json.loads(a.backend.get(name) or b"")
    a.backend.put(name, json.dumps({**lease, "holder": "run-killed", "pid": gone.pid}).encode())
    assert b.holder_of("edge-1") is None and b.try_acquire("edge-1")
    # Another machine's lease is judged by its expiry only, even if its pid is gone here.
    lease = json.loads(b.backend.get(name) or b"")
    b.backend.put(name, json.dumps({**lease, "host": "elsewhere", "pid": gone.pid}).encode())
    assert not a.try_acquire("edge-1")


# --- the URL's password ------------------------------------------------------------------


@pytest.mark.parametrize("sql_store_url", ["postgres"], indirect=True)  # SQLite has none
def test_store_errors_name_the_database_never_the_password(
    sql_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    redact.forget_all()
    wrong = sql_store_url.replace("@127.0.0.1", "-wrong-pw-0042@127.0.0.1")
    password = wrong.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    monkeypatch.setenv(STORE_URL_ENV, wrong)
    with pytest.raises(TransientError) as caught:
        _store(tmp_path).get("x")
    assert password not in str(caught.value) and "127.0.0.1" in str(caught.value)
    assert redact.redact(f"url {wrong}") == f"url {wrong.replace(password, '***')}"
    monkeypatch.setenv(STORE_URL_ENV, f"not a url {password}")
    with pytest.raises(PermanentError) as refused:
        _store(tmp_path)
    assert password not in str(refused.value)
    redact.forget_all()


def test_an_unreachable_store_is_a_transient_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with reserve_port() as sock:  # a port nobody listens on
        port = sock.getsockname()[1]
    url = f"postgresql+psycopg://werft:s3cret-pw-77@127.0.0.1:{port}/werft"
    monkeypatch.setenv(STORE_URL_ENV, url)
    with pytest.raises(TransientError) as caught:
        _store(tmp_path)
    assert "s3cret-pw-77" not in str(caught.value) and caught.value.reason == "StoreUnavailable"
    redact.forget_all()


# --- many processes, one store -----------------------------------------------------------


def _child(code: str, home: Path, url: str) -> str:
    env = {**os.environ, "WERFT_HOME": str(home), STORE_URL_ENV: url}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_reset_record_written_on_one_machine_is_seen_on_another(
    sql_store_url: str, tmp_path: Path
) -> None:
    write = (
        "from werft.providers.records import MachineRecords\n"
        "from werft.secrets import SecretStore\n"
        "MachineRecords(SecretStore()).record_reset('m-7', 'ForceRestart', bmc_before='t0')\n"
    )
    read = (
        "from werft.providers.records import MachineRecords\n"
        "from werft.secrets import SecretStore\n"
        "records = MachineRecords(SecretStore())\n"
        "r = records.last_reset('m-7')\n"
        "print(r.reset_type, r.bmc_before, records.may_reset('m-7', powered_on=True))\n"
    )
    _child(write, tmp_path / "machine-a", sql_store_url)
    assert _child(read, tmp_path / "machine-b", sql_store_url) == "ForceRestart t0 False"
    # Nothing of it is on either machine's disk.
    assert not list(tmp_path.rglob("last-reset"))


def _lock_worker(url: str, home: str, holder: str, barrier: Barrier) -> list[str]:
    """Try every cluster once, in the same order as the other worker; the ones taken."""
    os.environ[STORE_URL_ENV] = url
    locks = ClusterLocks(Path(home), holder)
    locks.backend.get("warm-up")  # connect before the start, so both start at once
    barrier.wait(timeout=60)
    return [cluster for cluster in CLUSTERS if locks.try_acquire(cluster)]


def _race(url: str, tmp_path: Path) -> dict[str, list[str]]:
    context = multiprocessing.get_context("spawn")  # no fork of a threaded pytest process
    barrier = context.Manager().Barrier(WORKERS)
    holders = [f"worker-{n}" for n in range(WORKERS)]
    with ProcessPoolExecutor(WORKERS, mp_context=context) as pool:
        futures = {
            holder: pool.submit(_lock_worker, url, str(tmp_path / holder), holder, barrier)
            for holder in holders
        }
        return {holder: future.result(timeout=120) for holder, future in futures.items()}


def _assert_one_holder_each(taken: dict[str, list[str]], tmp_path: Path) -> None:
    winners = [cluster for clusters in taken.values() for cluster in clusters]
    assert sorted(winners) == CLUSTERS  # every cluster taken, none twice
    # The stored lease names the winner (read raw: its process has exited, so
    # holder_of would rightly call it stale now).
    backend = state_backend("locks", tmp_path)
    for holder, clusters in taken.items():
        for cluster in clusters:
            lease = json.loads(backend.get(f"clusters/{cluster}.lock") or b"")
            assert lease["holder"] == holder, cluster


def test_two_processes_racing_for_50_locks_end_with_one_holder_each(
    sql_store_url: str, tmp_path: Path
) -> None:
    _assert_one_holder_each(_race(sql_store_url, tmp_path), tmp_path)


def test_two_processes_breaking_50_stale_leases_break_each_exactly_once(
    sql_store_url: str, tmp_path: Path
) -> None:
    backend = state_backend("locks", tmp_path)
    dead = json.dumps({"holder": "run-dead", "host": "elsewhere", "pid": 1,
                       "expires": time.time() - 60}).encode()
    for cluster in CLUSTERS:
        backend.put(f"clusters/{cluster}.lock", dead)
    # Exactly one worker's replace_if of each stale lease succeeds; the other then finds
    # a live lease and backs off -- so again each cluster has exactly one holder.
    _assert_one_holder_each(_race(sql_store_url, tmp_path), tmp_path)
