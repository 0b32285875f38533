"""Secrets are referenced by name and resolved at run time; never stored in Git or results.

Resolution order for a reference such as ``bmc-fra1``:
  1. the environment: ``WERFT_SECRET_BMC_FRA1``;
  2. the local secret store (``$WERFT_HOME/secrets/<name>``, directory 0700, files 0600);
  3. any extra backend registered at run time (the Prefect layer registers Secret blocks;
     this module does not import Prefect).

The same store keeps what werft generates (cluster CA keys, admin kubeconfigs).

Every value handed out here is registered with ``werft.redact``, so it is masked in every
log record of the process from then on. A backend that caches (Prefect Secret blocks)
registers an invalidation hook: ``invalidate(ref)`` after the endpoint refused the
credential (HTTP 401) makes the next ``resolve`` read it afresh, so a rotated password
works without restarting the worker.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from werft.errors import SecretNotFound
from werft.files import write_atomically
from werft.redact import register_basic_auth, register_secret

Backend = Callable[[str], str | None]
Invalidator = Callable[[str], None]
_extra_backends: list[Backend] = []
_invalidators: list[Invalidator] = []
# Store items that are no secret (certificates, public keys, a token's expiry): not masked.
_PUBLIC_SUFFIXES = (".crt", ".pub", ".expires")


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
        if not name.endswith(_PUBLIC_SUFFIXES):
            register_secret(value)  # generated here (a CA key, a token): masked from now on
        write_atomically(path, value)  # a crash never leaves half a key behind

    def put_if_absent(self, name: str, value: str | bytes) -> str:
        """Store ``value`` under ``name`` unless something is stored there already, and
        return what is stored afterwards: ``value`` if this call won, the earlier writer's
        value if it lost. Two workers racing on one name both get the one winner.

        Why it is atomic: the value is written completely to a temporary file of a unique
        name in the same folder, then published with ``link(tmp, name)``, which creates
        the name only if it does not exist (``EEXIST`` otherwise) in one step of the
        filesystem -- the guarantee of ``O_CREAT|O_EXCL``, but ``O_EXCL`` would publish
        the name while the file is still empty. ``link`` is atomic on NFS too; a lost
        reply whose retry says ``EEXIST`` is harmless, because the loser's path reads
        back what is stored rather than assuming it lost. A reader never sees half a
        key: the name appears only once the file behind it is complete, and it is
        never changed by this method (``put`` overwrites, for repairs and renewals,
        with ``replace``, which is atomic too).
        """
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        data = value.encode() if isinstance(value, str) else value
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:  # mkstemp creates it 0600
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())  # complete on disk before its name is public
            try:
                os.link(tmp, path)
            except FileExistsError:
                stored = path.read_text()
            else:
                stored = data.decode()
        finally:
            os.unlink(tmp)
        if not name.endswith(_PUBLIC_SUFFIXES):
            register_secret(stored)
        return stored

    def get(self, name: str) -> str | None:
        path = self._path(name)
        if not path.exists():
            return None
        value = path.read_text()
        if not name.endswith(_PUBLIC_SUFFIXES):
            register_secret(value)
        return value

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def names(self, prefix: str) -> list[str]:
        """The names stored under the folder ``prefix`` (which ends with ``/``), sorted;
        not recursive."""
        folder = self._path(prefix.rstrip("/"))
        if not folder.is_dir():
            return []
        return sorted(
            prefix + p.name for p in folder.iterdir() if p.is_file() and not p.name.endswith(".tmp")
        )


def register_backend(backend: Backend, *, invalidate: Invalidator | None = None) -> None:
    """Add a backend after the environment and the local store; ``invalidate(ref)`` drops
    what it cached for ``ref`` (see ``invalidate``)."""
    if backend not in _extra_backends:
        _extra_backends.append(backend)
    if invalidate is not None and invalidate not in _invalidators:
        _invalidators.append(invalidate)


def invalidate(ref: str) -> None:
    """Forget any cached value of ``ref``: the endpoint refused it (HTTP 401), so the next
    ``resolve`` reads it from its source again (a rotated password). The environment and
    the local store are read on every ``resolve`` anyway."""
    for drop in _invalidators:
        drop(ref)


def resolve(ref: str, store: SecretStore | None = None) -> str:
    """The secret's value, or SecretNotFound naming every place that was searched."""
    value = os.environ.get(env_var_for(ref))
    if value is not None:
        register_secret(value)
        return value
    value = (store or SecretStore()).get(ref)
    if value is not None:
        return value
    for backend in _extra_backends:
        value = backend(ref)
        if value is not None:
            register_secret(value)
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
    register_basic_auth(user, password)
    return user, password
