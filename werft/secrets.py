"""Secrets are referenced by name and resolved at run time; never stored in Git or results.

Resolution order for a reference such as ``bmc-fra1``:
  1. the environment: ``WERFT_SECRET_BMC_FRA1``;
  2. the local secret store (``$WERFT_HOME/secrets/<name>``, directory 0700, files 0600);
  3. any extra backend registered at run time (the Prefect layer registers Secret blocks;
     this module does not import Prefect).

The same store keeps what werft generates (cluster CA keys, admin kubeconfigs).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from werft.errors import SecretNotFound

Backend = Callable[[str], str | None]
_extra_backends: list[Backend] = []


def werft_home() -> Path:
    """Where werft keeps local state: secrets, published artifacts, the Prefect database."""
    return Path(os.environ.get("WERFT_HOME", ".werft")).resolve()


def env_var_for(ref: str) -> str:
    return "WERFT_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", ref).upper()


class SecretStore:
    """A file-per-secret store, readable only by its owner."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or werft_home() / "secrets"

    def _path(self, name: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*", name) or ".." in name:
            raise ValueError(f"invalid secret name {name!r}")
        return self.root / name

    def put(self, name: str, value: str | bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        data = value.encode() if isinstance(value, str) else value
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)  # atomic: a crash never leaves half a key behind

    def get(self, name: str) -> str | None:
        path = self._path(name)
        return path.read_text() if path.exists() else None

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)


def register_backend(backend: Backend) -> None:
    if backend not in _extra_backends:
        _extra_backends.append(backend)


def resolve(ref: str, store: SecretStore | None = None) -> str:
    """The secret's value, or SecretNotFound naming every place that was searched."""
    value = os.environ.get(env_var_for(ref))
    if value is not None:
        return value
    value = (store or SecretStore()).get(ref)
    if value is not None:
        return value
    for backend in _extra_backends:
        value = backend(ref)
        if value is not None:
            return value
    raise SecretNotFound(
        f"secret {ref!r} not found: set {env_var_for(ref)} or run "
        f"`werft secret set {ref}` (or create a Prefect Secret block named {ref!r})"
    )


def basic_auth(ref: str, store: SecretStore | None = None) -> tuple[str, str]:
    """A BMC credential ``username:password`` as a pair."""
    value = resolve(ref, store)
    user, sep, password = value.partition(":")
    if not sep:
        raise SecretNotFound(f"secret {ref!r} must have the form 'username:password'")
    return user, password
