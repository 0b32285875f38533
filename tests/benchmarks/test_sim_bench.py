"""Simulator benchmarks (``make bench``): memory at fleet scale, requests per second.

Memory: a fresh process loads a generated inventory, builds the simulator (one BMC per
bare-metal machine, one Kubernetes API per cluster), then brings every cluster's API up
with its nodes; RSS is taken after each step. The baseline is the same process with the
same modules imported and no fleet.

Throughput: ``werft sim serve`` runs in its own process with the 10,000-cluster fleet;
clients in this process send simple GETs from 4 threads. Two figures per case: wall-clock
requests/s (bounded by the clients sharing 2 cores with the server) and requests per
second of *server* CPU (the per-core capacity: server CPU time from psutil). The baseline
is ``/healthz`` through the same app and server; the ratio says what the BMC or
Kubernetes handler costs on top of HTTP parsing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.simfixtures import free_port, wait_for

pytestmark = pytest.mark.bench

GIB = 1024**3
CREDENTIALS = ("admin", "bench-password")
TOKEN = "bench-token-0123456789abcdefghijklmnopqrstuv"

_MEMORY_SCRIPT = r"""
import gc, json, sys, time
import psutil
proc = psutil.Process()
from werft.inventory.load import load_inventory
from werft.sim.server import SimOptions, app_from_inventory
import werft.sim.kube.cluster, werft.sim.kube.api  # noqa: F401 (part of the baseline)
gc.collect()
baseline = proc.memory_info().rss
started = time.perf_counter()
inventory = load_inventory(sys.argv[1])
app = app_from_inventory(inventory, SimOptions(default_credentials=("a", "b")))
build_s = time.perf_counter() - started
clusters, machines = len(inventory.clusters), len(app.fleet.bmcs) + len(app.fleet.domains)
del inventory
gc.collect()
idle = proc.memory_info().rss
started = time.perf_counter()
for name in app.fleet.registry:
    nodes = max(1, len(app.fleet.machines_of(name)))
    app.fleet.bootstrap(name, token="t" * 43, kubernetes_version="1.31.1", nodes=nodes)
up_s = time.perf_counter() - started
gc.collect()
up = proc.memory_info().rss
print(json.dumps({"clusters": clusters, "machines": machines, "baseline": baseline,
                  "idle": idle, "up": up, "build_s": build_s, "up_s": up_s}))
"""


@pytest.fixture(scope="module")
def fleets(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    from werft.inventory.generate import write_fleet

    out = {}
    for edge in (1_000, 10_000):
        root = tmp_path_factory.mktemp(f"fleet{edge}")
        write_fleet(root, edge_sites=edge)
        out[edge] = root
    return out


def test_memory_at_1k_and_10k_clusters(fleets: dict[int, Path]) -> None:
    rows = {}
    for edge, root in fleets.items():
        done = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, str(root)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        rows[edge] = json.loads(done.stdout.strip().splitlines()[-1])
    print("\nsimulator memory (RSS, MiB)  baseline = same process, modules imported, no fleet")
    print(
        f"{'clusters':>9} {'machines':>9} {'baseline':>9} {'idle':>7} {'all up':>7} "
        f"{'per cluster up':>15} {'build s':>8} {'bring-up s':>10}"
    )
    for row in rows.values():
        mib = 1024 * 1024
        per = (row["up"] - row["baseline"]) / row["clusters"] / 1024
        print(
            f"{row['clusters']:>9} {row['machines']:>9} {row['baseline'] / mib:>9.0f} "
            f"{row['idle'] / mib:>7.0f} {row['up'] / mib:>7.0f} {per:>12.1f} KiB "
            f"{row['build_s']:>8.2f} {row['up_s']:>10.2f}"
        )
    big = rows[10_000]
    print(
        f"10k clusters all up: {big['up'] / GIB:.2f} GiB = "
        f"{big['up'] / big['baseline']:.1f}x the baseline process"
    )
    assert big["clusters"] >= 10_000
    assert big["up"] < GIB


# --- throughput ----------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    process: psutil.Process
    cluster: str
    machine: str

    def cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)


@pytest.fixture(scope="module")
def server(fleets: dict[int, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from werft.inventory.load import load_inventory

    root = fleets[10_000]
    inventory = load_inventory(root)
    cluster = next(
        c
        for c in inventory.clusters.values()
        if c.tier == "edge" and any(m.bmc for m in c.machines)
    )
    machine = next(m.name for m in cluster.machines if m.bmc)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    werft = Path(sys.executable).parent / "werft"
    process = subprocess.Popen(
        [
            str(werft),
            "sim",
            "serve",
            "--inventory",
            str(root),
            "--port",
            str(port),
            "--tls-port",
            "0",
            "--default-credentials",
            ":".join(CREDENTIALS),
            "--time-scale",
            "1000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read().decode() if process.stderr else "")
            try:
                return httpx.get(url + "/healthz", trust_env=False).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=120, interval=0.1, what="werft sim serve to start")
        httpx.post(
            f"{url}/_sim/clusters/{cluster.name}/bootstrap",
            trust_env=False,
            json={"token": TOKEN, "kubernetesVersion": "1.31.1", "nodes": 3},
        ).raise_for_status()
        yield Server(url, psutil.Process(process.pid), cluster.name, machine)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _load(
    server: Server, make: Callable[[], Callable[[], None]], requests: int, threads: int = 4
) -> tuple[float, float]:
    """(wall-clock requests/s, requests per server-CPU second)."""
    per_thread = requests // threads
    calls = [make() for _ in range(threads)]
    for call in calls:
        call()  # warm up: connections, first-use caches
    errors: list[BaseException] = []

    def work(call: Callable[[], None]) -> None:
        try:
            for _ in range(per_thread):
                call()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(c,)) for c in calls]
    cpu0, wall0 = server.cpu(), time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall, cpu = time.perf_counter() - wall0, server.cpu() - cpu0
    assert not errors, errors[0]
    total = per_thread * threads
    return total / wall, total / max(cpu, 1e-9)


def _httpx_get(
    server: Server, path: str, auth: tuple[str, str] | None = None
) -> Callable[[], Callable[[], None]]:
    def make() -> Callable[[], None]:
        client = httpx.Client(base_url=server.url, auth=auth, trust_env=False)

        def call() -> None:
            response = client.get(path)
            assert response.status_code == 200, response.text

        return call

    return make


def _kube(server: Server, what: str) -> Callable[[], Callable[[], None]]:
    from kubernetes import client as k8s

    def make() -> Callable[[], None]:
        config = k8s.Configuration()
        config.host = f"{server.url}/clusters/{server.cluster}"
        config.api_key = {"authorization": TOKEN}
        config.api_key_prefix = {"authorization": "Bearer"}
        api = k8s.ApiClient(config)
        if what == "version":
            version = k8s.VersionApi(api)
            return lambda: version.get_code() and None
        core = k8s.CoreV1Api(api)
        return lambda: core.read_namespace("default") and None

    return make


def test_requests_per_second(server: Server) -> None:
    system = f"/bmc/{server.machine}/redfish/v1/Systems/1"
    cases = [
        ("baseline  GET /healthz (httpx)", _httpx_get(server, "/healthz"), 4000),
        ("redfish   GET Systems/1 (httpx)", _httpx_get(server, system, CREDENTIALS), 4000),
        ("kubeapi   GET /version (kubernetes client)", _kube(server, "version"), 2000),
        ("kubeapi   GET namespace (kubernetes client)", _kube(server, "namespace"), 2000),
    ]
    results = {name: _load(server, make, n) for name, make, n in cases}
    _, base_cpu = results[cases[0][0]]
    print(f"\nsimulator throughput, 10k-cluster fleet, 4 client threads, {os.cpu_count()} cores")
    print(f"{'case':<46} {'req/s wall':>10} {'req/s per server core':>22} {'vs baseline':>12}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<46} {wall:>10.0f} {cpu:>22.0f} {cpu / base_cpu:>11.2f}x")
    for name, (_, cpu) in results.items():
        assert cpu >= 1000, f"{name}: {cpu:.0f} requests per server CPU second"
