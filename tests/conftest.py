"""Shared fixtures. Servers start on loopback on ports the OS picks."""

import os
from collections.abc import Iterator

import pytest

from tests.pgfixtures import (  # noqa: F401  (PostgreSQL and a Prefect server on it)
    postgres,
    prefect_api_postgres,
    prefect_server_postgres,
    workdir_postgres,
)
from tests.prefectfixtures import prefect_api, workdir  # noqa: F401  (flow tests' fixtures)
from tests.simfixtures import sim_factory  # noqa: F401  (the simulator fixture, for every test)


@pytest.fixture(scope="session", autouse=True)
def _isolated_werft_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never read or write the developer's .werft (secrets left by `make demo`).
    Session-wide, so fixtures and tests that set their own WERFT_HOME still can."""
    before = os.environ.get("WERFT_HOME")
    os.environ["WERFT_HOME"] = str(tmp_path_factory.mktemp("werft-home"))
    yield
    if before is None:
        os.environ.pop("WERFT_HOME", None)
    else:
        os.environ["WERFT_HOME"] = before
