"""The stages by the condition each one establishes, in stage order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from werft.conditions import Condition, ConditionType
from werft.inventory.resolved import ResolvedCluster
from werft.stages.addons import ensure_addons
from werft.stages.bootstrap import ensure_bootstrapped
from werft.stages.context import StageContext
from werft.stages.infrastructure import ensure_infrastructure
from werft.stages.verify import verify_cluster

StageFn = Callable[[ResolvedCluster, StageContext], Awaitable[Condition]]

STAGES: dict[ConditionType, StageFn] = {
    ConditionType.INFRASTRUCTURE_READY: ensure_infrastructure,
    ConditionType.BOOTSTRAPPED: ensure_bootstrapped,
    ConditionType.ADDONS_READY: ensure_addons,
    ConditionType.VERIFIED: verify_cluster,
}
