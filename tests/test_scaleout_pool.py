"""Edge batches handed to a Prefect work pool: two process workers share one rollout.

Real Prefect end to end: the session's Prefect server, a process work pool, the
``provision-batch`` deployment registered from deployments/prefect.yaml, two
``prefect worker start --type process`` workers on this machine, the simulator on
loopback. The fleet run itself runs in the test process, as in the other flow tests.

Kept small for CI (40 edge sites in batches of 10, not the issue's 1,000): each batch
run is a fresh Python process on a worker (~3 s of CPU to import Prefect and werft on
these 2 cores), which is what the test is about, not throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.settings import get_current_settings

from flows.deployments import apply_to_work_pool
from tests.flowfixtures import Fleet, fleet, outcomes, provision
from werft.inventory.model import Dispatch

pytestmark = pytest.mark.fleet_scale

EDGE_SITES = 40
BATCH = 10
WORKER_STOP_TIMEOUT_S = 20.0
KILL_DEADLINE_S = 120.0
ROLLOUT = {
    "edge": {
        "batchSize": BATCH,
        "maxConcurrency": 2 * BATCH,  # two batches in flight
        "canarySize": BATCH,
        "dispatch": str(Dispatch.POOL),
    }
}


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def submitted(self) -> set[str]:
        """Ids of the flow runs this worker started (from its own log): those it went for
        and the server did not abort (another worker had taken them)."""
        text = self.log.read_text(errors="replace")
        tried = re.findall(rf"Worker '{self.name}' submitting flow run '([0-9a-f-]+)'", text)
        aborted = re.findall(r"Aborted submission of flow run '([0-9a-f-]+)'", text)
        return set(tried) - set(aborted)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a worker and every process it started: flow runs start in sessions of their
    own, so a process-group signal would miss them; their parent ids do not."""
    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for proc in [psutil.Process(process.pid), *family] if process.poll() is None else family:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=WORKER_STOP_TIMEOUT_S)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    try:
        process.wait(timeout=WORKER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def process_workers(
    workdir: Path, prefect_api: str, pool: str, count: int
) -> Iterator[list[Worker]]:
    """``count`` process workers on ``pool``, stopped (with their flow runs) on exit."""
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        # The fleet run reads each batch's outcome from the result the batch run persisted.
        "PREFECT_LOCAL_STORAGE_PATH": str(get_current_settings().results.local_storage_path),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
    }
    prefect = str(Path(sys.executable).with_name("prefect"))
    workers: list[Worker] = []
    try:
        for i in range(count):
            name = f"{pool}-w{i}"
            log = workdir / f"{name}.log"
            with log.open("wb") as out:
                # --limit 1: a worker runs one batch at a time, so two batches in flight
                # need both workers.
                command = [prefect, "worker", "start", "--pool", pool, "--type", "process"]
                process = subprocess.Popen(
                    [*command, "--name", name, "--limit", "1"],
                    cwd=workdir,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            workers.append(Worker(name, process, log))
        yield workers
    finally:
        for worker in workers:
            _stop(worker.process)


async def _make_pool(pool: str) -> None:
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    await apply_to_work_pool(pool, names=["provision-batch"])


async def _child_states(parent: str) -> dict[str, str]:
    """The fleet run's batch runs: id -> state type."""
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[uuid.UUID(parent)])
            )
        )
    return {
        str(r.id): r.state.type.value if r.state else "NONE"
        for r in runs
        if r.name.startswith("provision-batch[")
    }


def _child_runs(parent: str) -> list[str]:
    return list(asyncio.run(_child_states(parent)))


def _kill_a_batch_run_once_it_acted(
    workers: list[Worker], f: Fleet, stop: threading.Event, killed: list[int]
) -> None:
    """kill -9 the first batch run's process (a flow run a worker started) as soon as the
    simulator saw a mutating call to an edge machine: mid-batch, with installs begun."""
    edge = {m for c in f.names("edge") for m in f.machines(c)}
    deadline = time.monotonic() + KILL_DEADLINE_S
    while not stop.is_set() and time.monotonic() < deadline:
        runs = [
            child
            for w in workers
            for child in psutil.Process(w.process.pid).children(recursive=True)
            if "prefect.engine" in " ".join(child.cmdline())
        ]
        acted = edge & set(f.sim.stats()["mutations"]["bmc"])
        if runs and acted:
            runs[0].send_signal(signal.SIGKILL)
            killed.append(runs[0].pid)
            return
        stop.wait(0.05)  # the poll interval; the deadline above bounds the wait


def test_two_process_workers_share_the_edge_batches_and_install_each_machine_once(
    workdir: Path, prefect_api: str
) -> None:
    pool = f"werft-test-{uuid.uuid4().hex[:8]}"
    asyncio.run(_make_pool(pool))
    with (
        fleet(workdir, near=1, edge=EDGE_SITES, rollout=ROLLOUT) as f,
        process_workers(workdir, prefect_api, pool, 2) as workers,
    ):
        state, result = provision(f.request())

        failed = [f"{c.cluster}: {c.reason}: {c.message}" for c in result.clusters if c.message]
        assert state.is_completed(), (result.reason, failed[:2])
        edge = f.names("edge")
        assert len(edge) == EDGE_SITES
        assert set(outcomes(result).values()) == {"Verified"}
        assert len(outcomes(result)) == EDGE_SITES + 1  # + the near-edge site, in-process
        # Every machine installed exactly once, whichever worker ran its batch.
        installs = f.installs()
        assert installs and set(installs.values()) == {1}, {m: n for m, n in installs.items()}

        # The batch runs are subflow runs of the fleet run (the UI nests them there) ...
        children = set(_child_runs(str(result.flow_run_id)))
        assert len(children) == EDGE_SITES // BATCH
        # ... and both workers ran some of them; nothing ran them twice.
        ran = [w.submitted() for w in workers]
        assert all(ran), [len(r) for r in ran]
        assert ran[0].isdisjoint(ran[1])
        assert ran[0] | ran[1] == children


def test_a_batch_run_killed_mid_batch_is_run_again_without_a_second_install(
    workdir: Path, prefect_api: str
) -> None:
    """kill -9 of a batch run's process (what a worker machine's death does to the batch;
    the worker itself survives here and reports the run Crashed): the fleet run hands the
    batch to the pool again, and the new run finishes it without installing twice."""
    pool = f"werft-test-{uuid.uuid4().hex[:8]}"
    asyncio.run(_make_pool(pool))
    stop, killed = threading.Event(), []
    with (
        fleet(workdir, near=0, edge=EDGE_SITES, rollout=ROLLOUT) as f,
        process_workers(workdir, prefect_api, pool, 2) as workers,
    ):
        killer = threading.Thread(
            target=_kill_a_batch_run_once_it_acted, args=(workers, f, stop, killed)
        )
        killer.start()
        try:
            state, result = provision(f.request())
        finally:
            stop.set()
            killer.join()

        assert killed, "no batch run was killed"
        failed = [f"{c.cluster}: {c.reason}: {c.message}" for c in result.clusters if c.message]
        assert state.is_completed(), (result.reason, failed[:2])
        assert set(outcomes(result).values()) == {"Verified"}
        installs = f.installs()
        assert installs and set(installs.values()) == {1}, {m: n for m, n in installs.items()}
        states = sorted(asyncio.run(_child_states(str(result.flow_run_id))).values())
        # Four batches, one of them run twice: its first run Crashed.
        assert states == ["COMPLETED"] * (EDGE_SITES // BATCH) + ["CRASHED"]
