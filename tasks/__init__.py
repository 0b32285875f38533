"""Prefect tasks: one module per stage, each a thin wrapper over werft.stages with the retry
policy of tasks.policy. A task runs one stage for one batch of clusters."""

from __future__ import annotations

from tasks.addons import addons
from tasks.bootstrap import bootstrap
from tasks.infrastructure import infrastructure
from tasks.verify import verify
from werft.conditions import ConditionType

STAGE_TASKS = {
    ConditionType.INFRASTRUCTURE_READY: infrastructure,
    ConditionType.BOOTSTRAPPED: bootstrap,
    ConditionType.ADDONS_READY: addons,
    ConditionType.VERIFIED: verify,
}

__all__ = ["STAGE_TASKS", "addons", "bootstrap", "infrastructure", "verify"]
