"""The state store under test, once per backend: files (WERFT_STORE_URL unset), SQLite and
PostgreSQL (the session's ``postgres`` cluster, a fresh database per test).

``store_url`` sets WERFT_STORE_URL for the test (and for the processes it spawns, which
inherit the environment or are handed the URL) and yields it; None for files.
``sql_store_url``: the SQL stores only. Import ``store_url_fixture`` /
``sql_store_url_fixture`` into a test module to use them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from werft.postgres import LocalPostgres
from werft.statestore import STORE_URL_ENV, dispose_engines

BACKENDS = ["files", "sqlite", "postgres"]
SQL_BACKENDS = ["sqlite", "postgres"]


def _url(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[str, Callable[[], None]]:
    """The URL of a fresh store of ``kind`` and how to remove it."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}", lambda: None
    postgres: LocalPostgres = request.getfixturevalue("postgres")  # skips without PostgreSQL
    name = f"state_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    return postgres.url(name, driver="psycopg"), lambda: postgres.query(
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    )


def _store_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str | None]:
    kind = request.param
    if kind == "files":
        monkeypatch.delenv(STORE_URL_ENV, raising=False)
        yield None
        return
    url, drop = _url(kind, request, tmp_path)
    monkeypatch.setenv(STORE_URL_ENV, url)
    try:
        yield url
    finally:
        dispose_engines()  # no pooled connection keeps the database from being dropped
        drop()


@pytest.fixture(name="store_url", params=BACKENDS)
def store_url_fixture(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str | None]:
    yield from _store_url(request, tmp_path, monkeypatch)


@pytest.fixture(name="sql_store_url", params=SQL_BACKENDS)
def sql_store_url_fixture(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    for url in _store_url(request, tmp_path, monkeypatch):
        assert url is not None
        yield url
