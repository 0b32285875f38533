"""`make demo` and `make up` start a simulator with blank machines: werft's memory of the
fleet an earlier demo provisioned must go with it, and nothing else (the run history, the
BMC credentials, the change repository)."""

from __future__ import annotations

from pathlib import Path

import pytest

from werft.demo import forget_the_previous_fleet
from werft.statestore import STORE_URL_ENV

FLEET = [
    "secrets/clusters/fra1-core-a/ca.key",
    "secrets/clusters/fra1-core-a/seeds/fra1-core-a-cp0-def2bfee825f",
    "secrets/machines/fra1-core-a-cp0/joined",
    "locks/clusters/fra1-core-a",
    "artifacts/s/token/seeds/fra1-core-a/fra1-core-a-cp0-def2bfee825f.iso",
]
KEPT = [
    "secrets/bmc-fra1/password",
    "secrets/werft-webhook",
    "prefect/prefect.db",
    "artifacts/images/ubuntu-24.04-server.iso",
    "inventory.git/HEAD",
]


def _home(tmp_path: Path) -> Path:
    for name in FLEET + KEPT:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    return tmp_path


def test_a_new_simulator_forgets_the_fleet_and_keeps_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = _home(tmp_path)
    forget_the_previous_fleet(home)
    assert [name for name in FLEET if (home / name).exists()] == []
    assert [name for name in KEPT if not (home / name).exists()] == []
    assert "forgetting the fleet of an earlier demo" in capsys.readouterr().out
    forget_the_previous_fleet(home)  # nothing left to forget: quiet
    assert capsys.readouterr().out == ""


def test_a_configured_store_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(STORE_URL_ENV, "postgresql+psycopg://werft@127.0.0.1:1/werft")
    home = _home(tmp_path)
    forget_the_previous_fleet(home)
    assert [name for name in FLEET + KEPT if not (home / name).exists()] == []
    assert STORE_URL_ENV in capsys.readouterr().out
