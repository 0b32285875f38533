"""One error hierarchy for werft.

Every low-level failure (HTTP status, socket error, libvirt error, bad YAML) is mapped
once, close to where it happens, onto one of these classes. Prefect's retry condition
asks a single question -- ``is_transient(exc)`` -- and nothing else decides retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class WerftError(Exception):
    """Base class for every error werft raises on purpose."""


# --- inventory -------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the inventory, precise enough to fix without guessing."""

    file: str
    line: int | None
    field: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.field}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass
class InventoryError(WerftError):
    """The inventory is invalid; carries every problem found, not just the first."""

    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"inventory has {len(self.problems)} problem(s)"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


# --- runtime ---------------------------------------------------------------------------


class TransientError(WerftError):
    """Worth retrying: timeouts, 5xx, connection refused, a busy BMC, a site offline."""


class PermanentError(WerftError):
    """Retrying cannot help: bad credentials, unknown system, invalid spec."""


class SecretNotFound(PermanentError):
    """A credentialsRef that resolves to nothing."""


def is_transient(exc: BaseException) -> bool:
    """The one retry condition used by every Prefect task."""
    return isinstance(exc, TransientError)
