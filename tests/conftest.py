"""Shared fixtures. Servers start on loopback on ports the OS picks."""

from pathlib import Path

import pytest

from tests.simfixtures import sim_factory  # noqa: F401  (the simulator fixture, for every test)


@pytest.fixture(autouse=True)
def _isolated_werft_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read or write the developer's .werft (secrets left by `make demo`)."""
    monkeypatch.setenv("WERFT_HOME", str(tmp_path / ".werft-home"))
