"""`make demo` and `make up`: the sample fleet, provisioned end to end on this machine.

    python -m werft.demo             start a Prefect server and the simulator, provision the
                                     sample inventory (3 core, 12 near-edge, 300 edge sites),
                                     print the fleet table and where to look, stop everything
    python -m werft.demo --stay-up   start the server, the simulator and `werft serve`, and
                                     stay up until Ctrl-C (browse runs, start new ones)

Everything runs as child processes (this module imports no Prefect): the Prefect server
keeps its database under ``.werft/prefect`` (SQLite, the default) or, with
``WERFT_DB=postgres``, in a local PostgreSQL cluster under ``.werft/postgres`` (Debian's
postgresql package; started and stopped with the demo), so run history survives; the
BMC credentials the sample inventory references are generated into the local secret store
when missing (the simulator reads the same store). What was already running is reused:
a Prefect server answering on the port, a simulator answering on 8686.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from werft.errors import SecretNotFound
from werft.exitcodes import ExitCode
from werft.postgres import LocalPostgres, PostgresError
from werft.secrets import SecretStore, resolve, werft_home
from werft.statestore import STORE_URL_ENV, store_url

INVENTORY = Path("inventory")
SIM_PORT = 8686  # the sample inventory's BMC addresses and API endpoints point here
DEFAULT_PORT = 4200
# The simulator's clock: 150 turns the ~7 minutes a bare-metal cluster takes (POST, OS
# install, API, nodes, add-ons) into ~3 s, so the 320 clusters take a few minutes in
# all, most of it the edge wave (50 clusters at a time, as the Fleet's policy says).
TIME_SCALE = 150.0
# Where the Prefect server keeps its data (WERFT_DB); SQLite needs nothing installed.
DATABASES = ("sqlite", "postgres")
PG_PORT = 54329  # off 5432, where a distribution's own cluster may already listen


def say(text: str) -> None:
    print(f"\033[1m[demo]\033[0m {text}", flush=True)


# --- child processes -------------------------------------------------------------------------


@dataclass
class Children:
    """Processes this demo started; stopped in reverse order, whatever happens. A service
    that runs detached (PostgreSQL under pg_ctl) joins with its stop function instead."""

    procs: list[tuple[str, subprocess.Popen[bytes] | Callable[[], None]]] = field(
        default_factory=list
    )

    def start(self, name: str, args: list[str], env: dict[str, str], log: Path | None) -> None:
        out = open(log, "ab") if log else None  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
        )
        self.procs.append((name, proc))

    def add_stop(self, name: str, stop: Callable[[], None]) -> None:
        """Stop something started outside this group, in order with the processes."""
        self.procs.append((name, stop))

    def check(self) -> None:
        for name, proc in self.procs:
            if isinstance(proc, subprocess.Popen) and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")

    def stop(self, timeout: float = 15.0) -> None:
        for name, proc in reversed(self.procs):
            if not isinstance(proc, subprocess.Popen):
                say(f"stopping {name}")
                try:
                    proc()
                except PostgresError as exc:  # the others still get stopped
                    say(f"stopping {name} failed: {exc}")
            elif proc.poll() is None:
                say(f"stopping {name}")
                stop_process_group(proc, timeout)
        self.procs.clear()


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the process's group (it was started in a session of its own), SIGKILL
    if it is still there after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def children() -> Iterator[Children]:
    group = Children()
    try:
        yield group
    finally:
        group.stop()


def wait_until(check: Callable[[], bool], what: str, timeout: float, group: Children) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        group.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")
        time.sleep(0.5)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the pieces --------------------------------------------------------------------------------


def werft(*args: str) -> list[str]:
    return [sys.executable, "-m", "werft.cli", *args]


def database_choice() -> str:
    """WERFT_DB: where the Prefect server keeps its data."""
    db = os.environ.get("WERFT_DB") or "sqlite"
    if db not in DATABASES:
        raise ValueError(f"WERFT_DB={db!r}: use one of {', '.join(DATABASES)}")
    return db


def start_postgres(group: Children, home: Path) -> tuple[str, str]:
    """The local PostgreSQL cluster under .werft/postgres with a `prefect` database;
    returns its URL (it carries the password: never print it) and what to print."""
    pg = LocalPostgres(home / "postgres" / "data", PG_PORT if port_free(PG_PORT) else free_port())
    group.add_stop("PostgreSQL", pg.stop)  # before start: a half-started server is stopped too
    pg.start()
    url = pg.create_database("prefect")
    where = f"PostgreSQL {pg.where('prefect')}, data in {pg.data_dir}"
    say(f"PostgreSQL answers on {pg.where('prefect')} (log: {pg.log})")
    return url, where


def start_prefect(group: Children, home: Path, port: int, db: str) -> tuple[str, str]:
    """A local Prefect server on SQLite (under .werft/prefect) or PostgreSQL (under
    .werft/postgres); returns its API URL and, for people, which database it runs on."""
    api = f"http://127.0.0.1:{port}/api"
    if answers(f"{api}/health"):
        say(f"reusing the Prefect server already answering on {api}")
        return api, "whichever the running server was started with"
    if not port_free(port):
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        say(f"port {DEFAULT_PORT} is taken; using {port}")
    prefect_home = home / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    if db == "postgres":
        database, where = start_postgres(group, home)
    else:
        database = f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}"
        where = f"SQLite {prefect_home / 'prefect.db'}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        # Prefect 3.9's name; PREFECT_API_DATABASE_CONNECTION_URL is its older alias.
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": api,
    }
    log = prefect_home / "server.log"
    say(f"starting the Prefect server on {api}, database {where} (log: {log})")
    prefect = str(Path(sys.executable).with_name("prefect"))
    args = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    group.start("Prefect server", args, env, log)
    wait_until(lambda: answers(f"{api}/health"), "the Prefect server", 120, group)
    return api, where


def ensure_bmc_secrets(inventory: Path) -> int:
    """Generate the BMC credentials the inventory references, where none exist yet."""
    from werft.inventory.load import load_inventory

    store = SecretStore()
    refs = {
        m.bmc.credentials_ref
        for c in load_inventory(inventory).clusters.values()
        for m in c.machines
        if m.bmc is not None
    }
    made = 0
    for ref in sorted(refs):
        try:
            resolve(ref, store)
        except SecretNotFound:
            store.put(ref, f"admin:{secrets.token_urlsafe(18)}")
            made += 1
    return made


def start_sim(group: Children, inventory: Path, home: Path, time_scale: float) -> str:
    url = f"http://127.0.0.1:{SIM_PORT}"
    if answers(f"{url}/healthz"):
        say(f"reusing the simulator already answering on {url}")
        return url
    forget_the_previous_fleet(home)
    log = home / "sim.log"
    say(f"starting the simulator on {url}, time scale {time_scale:g} (log: {log})")
    args = werft(
        "sim",
        "serve",
        "--inventory",
        str(inventory),
        "--port",
        str(SIM_PORT),
        "--time-scale",
        str(time_scale),
        "--artifacts-dir",
        str(home / "artifacts"),
    )
    group.start("simulator", args, dict(os.environ), log)
    wait_until(lambda: answers(f"{url}/healthz"), "the simulator", 60, group)
    return url


# What werft remembers of a fleet, under WERFT_HOME with the files store.
FLEET_STATE = ("secrets/clusters", "secrets/machines", "locks", "artifacts/s")


def forget_the_previous_fleet(home: Path) -> None:
    """A simulator starts with blank machines and no clusters, so what werft remembers of
    the fleet an earlier demo provisioned (cluster keys, seeds, machine records, locks)
    describes hardware that is gone. Its join records alone would have werft power the
    blank machines on from their disks -- right for a site that lost power, and a failed
    rollout here. The run history (Prefect's database), the BMC credentials and the
    change repository stay."""
    if store_url():
        say(
            f"{STORE_URL_ENV} is set: werft's state of an earlier demo's fleet stays in "
            "that store; against a new simulator its clusters will not come up (clear it "
            "for the sample fleet, or unset the variable)"
        )
        return
    stale = [home / part for part in FLEET_STATE if (home / part).exists()]
    if stale:
        say("a new simulator has blank machines: forgetting the fleet of an earlier demo "
            f"({', '.join(str(p.relative_to(home)) for p in stale)} under {home})")
    for path in stale:
        shutil.rmtree(path)


@dataclass
class ChangeLoop:
    repo: Path  # the local bare repository people push to
    url: str  # the webhook receiver


WEBHOOK_PORT = 8787
WEBHOOK_SECRET_REF = "werft-webhook"


def start_change_loop(
    group: Children, inventory: Path, home: Path, env: dict[str, str]
) -> ChangeLoop:
    """Changes by pull request on one machine: a bare repository under .werft whose
    post-receive hook signs forge-shaped events to `werft webhook serve`."""
    from werft.gitops.localrepo import ensure_local_repo

    store = SecretStore()
    try:
        resolve(WEBHOOK_SECRET_REF, store)
    except SecretNotFound:
        store.put(WEBHOOK_SECRET_REF, secrets.token_urlsafe(32))
    port = WEBHOOK_PORT if port_free(WEBHOOK_PORT) else free_port()
    url = f"http://127.0.0.1:{port}"
    repo = home / "inventory.git"
    if ensure_local_repo(repo, inventory, hook_url=f"{url}/hooks/github",
                         secret_ref=WEBHOOK_SECRET_REF, home=home):
        say(f"created the local inventory repository {repo} (main = {inventory}/)")
    args = werft("webhook", "serve", "--repo", str(repo), "--port", str(port),
                 "--github-secret-ref", WEBHOOK_SECRET_REF, "--github-api", "")
    say(f"starting the webhook receiver on {url} (log: {home / 'webhook.log'})")
    group.start("webhook receiver", args, env, home / "webhook.log")
    wait_until(lambda: answers(f"{url}/healthz"), "the webhook receiver", 60, group)
    return ChangeLoop(repo, url)


# --- the two modes ------------------------------------------------------------------------------


def demo(inventory: Path, port: int, time_scale: float, db: str) -> int:
    home = werft_home()
    started = time.monotonic()
    with children() as group:
        api, database = start_prefect(group, home, port, db)
        made = ensure_bmc_secrets(inventory)
        if made:
            say(f"generated {made} BMC credential(s) into {SecretStore().where}")
        start_sim(group, inventory, home, time_scale)
        report = home / "demo-report.json"
        report.unlink(missing_ok=True)
        say(f"provisioning {inventory}/ through Prefect (werft provision)")
        env = {**os.environ, "PREFECT_API_URL": api}
        code = subprocess.call(
            werft(
                "provision",
                str(inventory),
                "--time-scale",
                str(time_scale),
                "--report",
                str(report),
            ),
            env=env,
        )
        summary = json.loads(report.read_text()) if report.exists() else {}
    total = time.monotonic() - started
    counts = ", ".join(f"{n} {k}" for k, n in summary.get("counts", {}).items())
    say(f"done in {total:.0f} s: {counts or 'no result'}")
    if summary.get("url"):
        say(f"the run in the Prefect UI: {summary['url']}")
        say("  (open it with `make up`, which keeps the server up)")
    say(f"the Prefect server's database (the run history): {database}")
    say("artifacts of the run: werft-plan, werft-<wave> progress, werft-fleet, werft-summary")
    return code


def stay_up(inventory: Path, port: int, time_scale: float, db: str) -> int:
    home = werft_home()
    with children() as group:
        api, database = start_prefect(group, home, port, db)
        ensure_bmc_secrets(inventory)
        sim = start_sim(group, inventory, home, time_scale)
        # the runner looks for new runs every 2 s (default 10): UI clicks start promptly
        env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
        # Before `werft serve`: reconcile's first poll reads the repository it creates.
        hooks = start_change_loop(group, inventory, home, env)
        say(
            "serving the deployments (werft serve): provision-fleet, provision-cluster, "
            "drift-check every 15 min, plan-change, reconcile every 5 min"
        )
        group.start(
            "werft serve", werft("serve", "--time-scale", str(time_scale)), env, home / "serve.log"
        )
        ui = api.removesuffix("/api")
        pg_log = f", {home}/postgres/server.log" if db == "postgres" else ""
        print(
            f"""
  Changes by PR    git clone {hooks.repo} fleet && cd fleet && git switch -c my-change
                   (edit inventory/, commit) && git push origin my-change   -> plan-change
                   git push origin my-change:main                          -> reconcile
                   .venv/bin/werft plan --repo {hooks.repo} --base main --head my-change
                   receiver: {hooks.url}/hooks/github (log: {home}/webhook.log)
  Prefect UI       {ui}   (its database: {database})
                   Deployments -> provision-fleet -> Run (the form is the ProvisionRequest)
  CLI              PREFECT_API_URL={api} .venv/bin/werft provision --via-api
  REST             see README "Provisioning with Prefect"
  Simulator        {sim}   (kubectl: .venv/bin/werft sim kubeconfig <cluster> > kc.yaml)
  Logs             {home}/serve.log, {home}/sim.log, {home}/prefect/server.log{pg_log}

  Ctrl-C stops everything.
""",
            flush=True,
        )
        try:
            while True:
                group.check()
                time.sleep(1)
        except KeyboardInterrupt:
            say("Ctrl-C: shutting down")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m werft.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stay-up", action="store_true", help="what `make up` runs")
    parser.add_argument("--inventory", type=Path, default=INVENTORY)
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("WERFT_PREFECT_PORT", DEFAULT_PORT))
    )
    parser.add_argument(
        "--time-scale", type=float, default=float(os.environ.get("WERFT_TIME_SCALE", TIME_SCALE))
    )
    args = parser.parse_args(argv)
    try:
        db = database_choice()
    except ValueError as exc:
        say(f"failed: {exc}")
        return ExitCode.USAGE
    # Ctrl-C and a plain `kill` both end in the same clean shutdown (even where the shell
    # started us with SIGINT ignored, as non-interactive shells do for background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    run = stay_up if args.stay_up else demo
    try:
        return run(args.inventory, args.port, args.time_scale, db)
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    except (RuntimeError, PostgresError) as exc:
        say(f"failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
