"""`werft machine forget`: hardware that was replaced is installed afresh once werft is told.

werft powers a machine it saw join back on from its disk (a power cut must never cost a
re-image). A machine swapped for blank hardware behind the same BMC address looks the
same from outside; only a person knows, and this command is how they say so.
"""

from __future__ import annotations

from dataclasses import replace

from typer.testing import CliRunner

from tests.stagefixtures import EDGE, StageFleet, run_all
from tests.stagefixtures import stage_fleet_fixture as stage_fleet_fixture  # the fixture
from werft.cli import app
from werft.locks import ClusterLocks
from werft.providers.records import MachineRecords
from werft.stages import StageContext

runner = CliRunner()


async def context(f: StageFleet, **timeouts: float) -> StageContext:
    """A context of its own on the fleet whose reset settle time is as short as the run
    (the fleet's is the real 10 minutes): a real operator tells werft long after the
    power-on that found the disk empty."""
    ctx = StageContext.for_inventory(
        f.inventory,
        werft_home=f.home,
        timeouts=replace(f.ctx.timeouts, reset_settle=0.1, **timeouts),
        artifacts_dir=f.ctx.artifacts_dir,
    )
    f.others.append(ctx)
    return ctx


def forget(f: StageFleet, machine: str, *options: str) -> tuple[int, str]:
    args = ["machine", "forget", machine, "--inventory", str(f.root), *options]
    result = runner.invoke(app, args)
    return result.exit_code, result.output


async def test_a_replaced_machine_is_installed_again_once_werft_is_told(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    assert (await run_all(cluster, f.ctx))[-1].reason == "Verified"
    machine = cluster.machines[0].name
    f.sim.drift(kind="replace-machine", machine=machine)

    # Not told, werft takes the blank machine for its installed one after a power cut:
    # powered back on from an empty disk, the cluster's API never comes back.
    stuck = await run_all(cluster, await context(f, bootstrap=0.5))
    assert "powered back on from disk" in stuck[0].message
    assert [c.reason for c in stuck][1:] in (["APIUnavailable"], ["Timeout"]), stuck[-1]
    assert f.sim.machine(machine)["installed"] is None

    code, output = forget(f, machine, "--yes")

    assert code == 0, output
    assert f"machine {machine} (cluster {EDGE}) joined its cluster on" in output
    assert f"werft provision {f.root} --cluster {EDGE}" in output
    healed = await run_all(cluster, await context(f))
    assert [c.reason for c in healed][::3] == ["Provisioned", "Verified"], healed[-1].message
    assert f.sim.machine(machine)["installs"] == 2  # the new disk's install


async def test_forgetting_asks_first_and_changes_nothing_when_it_cannot(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    machine = cluster.machines[0].name
    records = MachineRecords(f.ctx.secrets)
    records.record_joined(machine, "http://artifacts/seed.iso")

    # No terminal to ask, and no --yes: nothing forgotten.
    code, output = forget(f, machine)
    assert (code, records.joined(machine) is not None) == (2, True)
    assert "add --yes" in output

    # A run holds the cluster: nothing forgotten, and it says who.
    locks = ClusterLocks(f.home, holder="provision-run-42")
    assert locks.try_acquire(EDGE)
    code, output = forget(f, machine, "--yes")
    assert (code, records.joined(machine) is not None) == (1, True)
    assert "provision-run-42" in output
    locks.release([EDGE])

    # A typo names the machine it probably meant.
    code, output = forget(f, machine[:-1] + "x", "--yes")
    assert code == 2 and f"did you mean {machine!r}" in output

    code, output = forget(f, machine, "--yes")
    assert (code, records.joined(machine)) == (0, None)
    code, output = forget(f, machine, "--yes")
    assert code == 0 and "no install of machine" in output

