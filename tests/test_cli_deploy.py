"""`werft deploy --pool`: deployments registered with a work pool, with the zombie
automation for provision-batch; a missing pool or an unknown name is refused, naming it,
before anything is registered. Real Prefect server (the session's)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from typer.testing import CliRunner

from flows.dispatch import ZOMBIE_AUTOMATION
from werft.cli import app
from werft.exitcodes import ExitCode

runner = CliRunner()


async def _make_pool(name: str) -> None:
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=name, type="process"))


async def _registered(pool: str) -> tuple[list[str], int]:
    async with get_client() as client:
        deployments = await client.read_deployments()
        automations = await client.read_automations_by_name(ZOMBIE_AUTOMATION)
    return sorted(d.name for d in deployments if d.work_pool_name == pool), len(automations)


def test_deploy_registers_the_batch_deployment_and_its_zombie_automation(
    workdir: Path,
) -> None:
    pool = f"werft-deploy-{uuid.uuid4().hex[:8]}"
    asyncio.run(_make_pool(pool))

    result = runner.invoke(app, ["deploy", "--pool", pool, "--name", "provision-batch"])

    assert result.exit_code == ExitCode.OK, result.output
    assert result.output.startswith("provision-batch: deployment ")
    assert asyncio.run(_registered(pool)) == (["provision-batch"], 1)


def test_deploy_refuses_a_missing_pool_and_an_unknown_name(workdir: Path) -> None:
    missing = f"werft-missing-{uuid.uuid4().hex[:8]}"
    result = runner.invoke(app, ["deploy", "--pool", missing])
    assert result.exit_code == ExitCode.USAGE
    assert f"work pool {missing!r} does not exist" in result.output
    assert f"prefect work-pool create {missing}" in result.output

    result = runner.invoke(app, ["deploy", "--pool", missing, "--name", "provison-batch"])
    assert result.exit_code == ExitCode.USAGE
    assert "no deployment named provison-batch" in result.output
    assert "provision-batch" in result.output.split("it has:")[1]
    assert asyncio.run(_registered(missing))[0] == []  # nothing registered
