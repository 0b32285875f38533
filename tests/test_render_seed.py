"""NoCloud seed images: readable, byte-deterministic, published once under a content hash."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.renderfixtures import ARTIFACTS_URL, REPO, make_cluster
from werft.providers.base import is_seed_of
from werft.render.cloudinit import render_meta_data, render_network_config, render_user_data
from werft.render.pki import ensure_cluster_pki
from werft.render.seed import (
    build_seed_iso,
    issue_seed,
    publish_seed,
    read_seed,
    retire_seed,
    seed_retired,
    seed_token,
)
from werft.secrets import SecretStore

SECTOR = 2048
PVD = 16 * SECTOR  # ISO 9660: the primary volume descriptor is sector 16


@pytest.fixture
def store(tmp_path: Path) -> SecretStore:
    return SecretStore(tmp_path / "secrets")


def test_seed_is_a_cidata_iso_holding_the_three_nocloud_files(store: SecretStore) -> None:
    cluster = make_cluster(control_planes=1, workers=1)
    pki = ensure_cluster_pki(cluster, store)
    machine = cluster.machines[0]
    iso = build_seed_iso(cluster, machine, pki)

    pvd = iso[PVD : PVD + SECTOR]
    assert pvd[0] == 1 and pvd[1:6] == b"CD001"
    assert pvd[40:72].rstrip(b" ") == b"CIDATA"
    joliet = iso[PVD + SECTOR : PVD + 2 * SECTOR]  # supplementary descriptor, Joliet level 3
    assert joliet[0] == 2 and joliet[1:6] == b"CD001" and joliet[88:91] == b"%/E"

    files = read_seed(iso)
    user_data = render_user_data(cluster, machine, pki)
    assert files == {
        "user-data": user_data,
        "meta-data": render_meta_data(machine, user_data),
        "network-config": render_network_config(machine),
    }


def test_seed_dates_are_pinned(store: SecretStore) -> None:
    cluster = make_cluster()
    iso = build_seed_iso(cluster, cluster.machines[0], ensure_cluster_pki(cluster, store))
    pvd = iso[PVD : PVD + SECTOR]
    # volume creation (BP 814) and modification (BP 831) dates: 2024-01-01 00:00:00 UTC
    assert pvd[813:830] == b"2024010100000000\x00"
    assert pvd[830:847] == b"2024010100000000\x00"


def test_seed_is_byte_deterministic(store: SecretStore) -> None:
    cluster = make_cluster(distribution="k3s", workers=1)
    pki = ensure_cluster_pki(cluster, store)
    for machine in cluster.machines:
        first = build_seed_iso(cluster, machine, pki, artifacts_url=ARTIFACTS_URL)
        again = build_seed_iso(cluster, machine, pki, artifacts_url=ARTIFACTS_URL)
        assert first == again


_BUILD_ELSEWHERE = """
import os, sys, time
os.environ["TZ"] = "WRF-13:45"  # POSIX TZ: UTC+13:45, needs no tz database
time.tzset()
_real = time.time
time.time = lambda: 2_000_000_000.0 + _real() % 1  # the year 2033, sub-second noise
from pathlib import Path
from tests.renderfixtures import make_cluster
from werft.render.pki import ensure_cluster_pki
from werft.render.seed import build_seed_iso
from werft.secrets import SecretStore
cluster = make_cluster()
pki = ensure_cluster_pki(cluster, SecretStore(Path(sys.argv[1])))
sys.stdout.buffer.write(build_seed_iso(cluster, cluster.machines[0], pki))
"""


def test_seed_does_not_depend_on_the_clock_or_the_time_zone(store: SecretStore) -> None:
    cluster = make_cluster()
    here = build_seed_iso(cluster, cluster.machines[0], ensure_cluster_pki(cluster, store))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    elsewhere = subprocess.run(
        [sys.executable, "-c", _BUILD_ELSEWHERE, str(store.root)],
        capture_output=True,
        check=True,
        cwd=REPO,
        env=env,
        timeout=60,
    ).stdout
    assert elsewhere == here


def test_publish_writes_the_seed_once_under_its_content_hash_and_a_secret_token(
    store: SecretStore, tmp_path: Path
) -> None:
    cluster = make_cluster()
    pki = ensure_cluster_pki(cluster, store)
    machine = cluster.machines[0]
    artifacts = tmp_path / "artifacts"

    url = publish_seed(cluster, machine, pki, artifacts, ARTIFACTS_URL + "/")

    iso = build_seed_iso(cluster, machine, pki, artifacts_url=ARTIFACTS_URL + "/")
    digest = hashlib.sha256(iso).hexdigest()[:12]
    token = seed_token(pki, machine.name, digest)
    assert len(base64.urlsafe_b64decode(token)) * 8 >= 128  # unguessable
    relpath = f"s/{token}/seeds/{cluster.name}/{machine.name}-{digest}.iso"
    assert url == f"{ARTIFACTS_URL}/{relpath}"
    assert is_seed_of(url, url, machine.name)  # the providers still recognise it
    path = artifacts / relpath
    assert path.read_bytes() == iso
    assert path.stat().st_mode & 0o777 == 0o600  # it holds tokens and CA keys
    assert (artifacts / "s" / token).stat().st_mode & 0o777 == 0o700
    before = (path.stat().st_ino, path.stat().st_mtime_ns)

    assert publish_seed(cluster, machine, pki, artifacts, ARTIFACTS_URL + "/") == url
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files


def test_seed_tokens_differ_per_machine_and_content_and_cluster_key(store: SecretStore) -> None:
    cluster = make_cluster(workers=1)
    pki = ensure_cluster_pki(cluster, store)
    other = ensure_cluster_pki(make_cluster("other"), store)
    tokens = {
        seed_token(pki, "m1", "0" * 12),
        seed_token(pki, "m2", "0" * 12),
        seed_token(pki, "m1", "1" * 12),
        seed_token(other, "m1", "0" * 12),
    }
    assert len(tokens) == 4
    assert seed_token(pki, "m1", "0" * 12) == seed_token(pki, "m1", "0" * 12)


def test_a_changed_input_publishes_a_new_seed_at_a_new_url(
    store: SecretStore, tmp_path: Path
) -> None:
    old = make_cluster(version="1.30.4")
    new = make_cluster(version="1.31.1")
    pki = ensure_cluster_pki(old, store)
    artifacts = tmp_path / "artifacts"

    old_url = publish_seed(old, old.machines[0], pki, artifacts, ARTIFACTS_URL)
    new_url = publish_seed(new, new.machines[0], pki, artifacts, ARTIFACTS_URL)

    assert old_url != new_url
    assert old_url.split("/s/")[1].split("/")[0] != new_url.split("/s/")[1].split("/")[0]
    new_iso = (artifacts / new_url.removeprefix(ARTIFACTS_URL + "/")).read_bytes()
    assert "kubernetesVersion: 1.31.1" in read_seed(new_iso)["user-data"]


def test_retired_seed_is_deleted_and_never_published_again(
    store: SecretStore, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1)
    pki = ensure_cluster_pki(cluster, store)
    artifacts = tmp_path / "artifacts"
    ctx = SimpleNamespace(secrets=store, artifacts_dir=artifacts, artifacts_url=ARTIFACTS_URL)
    cp, worker = cluster.machines
    cp_url = publish_seed(cluster, cp, pki, artifacts, ARTIFACTS_URL, store=store)
    worker_url = publish_seed(cluster, worker, pki, artifacts, ARTIFACTS_URL, store=store)

    assert retire_seed(cluster, cp, ctx) == 1
    assert retire_seed(cluster, cp, ctx) == 0  # a re-run deletes nothing

    cp_path = artifacts / cp_url.removeprefix(ARTIFACTS_URL + "/")
    assert not cp_path.exists()
    assert not (artifacts / "s" / cp_url.split("/s/")[1].split("/")[0]).exists()  # no trace
    assert seed_retired(cluster, cp_url, store)
    assert not seed_retired(cluster, worker_url, store)
    # A re-run computes the same URL (what the BMC had) but does not bring the keys back.
    assert publish_seed(cluster, cp, pki, artifacts, ARTIFACTS_URL, store=store) == cp_url
    assert not cp_path.exists()
    assert (artifacts / worker_url.removeprefix(ARTIFACTS_URL + "/")).exists()


def test_a_seed_is_written_when_issued_and_reissued_under_a_new_url_after_retirement(
    store: SecretStore, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=0)
    pki = ensure_cluster_pki(cluster, store)
    artifacts = tmp_path / "artifacts"
    ctx = SimpleNamespace(secrets=store, artifacts_dir=artifacts, artifacts_url=ARTIFACTS_URL)
    machine = cluster.machines[0]
    first = publish_seed(cluster, machine, pki, artifacts, ARTIFACTS_URL, store=store, write=False)
    assert not list(artifacts.rglob("*.iso"))  # computed only: nothing to fetch yet
    assert issue_seed(cluster, machine, ctx) == first  # about to install: written
    assert (artifacts / first.removeprefix(ARTIFACTS_URL + "/")).exists()
    retire_seed(cluster, machine, ctx)

    again = issue_seed(cluster, machine, ctx)  # installed again after it bootstrapped

    assert again != first and again.rsplit("/", 1)[1] == first.rsplit("/", 1)[1]  # same seed
    path = artifacts / again.removeprefix(ARTIFACTS_URL + "/")
    assert read_seed(path.read_bytes())["user-data"] == render_user_data(
        cluster, machine, pki, artifacts_url=ARTIFACTS_URL
    )
    # Re-runs now see the re-issued seed, until the machine has bootstrapped again.
    assert publish_seed(cluster, machine, pki, artifacts, ARTIFACTS_URL, store=store) == again
    assert issue_seed(cluster, machine, ctx) == again
    assert retire_seed(cluster, machine, ctx) == 1
    assert not path.exists()
    assert publish_seed(cluster, machine, pki, artifacts, ARTIFACTS_URL, store=store) == again
