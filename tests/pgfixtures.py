"""A local PostgreSQL cluster and a real Prefect server on it, for the tests that exercise
scale-out (registered in conftest.py).

Where PostgreSQL is not installed the tests that ask for it skip, saying so; with
``WERFT_REQUIRE_POSTGRES=1`` (.ci/run sets it) they fail instead, so CI never skips them
silently. The session's other Prefect server (``prefect_api``, SQLite through
``prefect_test_harness``) can run alongside: ``prefect_api_postgres`` points the test
process at the PostgreSQL-backed server for one test at a time and restores what was there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from tests.simfixtures import reserve_port, wait_for
from werft.demo import stop_process_group
from werft.postgres import LocalPostgres, PostgresNotInstalled

SERVER_START_TIMEOUT_S = 120.0  # migrations on a fresh database take a while on 2 cores
SERVER_STOP_TIMEOUT_S = 20.0


def _postgres_missing(exc: PostgresNotInstalled) -> NoReturn:
    if os.environ.get("WERFT_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"WERFT_REQUIRE_POSTGRES=1 but {exc}", pytrace=False)
    pytest.skip(str(exc))


def _free_port() -> int:
    with reserve_port() as sock:
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def cluster_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A fresh directory for a cluster (its data dir goes inside), removed afterwards."""
    if os.geteuid() != 0:
        yield tmp_path_factory.mktemp(name)
        return
    # As root the server runs as `postgres`, which cannot enter pytest's temp root
    # (/tmp/pytest-of-root is 0700): the cluster lives where that user can reach it.
    base = Path(tempfile.mkdtemp(prefix=f"werft-{name}-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def local_postgres(data_dir: Path) -> LocalPostgres:
    """A (not yet started) cluster on a free port; skips or fails where none can be."""
    try:
        return LocalPostgres(data_dir, _free_port())
    except PostgresNotInstalled as exc:
        _postgres_missing(exc)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """One PostgreSQL cluster for the session, stopped at its end."""
    with cluster_dir(tmp_path_factory, "postgres") as base, local_postgres(base / "data") as pg:
        yield pg


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def prefect_server_postgres(
    postgres: LocalPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`prefect server start` on a loopback port, its database `prefect` on the session's
    PostgreSQL; its API URL. The test process is not pointed at it: see below."""
    home = tmp_path_factory.mktemp("prefect-postgres")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres.create_database("prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",  # nobody looks; it saves startup time
        "PREFECT_API_URL": api,
    }
    prefect = str(Path(sys.executable).with_name("prefect"))
    log = home / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its uvicorn and services stop with it, as a group
        )
    try:

        def up() -> bool:
            if server.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"prefect server exited with {server.returncode}:\n{tail}")
            return _healthy(api)

        wait_for(up, timeout=SERVER_START_TIMEOUT_S, interval=0.5, what="the Prefect server")
        yield api
    finally:
        stop_process_group(server, SERVER_STOP_TIMEOUT_S)


@pytest.fixture
def prefect_api_postgres(
    prefect_server_postgres: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The PostgreSQL-backed server's API URL, and the test process pointed at it (settings
    and PREFECT_API_URL for child processes) for this test only. Per test, not per
    session: a session-wide override and ``prefect_api``'s session-wide harness would
    shadow each other in whatever order the tests happened to start them."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = prefect_server_postgres
    monkeypatch.setenv("PREFECT_API_URL", api)
    with temporary_settings(updates={PREFECT_API_URL: api}):
        yield api
        # Hand the test's logs and events to this server now, not to whichever server
        # is current when Prefect's background workers next flush (as the harness does).
        # (Sync here: a fixture's teardown runs outside any event loop.)
        APILogWorker.drain_all()
        EventsWorker.drain_all()


@pytest.fixture
def workdir_postgres(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api_postgres: str
) -> Path:
    """``workdir`` for tests that run flows against the PostgreSQL-backed server."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WERFT_HOME", str(tmp_path / ".werft"))
    return tmp_path
