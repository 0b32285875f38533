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


def default_reason(cls: type[BaseException]) -> str:
    """The reason an error carries when nobody named one: its class name without the
    ``Error`` suffix (``TransientError`` -> ``Transient``, ``SecretNotFound`` ->
    ``SecretNotFound``)."""
    return cls.__name__.removesuffix("Error")


class _Classified(WerftError):
    """A runtime failure, classified once where it happens.

    ``reason`` is a machine-readable CamelCase word a Condition can carry as it is
    (``Unreachable``, ``BMCUnauthorized``, ``MediaUnavailable``): whoever maps a low-level
    failure onto this class names it (``TransientError(msg, reason="Unreachable")``), so
    nobody downstream guesses it from the message text. Without one, it is derived from
    the class (``default_reason``).
    """

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason: str = reason or default_reason(type(self))


class TransientError(_Classified):
    """Worth retrying: timeouts, 5xx, connection refused, a busy BMC, a site offline."""


class PermanentError(_Classified):
    """Retrying cannot help: bad credentials, unknown system, invalid spec."""


class SecretNotFound(PermanentError):
    """A credentialsRef that resolves to nothing."""


# The reasons that say no more than the class: whoever reports the failure names it in
# its own words (a stage: "ProvisioningFailed").
GENERIC_REASONS = frozenset({default_reason(TransientError), default_reason(PermanentError)})


def is_transient(exc: BaseException) -> bool:
    """The one retry condition used by every Prefect task."""
    return isinstance(exc, TransientError)
