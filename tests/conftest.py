"""Shared fixtures. Servers start on loopback on ports the OS picks."""

from collections.abc import Iterator

import pytest

from tests.simfixtures import sim_factory  # noqa: F401  (the simulator fixture, for every test)
from werft import secrets


@pytest.fixture(autouse=True)
def _isolated_secret_backends() -> Iterator[None]:
    """A flow run registers the Prefect Secret-block backend for the whole process; keep
    one test's backends from answering another test's secret look-ups."""
    before = list(secrets._extra_backends)
    yield
    secrets._extra_backends[:] = before
