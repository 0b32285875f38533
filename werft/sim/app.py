"""The simulator's ASGI app: one process, every BMC, hypervisor and cluster API by path.

    /bmc/<machine>/redfish/v1/...          Redfish BMC (werft.sim.redfish)
    /hypervisor/v1/domains/<machine>...    simulated hypervisor (werft.sim.hypervisor)
    /clusters/<cluster>/...                Kubernetes API (werft.sim.kube.api, mounted here)
    /images/<name>.iso                     synthetic installer images
    /artifacts/...                         --artifacts-dir, read-only, no listings (a
                                           directory or a wrong seed token is a 404)
    /_sim/...                              admin API (werft.sim.admin)
    /healthz

Routing is by the first path segments and dict lookups (no per-machine routes), so 10,000
clusters and 12,000 machines cost nothing to route. Every request except the admin API
and /healthz is counted (werft.sim.stats) and passes the fault rules (werft.sim.faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from werft.sim.admin import AdminService, TlsEndpoint
from werft.sim.clock import Clock
from werft.sim.faults import FaultRule, FaultSet, Target
from werft.sim.http import json_response
from werft.sim.hypervisor import HypervisorService
from werft.sim.lifecycle import ClusterFactory, Fleet
from werft.sim.machines import SimMachineSpec
from werft.sim.media import synthetic_installer
from werft.sim.redfish import RedfishService, redfish_error, unauthorized
from werft.sim.stats import Stats

KubeAppFactory = Callable[[dict[str, Any], Clock], ASGIApp]


def _default_cluster_factory() -> ClusterFactory:
    from werft.sim.kube.cluster import SimCluster

    return SimCluster


def _default_kube_app_factory() -> KubeAppFactory:
    from werft.sim.kube.api import kube_api_app

    return kube_api_app


class SimApp:
    """The ASGI callable. Its parts (``fleet``, ``stats``, ``faults``) are public for tests."""

    def __init__(
        self,
        fleet: Fleet,
        kube_app: ASGIApp | None,
        *,
        faults: FaultSet | None = None,
        artifacts_dir: Path | None = None,
        allow_remote_media: bool = False,
    ) -> None:
        self.fleet = fleet
        self.clock = fleet.clock
        self.stats = Stats()
        self.faults = faults if faults is not None else FaultSet()
        self._client: httpx.AsyncClient | None = None
        self.redfish = RedfishService(
            fleet, self.http_client, allow_remote_media=allow_remote_media
        )
        self.hypervisor = HypervisorService(
            fleet, self.http_client, allow_remote_media=allow_remote_media
        )
        self.tls: TlsEndpoint | None = None  # set by werft.sim.server when it listens on TLS
        self.admin = AdminService(fleet, self.stats, self.faults, lambda: self.tls)
        self._kube_mount = Mount("/clusters", app=kube_app) if kube_app is not None else None
        self._artifacts = (
            Mount("/artifacts", app=StaticFiles(directory=artifacts_dir, check_dir=False))
            if artifacts_dir is not None
            else None
        )
        self._images: dict[str, bytes] = {}

    def http_client(self) -> httpx.AsyncClient:
        """The client BMCs and the hypervisor download media with (one per process)."""
        if self._client is None:
            # Media may come from this simulator's own HTTPS listener (an https
            # artifacts.baseUrl): trust its self-signed certificate, as a BMC would be
            # given the artifacts server's CA.
            verify: bool | ssl.SSLContext = True
            if self.tls is not None:
                verify = ssl.create_default_context(cadata=self.tls.ca_pem.decode())
            self._client = httpx.AsyncClient(
                verify=verify,
                timeout=httpx.Timeout(30.0, connect=5.0),
                follow_redirects=True,
                trust_env=False,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket" and self._kube_mount is not None:
                await self._mounted(self._kube_mount, scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        parts = path.split("/", 3)
        head = parts[1] if len(parts) > 1 else ""
        name = parts[2] if len(parts) > 2 else ""
        if head == "_sim":
            request = Request(scope, receive)
            response = await self.admin.handle(request, [p for p in path.split("/")[2:] if p])
            await response(scope, receive, send)
            return
        if head == "healthz":
            await PlainTextResponse("ok")(scope, receive, send)
            return

        target = self._target(head, name, path)
        # A dry run changes nothing on a real server either: it is a read, for the stats.
        counted = "DRYRUN" if b"dryRun=All" in scope.get("query_string", b"") else method
        if target.kind == "hypervisor":
            self.stats.record("hypervisor", target.machine, counted)
        elif target.kind in ("bmc", "clusters"):
            self.stats.record(target.kind, target.machine or target.cluster, counted)
        else:
            self.stats.record(None, None, counted)
        if self.faults:
            decision = self.faults.decide(target, method, path)
            if decision is not None:
                if decision.delay:
                    await asyncio.sleep(decision.delay)
                if decision.rule is not None:
                    await self._inject(decision.rule, target, scope, receive, send)
                    return

        if head == "bmc" and name:
            request = Request(scope, receive)
            rest = "/" + parts[3] if len(parts) > 3 else "/"
            response = await self.redfish.handle(request, name, rest)
        elif head == "clusters" and self._kube_mount is not None:
            if name:
                self.fleet.advance(name)
            await self._mounted(self._kube_mount, scope, receive, send)
            return
        elif target.kind == "hypervisor":
            request = Request(scope, receive)
            segs = path.split("/")
            action = segs[5] if len(segs) > 5 and segs[5] else None
            if len(segs) > 6 and any(segs[6:]):
                response = json_response({"error": f"no such path {path}"}, 404)
            else:
                response = await self.hypervisor.handle(request, target.machine or "", action)
        elif head == "images" and method in ("GET", "HEAD") and name.endswith(".iso"):
            response = self._image(name) if len(parts) == 3 else _not_found(path)
        elif head == "artifacts" and self._artifacts is not None:
            if method not in ("GET", "HEAD"):
                response = PlainTextResponse("artifacts are read-only", 405)
            else:
                try:
                    await self._mounted(self._artifacts, scope, receive, send)
                    return
                except HTTPException as exc:  # StaticFiles signals 404/405 by raising
                    response = json_response({"error": exc.detail}, exc.status_code)
        else:
            response = _not_found(path)
        await response(scope, receive, send)

    def _target(self, head: str, name: str, path: str) -> Target:
        fleet = self.fleet
        if head == "bmc":
            machine = fleet.bmcs.get(name)
            if machine is None:
                return Target("bmc", machine=name)
            return Target("bmc", machine=name, cluster=machine.spec.cluster, site=machine.spec.site)
        if head == "clusters":
            return Target("clusters", cluster=name, site=fleet.cluster_site.get(name))
        if head == "hypervisor" and path.startswith("/hypervisor/v1/domains/"):
            domain = path.split("/")[4]
            machine = fleet.domains.get(domain)
            if machine is None:
                return Target("hypervisor", machine=domain)
            return Target(
                "hypervisor", machine=domain, cluster=machine.spec.cluster, site=machine.spec.site
            )
        if head in ("images", "artifacts"):
            return Target("static")
        return Target("other")

    async def _mounted(self, mount: Mount, scope: Scope, receive: Receive, send: Send) -> None:
        match, child = mount.matches(scope)
        if match == Match.NONE:
            await _not_found(scope["path"])(scope, receive, send)
            return
        await mount.app({**scope, **child}, receive, send)

    def _image(self, name: str) -> Response:
        data = self._images.get(name)
        if data is None:
            data = synthetic_installer(name)
            if len(self._images) < 1024:
                self._images[name] = data
        return Response(data, media_type="application/x-iso9660-image")

    # --- faults -------------------------------------------------------------------------

    async def _inject(
        self, rule: FaultRule, target: Target, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if rule.kind == "error":
            response = _fault_response(target, rule.status, f"injected fault {rule.id}")
        elif rule.kind == "auth":
            response = _unauthorized(target)
        elif rule.kind == "timeout":
            if not await _hang(receive, rule.seconds):
                return  # the client gave up
            response = _fault_response(target, 504, f"injected timeout {rule.id}")
        else:  # offline
            if rule.mode == "hang":
                await _hang(receive, rule.seconds)
            await _drop(receive, send)
            return
        await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _not_found(path: str) -> Response:
    return json_response({"error": f"no such path {path}"}, 404)


def _fault_response(target: Target, status: int, message: str) -> Response:
    if target.kind == "bmc":
        return redfish_error(status, message)
    if target.kind == "clusters":
        return _kube_status(status, message, "ServiceUnavailable" if status == 503 else "")
    return json_response({"error": message}, status)


def _unauthorized(target: Target) -> Response:
    if target.kind == "bmc":
        return unauthorized(target.machine or "")
    if target.kind == "clusters":
        return _kube_status(401, "Unauthorized", "Unauthorized")
    return json_response({"error": "unauthorized"}, 401)


def _kube_status(code: int, message: str, reason: str) -> Response:
    body = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason or "InternalError", "code": code,
    }
    return json_response(body, code)


async def _hang(receive: Receive, seconds: float) -> bool:
    """Wait ``seconds`` without answering; False if the client disconnected meanwhile."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(disconnected(), timeout=seconds)
    except TimeoutError:
        return True
    return False


async def _drop(receive: Receive, send: Send) -> None:
    """Close the connection without a response, as an unreachable site looks to a client."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:  # not uvicorn: the best we can do is never answer
        await _hang(receive, 3600.0)
        return
    transport.abort()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_until_disconnect(receive), timeout=1.0)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def build_app(
    machines: Iterable[SimMachineSpec],
    clusters: Mapping[str, str | None] | Sequence[str],
    clock: Clock | None = None,
    *,
    faults: FaultSet | None = None,
    artifacts_dir: Path | None = None,
    cluster_factory: ClusterFactory | None = None,
    kube_app_factory: KubeAppFactory | None = None,
    allow_remote_media: bool = False,
) -> SimApp:
    """The simulator for plain data: machines, clusters (name -> site, or names)."""
    clock = clock or Clock()
    sites = dict(clusters) if isinstance(clusters, Mapping) else dict.fromkeys(clusters)
    fleet = Fleet(machines, sites, clock, cluster_factory or _default_cluster_factory())
    kube_factory = kube_app_factory or _default_kube_app_factory()
    return SimApp(
        fleet,
        kube_factory(fleet.registry, clock),
        faults=faults,
        artifacts_dir=artifacts_dir,
        allow_remote_media=allow_remote_media,
    )
