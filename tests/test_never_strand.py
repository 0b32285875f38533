"""Never strand a machine (issue 13): werft killed, or one request of the act sequence
failing, at each step of it -- insert the installer, insert the seed, set the boot
override, reset (bare metal, Redfish); define, start (VMs, the simulator's hypervisor) --
and the next run still ends Verified with exactly one install per machine.

"Killed" is the stage task cancelled while the step's request hangs in the simulator (a
``timeout`` fault rule: the request never takes effect, as when werft dies with it in
flight), or right after the reset took effect, and the next run is a new context with
providers of its own (nothing shared but the store, as after a crash); "faulted" is a
503 at that request, once
(retried or observed within the same run) or until the next run (the stage fails there).
The simulator counts installer boots and finished installs per machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.stagefixtures import (  # noqa: F401 (the fixture)
    BARE_METAL,
    TIME_SCALE,
    VMS,
    StageFleet,
    stage_fleet_fixture,
)
from werft.conditions import Condition, ConditionType
from werft.inventory.resolved import ResolvedCluster
from werft.providers import HttpOptions, ProviderPool
from werft.stages import (
    StageContext,
    ensure_addons,
    ensure_bootstrapped,
    ensure_infrastructure,
    observe_cluster,
    verify_cluster,
)

# (step, fault-rule path glob, method) per kind of machine; "<m>" is the machine's name.
REDFISH_STEPS = {
    "insert-installer": (
        "/bmc/<m>/redfish/v1/Managers/1/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia",
        "POST",
    ),
    "insert-seed": (
        "/bmc/<m>/redfish/v1/Managers/1/VirtualMedia/CD2/Actions/VirtualMedia.InsertMedia",
        "POST",
    ),
    "set-override": ("/bmc/<m>/redfish/v1/Systems/1", "PATCH"),
    "reset": ("/bmc/<m>/redfish/v1/Systems/1/Actions/ComputerSystem.Reset", "POST"),
}
HYPERVISOR_STEPS = {
    "define": ("/hypervisor/v1/domains/<m>", "PUT"),
    "start": ("/hypervisor/v1/domains/<m>/start", "POST"),
}
CASES = [(BARE_METAL, step) for step in REDFISH_STEPS] + [(VMS, step) for step in HYPERVISOR_STEPS]
IDS = [f"{'bare-metal' if c == BARE_METAL else 'vm'}-{s}" for c, s in CASES]


@pytest.fixture(name="contexts")
async def contexts_fixture(stage_fleet: StageFleet) -> AsyncIterator[Callable[[], StageContext]]:
    """New contexts on the fleet, each with providers of its own (a new process: nothing
    shared with a killed run but the store), the reset settle time in simulated time as
    the stage deadlines are."""
    f = stage_fleet
    made: list[StageContext] = []

    def new() -> StageContext:
        pool = ProviderPool(f.ctx.secrets, options=HttpOptions().scaled(TIME_SCALE))
        made.append(
            StageContext(
                inventory=f.inventory,
                secrets=f.ctx.secrets,
                artifacts_dir=f.ctx.artifacts_dir,
                timeouts=f.ctx.timeouts,
                providers=pool,
            )
        )
        return made[-1]

    try:
        yield new
    finally:
        for ctx in made:
            await ctx.aclose()


def _step(cluster: str, step: str) -> tuple[str, str]:
    steps = REDFISH_STEPS if cluster == BARE_METAL else HYPERVISOR_STEPS
    return steps[step]


def _add_rules(f: StageFleet, cluster: ResolvedCluster, step: str, **rule: Any) -> list[str]:
    path, method = _step(cluster.name, step)
    ids = []
    for machine in cluster.machines:
        added = f.sim.add_fault(
            machine=machine.name, path=path.replace("<m>", machine.name), methods=[method], **rule
        )
        ids.append(str(added["id"]))
    return ids


def _hits(f: StageFleet, ids: list[str]) -> int:
    rules = {r["id"]: r for r in f.sim.faults()["rules"]}
    return sum(int(rules[i]["hits"]) for i in ids if i in rules)


async def _until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def _kill_when(task: asyncio.Task[Condition], check: Callable[[], bool], what: str) -> None:
    """Cancel the stage (werft dies) once ``check`` holds; the stage must not have
    finished before."""
    await _until(lambda: check() or task.done(), what)
    assert not task.done(), f"the stage ended before {what}: {task.result()}"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _finish_and_count(
    f: StageFleet, ctx: StageContext, cluster: ResolvedCluster, reason: str = "Provisioned"
) -> None:
    """The next run: InfrastructureReady, every machine joins, each installed once."""
    infra = await ensure_infrastructure(cluster, ctx)
    assert (infra.status, infra.reason) == ("True", reason), infra.message
    names = [m.name for m in cluster.machines]
    await _until(lambda: all(f.sim.machine(n)["node"] for n in names), "every machine to register")
    boot = await ensure_bootstrapped(cluster, ctx)
    assert boot.reason == "Bootstrapped", boot.message
    for name in names:
        seen = f.sim.machine(name)
        # One installer boot, one finished install: nothing restarted it mid-install,
        # nothing re-imaged it, nothing left it on an empty disk.
        assert (seen["installsStarted"], seen["installs"]) == (1, 1), (name, seen)
        assert seen["node"]["name"] == name
        # Released once Bootstrapped: werft's media (the seed holds the cluster's keys)
        # are ejected, and that is what the planner now takes as provisioned.
        assert not any(slot["image"] for slot in seen["media"]), seen["media"]
    observed = await observe_cluster(cluster, ctx)
    assert observed[ConditionType.INFRASTRUCTURE_READY], observed
    assert observed[ConditionType.BOOTSTRAPPED], observed
    # ... and the cluster ends Verified (the CNI is an add-on: Ready comes with it).
    addons = await ensure_addons(cluster, ctx)
    assert addons.ok, addons.message
    verified = await verify_cluster(cluster, ctx)
    assert verified.reason == "Verified", verified.message


@pytest.mark.parametrize(("cluster_name", "step"), CASES, ids=IDS)
async def test_killed_at_each_step_the_next_run_installs_each_machine_once(
    stage_fleet: StageFleet, contexts: Callable[[], StageContext], cluster_name: str, step: str
) -> None:
    f = stage_fleet
    killed, ctx = contexts(), contexts()
    cluster = f.cluster(cluster_name)
    # The step's request hangs (it never takes effect): werft dies with it in flight.
    ids = _add_rules(f, cluster, step, kind="timeout", seconds=30)
    task = asyncio.create_task(ensure_infrastructure(cluster, killed))
    await _kill_when(
        task, lambda: _hits(f, ids) >= len(cluster.machines), f"every machine at {step}"
    )
    for rule in ids:
        f.sim.remove_fault(rule)
    stranded = [f.sim.machine(m.name) for m in cluster.machines]
    assert all(s["powerState"] == "Off" and s["installsStarted"] == 0 for s in stranded)

    await _finish_and_count(f, ctx, cluster)


@pytest.mark.parametrize("cluster_name", [BARE_METAL, VMS], ids=["bare-metal", "vm"])
async def test_killed_right_after_the_reset_the_next_run_does_not_reset_again(
    stage_fleet: StageFleet, contexts: Callable[[], StageContext], cluster_name: str
) -> None:
    f = stage_fleet
    killed, ctx = contexts(), contexts()
    cluster = f.cluster(cluster_name)
    names = [m.name for m in cluster.machines]
    power_step, read_step = (
        ("reset", "set-override")
        if cluster_name == BARE_METAL
        else (
            "start",
            "define",
        )
    )
    # Hold the power request a moment (it is applied after the delay), and meanwhile make
    # every later read of the machine hang: werft dies after the reset took effect and
    # before it saw it.
    slow = _add_rules(f, cluster, power_step, kind="slow", seconds=0.5)
    task = asyncio.create_task(ensure_infrastructure(cluster, killed))
    await _until(lambda: _hits(f, slow) >= len(names), "every machine's power request")
    path, _ = _step(cluster_name, read_step)
    hang = [
        str(
            f.sim.add_fault(
                machine=n, path=path.replace("<m>", n), methods=["GET"], kind="timeout", seconds=30
            )["id"]
        )
        for n in names
    ]
    await _kill_when(
        task,
        lambda: all(f.sim.machine(n)["powerState"] == "On" for n in names),
        "every machine powered on",
    )
    for rule in slow + hang:
        f.sim.remove_fault(rule)
    f.sim.reset_stats()

    # Nothing to do: no second reset, no media change, while the machines install.
    again = await ensure_infrastructure(cluster, ctx)
    assert (again.reason, again.mutations, f.mutations(cluster.name)) == (
        "AlreadyProvisioned",
        0,
        0,
    )
    await _finish_and_count(f, ctx, cluster, "AlreadyProvisioned")


@pytest.mark.parametrize(("cluster_name", "step"), CASES, ids=IDS)
async def test_one_503_at_each_step_still_provisions_in_the_same_run(
    stage_fleet: StageFleet, contexts: Callable[[], StageContext], cluster_name: str, step: str
) -> None:
    f = stage_fleet
    ctx = contexts()
    cluster = f.cluster(cluster_name)
    ids = _add_rules(f, cluster, step, kind="error", status=503, count=1)

    await _finish_and_count(f, ctx, cluster)
    assert _hits(f, ids) == len(cluster.machines)  # every machine met its 503


@pytest.mark.parametrize(("cluster_name", "step"), CASES, ids=IDS)
async def test_a_step_failing_until_the_next_run_strands_nothing(
    stage_fleet: StageFleet, contexts: Callable[[], StageContext], cluster_name: str, step: str
) -> None:
    f = stage_fleet
    ctx = contexts()
    cluster = f.cluster(cluster_name)
    ids = _add_rules(f, cluster, step, kind="error", status=503)

    failed = await ensure_infrastructure(cluster, ctx)

    assert (failed.status, failed.transient) == ("False", True), failed.message
    assert _hits(f, ids) >= len(cluster.machines)
    for rule in ids:
        f.sim.remove_fault(rule)
    await _finish_and_count(f, ctx, cluster)
