"""The exit codes of every `werft` command, in one place (the README's table mirrors this).

click already exits 2 for an unknown option or a bad option value, so usage errors that
werft finds itself (a missing folder, an unknown cluster) use the same code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    # The thing checked is not fine: an invalid inventory, a cluster that is not Verified.
    NOT_FINE = 1
    # The command cannot do what was asked: a bad option, a missing folder or revision, an
    # unknown cluster or site, a selection that matches nothing.
    USAGE = 2
    # `werft drift`: the check ran and found drift (grep-able apart from an error, 1).
    DRIFT = 3
    # `werft plan`: the change is valid but a change policy denies it (or werft refuses it).
    DENIED = 4
