"""Support for the tests of the simulated Kubernetes API (no tests here).

``KubeServer`` mounts ``kube_api_app`` at ``/clusters`` in a small Starlette app, as the
simulator does, and serves it with uvicorn on 127.0.0.1 on a port the OS picks, in a
background thread -- optionally over TLS, which kubectl needs to send a token at all.
``ManualClock`` is a simulator clock that only moves when a test says so.
``cni_daemonset`` is a minimal flannel-like CNI DaemonSet (nodes turn Ready only once a
CNI runs, as on a real cluster); ``apply_cni`` server-side applies it over HTTP.
"""

from __future__ import annotations

import base64
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from werft.sim.clock import Clock
from werft.sim.kube.api import kube_api_app
from werft.sim.kube.cluster import SimCluster
from werft.sim.kube.tls import ServingCert


class ManualClock(Clock):
    """A clock for deterministic tests: ``advance(seconds)`` of scaled time."""

    def __init__(self, time_scale: float = 1.0) -> None:
        super().__init__(time_scale=time_scale)
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class KubeServer:
    def __init__(
        self,
        clock: Clock,
        *,
        tls: ServingCert | None = None,
        before_request: Callable[[str], None] | None = None,
    ) -> None:
        self.clock = clock
        self.registry: dict[str, SimCluster] = {}
        self.tls = tls
        app = Starlette(
            routes=[Mount("/clusters", app=kube_api_app(self.registry, clock, before_request))]
        )
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it every keep-alive response waits 40 ms (Nagle + delayed ACK).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._tmp = tempfile.TemporaryDirectory(prefix="werft-kubesim-")
        ssl: dict[str, Any] = {}
        if tls is not None:
            cert, key = Path(self._tmp.name, "tls.crt"), Path(self._tmp.name, "tls.key")
            cert.write_bytes(tls.cert_pem)
            key.write_bytes(tls.key_pem)
            ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        config = uvicorn.Config(
            app, log_level="warning", timeout_graceful_shutdown=1, lifespan="off", **ssl
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def endpoint(self, cluster: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/clusters/{cluster}"

    def start(self) -> KubeServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while True:  # until the server answers anything at all
            try:
                httpx.get(self.endpoint("-") + "/version", verify=False, timeout=1)
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                self._thread.join(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._tmp.cleanup()

    def add(
        self,
        name: str,
        *,
        token: str | None = "t0ken",
        clock: Clock | None = None,
        nodes: int = 0,
        version: str = "1.31.1",
        builtin_network: bool = False,
    ) -> SimCluster:
        """A cluster (brought up when ``token`` is given) with ``nodes`` registered nodes:
        NotReady until a CNI runs, unless ``builtin_network`` (Ready at once)."""
        clock = clock or self.clock
        cluster = SimCluster(name, clock)
        self.registry[name] = cluster
        if token is not None:
            cluster.bring_up(token=token, kubernetes_version=version, distribution="kubeadm")
            for n in range(nodes):
                role = "control-plane" if n == 0 else "worker"
                cluster.join_node(
                    f"{name}-node-{n}",
                    role=role,
                    kubelet_version=f"v{version}",
                    ready_at=clock.now(),
                    builtin_network=builtin_network,
                )
        return cluster

    def kubeconfig(self, cluster: str, token: str = "t0ken") -> dict[str, Any]:
        entry: dict[str, Any] = {"server": self.endpoint(cluster)}
        if self.tls is not None:
            entry["certificate-authority-data"] = base64.b64encode(self.tls.cert_pem).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster, "cluster": entry}],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "admin"}}],
            "current-context": cluster,
        }


def poll(check: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """``check()`` until it returns something truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        event.wait(interval)


def cni_daemonset(distribution: str = "kubeadm", *, name: str = "cni") -> dict[str, Any]:
    """A CNI DaemonSet as the simulator recognises one: it mounts the runtime's CNI
    configuration directory from the host, uses the host's network and tolerates every
    NoSchedule taint (flannel's manifest does the same)."""
    conf_dir = (
        "/var/lib/rancher/k3s/agent/etc/cni/net.d" if distribution == "k3s" else "/etc/cni/net.d"
    )
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "hostNetwork": True,
                    "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": name, "image": "ghcr.io/flannel-io/flannel:v0.26.1"}],
                    "volumes": [{"name": "cni", "hostPath": {"path": conf_dir}}],
                },
            },
        },
    }


def apply_cni(
    endpoint: str, token: str, distribution: str = "kubeadm", *, verify: bool = False
) -> bool:
    """Server-side apply ``cni_daemonset`` to the cluster at ``endpoint``; False while its
    API does not answer yet (call it from a poll)."""
    body = cni_daemonset(distribution)
    url = f"{endpoint}/apis/apps/v1/namespaces/kube-system/daemonsets/{body['metadata']['name']}"
    try:
        response = httpx.patch(
            url,
            params={"fieldManager": "test-cni"},
            content=orjson.dumps(body),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/apply-patch+yaml",
            },
            verify=verify,
            trust_env=False,
            timeout=5,
        )
    except httpx.TransportError:
        return False
    return response.status_code in (200, 201)
