"""One error hierarchy for werft.

Every low-level failure (HTTP status, socket error, libvirt error, bad YAML) is mapped
once, close to where it happens, onto one of these classes. Prefect's retry condition
asks a single question -- ``is_transient(exc)`` -- and nothing else decides retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum


class WerftError(Exception):
    """Base class for every error werft raises on purpose."""


# --- inventory -------------------------------------------------------------------------


class Severity(StrEnum):
    """An error stops the inventory from loading; a warning is reported and loads anyway
    (``werft validate --strict`` and ``load_inventory(strict=True)`` make it an error)."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the inventory, precise enough to fix without guessing."""

    file: str
    line: int | None
    field: str
    message: str
    fix: str = ""
    severity: Severity = Severity.ERROR

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def as_error(self) -> Problem:
        """The same problem, blocking (``--strict``)."""
        return replace(self, severity=Severity.ERROR)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        # Errors keep the plain form that editors and CI annotations already parse.
        label = "" if self.is_error else f"{self.severity.value}: "
        text = f"{where}: {label}{self.field}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "message": self.message,
            "fix": self.fix,
            "severity": self.severity.value,
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
    """Worth retrying: timeouts, 5xx, connection refused, a busy BMC, a site offline.

    ``cause`` says what happened at the wire in a word or two (``503``, ``timeout``,
    ``connection refused``, ``connection lost``), for retry statistics and for telling an
    unreachable site from a busy one; ``retry_after`` is the server's ``Retry-After`` in
    seconds when it sent one. ``retry=False`` marks a transient failure that the request
    layer must not repeat by itself (a non-idempotent request whose outcome is unknown):
    the caller observes, then decides; whole-stage retries still apply.
    """

    def __init__(
        self,
        message: str = "",
        *,
        reason: str | None = None,
        cause: str | None = None,
        retry_after: float | None = None,
        retry: bool = True,
    ) -> None:
        super().__init__(message, reason=reason)
        self.cause = cause
        self.retry_after = retry_after
        self.retry = retry


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
