"""What a drift check found on one cluster, in a shape that groups across clusters.

A finding names *what* differs the same way on every cluster it occurs on (``Deployment
flux-system/source-controller`` ``.spec.replicas``, ``Machine`` ``power``), and *where*
(the machine or node) apart, so triage can put identical drift on 300 clusters into one
group. Values are JSON text (``2``, ``"vxlan"``), so ``1`` and ``"1"`` stay different.

A cluster that could not be checked is not drifted and not in shape: Unreachable,
Unauthorized and Unknown are outcomes of their own, as are NotProvisioned (werft never
started on it) and Busy (a provisioning run holds it).
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from werft.drift.paths import MISSING

ABSENT = "(absent)"


class Area(StrEnum):
    MACHINE = "machine"
    NODE = "node"
    ADDON = "addon"


class Kind(StrEnum):
    FIELD = "field"  # an add-on object's field differs from what werft applies
    MISSING = "missing"  # an add-on object is not there
    PRUNE = "prune"  # werft applied it once; the inventory no longer has it
    MACHINE = "machine"  # power, boot override, media, image
    NODE = "node"  # missing, NotReady, kubelet version, a control-plane taint


class Outcome(StrEnum):
    IN_SHAPE = "InShape"
    DRIFTED = "Drifted"
    UNREACHABLE = "Unreachable"
    UNAUTHORIZED = "Unauthorized"
    UNKNOWN = "Unknown"
    NOT_PROVISIONED = "NotProvisioned"
    BUSY = "Busy"

    @property
    def checked(self) -> bool:
        """Did the check see the cluster (in shape or drifted)?"""
        return self in (Outcome.IN_SHAPE, Outcome.DRIFTED)


def show(value: Any) -> str:
    """A value as JSON text; ``(absent)`` where the path leads nowhere."""
    if value is MISSING or value is None:
        return ABSENT
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Finding(BaseModel):
    """One difference on one cluster. ``object``, ``field``, ``desired``, ``live`` and
    ``manager`` are the same on every cluster with the same drift (the group key)."""

    area: Area
    kind: Kind
    object: str  # "Deployment kube-system/metrics-server", "Machine", "Node"
    field: str = ""  # ".spec.replicas", "power", "" for a whole object
    desired: str = ""
    live: str = ""
    manager: str = ""  # who changed it (managedFields), "" when unknown
    since: datetime | None = None  # when, as far as the fleet says
    where: str = ""  # the machine or node on this cluster
    addon: str = ""
    addon_set: str = ""
    template: str = ""  # the template in the inventory that renders the object
    api_version: str = ""  # for add-on objects: how to address it again
    # Another manager owns the field, and the AddonSet does not say forceConflicts:
    # remediation would be refused (409) and must not take it over.
    conflict: bool = False

    def key(self) -> tuple[str, ...]:
        return (str(self.area), str(self.kind), self.object, self.field, self.desired,
                self.live, self.manager)

    def describe(self) -> str:
        what = f"{self.object} {self.field}".strip()
        if self.kind is Kind.MISSING:
            return f"{self.object} missing"
        if self.kind is Kind.PRUNE:
            return f"{self.object} no longer in the inventory (prune candidate)"
        by = f" by {self.manager}" if self.manager else ""
        return f"{what} {self.desired} → {self.live}{by}"


class ClusterReport(BaseModel):
    cluster: str
    site: str
    tier: str
    region: str
    outcome: Outcome
    reason: str = ""  # why it could not be checked (no secrets: messages name endpoints only)
    findings: list[Finding] = Field(default_factory=list)
    objects: int = 0  # add-on objects compared

    def row(self) -> dict[str, str]:
        first = self.findings[0].describe() if self.findings else self.reason
        more = f" (+{len(self.findings) - 1} more)" if len(self.findings) > 1 else ""
        return {
            "cluster": self.cluster,
            "site": self.site,
            "tier": self.tier,
            "outcome": str(self.outcome),
            "findings": str(len(self.findings)),
            "first": (first + more)[:300],
        }
