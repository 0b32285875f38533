"""The session's Prefect server and a per-test working directory, for every test module that
runs flows (registered in conftest.py). Prefect is imported only when a test asks for it,
so sessions without flow tests do not pay for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One Prefect server for the whole session (it takes ~10 s to start)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str) -> Path:
    """A fresh current directory and WERFT_HOME (secrets, published seeds) per test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WERFT_HOME", str(tmp_path / ".werft"))
    return tmp_path
