"""Prefect Secret blocks as a backend of ``werft.secrets``.

werft looks for a ``credentialsRef`` in the environment and the local store first; this
backend adds Prefect Secret blocks, so a team can keep BMC credentials in the Prefect
server (`prefect block create secret`, or the UI: Blocks -> Secret) instead of on the
machine that runs the flow. Block names allow only ``[a-z0-9-]``, so ``bmc_fra1.lab`` is
looked up as the block ``bmc-fra1-lab``. A value is cached per process once found; a
missing block is asked again next time, so creating it fixes the next attempt.
"""

from __future__ import annotations

import re

from prefect.blocks.system import Secret

from werft import secrets

_found: dict[str, str] = {}


def block_name(ref: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", ref.lower())


def secret_block(ref: str) -> str | None:
    if ref in _found:
        return _found[ref]
    try:
        block = Secret.load(block_name(ref), _sync=True)  # type: ignore[call-overload]
    except ValueError:  # "Unable to find block document named ..."
        return None
    value = block.get()
    _found[ref] = value
    return value


def use_secret_blocks() -> None:
    """Register the backend (idempotent)."""
    secrets.register_backend(secret_block)
