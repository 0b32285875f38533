"""The four provisioning stages: InfrastructureReady -> Bootstrapped -> AddonsReady -> Verified.

Each is ``async def stage(cluster, ctx) -> Condition`` with one shape -- observe, act on
the difference, wait with a deadline, confirm -- and never raises for a cluster's
failure. A re-run on a cluster that already satisfies a stage makes no mutating call.
"""

from __future__ import annotations

from werft.stages.addons import ensure_addons
from werft.stages.batch import run_stage_batch
from werft.stages.bootstrap import ensure_bootstrapped
from werft.stages.context import Deadline, StageContext, StageTimeouts
from werft.stages.infrastructure import ensure_infrastructure
from werft.stages.observe import observe_cluster, observe_clusters
from werft.stages.registry import STAGES, StageFn
from werft.stages.verify import verify_cluster

__all__ = [
    "STAGES",
    "Deadline",
    "StageContext",
    "StageFn",
    "StageTimeouts",
    "ensure_addons",
    "ensure_bootstrapped",
    "ensure_infrastructure",
    "observe_cluster",
    "observe_clusters",
    "run_stage_batch",
    "verify_cluster",
]
