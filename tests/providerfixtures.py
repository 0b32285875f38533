"""Loopback servers for the provider tests (no tests here; imported by test_providers_*).

- ``LoopbackHttp``: a tiny asyncio HTTP/1.1 server with programmed replies (status, JSON,
  delays, dropped connections, optional TLS) that records what it was sent;
- ``artifact_server``: serves any ``*.iso`` path with a few bytes, as boot media;
- ``SushyEmulator``: sushy-tools' ``sushy-emulator`` (fake driver) in a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import bcrypt
import httpx

from werft.inventory.model import BMC, Machine, Role, VMSpec


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bmc_machine(name: str, address: str, ref: str = "bmc-test", **bmc: Any) -> Machine:
    return Machine(
        name=name,
        role=Role.CONTROL_PLANE,
        bmc=BMC(address=address, credentials_ref=ref, **bmc),
        boot_mac_address="52:54:00:00:00:01",
    )


def vm_machine(name: str, host: str, mac: str | None = "52:54:00:12:34:56") -> Machine:
    return Machine(
        name=name,
        role=Role.WORKER,
        vm=VMSpec(host=host, cpus=2, memory_mib=2048, disk_gib=10),
        boot_mac_address=mac,
    )


def seed_url(base: str, cluster: str, machine: str, digest: str = "0123456789ab") -> str:
    return f"{base}/seeds/{cluster}/{machine}-{digest}.iso"


# --- programmable loopback HTTP server ------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes/str -> as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (bounded by the test)
    drop: bool = False  # close the connection without answering


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class LoopbackHttp:
    """``routes[(method, path)] -> Reply``; unknown routes answer 404 JSON."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[tuple[str, str], Reply] = {}
        self.seen: list[Seen] = []
        # Called with each request before its reply is chosen: lets a test make the
        # fake BMC react to writes (e.g. show a boot override after a PATCH).
        self.on_request: Callable[[Seen], None] | None = None
        self._tls = tls
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def origin(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def json(self, path: str, body: Any, status: int = 200, method: str = "GET") -> None:
        self.routes[(method, path)] = Reply(status, body)

    async def start(self) -> LoopbackHttp:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path = target.split("?", 1)[0]
                seen = Seen(method, path, headers, body)
                self.seen.append(seen)
                if self.on_request is not None:
                    self.on_request(seen)
                reply = self.routes.get((method, path)) or Reply(
                    404, {"error": {"code": "Base.1.0.ResourceMissingAtURI", "message": path}}
                )
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                if reply.drop:
                    break
                writer.write(_response(reply))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _response(reply: Reply) -> bytes:
    if isinstance(reply.body, bytes):
        payload, ctype = reply.body, "application/octet-stream"
    elif isinstance(reply.body, str):
        payload, ctype = reply.body.encode(), "text/html"
    elif reply.body is None:
        payload, ctype = b"", "application/json"
    else:
        payload, ctype = json.dumps(reply.body).encode(), "application/json"
    headers = {"Content-Type": ctype, "Content-Length": str(len(payload)), **reply.headers}
    head = f"HTTP/1.1 {reply.status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + payload


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 and the path of its certificate (the CA)."""
    from werft.sim.kube.tls import self_signed

    serving = self_signed(hosts=("127.0.0.1",))
    cert_path, key_path = directory / "bmc.crt", directory / "bmc.key"
    cert_path.write_bytes(serving.cert_pem)
    key_path.write_bytes(serving.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


def minimal_redfish(server: LoopbackHttp, prefix: str = "", *, on_manager: bool = False) -> None:
    """A small but standard Redfish tree: one system, two CD devices.

    ``on_manager`` hangs VirtualMedia off the Manager (older BMCs) instead of the System;
    every ``@odata.id`` carries ``prefix``.
    """
    p = prefix
    server.json(
        f"{p}/redfish/v1",
        {
            "@odata.id": f"{p}/redfish/v1",
            "Systems": {"@odata.id": f"{p}/redfish/v1/Systems"},
            "Managers": {"@odata.id": f"{p}/redfish/v1/Managers"},
        },
    )
    server.json(
        f"{p}/redfish/v1/Systems",
        {
            "@odata.id": f"{p}/redfish/v1/Systems",
            "Members": [{"@odata.id": f"{p}/redfish/v1/Systems/System.Embedded.1"}],
        },
    )
    system: dict[str, Any] = {
        "@odata.id": f"{p}/redfish/v1/Systems/System.Embedded.1",
        "Id": "System.Embedded.1",
        "PowerState": "Off",
        "Boot": {"BootSourceOverrideTarget": "None", "BootSourceOverrideEnabled": "Disabled"},
        "Links": {"ManagedBy": [{"@odata.id": f"{p}/redfish/v1/Managers/iDRAC.Embedded.1"}]},
    }
    media_root = f"{p}/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia"
    if not on_manager:
        media_root = f"{p}/redfish/v1/Systems/System.Embedded.1/VirtualMedia"
        system["VirtualMedia"] = {"@odata.id": media_root}
    server.json(f"{p}/redfish/v1/Systems/System.Embedded.1", system)
    manager: dict[str, Any] = {"@odata.id": f"{p}/redfish/v1/Managers/iDRAC.Embedded.1"}
    if on_manager:
        manager["VirtualMedia"] = {"@odata.id": media_root}
    server.json(f"{p}/redfish/v1/Managers/iDRAC.Embedded.1", manager)
    server.json(
        media_root,
        {
            "@odata.id": media_root,
            "Members": [{"@odata.id": f"{media_root}/CD1"}, {"@odata.id": f"{media_root}/CD2"}],
        },
    )
    for device, image in (("CD1", "http://127.0.0.1:9/images/installer.iso"), ("CD2", None)):
        server.json(
            f"{media_root}/{device}",
            {
                "@odata.id": f"{media_root}/{device}",
                "Id": device,
                "MediaTypes": ["CD", "DVD"],
                "Image": image,
                "Inserted": image is not None,
            },
        )


# --- artifacts: boot media on loopback ----------------------------------------------------


class _IsoHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if not self.path.endswith(".iso"):
            self.send_error(404)
            return
        payload = b"ISO " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def artifact_server() -> Iterator[str]:
    """Serves any ``*.iso`` path (installer images, seeds); yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _IsoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- sushy-tools ----------------------------------------------------------------------------


@dataclass
class SushyEmulator:
    """sushy-emulator with its fake driver, on loopback, with basic auth."""

    origin: str
    process: subprocess.Popen[bytes]
    systems: dict[str, str]  # name -> uuid
    log: IO[bytes]

    def address(self, name: str) -> str:
        host = self.origin.split("://", 1)[1]
        return f"redfish+http://{host}/redfish/v1/Systems/{self.systems[name]}"


def start_sushy(
    workdir: Path,
    systems: dict[str, str],
    *,
    user: str,
    password: str,
    devices: dict[str, Any] | None = None,
    power: dict[str, str] | None = None,
) -> SushyEmulator:
    """Start sushy-emulator (fake driver) and wait until it answers; caller stops it."""
    executable = Path(sys.executable).parent / "sushy-emulator"
    workdir.mkdir(parents=True, exist_ok=True)
    # sushy-tools only accepts bcrypt digests in its htpasswd-style auth file.
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    (workdir / "htpasswd").write_text(f"{user}:{digest}\n")
    fake_systems = [
        {
            "uuid": uuid,
            "name": name,
            "power_state": (power or {}).get(name, "Off"),
            "external_notifier": False,
            "nics": [{"mac": "52:54:00:00:00:01", "ip": "192.0.2.10"}],
        }
        for name, uuid in systems.items()
    ]
    config = [
        "SUSHY_EMULATOR_FAKE_DRIVER = True",
        # Its state (systems, media) persists in SQLite: keep it inside this test run.
        f"SUSHY_EMULATOR_STATE_DIR = {str(workdir / 'state')!r}",
        f"SUSHY_EMULATOR_AUTH_FILE = {str(workdir / 'htpasswd')!r}",
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {fake_systems!r}",
    ]
    if devices is not None:
        config.append(f"SUSHY_EMULATOR_VMEDIA_DEVICES = {devices!r}")
    (workdir / "sushy.conf").write_text("\n".join(config) + "\n")
    port = free_port()
    log = (workdir / "sushy.log").open("wb")
    process = subprocess.Popen(
        [
            str(executable),
            "--config",
            str(workdir / "sushy.conf"),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    origin = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            log.close()
            raise RuntimeError(f"sushy-emulator exited: {(workdir / 'sushy.log').read_text()}")
        try:
            # The service root is served without authentication.
            if httpx.get(f"{origin}/redfish/v1/", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=5)
            log.close()
            raise RuntimeError("sushy-emulator did not answer within 20 s")
        time.sleep(0.05)  # polling a subprocess's startup, with the deadline above
    return SushyEmulator(origin, process, systems, log)


def stop_sushy(sushy: SushyEmulator) -> None:
    sushy.process.terminate()
    try:
        sushy.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        sushy.process.kill()
        sushy.process.wait(timeout=5)
    finally:
        sushy.log.close()
