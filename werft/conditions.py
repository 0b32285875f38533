"""Status as conditions, in the vocabulary of Cluster API.

Each stage ends in exactly one condition for the cluster it worked on:
InfrastructureReady, Bootstrapped, AddonsReady or Verified.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from werft.redact import redact


class ConditionType(StrEnum):
    INFRASTRUCTURE_READY = "InfrastructureReady"
    BOOTSTRAPPED = "Bootstrapped"
    ADDONS_READY = "AddonsReady"
    VERIFIED = "Verified"


STAGE_ORDER: tuple[ConditionType, ...] = tuple(ConditionType)

Status = Literal["True", "False", "Unknown"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Condition(BaseModel):
    """One stage's outcome for one cluster. Small and serialisable: it travels in results."""

    type: ConditionType
    status: Status
    reason: str  # CamelCase, machine-readable: "Provisioned", "AlreadyReady", "BMCUnauthorized"
    message: str = ""
    last_transition_time: datetime = Field(default_factory=utcnow)
    duration_s: float = 0.0
    # Mutating calls this stage made; 0 on a re-run of a cluster that was already fine.
    mutations: int = 0
    # True when the failure is worth retrying (timeout, 5xx, unreachable), see werft.errors.
    transient: bool = False
    # Things checked (verify lists each check here: "nodes Ready 3/3", ...).
    checks: list[str] = Field(default_factory=list)

    # Messages quote exceptions and servers' answers; they travel into results, tables and
    # artifacts, where no logging filter reaches: mask every secret werft handed out.
    @field_validator("message")
    @classmethod
    def _redacted(cls, value: str) -> str:
        return redact(value)

    @field_validator("checks")
    @classmethod
    def _checks_redacted(cls, value: list[str]) -> list[str]:
        return [redact(check) for check in value]

    @property
    def ok(self) -> bool:
        return self.status == "True"
