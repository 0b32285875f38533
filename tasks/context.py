"""What a task needs besides its batch: the inventory and the stage context of its run.

Task parameters stay small and serialisable (a ``RunRef`` and cluster names, never the
inventory or a client), so a batch could run in another process or on another machine.
In the usual case the flow has opened the run in this process (``open_run``) and a task
finds its resources by the run's key; a task in a process that has not (a worker running
a handed-off batch) loads the same inventory revision itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from werft.inventory.resolved import Inventory
from werft.stages import StageContext, StageTimeouts


class InventorySource(BaseModel):
    """Where the desired state comes from: a folder, or a folder in a Git revision."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field("inventory", description="inventory folder (inside the repo with a ref)")
    repo: str | None = Field(None, description="Git repository to read it from")
    git_ref: str | None = Field(None, description="Git revision (branch, tag, commit)")

    def load(self) -> Inventory:
        """Load and validate; raises ``InventoryError`` with every problem found."""
        from werft.inventory.load import load_inventory

        return load_inventory(self.path, git_ref=self.git_ref, repo=self.repo)

    def describe(self) -> str:
        if self.git_ref or self.repo:
            return f"{self.repo or '.'}@{self.git_ref or 'HEAD'}:{self.path}"
        return self.path


class RunRef(BaseModel):
    """Names one provisioning run's resources; passed to every task of the run."""

    model_config = ConfigDict(extra="forbid")

    key: str  # the flow run id
    source: InventorySource
    time_scale: float = 1.0  # stage deadlines and polling divided by this (the simulator)


@dataclass
class RunResources:
    inventory: Inventory
    stages: StageContext


_open: dict[str, RunResources] = {}


# The shortest stage deadline of a simulated run (time_scale > 1), in wall-clock seconds.
# The time scale speeds up the simulated machines, not werft's own work: a request that
# meets a fault retries over seconds of real time, as it would at a real site, and a
# deadline scaled below that would turn ordinary retries into Timeouts.
SIMULATED_MIN_DEADLINE_S = 10.0


def _resources(ref: RunRef, inventory: Inventory) -> RunResources:
    timeouts = StageTimeouts()
    if ref.time_scale != 1.0:
        timeouts = timeouts.scaled(ref.time_scale, min_deadline=SIMULATED_MIN_DEADLINE_S)
    return RunResources(inventory, StageContext.for_inventory(inventory, timeouts=timeouts))


@asynccontextmanager
async def open_run(ref: RunRef, inventory: Inventory) -> AsyncIterator[RunResources]:
    """Make the run's resources available to its tasks in this process; close them after."""
    resources = _open[ref.key] = _resources(ref, inventory)
    try:
        yield resources
    finally:
        _open.pop(ref.key, None)
        await resources.stages.aclose()


async def resources_for(ref: RunRef) -> RunResources:
    """The run's resources: the flow's own, or loaded here (and kept for this process)."""
    if ref.key not in _open:
        inventory = await asyncio.to_thread(ref.source.load)
        _open.setdefault(ref.key, _resources(ref, inventory))
    return _open[ref.key]
