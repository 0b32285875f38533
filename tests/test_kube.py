"""werft.kube against the simulator's Kubernetes API: apply, get, drift, wait, errors."""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.simfixtures import SimHandle, kube_factories, running_sim
from werft.errors import PermanentError, TransientError
from werft.kube import IN_FLIGHT, KubeClient, WaitTimeout, health

TOKEN = "t" * 43

# 20 s of simulated rollout at time scale 200: 0.1 s.
TIME_SCALE = 200.0


def deployment(name: str = "web", *, replicas: int = 2, image: str = "nginx:1.27") -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": name, "image": image, "ports": [{"containerPort": 80}]}]
                },
            },
        },
    }


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    with running_sim(
        machines=[],
        clusters={"c1": None, "down": None},
        time_scale=TIME_SCALE,
        **kube_factories(),
    ) as handle:
        handle.bootstrap("c1", TOKEN, nodes=2, cni=True)
        yield handle


@pytest.fixture
def kube(sim: SimHandle) -> Iterator[KubeClient]:
    client = KubeClient.from_kubeconfig(sim.kubeconfig("c1"))
    yield client
    client.close()


def cluster_mutations(sim: SimHandle) -> int:
    return sum(sim.stats()["mutations"]["clusters"].values())


async def test_apply_creates_the_object_and_get_returns_it(kube: KubeClient) -> None:
    desired = deployment("create-me")
    assert await kube.get("apps/v1", "Deployment", "create-me", "default") is None

    live = await kube.apply(desired)

    assert live["metadata"]["uid"]
    fetched = await kube.get("apps/v1", "Deployment", "create-me", "default")
    assert fetched is not None and fetched["spec"]["replicas"] == 2
    managers = [m["manager"] for m in fetched["metadata"].get("managedFields", [])]
    assert "werft" in managers


async def test_reapply_of_unchanged_object_finds_no_drift_and_sends_nothing(
    kube: KubeClient, sim: SimHandle
) -> None:
    desired = deployment("steady")
    await kube.apply(desired)
    sim.reset_stats()

    drift = await kube.diff(desired)

    # The server added uid, managedFields, status, defaulted strategy, ...: none is drift,
    # and asking it (a dry-run apply) changes nothing.
    assert not drift and drift.paths == [] and drift.conflicts == []
    assert cluster_mutations(sim) == 0


async def test_drift_is_reported_by_field_path_after_someone_edits_the_object(
    kube: KubeClient, sim: SimHandle
) -> None:
    desired = deployment("edited")
    await kube.apply(desired)

    sim.drift(
        kind="change-object",
        cluster="c1",
        apiVersion="apps/v1",
        resource="deployments",
        namespace="default",
        name="edited",
        patch={"spec": {"replicas": 5}},
    )
    drift = await kube.diff(desired)
    assert drift.paths == [".spec.replicas"]

    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "edited", "image": "evil:latest", "ports": [{"containerPort": 80}]}
                    ]
                }
            }
        }
    }
    sim.drift(
        kind="change-object",
        cluster="c1",
        apiVersion="apps/v1",
        resource="deployments",
        namespace="default",
        name="edited",
        patch=patch,
    )
    drift = await kube.diff(desired)
    assert '.spec.template.spec.containers[name="edited"].image' in drift.paths

    # Applying again, taking the fields back, heals it.
    await kube.apply(desired, force=True)
    assert not await kube.diff(desired)

    sim.drift(
        kind="delete-object",
        cluster="c1",
        apiVersion="apps/v1",
        resource="deployments",
        namespace="default",
        name="edited",
    )
    drift = await kube.diff(desired)
    assert drift.absent and drift.paths == ["."]


async def test_wait_returns_once_the_deployment_is_available(kube: KubeClient) -> None:
    await kube.apply(deployment("rolling"))
    fresh = await kube.get("apps/v1", "Deployment", "rolling", "default")
    assert fresh is not None and not health(fresh)[0]

    obj = await kube.wait("apps/v1", "Deployment", "rolling", "default", timeout=5, poll=0.01)

    assert obj["status"]["availableReplicas"] == 2
    assert health(obj) == (True, "2/2 available")


async def test_wait_gives_up_at_its_deadline_with_a_transient_error(kube: KubeClient) -> None:
    await kube.apply(deployment("slow"))
    with pytest.raises(WaitTimeout, match=r"Deployment default/slow not Available after") as err:
        await kube.wait("apps/v1", "Deployment", "slow", "default", timeout=0.01, poll=0.005)
    assert isinstance(err.value, TransientError)


async def test_list_filters_by_label_and_nodes_are_listed(kube: KubeClient) -> None:
    await kube.apply(deployment("listed"))
    names = [
        d["metadata"]["name"]
        for d in await kube.list("apps/v1", "Deployment", label_selector="app=listed")
    ]
    assert names == ["listed"]
    assert len(await kube.list("v1", "Node")) == 2


async def test_get_live_all_lists_once_per_kind_and_matches_each_manifest(
    kube: KubeClient, sim: SimHandle
) -> None:
    mine = {"werft.test/owner": "me"}
    first = deployment("many-a")
    second = deployment("many-b")
    for d in (first, second):
        d["metadata"]["labels"] |= mine
    second["metadata"].pop("namespace")  # the server puts it in default
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": "many-ns", "labels": mine}}
    unlabelled = deployment("many-c")  # exists, but without the selector's label
    for obj in (first, second, namespace, unlabelled):
        await kube.apply(obj)
    absent = deployment("many-absent")
    sim.reset_stats()

    lives = await kube.get_live_all(
        [first, second, namespace, unlabelled, absent], label_selector="werft.test/owner=me"
    )

    # One LIST per kind (Deployment, Namespace), not a GET per object.
    assert sum(sim.stats()["requestsByTarget"]["clusters"].values()) == 2
    found = [live and (live["kind"], live["metadata"]["name"]) for live in lives]
    assert found == [("Deployment", "many-a"), ("Deployment", "many-b"),
                     ("Namespace", "many-ns"), None, None]
    # Listed objects compare like fetched ones: apiVersion and kind filled in.
    assert not await kube.diff_live(first, lives[0])


class _CountingAPI(http.server.ThreadingHTTPServer):
    """An API server on loopback that answers every LIST with no items and counts the
    connections its clients open."""

    daemon_threads = True

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _EmptyLists)
        self.delay = delay  # seconds each answer takes, so requests overlap
        self.connections = 0
        self.requests = 0
        self.authorizations: list[str] = []

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)


class _EmptyLists(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as an API server's

    def do_GET(self) -> None:
        assert isinstance(self.server, _CountingAPI)
        self.server.requests += 1
        self.server.authorizations.append(self.headers.get("Authorization", ""))
        time.sleep(self.server.delay)
        body = b'{"items": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


async def test_get_live_all_asks_on_one_connection() -> None:
    """One per kind, the lists would each open a connection: on a real cluster a TLS
    handshake per kind, per cluster, per verify and drift check."""
    server = _CountingAPI()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = KubeClient.from_kubeconfig(
        _kubeconfig(f"http://127.0.0.1:{server.server_address[1]}", TOKEN)
    )
    kinds = [("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "ServiceAccount"),
             ("apps/v1", "Deployment"), ("apps/v1", "DaemonSet")]
    manifests = [{"apiVersion": v, "kind": k, "metadata": {"name": "x"}} for v, k in kinds]
    try:
        assert await client.get_live_all(manifests, label_selector="a=b") == [None] * 5
    finally:
        client.close()
        server.shutdown()
        server.server_close()
    assert (server.requests, server.connections) == (5, 1)


async def test_custom_resources_are_found_through_discovery(kube: KubeClient) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    await kube.apply(crd)
    await kube.wait(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "widgets.example.com",
        condition="Established",
        timeout=5,
        poll=0.01,
    )
    widget = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "default"},
        "spec": {"size": 3},
    }

    await kube.apply(widget)

    assert not await kube.diff(widget)


async def test_readyz_and_version(kube: KubeClient, sim: SimHandle) -> None:
    assert await kube.readyz() is True
    assert await kube.livez() is True
    assert await kube.version() == "v1.31.1"


async def test_api_that_is_not_up_is_not_ready_and_transient(sim: SimHandle) -> None:
    text = sim.kubeconfig("c1").replace("/clusters/c1", "/clusters/down")
    async with KubeClient.from_kubeconfig(text, cluster="down") as down:
        assert await down.readyz() is False
        with pytest.raises(TransientError, match=r"cluster down: GET Node list: 503"):
            await down.list("v1", "Node")


async def test_wrong_token_is_permanent_and_never_echoed(sim: SimHandle) -> None:
    wrong = "w" * 43
    text = sim.kubeconfig("c1").replace(TOKEN, wrong)
    assert wrong in text
    async with KubeClient.from_kubeconfig(text) as kube:
        with pytest.raises(PermanentError) as err:
            await kube.get("apps/v1", "Deployment", "web", "default")
    message = str(err.value)
    assert "cluster c1" in message and "401" in message and "Deployment default/web" in message
    assert wrong not in message and TOKEN not in message
    assert wrong not in repr(kube)


async def test_invalid_object_is_a_permanent_error_naming_it(kube: KubeClient) -> None:
    broken = deployment("broken")
    del broken["spec"]["selector"]
    with pytest.raises(PermanentError, match=r"cluster c1: PATCH Deployment default/broken: 422"):
        await kube.apply(broken)


async def test_unreachable_api_is_transient() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    text = _kubeconfig(f"http://127.0.0.1:{port}/clusters/gone", "x" * 43)
    async with KubeClient.from_kubeconfig(text, timeout=1.0) as kube:
        assert kube.cluster == "gone"
        assert await kube.readyz() is False
        with pytest.raises(TransientError, match=r"cluster gone: GET /version: connection refused"):
            await kube.version()


def test_each_client_has_its_own_configuration(sim: SimHandle) -> None:
    before = kubernetes.client.Configuration.get_default_copy().host
    a = KubeClient.from_kubeconfig(sim.kubeconfig("c1"))
    b = KubeClient.from_kubeconfig(_kubeconfig("http://127.0.0.1:1/clusters/other", "y" * 43))
    assert a.server != b.server
    assert kubernetes.client.Configuration.get_default_copy().host == before
    a.close()
    b.close()


async def test_calls_run_off_the_event_loop(kube: KubeClient, sim: SimHandle) -> None:
    # A slow API must not stall other coroutines: 0.3 s of latency on every request.
    fault = sim.add_fault(kind="slow", cluster="c1", seconds=0.3)
    try:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await kube.version()
        task.cancel()
        assert ticks >= 10
    finally:
        sim.remove_fault(fault["id"])


async def test_a_client_keeps_a_few_requests_in_flight_whatever_its_callers_gather() -> None:
    """Each request in flight over HTTP/1.1 needs a connection (on a real cluster a TLS
    handshake, and a socket on its API server): twelve dry runs or lists gathered at once
    must not become twelve connections to one cluster."""
    server = _CountingAPI(delay=0.05)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = KubeClient.from_kubeconfig(
        _kubeconfig(f"http://127.0.0.1:{server.server_address[1]}", TOKEN)
    )
    try:
        lists = await asyncio.gather(*(client.list("v1", "ConfigMap") for _ in range(12)))
    finally:
        client.close()
        server.shutdown()
        server.server_close()
    assert lists == [[]] * 12
    assert server.requests == 12
    assert server.connections == IN_FLIGHT


# An exec credential plugin (as for EKS or GKE): each call hands out the next token,
# already expired, so the client must ask again before every request.
_PLUGIN = """
import json, pathlib, sys
count = pathlib.Path(sys.argv[1])
n = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(n))
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
    "status": {"token": f"exec-{n}", "expirationTimestamp": "2000-01-01T00:00:00Z"},
}))
"""


async def test_exec_credentials_are_refreshed_and_static_ones_sent_as_given(
    tmp_path: Path,
) -> None:
    """werft drops the client's per-request credential refresh for static credentials
    (it cost a quarter of a request's CPU); a token from an exec plugin must still be
    asked for again once it expired."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text(_PLUGIN)
    server = _CountingAPI()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                          "command": sys.executable,
                          "args": [str(plugin), str(tmp_path / "count")]}}
    kubeconfig = json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
        "clusters": [{"name": "c", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": exec_user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
    })
    exec_client = KubeClient.from_kubeconfig(kubeconfig)
    static_client = KubeClient.from_kubeconfig(_kubeconfig(url, TOKEN))
    try:
        for client in (exec_client, exec_client, static_client, static_client):
            assert await client.list("v1", "ConfigMap") == []
    finally:
        exec_client.close()
        static_client.close()
        server.shutdown()
        server.server_close()
    first, second, *static = server.authorizations
    assert first.startswith("Bearer exec-") and second.startswith("Bearer exec-")
    assert first != second
    assert static == [f"Bearer {TOKEN}"] * 2


def test_invalid_kubeconfig_is_permanent_and_does_not_quote_it() -> None:
    with pytest.raises(PermanentError, match="invalid kubeconfig") as err:
        KubeClient.from_kubeconfig("users: [token: secret-ish", cluster="c9")
    assert "secret-ish" not in str(err.value)


def _kubeconfig(server: str, token: str) -> str:
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: gone, cluster: {{server: '{server}'}}}}]\n"
        f"users: [{{name: u, user: {{token: '{token}'}}}}]\n"
        "contexts: [{name: ctx, context: {cluster: gone, user: u}}]\n"
        "current-context: ctx\n"
    )
