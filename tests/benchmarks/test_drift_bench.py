"""Benchmark (make bench): a drift check of a converged edge fleet against a plain asyncio
loop that makes the same requests, in the same run, against the same simulator.

The simulator runs in its own process (``werft sim serve``), so this process's CPU time is
the client's alone. The fleet (WERFT_BENCH_DRIFT_EDGE_SITES edge sites, default 300; the
issue's 10,000 takes ~an hour to provision on these 2 cores) is provisioned once by the
stages; then rounds alternate baseline and werft, best of each counted.

- werft: ``werft.drift.check.check_clusters`` -- per cluster the machines' observes
  (Redfish), a LIST of Nodes, a LIST per add-on kind (plus the prune kinds), a dry-run apply
  per add-on object, and everything it does with the answers (rendering the add-ons,
  diffing, managedFields, findings, triage).
- baseline: httpx in one event loop, the same Redfish GETs (system and its virtual media,
  links discovered before timing, as werft caches them) and the same Kubernetes requests
  with the manifests rendered before timing, answers parsed as JSON and dropped.

Printed: seconds, werft/baseline ratio (goal <= 1.2), requests and client CPU ms per
cluster for each, and the mutating calls of the check (must be 0, as its findings).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from tests.simfixtures import free_port, wait_for
from werft.conditions import STAGE_ORDER
from werft.demo import ensure_bmc_secrets
from werft.drift.addons import PRUNE_KINDS
from werft.drift.check import check_clusters
from werft.drift.findings import Outcome
from werft.drift.report import DriftReport
from werft.inventory.generate import write_fleet
from werft.inventory.load import load_inventory
from werft.inventory.resolved import Inventory
from werft.providers import parse_bmc_address
from werft.render.addons import MANAGED_SELECTOR, render_addons
from werft.secrets import SecretStore, basic_auth
from werft.stages import StageContext, StageTimeouts, run_stage_batch

EDGE_SITES = int(os.environ.get("WERFT_BENCH_DRIFT_EDGE_SITES", "300"))
ROUNDS = int(os.environ.get("WERFT_BENCH_ROUNDS", "2"))
CONCURRENCY = 64
TIME_SCALE = 1000.0


@contextlib.contextmanager
def sim_process(root: Path, home: Path, port: int) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["WERFT_HOME"] = str(home)
    werft = Path(sys.executable).parent / "werft"
    process = subprocess.Popen(
        [str(werft), "sim", "serve", "--inventory", str(root), "--port", str(port),
         "--tls-port", "0", "--time-scale", str(TIME_SCALE),
         "--artifacts-dir", str(home / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
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
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sim_stats(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/_sim/stats", trust_env=False).json()


def reset_stats(url: str) -> None:
    httpx.post(f"{url}/_sim/stats/reset", trust_env=False).raise_for_status()


def mutations(stats: dict[str, Any]) -> int:
    return sum(sum(per.values()) for per in stats["mutations"].values())


async def provision_all(inventory: Inventory, ctx: StageContext) -> None:
    """The stages over batches of 25; a cluster that failed transiently (a BMC of the
    loaded simulator timing out) goes again: the stages are level-triggered."""
    clusters = sorted(inventory.clusters.values(), key=lambda c: c.name)
    for start in range(0, len(clusters), 25):
        batch = clusters[start : start + 25]
        for stage in STAGE_ORDER:
            todo = batch
            for _ in range(4):
                results = await run_stage_batch(stage, todo, ctx, 25)
                todo = [c for c, r in zip(todo, results, strict=True) if not r.ok]
                if not todo:
                    break
            assert not todo, (stage, [c.name for c in todo][:3])


# --- the baseline --------------------------------------------------------------------------


@dataclass
class Target:
    server: str
    token: str
    bmc_gets: list[tuple[str, httpx.Auth]] = field(default_factory=list)
    lists: list[str] = field(default_factory=list)
    dry_runs: list[tuple[str, bytes]] = field(default_factory=list)


def _plural(kind: str) -> str:
    lower = kind.lower()
    return lower + ("es" if lower.endswith(("s", "ss")) else "s")


def _path(api_version: str, kind: str, namespace: str | None, name: str | None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        prefix += f"/namespaces/{quote(namespace, safe='')}"
    path = f"{prefix}/{_plural(kind)}"
    return f"{path}/{quote(name, safe='')}" if name else path


def targets(inventory: Inventory, ctx: StageContext, store: SecretStore) -> list[Target]:
    """What the baseline asks, prepared before timing (werft caches the same links)."""
    out = []
    for cluster in sorted(inventory.clusters.values(), key=lambda c: c.name):
        config = yaml.safe_load(ctx.stored_kubeconfig(cluster) or "")
        target = Target(config["clusters"][0]["cluster"]["server"],
                        config["users"][0]["user"]["token"])
        for machine in cluster.machines:
            assert machine.bmc is not None
            address = parse_bmc_address(machine.bmc.address)
            auth = basic_auth(machine.bmc.credentials_ref, store)
            system = f"{address.origin}{address.root}/Systems/{address.system_id}"
            target.bmc_gets.append((system, auth))
            for member in _media(system, auth, address.origin):
                target.bmc_gets.append((member, auth))
        objects = render_addons(cluster, inventory)
        kinds = dict.fromkeys([(o["apiVersion"], o["kind"]) for o in objects]
                              + list(PRUNE_KINDS))
        target.lists = ["/api/v1/nodes"] + [_path(v, k, None, None) for v, k in kinds]
        for obj in objects:
            meta = obj["metadata"]
            namespaced = meta.get("namespace")
            path = _path(obj["apiVersion"], obj["kind"], namespaced, meta["name"])
            target.dry_runs.append((path, json.dumps(obj).encode()))
        out.append(target)
    return out


def _media(system: str, auth: httpx.Auth, origin: str) -> list[str]:
    body = httpx.get(system, auth=auth, trust_env=False).json()
    collection = (body.get("VirtualMedia") or {}).get("@odata.id")
    if collection is None:
        managers = (body.get("Links") or {}).get("ManagedBy") or []
        manager = httpx.get(origin + managers[0]["@odata.id"], auth=auth,
                            trust_env=False).json()
        collection = manager["VirtualMedia"]["@odata.id"]
    members = httpx.get(origin + collection, auth=auth, trust_env=False).json()
    return [origin + m["@odata.id"] for m in members.get("Members", [])]


async def plain_loop(found: list[Target]) -> int:
    """Every request of every cluster, at most CONCURRENCY in flight (as werft's thread
    pool bounds its own). One small client per cluster, as one per site is natural: a
    single httpcore pool of CONCURRENCY connections scans all of them on every request
    and costs more CPU than the requests."""
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)

    async def cluster(t: Target) -> int:
        async with httpx.AsyncClient(limits=limits, trust_env=False, timeout=30) as client:

            async def ask(method: str, url: str, **kwargs: Any) -> None:
                async with gate:
                    answer = await client.request(method, url, **kwargs)
                answer.raise_for_status()
                answer.json()

            headers = {"Authorization": f"Bearer {t.token}", "Accept": "application/json"}
            calls = [ask("GET", url, auth=auth) for url, auth in t.bmc_gets]
            calls += [ask("GET", t.server + p, headers=headers,
                          params={"labelSelector": MANAGED_SELECTOR}) for p in t.lists]
            patch = {**headers, "Content-Type": "application/apply-patch+yaml"}
            query = {"fieldManager": "werft", "fieldValidation": "Strict", "dryRun": "All"}
            calls += [ask("PATCH", t.server + p, content=body, headers=patch, params=query)
                      for p, body in t.dry_runs]
            await asyncio.gather(*calls)
            return len(calls)

    return sum(await asyncio.gather(*(cluster(t) for t in found)))


# --- the benchmark -------------------------------------------------------------------------


async def measure(
    inventory: Inventory, home: Path, url: str
) -> tuple[dict[str, tuple[float, float, int]], DriftReport, float]:
    """Everything in one event loop: the providers' connection pools belong to it."""
    ctx = StageContext.for_inventory(
        inventory, werft_home=home, artifacts_dir=home / "artifacts",
        timeouts=StageTimeouts().scaled(TIME_SCALE), kube_threads=CONCURRENCY)
    try:
        start = time.perf_counter()
        await provision_all(inventory, ctx)
        provisioned_s = time.perf_counter() - start
        found = targets(inventory, ctx, SecretStore(home / "secrets"))
        clusters = list(inventory.clusters.values())
        best: dict[str, tuple[float, float, int]] = {}
        report = DriftReport()
        for _ in range(ROUNDS):
            for kind in ("baseline", "werft"):
                reset_stats(url)
                wall, cpu = time.perf_counter(), time.process_time()
                if kind == "baseline":
                    await plain_loop(found)
                else:
                    report = DriftReport.of(
                        await check_clusters(clusters, ctx, concurrency=CONCURRENCY))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                stats = sim_stats(url)
                assert mutations(stats) == 0, stats["mutations"]
                if kind not in best or wall < best[kind][0]:
                    best[kind] = (wall, cpu, int(stats["requests"]))
    finally:
        await ctx.aclose()
    return best, report, provisioned_s


@pytest.mark.bench
def test_drift_check_of_a_converged_fleet_vs_a_plain_asyncio_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / ".werft"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WERFT_HOME", str(home))
    port = free_port()
    root = tmp_path / "inventory"
    write_fleet(root, edge_sites=EDGE_SITES, core_sites=0, near_edge_sites=0,
                endpoint=f"http://127.0.0.1:{port}")
    ensure_bmc_secrets(root)
    with sim_process(root, home, port) as url:
        inventory = load_inventory(root)
        best, report, provisioned_s = asyncio.run(measure(inventory, home, url))

    assert report.counts() == {str(Outcome.IN_SHAPE): EDGE_SITES}, report.counts()
    assert report.groups == []
    n = EDGE_SITES
    (bw, bc, br), (ww, wc, wr) = best["baseline"], best["werft"]
    print(
        f"\ndrift check of {n} converged edge clusters (provisioned in {provisioned_s:.0f} s), "
        f"best of {ROUNDS}, concurrency {CONCURRENCY}:\n"
        f"  baseline (plain asyncio + httpx): {bw:6.2f} s, {br / n:5.1f} requests/cluster, "
        f"{bc / n * 1000:6.1f} ms client CPU/cluster\n"
        f"  werft drift check:                {ww:6.2f} s, {wr / n:5.1f} requests/cluster, "
        f"{wc / n * 1000:6.1f} ms client CPU/cluster\n"
        f"  ratio {ww / bw:.2f}x the baseline's time (goal <= 1.2x); 0 mutating calls; "
        f"{len(report.groups)} findings"
    )
