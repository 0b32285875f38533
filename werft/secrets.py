"""Secrets are referenced by name and resolved at run time; never stored in Git or results.

Resolution order for a reference such as ``bmc-fra1``:
  1. the environment: ``WERFT_SECRET_BMC_FRA1``;
  2. the secret store: the SQL table named by ``WERFT_STORE_URL`` when it is set (shared
     by every worker on every machine), else ``$WERFT_HOME/secrets/<name>`` (directory
     0700, files 0600) -- see ``werft.statestore``;
  3. any extra backend registered at run time (the Prefect layer registers Secret blocks;
     this module does not import Prefect).

The same store keeps what werft generates (cluster CA keys, admin kubeconfigs). With
``WERFT_STORE_KEY`` set, its values are sealed at rest (``werft.sealing``).

Every value handed out here is registered with ``werft.redact``, so it is masked in every
log record of the process from then on. A backend that caches (Prefect Secret blocks)
registers an invalidation hook: ``invalidate(ref)`` after the endpoint refused the
credential (HTTP 401) makes the next ``resolve`` read it afresh, so a rotated password
works without restarting the worker.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from werft.errors import SecretNotFound
from werft.redact import register_basic_auth, register_secret
from werft.statestore import FileBackend, StateBackend, state_backend

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
    """Named secrets and generated state, in the store every worker sees.

    ``SecretStore()`` is the shared store: the SQL table of ``WERFT_STORE_URL`` when it is
    set, else files under ``$WERFT_HOME/secrets`` (``for_home`` picks the same for another
    home). ``SecretStore(root)`` is files under ``root``, whatever the environment says
    (tests, and tools that read one machine's folder). Files are readable only by their
    owner (folders 0700, files 0600).

    ``root`` is always a local folder: the files themselves, or -- with a SQL store --
    where this machine keeps local helpers (``werft.render.pki``'s replacement locks).
    ``backend`` holds the values; everything read or written through this class is
    registered for redaction unless its name ends in a public suffix, on either backend.
    """

    def __init__(self, root: Path | None = None, *, backend: StateBackend | None = None) -> None:
        home = werft_home()
        self.root = root or home / "secrets"
        if backend is None:
            backend = FileBackend(root) if root is not None else state_backend("secrets", home)
        self.backend = backend

    @classmethod
    def for_home(cls, home: Path) -> SecretStore:
        """The shared store of a werft home: the SQL store when ``WERFT_STORE_URL`` is set,
        else ``<home>/secrets``."""
        return cls(home / "secrets", backend=state_backend("secrets", home))

    @property
    def where(self) -> str:
        """Where the values live, for messages (a SQL store's URL without credentials)."""
        return self.backend.description

    def put(self, name: str, value: str | bytes) -> None:
        if not name.endswith(_PUBLIC_SUFFIXES):
            register_secret(value)  # generated here (a CA key, a token): masked from now on
        self.backend.put(name, _bytes(value))  # atomic: a crash never leaves half a key

    def put_if_absent(self, name: str, value: str | bytes) -> str:
        """Store ``value`` under ``name`` unless something is stored there already, and
        return what is stored afterwards: ``value`` if this call won, the earlier writer's
        value if it lost. Two workers racing on one name both get the one winner -- on
        files by ``link`` (atomic, NFS included), on SQL by ``INSERT ... ON CONFLICT DO
        NOTHING`` and reading back (see ``werft.statestore``). A reader never sees half a
        key, and this method never changes a stored value (``put`` overwrites, for
        repairs and renewals, atomically too).
        """
        stored = self.backend.put_if_absent(name, _bytes(value)).decode()
        if not name.endswith(_PUBLIC_SUFFIXES):
            register_secret(stored)
        return stored

    def get(self, name: str) -> str | None:
        raw = self.backend.get(name)
        if raw is None:
            return None
        value = raw.decode()
        if not name.endswith(_PUBLIC_SUFFIXES):
            register_secret(value)
        return value

    def delete(self, name: str) -> None:
        self.backend.delete(name)

    def names(self, prefix: str) -> list[str]:
        """The names stored under the folder ``prefix`` (which ends with ``/``), sorted;
        not recursive."""
        return self.backend.names(prefix)


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def register_backend(backend: Backend, *, invalidate: Invalidator | None = None) -> None:
    """Add a backend after the environment and the secret store; ``invalidate(ref)`` drops
    what it cached for ``ref`` (see ``invalidate``)."""
    if backend not in _extra_backends:
        _extra_backends.append(backend)
    if invalidate is not None and invalidate not in _invalidators:
        _invalidators.append(invalidate)


def invalidate(ref: str) -> None:
    """Forget any cached value of ``ref``: the endpoint refused it (HTTP 401), so the next
    ``resolve`` reads it from its source again (a rotated password). The environment and
    the secret store are read on every ``resolve`` anyway."""
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
