"""Running the simulator: from an inventory to uvicorn listeners (``werft sim serve``).

One app, one event loop, up to two listeners: plain HTTP (BMCs, hypervisor, cluster APIs,
admin) and optionally HTTPS with a self-signed certificate, because kubectl (client-go)
sends a bearer token only over TLS. The admin kubeconfig points kubectl at the HTTPS one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from werft.inventory.resolved import Inventory
from werft.secrets import SecretStore
from werft.sim.admin import TlsEndpoint
from werft.sim.app import SimApp, build_app
from werft.sim.clock import Clock
from werft.sim.faults import FaultSet, load_file
from werft.sim.fleetspec import specs_from_inventory

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8686


@dataclass(frozen=True)
class SimOptions:
    time_scale: float = 1.0
    faults_file: Path | None = None
    artifacts_dir: Path | None = None
    default_credentials: tuple[str, str] | None = None
    fault_seed: int | None = None


def app_from_inventory(
    inventory: Inventory,
    options: SimOptions = SimOptions(),
    *,
    store: SecretStore | None = None,
) -> SimApp:
    """The simulator for every machine and cluster of ``inventory``."""
    machines, clusters = specs_from_inventory(
        inventory, default_credentials=options.default_credentials, store=store
    )
    faults = FaultSet(seed=options.fault_seed)
    if options.faults_file is not None:
        load_file(options.faults_file, faults)
    return build_app(
        machines,
        clusters,
        Clock(time_scale=options.time_scale),
        faults=faults,
        artifacts_dir=options.artifacts_dir,
    )


def load_app(inventory_path: Path, options: SimOptions) -> SimApp:
    from werft.inventory.load import load_inventory

    return app_from_inventory(load_inventory(inventory_path), options)


def uvicorn_config(app: SimApp, host: str, port: int, **extra: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
        backlog=4096,
        **extra,  # type: ignore[arg-type]
    )


class _Secondary(uvicorn.Server):
    """The TLS listener: stops when the main server stops; leaves signals to it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def tls_server(
    app: SimApp, host: str, port: int, *, timeout_graceful_shutdown: int | None = None
) -> Iterator[uvicorn.Server]:
    """A uvicorn server for ``app`` on HTTPS with a fresh self-signed certificate; sets
    ``app.tls`` so the admin kubeconfig points kubectl at it."""
    from werft.sim.kube.tls import self_signed

    cert = self_signed((host, "localhost") if host != "localhost" else ("localhost",))
    with tempfile.TemporaryDirectory(prefix="werft-sim-tls-") as folder:
        certfile, keyfile = Path(folder, "tls.crt"), Path(folder, "tls.key")
        certfile.write_bytes(cert.cert_pem)
        keyfile.touch(mode=0o600)
        keyfile.write_bytes(cert.key_pem)
        config = uvicorn_config(
            app, host, port, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)
        )
        config.lifespan = "off"  # the main listener runs the app's lifespan
        config.timeout_graceful_shutdown = timeout_graceful_shutdown
        config.load()  # reads the key files now, before the folder goes away
        app.tls = TlsEndpoint(port=port, ca_pem=cert.cert_pem)
        try:
            yield _Secondary(config)
        finally:
            app.tls = None


async def serve_all(
    main: uvicorn.Server,
    main_sockets: list[socket.socket] | None = None,
    secondary: uvicorn.Server | None = None,
    secondary_sockets: list[socket.socket] | None = None,
) -> None:
    """Run ``main`` (and ``secondary`` alongside) until ``main`` exits."""
    task = (
        asyncio.create_task(secondary.serve(sockets=secondary_sockets))
        if secondary is not None
        else None
    )
    try:
        await main.serve(sockets=main_sockets)
    finally:
        if task is not None and secondary is not None:
            secondary.should_exit = True
            await task


def serve(
    app: SimApp,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    tls_port: int | None = None,
) -> None:
    """Serve until interrupted (HTTP on ``port``, HTTPS on ``tls_port`` if given)."""
    main = uvicorn.Server(uvicorn_config(app, host, port))
    if not tls_port:
        main.run()
        return
    with tls_server(app, host, tls_port) as secondary:
        asyncio.run(serve_all(main, None, secondary, None))


def bind(host: str = DEFAULT_HOST, port: int = 0) -> socket.socket:
    """A bound (not yet listening) TCP socket; port 0 lets the OS pick."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP,
    # and without it every keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def fetch_kubeconfig(url: str, cluster: str, *, timeout: float = 10.0) -> str:
    """Ask a running simulator for a cluster's admin kubeconfig (``werft sim kubeconfig``)."""
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout, trust_env=False) as client:
        response = client.get(f"/_sim/clusters/{cluster}/kubeconfig")
    if response.status_code != 200:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise LookupError(f"{cluster}: {message}")
    return response.text
