"""Prefect Secret blocks as a secret backend: cached for minutes, not for the life of the
process, and read afresh after the endpoint refused the value (a rotated password)."""

from __future__ import annotations

from pathlib import Path

from prefect.blocks.system import Secret

from tasks import secret_blocks
from tasks.secret_blocks import _TimedCache, block_name, use_secret_blocks
from werft import secrets
from werft.secrets import SecretStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cached_values_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache = _TimedCache(300.0, clock)
    cache.put("bmc-a", "admin:one")
    clock.now += 299.0
    assert cache.get("bmc-a") == "admin:one"
    clock.now += 1.0
    assert cache.get("bmc-a") is None  # minutes, not the life of the process


def test_dropped_values_are_read_again() -> None:
    cache = _TimedCache(300.0, FakeClock())
    cache.put("bmc-a", "admin:one")
    cache.drop("bmc-a")
    assert cache.get("bmc-a") is None


def test_a_rotated_block_is_picked_up_after_invalidate(prefect_api: str, tmp_path: Path) -> None:
    ref = "bmc-rotated.lab"
    empty = SecretStore(tmp_path / "secrets")
    use_secret_blocks()
    Secret(value="admin:first-Pa55word").save(block_name(ref), overwrite=True)
    secret_blocks.forget(ref)
    assert secrets.basic_auth(ref, empty) == ("admin", "first-Pa55word")

    Secret(value="admin:second-Pa55word").save(block_name(ref), overwrite=True)
    assert secrets.basic_auth(ref, empty) == ("admin", "first-Pa55word")  # cached
    secrets.invalidate(ref)  # what a 401 from the BMC triggers
    assert secrets.basic_auth(ref, empty) == ("admin", "second-Pa55word")
