"""No secret leaks, whatever fails: every error path is forced in one real run (a BMC
refusing the credentials, an untrusted TLS certificate, a 500 that echoes the request and
its Authorization header, a task crash), then everything a person or another process
could read is scanned for every secret werft holds: captured logs, the Prefect database
(logs, task and flow runs, artifacts), persisted results and ``.werft/`` outside the
secret store."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.blocks.system import Secret
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, PREFECT_SERVER_DATABASE_CONNECTION_URL

from flows.models import ProvisionRequest
from tasks.secret_blocks import block_name, use_secret_blocks
from tests.flowfixtures import outcomes, provision
from tests.simfixtures import reserve_port, running_sim
from werft import secrets
from werft.demo import ensure_bmc_secrets
from werft.inventory.generate import write_fleet
from werft.inventory.load import load_inventory
from werft.redact import _credential_words, redacted_exceptions
from werft.secrets import SecretStore

# Shorter strings could occur by chance (a cluster name, a word of a message).
MIN_SECRET = 10
NOT_SECRET = (".crt", ".pub", ".expires", ".lock")


class _EchoHandler(BaseHTTPRequestHandler):
    """A broken BMC: every request gets a 500 whose message quotes the request, headers
    and all -- as some BMCs and proxies do."""

    def _echo(self) -> None:
        headers = "; ".join(f"{k}: {v}" for k, v in self.headers.items())
        body = json.dumps(
            {"error": {"code": "Base.1.8.InternalError", "message": f"bad request: {headers}"}}
        ).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _echo

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def echoing_bmc() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        thread.join(5)


def repoint_bmc(root: Path, machine: str, old_origin: str, new_origin: str) -> None:
    """Move one machine's BMC address to another origin, as a person would edit it."""
    old, new = f"{old_origin}/bmc/{machine}/", f"{new_origin}/bmc/{machine}/"
    hits = 0
    for path in root.rglob("*.yaml"):
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, new))
            hits += 1
    assert hits == 1, (machine, hits)


def secret_values(store_root: Path, extra: list[str]) -> set[str]:
    """Every secret werft holds, in the forms it could leak in: whole values, key lines,
    a BMC password alone and as the Basic header, a seed URL's token."""
    found: set[str] = set(extra)
    for path in store_root.rglob("*"):
        if not path.is_file() or path.name.endswith(NOT_SECRET) or ".locks" in path.parts:
            continue
        text = path.read_text().strip()
        found.add(text)
        found.update(_credential_words(text))
        if text.startswith(("published ", "retired ")):  # a seed record: its URL token
            found.add(text.split("/s/", 1)[-1].split()[-1].split("/")[1])
    for value in list(found):
        user, sep, password = value.partition(":")
        if sep and "\n" not in value and len(user) < 32:
            found.add(password)
            found.add(base64.b64encode(value.encode()).decode())
    return {v for v in found if len(v) >= MIN_SECRET}


def hits(secrets_: set[str], where: str, data: bytes) -> list[str]:
    """Where a secret was found -- never which: a failing test must not print it."""
    return [f"{where} ({len(v)}-char secret)" for v in sorted(secrets_) if v.encode() in data]


def files_outside(root: Path, *skip: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and not any(s == path or s in path.parents for s in skip):
            yield path


def prefect_files() -> Iterator[Path]:
    """The Prefect database (and its WAL) and persisted results."""
    db = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
    for suffix in ("", "-wal", "-journal"):
        candidate = db.with_name(db.name + suffix)
        if candidate.exists():
            yield candidate
    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    if storage.exists():
        yield from (p for p in storage.rglob("*") if p.is_file())


def test_no_secret_reaches_logs_prefect_or_werft_home_on_any_error_path(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sock = reserve_port()
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    root = workdir / "inventory"
    write_fleet(root, edge_sites=0, core_sites=0, near_edge_sites=5, endpoint=origin)
    ensure_bmc_secrets(root)
    inventory = load_inventory(root)
    artifacts = workdir / inventory.fleet.spec.artifacts.publish_dir
    store = SecretStore()
    names = sorted(inventory.clusters)
    ok, unauthorized, untrusted, echoed, via_block = names
    machine = {name: inventory.clusters[name].machines[0] for name in names}

    with (
        echoing_bmc() as echo_port,
        running_sim(
            inventory,
            sock=sock,
            time_scale=1000,
            artifacts_dir=artifacts,
            default_credentials=None,
            tls=True,
        ) as sim,
    ):
        assert sim.app.tls is not None
        sim.add_fault(kind="auth", machine=machine[unauthorized].name)  # 401
        bmc_origin = f"redfish+{origin}"
        tls_origin = f"redfish+https://127.0.0.1:{sim.app.tls.port}"  # self-signed
        repoint_bmc(root, machine[untrusted].name, bmc_origin, tls_origin)
        repoint_bmc(root, machine[echoed].name, bmc_origin, f"redfish+http://127.0.0.1:{echo_port}")
        # One credential only in a Prefect Secret block (the sim read it already).
        ref = machine[via_block].bmc.credentials_ref
        block_value = store.get(ref)
        assert block_value is not None
        Secret(value=block_value).save(block_name(ref), overwrite=True)
        store.delete(ref)

        request = ProvisionRequest(
            inventory=str(root),
            time_scale=1000,
            retry_backoff_s=0.1,
            rollout={"near-edge": {"max_failures": "100%", "canary_size": 0}},
        )
        state, result = provision(request)

    got = outcomes(result)
    assert got[ok] == got[via_block] == "Verified", got
    reasons = {c.cluster: c.reason for c in result.clusters}
    assert reasons[unauthorized] == "BMCUnauthorized"
    assert reasons[untrusted] == "CertificateUntrusted"
    assert got[echoed] != "Verified"
    assert state.is_failed()

    values = secret_values(store.root, [block_value])
    assert len(values) > 20  # the scan looks for something
    APILogWorker.drain_all(timeout=10)
    found = hits(values, "captured logs", caplog.text.encode())
    for path in prefect_files():
        found += hits(values, f"prefect {path.name}", path.read_bytes())
    seeds = artifacts / "s"
    for path in files_outside(workdir / ".werft", store.root, seeds):
        found += hits(values, str(path.relative_to(workdir)), path.read_bytes())
    assert not found, sorted(set(found))
    # The seeds (with the CA keys) of the clusters that bootstrapped are gone.
    for name in (ok, via_block):
        records = store.names(f"clusters/{name}/seeds/")
        assert records and all(store.get(r).startswith("retired ") for r in records)
    left = {p.parts[-2] for p in seeds.rglob("*.iso")}  # .../seeds/<cluster>/<file>
    assert ok not in left and via_block not in left


@task(name="crashing")
async def _crashing(ref: str) -> None:
    with redacted_exceptions():
        value = secrets.resolve(ref)
        raise RuntimeError(f"the BMC said no to {value!r}")  # a bug quoting a credential


@flow(name="crash-probe")
async def _crash_probe(ref: str) -> None:
    use_secret_blocks()
    await _crashing(ref)


def test_a_crashing_task_leaves_no_secret_in_prefect(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    caplog.set_level(logging.DEBUG)
    value = "admin:" + base64.urlsafe_b64encode(workdir.name.encode() * 2).decode()
    Secret(value=value).save("bmc-crash-probe", overwrite=True)

    state = asyncio.run(_crash_probe("bmc-crash-probe", return_state=True))

    assert state.is_failed()
    APILogWorker.drain_all(timeout=10)
    values = {value, value.split(":", 1)[1]}
    found = hits(values, "captured logs", caplog.text.encode())
    found += hits(values, "flow state", (state.message or "").encode())
    for path in prefect_files():
        found += hits(values, f"prefect {path.name}", path.read_bytes())
    assert not found, sorted(set(found))
    assert "RuntimeError" in caplog.text  # the crash itself is reported, masked
