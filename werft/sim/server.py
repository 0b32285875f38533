"""Running the simulator: from an inventory to a uvicorn server (``werft sim serve``)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from werft.inventory.resolved import Inventory
from werft.secrets import SecretStore
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


def uvicorn_config(app: SimApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
        backlog=4096,
    )


def serve(app: SimApp, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve until interrupted."""
    uvicorn.Server(uvicorn_config(app, host, port)).run()


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
