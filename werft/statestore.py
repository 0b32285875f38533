"""Where werft keeps generated state, so that every worker on every machine sees it.

Generated state -- cluster CAs, tokens, kubeconfigs, seed references (``SecretStore``),
the resets werft sent a machine (``MachineRecords``), per-cluster leases
(``ClusterLocks``) -- is a set of named byte strings with a few primitives:

``put``              overwrite (repairs, renewals, records);
``put_if_absent``    create-if-absent, returning what is stored afterwards, so of two
                     workers racing on one name both end with the winner's value;
``replace_if``       compare-and-set: replace the value only while it is still ``expected``;
``delete_if``        delete only while the value is still ``expected``;
``get``, ``delete``, ``names(prefix)`` (non-recursive, like a folder listing), ``walk()``
                     (every name, for maintenance such as ``werft secret seal``).

Two implementations, chosen in one place (``state_backend``):

* ``FileBackend`` -- files under ``$WERFT_HOME/<area>`` (the default, unchanged): every
  worker sees them when WERFT_HOME is on shared storage (NFS), or there is one machine.
* ``SqlBackend`` -- one table, ``werft_state``, in the database named by the environment
  variable ``WERFT_STORE_URL`` (a SQLAlchemy URL: ``postgresql+psycopg://...`` for a
  fleet, ``sqlite:///path`` for one machine and tests). Areas are name prefixes.

The backends do not redact: ``SecretStore`` registers what it hands out (one rule for
both), while machine records and leases go through the backend directly, unregistered.
The store URL carries a password: it is registered for redaction when loaded, and errors
name the database by ``description`` (driver, host, port, database), never the URL.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from werft.errors import PermanentError, TransientError
from werft.files import write_atomically
from werft.redact import redact, register_secret
from werft.sealing import SealedBackend, store_keys_from_env

STORE_URL_ENV = "WERFT_STORE_URL"
SEALED_AREAS = frozenset({"secrets"})
TABLE = "werft_state"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*")
_CONNECT_TIMEOUT_S = 10  # an unreachable store fails the task (transient), never hangs it
T = TypeVar("T")


def check_name(name: str) -> str:
    """``name`` if it is a valid store name (a relative path without ``..``); the same rule
    for both backends, so a name valid in one is valid in the other."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"invalid secret name {name!r}")
    return name


class StateBackend(Protocol):
    """The primitives every store offers; values are bytes, names ``check_name``-valid."""

    description: str  # where the state lives, for messages: never carries a password

    def get(self, name: str) -> bytes | None: ...
    def put(self, name: str, value: bytes) -> None: ...
    def put_if_absent(self, name: str, value: bytes) -> bytes: ...
    def replace_if(self, name: str, expected: bytes, value: bytes) -> bool: ...
    def delete(self, name: str) -> None: ...
    def delete_if(self, name: str, expected: bytes) -> bool: ...
    def names(self, prefix: str) -> list[str]: ...
    def walk(self) -> list[str]: ...


# --- files -----------------------------------------------------------------------------


class FileBackend:
    """A file per name under ``root`` (folders 0700, files 0600), every write atomic."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)
        # Folders this instance made (or found): a cluster's keys are a dozen writes to
        # one folder, and making sure of it each time was 3% of an edge rollout's CPU.
        self._folders: set[Path] = set()

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def _folder_for(self, name: str) -> Path:
        path = self._path(name)
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.root, 0o700)
            self._folders.add(path.parent)
        return path

    def _writing(self, name: str, write: Callable[[Path], T]) -> T:
        """``write(path)`` in a folder that exists, made again if someone removed it
        since this instance made it."""
        try:
            return write(self._folder_for(name))
        except FileNotFoundError:
            self._folders.clear()
            return write(self._folder_for(name))

    def get(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, name: str, value: bytes) -> None:
        # A crash never leaves half a key.
        self._writing(name, lambda path: write_atomically(path, value))

    def put_if_absent(self, name: str, value: bytes) -> bytes:
        """Why it is atomic: the value is written completely to a temporary file of a
        unique name in the same folder, then published with ``link(tmp, name)``, which
        creates the name only if it does not exist (``EEXIST`` otherwise) in one step of
        the filesystem -- the guarantee of ``O_CREAT|O_EXCL``, but ``O_EXCL`` would publish
        the name while the file is still empty. ``link`` is atomic on NFS too; a lost
        reply whose retry says ``EEXIST`` is harmless, because the loser reads back what
        is stored rather than assuming it lost. A reader never sees half a value."""
        return self._writing(name, lambda path: self._link_if_absent(name, path, value))

    def _link_if_absent(self, name: str, path: Path, value: bytes) -> bytes:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:  # mkstemp creates it 0600
                handle.write(value)
                handle.flush()
                os.fsync(handle.fileno())  # complete on disk before its name is public
            for _ in range(3):
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    stored = self.get(name)
                    if stored is not None:
                        return stored
                    continue  # deleted between link and read: try again
                return value
        finally:
            os.unlink(tmp)
        raise TransientError(f"{name}: created and deleted again while being stored")

    def replace_if(self, name: str, expected: bytes, value: bytes) -> bool:
        """Set aside what is there if it is ``expected``, then publish ``value`` unless
        someone created the name in between; two callers never both succeed."""
        return self.delete_if(name, expected) and self.put_if_absent(name, value) == value

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def delete_if(self, name: str, expected: bytes) -> bool:
        """Renaming is atomic: of two callers one gets the file; if what it got is not
        ``expected`` (it changed since the caller read it), it puts it back."""
        path = self._path(name)
        aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        try:
            if aside.read_bytes() == expected:
                return True
            with contextlib.suppress(FileExistsError):  # someone created a new one since
                os.link(aside, path)
            return False
        finally:
            aside.unlink(missing_ok=True)

    def names(self, prefix: str) -> list[str]:
        folder = self._path(prefix.rstrip("/"))
        if not folder.is_dir():
            return []
        return sorted(prefix + p.name for p in folder.iterdir() if _holds_value(p, folder))

    def walk(self) -> list[str]:
        """Every stored name."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if _holds_value(p, self.root)
        )


def _holds_value(path: Path, under: Path) -> bool:
    """Is this file under ``under`` a stored value? Not a hidden one (a write's temporary
    file, ``.locks/``: werft.render.pki's lock files, on this machine only; no name starts
    with a dot), nor one set aside by ``delete_if``."""
    if not path.is_file() or path.name.endswith(".stale"):
        return False
    return not any(part.startswith(".") for part in path.relative_to(under).parts)


# --- SQL -------------------------------------------------------------------------------

_metadata = sa.MetaData()
_table = sa.Table(
    TABLE,
    _metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
# Both dialects' INSERT has ON CONFLICT (DO NOTHING / DO UPDATE); the generic one has not.
_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class SqlBackend:
    """The names of one ``area`` (a prefix such as ``secrets/``) in the ``werft_state``
    table. Every primitive is one short transaction; those that write start with the
    write, so SQLite takes its write lock first (waiting for another writer) and never
    has to upgrade a read lock, which it would refuse at once instead of waiting."""

    def __init__(self, engine: Engine, area: str, description: str) -> None:
        self._engine = engine
        self._area = area.rstrip("/") + "/"
        self.description = description
        dialect = engine.dialect.name
        if dialect not in _INSERTS:
            raise PermanentError(f"state store {description}: unsupported database {dialect}")
        self._insert = _INSERTS[dialect]

    def _key(self, name: str) -> str:
        return self._area + check_name(name)

    def _run(self, work: Callable[[Connection], T]) -> T:
        try:
            with self._engine.begin() as conn:
                return work(conn)
        except DBAPIError as exc:
            raise _store_error(self.description, exc) from exc
        except PoolTimeout as exc:  # every pooled connection busy for pool_timeout seconds
            raise TransientError(
                f"state store {self.description}: no free connection", reason="StoreUnavailable"
            ) from exc

    def _read(self, conn: Connection, key: str) -> bytes | None:
        row = conn.execute(sa.select(_table.c.value).where(_table.c.name == key)).first()
        return None if row is None else bytes(row[0])

    def get(self, name: str) -> bytes | None:
        key = self._key(name)
        return self._run(lambda conn: self._read(conn, key))

    def put(self, name: str, value: bytes) -> None:
        row = {"name": self._key(name), "value": value, "updated_at": _now()}
        statement = self._insert(_table).values(row)
        statement = statement.on_conflict_do_update(
            index_elements=[_table.c.name],
            set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at},
        )
        self._run(lambda conn: conn.execute(statement))

    def put_if_absent(self, name: str, value: bytes) -> bytes:
        """``INSERT ... ON CONFLICT DO NOTHING``, then read back in the same transaction:
        on PostgreSQL the insert waits for a concurrent inserter of the name to commit,
        and the read (a fresh snapshot per statement under READ COMMITTED) sees its row."""
        key = self._key(name)
        row = {"name": key, "value": value, "updated_at": _now()}
        statement = self._insert(_table).values(row).on_conflict_do_nothing()

        def insert_and_read(conn: Connection) -> bytes | None:
            conn.execute(statement)
            return self._read(conn, key)

        for _ in range(3):
            stored = self._run(insert_and_read)
            if stored is not None:
                return stored  # deleted in between otherwise: try again
        raise TransientError(f"{name}: created and deleted again while being stored")

    def replace_if(self, name: str, expected: bytes, value: bytes) -> bool:
        statement = (
            sa.update(_table)
            .where(_table.c.name == self._key(name), _table.c.value == expected)
            .values(value=value, updated_at=_now())
        )
        return self._run(lambda conn: conn.execute(statement).rowcount == 1)

    def delete(self, name: str) -> None:
        statement = sa.delete(_table).where(_table.c.name == self._key(name))
        self._run(lambda conn: conn.execute(statement))

    def delete_if(self, name: str, expected: bytes) -> bool:
        statement = sa.delete(_table).where(
            _table.c.name == self._key(name), _table.c.value == expected
        )
        return self._run(lambda conn: conn.execute(statement).rowcount == 1)

    def names(self, prefix: str) -> list[str]:
        """The names directly under ``prefix`` (ends with ``/``): like the folder listing,
        not recursive."""
        start = self._key(prefix.rstrip("/")) + "/"
        skip = len(self._area)
        return sorted(key[skip:] for key in self._keys_from(start) if "/" not in key[len(start):])

    def walk(self) -> list[str]:
        return sorted(key[len(self._area) :] for key in self._keys_from(self._area))

    def _keys_from(self, start: str) -> list[str]:
        """Every key that starts with ``start``; LIKE wildcards in it are escaped."""
        pattern = re.sub(r"([\\%_])", r"\\\1", start) + "%"
        statement = sa.select(_table.c.name).where(_table.c.name.like(pattern, escape="\\"))
        return self._run(lambda conn: [row[0] for row in conn.execute(statement)])


def _now() -> datetime:
    return datetime.now(UTC)


# --- choosing the store ----------------------------------------------------------------

_engines: dict[str, tuple[Engine, str]] = {}
_engines_guard = threading.Lock()


def describe(url: URL) -> str:
    """The database without its credentials: ``postgresql://host:5432/werft``."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///{url.database or ''}"
    port = f":{url.port}" if url.port else ""
    return f"{url.get_backend_name()}://{url.host or ''}{port}/{url.database or ''}"


def _engine_for(raw: str) -> tuple[Engine, str]:
    """One engine per URL per process (its pool is shared by every store of the process);
    the table is created on first use."""
    with _engines_guard:
        if raw in _engines:
            return _engines[raw]
        try:
            url = make_url(raw)
        except ArgumentError:
            # The message of ArgumentError repeats the URL: never show it.
            raise PermanentError(f"{STORE_URL_ENV} is not a SQLAlchemy URL") from None
        register_secret(url.password if isinstance(url.password, str) else None)
        description = describe(url)
        options: dict[str, object] = {}
        if url.get_backend_name() == "postgresql":
            # Sync engine on psycopg 3 whatever driver the URL names (an asyncpg URL of
            # the same database works as is).
            url = url.set(drivername="postgresql+psycopg")
            options["connect_args"] = {"connect_timeout": _CONNECT_TIMEOUT_S}
        elif url.get_backend_name() == "sqlite":
            options["connect_args"] = {"timeout": 30}  # wait for another writer's lock
        try:
            engine = sa.create_engine(
                url,
                pool_pre_ping=True,  # a connection the database dropped is replaced unseen
                pool_size=4,
                max_overflow=8,
                pool_recycle=1800,
                hide_parameters=True,  # statement parameters are secret values
                **options,
            )
        except (ArgumentError, NoSuchModuleError) as exc:
            raise PermanentError(f"state store {description}: {type(exc).__name__}") from None
        _create_table(engine, description)
        _engines[raw] = (engine, description)
        return engine, description


def _create_table(engine: Engine, description: str) -> None:
    """Create the table if absent. Two processes starting at once may both try; the
    loser's error (PostgreSQL: a duplicate in pg_type; SQLite: table exists) is harmless
    once the table is there."""
    try:
        _metadata.create_all(engine, checkfirst=True)
    except DBAPIError as exc:
        try:
            present = sa.inspect(engine).has_table(TABLE)
        except DBAPIError:
            present = False
        if not present:
            raise _store_error(description, exc) from exc


def _store_error(description: str, exc: DBAPIError) -> TransientError | PermanentError:
    """A database failure as werft's error: the database unreachable, restarting or busy
    is transient; anything else (no permission, a broken schema) is not.

    The message names the database by ``description``. Of the driver's own text it keeps
    the first line of a connection failure (which says why: refused, bad password --
    redacted, though it never repeats the password) and only the error's class
    otherwise: a constraint violation's text may quote the row, a secret value. Statement
    parameters are hidden by the engine (``hide_parameters``) in the chained cause too."""
    reason = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
    message = f"state store {description}: {reason}"
    if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
        first = redact(str(exc.orig or "")).strip().splitlines()[:1]
        detail = f" ({first[0][:300]})" if first else ""
        return TransientError(message + detail, reason="StoreUnavailable")
    return PermanentError(message, reason="StoreFailed")


def store_url() -> str | None:
    """``WERFT_STORE_URL`` if set (and not blank)."""
    return (os.environ.get(STORE_URL_ENV) or "").strip() or None


def state_backend(area: str, home: Path) -> StateBackend:
    """The one place the store is chosen: the SQL table named by ``WERFT_STORE_URL``
    (names prefixed by ``area``), else files under ``<home>/<area>`` as always. The
    secrets area is sealed with ``WERFT_STORE_KEY`` when it is set (``werft.sealing``);
    leases carry nothing secret."""
    url = store_url()
    backend: StateBackend
    if url is None:
        backend = FileBackend(home / area)
    else:
        engine, description = _engine_for(url)
        backend = SqlBackend(engine, area, description)
    if area in SEALED_AREAS:
        return SealedBackend(backend, store_keys_from_env())
    return backend


def dispose_engines() -> None:
    """Close every pooled connection (tests dropping a database; a clean shutdown)."""
    with _engines_guard:
        for engine, _ in _engines.values():
            engine.dispose()
        _engines.clear()


def _after_fork() -> None:
    # A forked child must not use its parent's connections (they share one socket); drop
    # them without closing, which would end the parent's sessions.
    for engine, _ in list(_engines.values()):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork)

