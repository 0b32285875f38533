"""The local PostgreSQL cluster (werft/postgres.py) and a real Prefect server on it."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import asyncpg
import pytest
from prefect import flow
from prefect.client.orchestration import get_client

import werft.postgres
from tests.pgfixtures import cluster_dir, local_postgres
from werft.postgres import LocalPostgres, PostgresNotInstalled

# Prefect's own tables: the server made its schema in this database, not in SQLite.
PREFECT_TABLES = {"flow", "flow_run", "task_run", "work_pool", "deployment"}


async def _fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def test_start_and_create_database_are_idempotent_and_a_restart_keeps_the_data(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with cluster_dir(tmp_path_factory, "pg-lifecycle") as base:
        pg = local_postgres(base / "data")
        try:
            pg.start()
            url = pg.create_database("werft_test")
            assert (
                url == f"postgresql+asyncpg://werft:{pg.password()}@127.0.0.1:{pg.port}/werft_test"
            )
            assert pg.create_database("werft_test") == url
            pg.query("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('yes')", "werft_test")

            pg.start()  # already running: nothing happens
            adopted = LocalPostgres(base / "data", port=1)
            adopted.start()  # a second handle takes the running server's port
            assert adopted.port == pg.port

            pg.stop()
            assert not pg.running()
            pg.stop()  # stopped already: nothing happens
            pg.start()
            assert pg.query("SELECT v FROM kept", "werft_test") == "yes"
        finally:
            pg.stop()
        assert not pg.running()
        # The password is the owner's alone and never lands in the server's log.
        assert stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600
        assert pg.password() not in pg.log.read_text()


def test_tcp_connections_need_the_password(postgres: LocalPostgres) -> None:
    good = postgres.url("postgres", driver="")
    assert asyncio.run(_fetch(good, "SELECT 1"))[0][0] == 1
    wrong = good.replace(postgres.password(), "not-the-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(_fetch(wrong, "SELECT 1"))


def test_without_postgresql_the_tests_skip_unless_ci_requires_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(werft.postgres, "DEBIAN_BIN_GLOB", str(tmp_path / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresNotInstalled, match="apt-get install postgresql"):
        LocalPostgres(tmp_path / "data", 5432)

    monkeypatch.delenv("WERFT_REQUIRE_POSTGRES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        local_postgres(tmp_path / "data")
    monkeypatch.setenv("WERFT_REQUIRE_POSTGRES", "1")
    with pytest.raises(pytest.fail.Exception, match="WERFT_REQUIRE_POSTGRES=1"):
        local_postgres(tmp_path / "data")


@flow
def greet(name: str) -> str:
    return f"hello {name}"


def test_the_prefect_server_on_postgres_runs_a_flow_and_keeps_it_there(
    prefect_api_postgres: str, postgres: LocalPostgres
) -> None:
    state = greet("werft", return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id
    assert run_id is not None

    # Read back through the API of the PostgreSQL-backed server ...
    with get_client(sync_client=True) as client:
        assert str(client.api_url).rstrip("/") == prefect_api_postgres
        run = client.read_flow_run(run_id)
    assert run.state is not None and run.state.is_completed()
    assert run.parameters == {"name": "werft"}

    # ... and straight from the `prefect` database: the server really is on PostgreSQL.
    url = postgres.url("prefect", driver="")
    tables = asyncio.run(_fetch(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
    assert {r["tablename"] for r in tables} >= PREFECT_TABLES
    rows = asyncio.run(_fetch(url, "SELECT state_type FROM flow_run WHERE id = $1", run_id))
    assert [r["state_type"] for r in rows] == ["COMPLETED"]
