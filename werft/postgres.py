"""A throwaway local PostgreSQL cluster for werft's own use (the Prefect server's database
under `make up WERFT_DB=postgres`, and the tests that exercise scale-out).

    with LocalPostgres(Path(".werft/postgres/data"), port=54329) as pg:
        url = pg.create_database("prefect")   # postgresql+asyncpg://werft:...@127.0.0.1:.../prefect

Layout, all under the data directory's parent (``base``): ``data/`` (the cluster),
``run/`` (the unix socket), ``password`` (0600; the ``werft`` superuser's password, made
at initdb) and ``server.log``. TCP is 127.0.0.1 only, with scram passwords. The password
travels only in URLs and child environments: print ``where(name)``, never ``url(name)``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

from werft.errors import WerftError

USER = "werft"
# Where Debian's postgresql-NN packages put the server binaries (not on PATH there).
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SYSTEM_USER = "postgres"  # initdb and postgres refuse root; Debian's package creates this user
START_TIMEOUT_S = 60
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresError(WerftError):
    """The local PostgreSQL cluster could not be set up, started or stopped."""


class PostgresNotInstalled(PostgresError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """The newest Debian install's bin dir, else wherever `pg_ctl` is on PATH."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.name))

    debian = sorted(
        (p for p in Path("/").glob(DEBIAN_BIN_GLOB.lstrip("/")) if (p / "initdb").exists()),
        key=version,
    )
    if debian:
        return debian[-1]
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).parent / "initdb").exists():
        return Path(on_path).parent
    raise PostgresNotInstalled(
        "PostgreSQL is not installed (no initdb/pg_ctl in "
        f"{DEBIAN_BIN_GLOB} or on PATH): apt-get install postgresql"
    )


class LocalPostgres:
    """One PostgreSQL cluster in ``data_dir``, listening on 127.0.0.1:``port``."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir.resolve()
        self.base = self.data_dir.parent
        self.port = port
        self.socket_dir = self.base / "run"
        self.log = self.base / "server.log"
        self.password_file = self.base / "password"
        self.bindir = find_bindir()
        # Root cannot run initdb or the server: run them as the `postgres` system user.
        self._as: list[str] = ["runuser", "-u", SYSTEM_USER, "--"] if os.geteuid() == 0 else []

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """initdb when the data dir is empty, then start; a running cluster is adopted."""
        if self.running():
            # pg_ctl's pid file names the port the running server listens on (4th line).
            self.port = int(self._pid_lines()[3])
            self._wait_accepting()
            return
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._prepare_owned(self.socket_dir, self.log)
        self._pg_ctl(
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-l",
            str(self.log),
            "-o",
            f"-p {self.port}",
        )
        self._wait_accepting()

    def stop(self) -> None:
        """Fast shutdown (clients disconnected, no recovery on the next start); waits."""
        if not self.running():
            return
        try:
            self._pg_ctl("stop", "-m", "fast", "-w", "-t", str(START_TIMEOUT_S))
        except PostgresError:
            # A server that will not stop in time still must not outlive us.
            self._pg_ctl("stop", "-m", "immediate", "-w", "-t", str(START_TIMEOUT_S))

    def running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        status = self._run(
            [*self._as, str(self.bindir / "pg_ctl"), "status", "-D", str(self.data_dir)],
            check=False,
        )
        return status.returncode == 0  # 3: not running (a stale pid file)

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- databases -----------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create ``name`` unless it exists; its SQLAlchemy URL (it carries the password)."""
        if not _IDENTIFIER.fullmatch(name):
            raise PostgresError(f"{name!r} is not a plain database name ([a-z_][a-z0-9_]*)")
        exists = self.query(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists != "1":
            self.query(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, sql: str, database: str = "postgres") -> str:
        """Run one statement with psql over TCP; its unaligned output, stripped."""
        out = self._run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                database,
                "-c",
                sql,
            ],
            env={**os.environ, "PGPASSWORD": self.password()},
        )
        return out.stdout.strip()

    def url(self, name: str, driver: str = "asyncpg") -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{USER}:{self.password()}@127.0.0.1:{self.port}/{name}"

    def where(self, name: str) -> str:
        """What to print instead of the URL."""
        return f"127.0.0.1:{self.port}/{name}"

    def password(self) -> str:
        return self.password_file.read_text().strip()

    # --- internals -----------------------------------------------------------------------

    def _initdb(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if not self.password_file.exists():
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(24) + "\n")
        # initdb reads the password from a file its (possibly other) user can read: a
        # short-lived copy owned by that user, removed right after.
        pwfile = self.base / f".initdb-pw-{secrets.token_hex(4)}"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.password() + "\n")
        try:
            self._prepare_owned(self.data_dir, pwfile)
            self._run(
                [
                    *self._as,
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    USER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# werft: a local cluster for one user, reachable on loopback only\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                # A crash loses the last commits, never consistency: fine for local
                # history, and much less fsync on a small machine.
                "synchronous_commit = off\n"
            )

    def _prepare_owned(self, *paths: Path) -> None:
        """Create the socket dir / log file and hand them (and the data dir) to the user
        the server runs as; reaching them through the parents is checked here, where the
        error can say why."""
        for path in paths:
            if path == self.socket_dir:
                path.mkdir(mode=0o700, exist_ok=True)
            elif not path.exists():
                path.touch(mode=0o600)
            if self._as:
                shutil.chown(path, SYSTEM_USER, SYSTEM_USER)
        if (
            self._as
            and self._run([*self._as, "test", "-x", str(self.base)], check=False).returncode != 0
        ):
            raise PostgresError(
                f"the {SYSTEM_USER} user cannot reach {self.base} (a parent directory is "
                "not searchable by others); put the cluster elsewhere"
            )

    def _pid_lines(self) -> list[str]:
        return (self.data_dir / "postmaster.pid").read_text().splitlines()

    def _wait_accepting(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        isready = [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        while self._run(isready, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"PostgreSQL on 127.0.0.1:{self.port} does not accept connections "
                    f"after {START_TIMEOUT_S}s (log: {self.log})"
                )
            time.sleep(0.2)

    def _pg_ctl(self, *args: str) -> None:
        self._run([*self._as, str(self.bindir / "pg_ctl"), *args, "-D", str(self.data_dir)])

    def _run(
        self, args: list[str], check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        # cwd: runuser'd commands must not start in a directory their user cannot read.
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=env,
            cwd=self.base if self.base.exists() else None,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            command = args[len(self._as) :]
            what = f"{Path(command[0]).name} {command[1]}"
            raise PostgresError(
                f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}"
                f" (log: {self.log})"
            )
        return done
