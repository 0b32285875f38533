"""Test helpers for the fleet simulator: start it on loopback, build seeds, drive BMCs.

Typical use (the sim serves an inventory generated for its port):

    from tests.simfixtures import reserve_port, running_sim

    sock = reserve_port()                       # bound, so nobody takes the port meanwhile
    write_fleet(root, edge_sites=3, endpoint=f"http://127.0.0.1:{sock.getsockname()[1]}")
    with running_sim(root, sock=sock, time_scale=1000, artifacts_dir=tmp / "artifacts") as sim:
        sim.url, sim.port                       # http://127.0.0.1:PORT
        sim.stats(); sim.reset_stats()          # GET /_sim/stats, POST /_sim/stats/reset
        sim.add_fault(kind="error", site="edge-0001", rate=0.5)
        sim.drift(kind="power-off", machine="m1")
        sim.machine("m1")["phase"]; sim.cluster("c1")["apiUp"]
        sim.kubeconfig("c1")                    # YAML text with the admin token
        sim.wait_for(lambda: sim.machine("m1")["phase"] == "running", timeout=10)

or from plain data: ``running_sim(machines=[SimMachineSpec(...)], clusters={"c1": "s1"})``.
The pytest fixture ``sim_factory`` does the same and stops every sim at teardown.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pycdlib
import pytest
import uvicorn
import yaml

from werft.demo import ensure_bmc_secrets
from werft.inventory.generate import write_fleet
from werft.inventory.resolved import Inventory
from werft.sim.app import KubeAppFactory, SimApp, build_app
from werft.sim.clock import Clock
from werft.sim.faults import FaultSet, load_file
from werft.sim.lifecycle import ClusterFactory
from werft.sim.machines import SimMachineSpec
from werft.sim.server import (
    SimOptions,
    app_from_inventory,
    bind,
    serve_all,
    tls_server,
    uvicorn_config,
)

LOOPBACK = "127.0.0.1"
DEFAULT_CREDENTIALS = ("admin", "sim-password")


# --- ports -------------------------------------------------------------------------------


def free_port() -> int:
    """A port the OS just handed out on 127.0.0.1 (prefer reserve_port: no race)."""
    with contextlib.closing(bind(LOOPBACK, 0)) as sock:
        return int(sock.getsockname()[1])


def reserve_port() -> socket.socket:
    """A socket bound to a free loopback port; hand it to ``running_sim(sock=...)``."""
    return bind(LOOPBACK, 0)


# --- waiting -----------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # the poll interval; the deadline above bounds the wait


# --- the running simulator ---------------------------------------------------------------


@dataclass
class SimHandle:
    url: str
    port: int
    app: SimApp
    admin: httpx.Client = field(repr=False)
    tls_url: str | None = None  # https://127.0.0.1:PORT when started with tls=True

    def _json(self, response: httpx.Response) -> Any:
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return self._json(self.admin.get("/_sim/stats"))

    def reset_stats(self) -> None:
        self._json(self.admin.post("/_sim/stats/reset"))

    def mutations(self) -> int:
        """Total mutating calls to BMCs, hypervisor and cluster APIs since the last reset."""
        counts = self.stats()["mutations"]
        return sum(sum(per.values()) for per in counts.values())

    def add_fault(self, **rule: Any) -> dict[str, Any]:
        return self._json(self.admin.post("/_sim/faults", json=rule))["added"][0]

    def load_faults(self, document: dict[str, Any] | list[Any]) -> list[dict[str, Any]]:
        body = document if isinstance(document, dict) else {"rules": document}
        return self._json(self.admin.post("/_sim/faults", json=body))["added"]

    def faults(self) -> dict[str, Any]:
        return self._json(self.admin.get("/_sim/faults"))

    def remove_fault(self, rule_id: str) -> None:
        self._json(self.admin.delete(f"/_sim/faults/{rule_id}"))

    def clear_faults(self) -> None:
        self._json(self.admin.delete("/_sim/faults"))

    def drift(self, **body: Any) -> dict[str, Any]:
        return self._json(self.admin.post("/_sim/drift", json=body))

    def machine(self, name: str) -> dict[str, Any]:
        return self._json(self.admin.get(f"/_sim/machines/{name}"))

    def cluster(self, name: str) -> dict[str, Any]:
        return self._json(self.admin.get(f"/_sim/clusters/{name}"))

    def kubeconfig(self, cluster: str, *, scheme: str | None = None) -> str:
        """The admin kubeconfig (HTTPS when the sim has a TLS listener; ``scheme="http"``
        for the plain listener)."""
        params = {"scheme": scheme} if scheme else None
        response = self.admin.get(f"/_sim/clusters/{cluster}/kubeconfig", params=params)
        response.raise_for_status()
        return response.text

    def bootstrap(
        self,
        cluster: str,
        token: str,
        *,
        kubernetes_version: str = "1.31.1",
        nodes: int = 1,
        cni: bool = False,
    ) -> dict[str, Any]:
        """API up with ``nodes`` registered nodes: NotReady until a CNI runs, Ready at once
        with ``cni`` (the sim then acts as if the distribution embedded one)."""
        body = {"token": token, "kubernetesVersion": kubernetes_version, "nodes": nodes}
        if cni:
            body["cni"] = True
        return self._json(self.admin.post(f"/_sim/clusters/{cluster}/bootstrap", json=body))

    def wait_for(
        self, predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition"
    ) -> Any:
        return wait_for(predicate, timeout=timeout, what=what)

    def wait_phase(self, machine: str, phase: str, *, timeout: float = 10.0) -> dict[str, Any]:
        return wait_for(
            lambda: (m := self.machine(machine))["phase"] == phase and m,
            timeout=timeout,
            what=f"machine {machine} to be {phase}",
        )


@contextlib.contextmanager
def serve_app(
    app: SimApp,
    *,
    sock: socket.socket | None = None,
    more_sockets: Sequence[socket.socket] = (),
    startup_timeout: float = 10.0,
    tls: bool = False,
) -> Iterator[SimHandle]:
    """Serve ``app`` with uvicorn in a background thread until the block ends; with
    ``tls`` also on HTTPS (``handle.tls_url``; the admin kubeconfig then points there)."""
    sock = sock or reserve_port()
    port = int(sock.getsockname()[1])
    config = uvicorn_config(app, LOOPBACK, port)
    config.timeout_graceful_shutdown = 1
    server = uvicorn.Server(config)
    with contextlib.ExitStack() as stack:
        secondary, tls_sockets = None, None
        if tls:
            tls_sock = stack.enter_context(contextlib.closing(reserve_port()))
            tls_sockets = [tls_sock]
            secondary = stack.enter_context(
                tls_server(
                    app, LOOPBACK, int(tls_sock.getsockname()[1]), timeout_graceful_shutdown=1
                )
            )
        sockets = [sock, *more_sockets]
        with _serving(app, server, sockets, secondary, tls_sockets, startup_timeout) as handle:
            yield handle


@contextlib.contextmanager
def _serving(
    app: SimApp,
    server: uvicorn.Server,
    sockets: list[socket.socket],
    secondary: uvicorn.Server | None,
    tls_sockets: list[socket.socket] | None,
    startup_timeout: float,
) -> Iterator[SimHandle]:
    port = int(sockets[0].getsockname()[1])
    thread = threading.Thread(
        target=lambda: asyncio.run(serve_all(server, sockets, secondary, tls_sockets)),
        name=f"werft-sim-{port}",
        daemon=True,
    )
    thread.start()
    url = f"http://{LOOPBACK}:{port}"
    admin = httpx.Client(base_url=url, timeout=10.0, trust_env=False)
    try:

        def healthy() -> bool:
            if not thread.is_alive():
                raise RuntimeError("the simulator thread died while starting")
            try:
                return admin.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout=startup_timeout, interval=0.01, what="the simulator to start")
        tls_url = f"https://{LOOPBACK}:{app.tls.port}" if app.tls is not None else None
        if secondary is not None:
            wait_for(
                lambda: secondary.started,
                timeout=startup_timeout,
                interval=0.01,
                what="the TLS listener to start",
            )
        yield SimHandle(url=url, port=port, app=app, admin=admin, tls_url=tls_url)
    finally:
        admin.close()
        server.should_exit = True
        thread.join(timeout=10)
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def running_sim(
    inventory: Path | str | Inventory | None = None,
    *,
    machines: list[SimMachineSpec] | None = None,
    clusters: dict[str, str | None] | list[str] | None = None,
    time_scale: float = 1000.0,
    artifacts_dir: Path | None = None,
    faults: Path | dict[str, Any] | list[Any] | None = None,
    default_credentials: tuple[str, str] | None = DEFAULT_CREDENTIALS,
    sock: socket.socket | None = None,
    more_sockets: Sequence[socket.socket] = (),
    cluster_factory: ClusterFactory | None = None,
    kube_app_factory: KubeAppFactory | None = None,
    tls: bool = False,
) -> Iterator[SimHandle]:
    """Start a simulator for an inventory (folder or loaded) or for plain machine specs.

    ``default_credentials`` answer BMC credentialsRefs that resolve to nothing (tests rarely
    set secrets); pass None to require every ref to resolve. ``more_sockets``: ports it also
    answers on (the same machines behind several origins, as BMCs each have their own).
    """
    if inventory is not None:
        if not isinstance(inventory, Inventory):
            from werft.inventory.load import load_inventory

            inventory = load_inventory(Path(inventory))
        options = SimOptions(
            time_scale=time_scale,
            artifacts_dir=artifacts_dir,
            default_credentials=default_credentials,
            faults_file=faults if isinstance(faults, Path) else None,
        )
        app = app_from_inventory(inventory, options)
        if cluster_factory is not None or kube_app_factory is not None:
            raise TypeError("cluster/kube factories apply to machine lists only")
    else:
        fault_set = FaultSet()
        if isinstance(faults, Path):
            load_file(faults, fault_set)
        app = build_app(
            machines or [],
            clusters or {},
            Clock(time_scale=time_scale),
            faults=fault_set,
            artifacts_dir=artifacts_dir,
            cluster_factory=cluster_factory,
            kube_app_factory=kube_app_factory,
        )
    if faults is not None and not isinstance(faults, Path):
        app.faults.load(faults)
    with serve_app(app, sock=sock, more_sockets=more_sockets, tls=tls) as handle:
        yield handle


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., SimHandle]]:
    """``sim_factory(inventory_or_None, **running_sim_kwargs) -> SimHandle``; all stopped at
    teardown."""
    with contextlib.ExitStack() as stack:

        def start(inventory: Path | str | Inventory | None = None, **kwargs: Any) -> SimHandle:
            return stack.enter_context(running_sim(inventory, **kwargs))

        yield start


# --- hand-made fleets --------------------------------------------------------------------


def small_fleet(
    clusters: int = 1,
    *,
    control_planes: int = 1,
    workers: int = 1,
    vms: bool = False,
    credentials: tuple[str, str] | None = DEFAULT_CREDENTIALS,
) -> tuple[list[SimMachineSpec], dict[str, str]]:
    """Clusters ``c<i>`` at site ``s<i>`` with machines ``c<i>-cp<j>`` / ``c<i>-w<j>``."""
    machines: list[SimMachineSpec] = []
    sites: dict[str, str] = {}
    for i in range(clusters):
        cluster, site = f"c{i}", f"s{i}"
        sites[cluster] = site
        roles = [("cp", "control-plane")] * control_planes + [("w", "worker")] * workers
        counters: dict[str, int] = {}
        for short, role in roles:
            counters[short] = counters.get(short, 0) + 1
            machines.append(
                SimMachineSpec(
                    name=f"{cluster}-{short}{counters[short]}",
                    kind="vm" if vms else "bmc",
                    cluster=cluster,
                    site=site,
                    role=role,
                    credentials=None if vms else credentials,
                )
            )
    return machines, sites


# --- seeds -------------------------------------------------------------------------------


def user_data(
    *,
    cluster: str,
    role: str,
    node_name: str,
    kubernetes_version: str = "1.31.1",
    distribution: str = "kubeadm",
    token: str | None = None,
    b64: bool = True,
) -> str:
    node = yaml.safe_dump(
        {
            "cluster": cluster,
            "role": role,
            "nodeName": node_name,
            "kubernetesVersion": kubernetes_version,
            "distribution": distribution,
        }
    )
    files: list[dict[str, Any]] = []

    def add(path: str, content: str) -> None:
        if b64:
            files.append(
                {
                    "path": path,
                    "encoding": "b64",
                    "content": base64.b64encode(content.encode()).decode(),
                }
            )
        else:
            files.append({"path": path, "content": content})

    add("/etc/werft/node.yaml", node)
    if token is not None:
        add("/etc/werft/pki/tokens.csv", f'{token},werft-admin,werft-admin,"system:masters"\n')
    doc = {"hostname": node_name, "write_files": files, "runcmd": [["kubeadm", "init"]]}
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False)


def seed_iso(user_data_text: str, *, label: str = "cidata") -> bytes:
    """A NoCloud seed ISO (Joliet + Rock Ridge) holding user-data, meta-data, network-config."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label)
    files = {
        "user-data": user_data_text.encode(),
        "meta-data": b"instance-id: sim\n",
        "network-config": b"version: 2\n",
    }
    for name, data in files.items():
        iso_name = name.upper().replace("-", "_")[:8] + ".;1"
        iso.add_fp(
            io.BytesIO(data), len(data), f"/{iso_name}", rr_name=name, joliet_path=f"/{name}"
        )
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def publish_seed(artifacts_dir: Path, cluster: str, machine: str, data: bytes) -> str:
    """Write a seed under ``artifacts_dir/seeds/<cluster>/`` and return its URL path."""
    folder = artifacts_dir / "seeds" / cluster
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{machine}.iso").write_bytes(data)
    return f"/artifacts/seeds/{cluster}/{machine}.iso"


# --- driving a BMC like a provisioning tool ----------------------------------------------


def follow(client: httpx.Client, path: str) -> dict[str, Any]:
    response = client.get(path)
    response.raise_for_status()
    return response.json()


def redfish_paths(client: httpx.Client, root: str) -> dict[str, Any]:
    """Discover the system, manager and virtual media of a BMC by links."""
    service = follow(client, root)
    systems = follow(client, service["Systems"]["@odata.id"])
    system_path = systems["Members"][0]["@odata.id"]
    system = follow(client, system_path)
    manager_path = system["Links"]["ManagedBy"][0]["@odata.id"]
    manager = follow(client, manager_path)
    media = follow(client, manager["VirtualMedia"]["@odata.id"])
    return {
        "system": system_path,
        "reset": system["Actions"]["#ComputerSystem.Reset"]["target"],
        "manager": manager_path,
        "media": [m["@odata.id"] for m in media["Members"]],
    }


def provision_bmc(
    client: httpx.Client, root: str, image_url: str, seed_url: str, *, once: bool = True
) -> None:
    """Insert installer + seed, set boot override Cd, power on (all by links)."""
    paths = redfish_paths(client, root)
    for path, url in zip(paths["media"], (image_url, seed_url), strict=False):
        device = follow(client, path)
        insert = device["Actions"]["#VirtualMedia.InsertMedia"]["target"]
        response = client.post(insert, json={"Image": url, "Inserted": True})
        assert response.status_code in (200, 202, 204), response.text
    enabled = "Once" if once else "Continuous"
    response = client.patch(
        paths["system"],
        json={"Boot": {"BootSourceOverrideEnabled": enabled, "BootSourceOverrideTarget": "Cd"}},
    )
    assert response.status_code in (200, 204), response.text
    response = client.post(paths["reset"], json={"ResetType": "On"})
    assert response.status_code in (200, 202, 204), response.text


# --- a tiny loopback file server ---------------------------------------------------------


@contextlib.contextmanager
def file_server(files: dict[str, bytes]) -> Iterator[str]:
    """Serve ``{"/path": bytes}`` on a free loopback port; yields the base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def kube_factories() -> dict[str, Any]:
    """Keyword arguments for ``running_sim``/``build_app`` naming the Kubernetes side.

    Kept for callers written while werft/sim/cluster.py was being built; the real
    SimCluster and kube_api_app are the defaults now, so this returns them explicitly.
    """
    from werft.sim.kube.api import kube_api_app
    from werft.sim.kube.cluster import SimCluster

    return {"cluster_factory": SimCluster, "kube_app_factory": kube_api_app}


def write_edge_fleet(workdir: Path, sites: int, port: int) -> Path:
    """An inventory of ``sites`` edge sites whose endpoints are the simulator on ``port``,
    with its BMC credentials in the store; its root."""
    root = workdir / "inventory"
    write_fleet(root, edge_sites=sites, core_sites=0, near_edge_sites=0,
                endpoint=f"http://127.0.0.1:{port}")
    ensure_bmc_secrets(root)
    return root
