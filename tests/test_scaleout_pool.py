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
from tests.flowfixtures import fleet, outcomes, provision
from werft.inventory.model import Dispatch

pytestmark = pytest.mark.slow

EDGE_SITES = 40
BATCH = 10
WORKER_STOP_TIMEOUT_S = 20.0


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


async def _child_runs(parent: str) -> list[str]:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[uuid.UUID(parent)])
            )
        )
    return [str(r.id) for r in runs if r.name.startswith("provision-batch[")]


def test_two_process_workers_share_the_edge_batches_and_install_each_machine_once(
    workdir: Path, prefect_api: str
) -> None:
    pool = f"werft-test-{uuid.uuid4().hex[:8]}"
    asyncio.run(_make_pool(pool))
    rollout = {
        "edge": {
            "batchSize": BATCH,
            "maxConcurrency": 2 * BATCH,  # two batches in flight
            "canarySize": BATCH,
            "dispatch": str(Dispatch.POOL),
        }
    }
    with (
        fleet(workdir, near=1, edge=EDGE_SITES, rollout=rollout) as f,
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
        children = set(asyncio.run(_child_runs(str(result.flow_run_id))))
        assert len(children) == EDGE_SITES // BATCH
        # ... and both workers ran some of them; nothing ran them twice.
        ran = [w.submitted() for w in workers]
        assert all(ran), [len(r) for r in ran]
        assert ran[0].isdisjoint(ran[1])
        assert ran[0] | ran[1] == children
