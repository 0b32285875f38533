"""werft.kube where a real API server is stricter than a lenient fake: conflicts, strict
field validation, canonical quantities, node readiness, and faults retried at the request.

The contract tests run against the simulator in ``make test`` and, with
``WERFT_LIVE_KUBECONFIG=PATH make test-live``, against a real cluster (they work in a
namespace of their own and delete it afterwards). werft before these changes failed every
one of them on a real server: it forced every apply, sent no fieldValidation, compared
client-side and retried nothing at the request.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from tests.simfixtures import SimHandle, kube_factories, running_sim
from werft.errors import PermanentError, is_transient
from werft.kube import ApplyConflict, KubeClient, health
from werft.retry import STATS, RetryPolicy

TOKEN = "q" * 43
LIVE = os.environ.get("WERFT_LIVE_KUBECONFIG")


@dataclass
class Server:
    """A Kubernetes API to test against, and how to act on it as someone other than werft."""

    name: str
    kubeconfig: str
    namespace: str

    def edit_as(self, manager: str, kind_path: str, name: str, patch: dict[str, Any]) -> None:
        """A merge patch under another field manager -- what ``kubectl edit`` sends."""
        api = kubernetes.config.new_client_from_config_dict(yaml.safe_load(self.kubeconfig))
        try:
            api.call_api(
                *api.param_serialize(
                    "PATCH",
                    f"/apis/apps/v1/namespaces/{self.namespace}/{kind_path}/{name}",
                    query_params=[("fieldManager", manager)],
                    header_params={"Content-Type": "application/merge-patch+json"},
                    body=patch,
                    auth_settings=["BearerToken"],
                )
            ).read()
        finally:
            api.close()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    with running_sim(machines=[], clusters={"c1": None}, time_scale=200.0, **kube_factories()) as h:
        h.bootstrap("c1", TOKEN, nodes=1)
        yield h


@pytest.fixture(
    params=[
        "simulator",
        pytest.param(
            "live",
            marks=[
                pytest.mark.live,
                pytest.mark.skipif(not LIVE, reason="set WERFT_LIVE_KUBECONFIG to a cluster"),
            ],
        ),
    ]
)
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    if request.param == "live":
        assert LIVE is not None
        kubeconfig = Path(LIVE).read_text()
    else:
        kubeconfig = request.getfixturevalue("sim").kubeconfig("c1")
    namespace = f"werft-contract-{secrets.token_hex(3)}"
    async with KubeClient.from_kubeconfig(kubeconfig) as kube:
        await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        yield Server(request.param, kubeconfig, namespace)
        api = kubernetes.config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
        try:
            kubernetes.client.CoreV1Api(api).delete_namespace(namespace)
        finally:
            api.close()


@pytest.fixture
async def kube(server: Server) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig(server.kubeconfig) as client:
        yield client


def deployment(server: Server, name: str, **container: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": server.namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": name, "image": "nginx:1.27", **container}]},
            },
        },
    }


async def test_quantities_written_as_people_write_them_are_not_drift(
    kube: KubeClient, server: Server
) -> None:
    # A real server stores cpu 1000m as "1", "0.5" as "500m", 1024Mi as "1Gi".
    resources = {
        "requests": {"cpu": "1000m", "memory": "1024Mi"},
        "limits": {"cpu": "0.5", "memory": "2048Mi"},
    }
    desired = deployment(server, "quantities", resources=resources)
    await kube.apply(desired)
    live = await kube.get("apps/v1", "Deployment", "quantities", server.namespace)
    assert live is not None
    stored = live["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert stored["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert stored["limits"] == {"cpu": "500m", "memory": "2Gi"}

    drift = await kube.diff(desired)

    assert not drift, drift


async def test_apply_never_takes_a_field_from_another_manager_unasked(
    kube: KubeClient, server: Server
) -> None:
    desired = deployment(server, "contested")
    await kube.apply(desired)
    server.edit_as("kubectl-edit", "deployments", "contested", {"spec": {"replicas": 3}})

    with pytest.raises(ApplyConflict) as err:
        await kube.apply(desired)

    assert not is_transient(err.value)
    conflicts = [(c.manager, c.field) for c in err.value.conflicts]
    assert conflicts == [("kubectl-edit", ".spec.replicas")]
    assert f"Deployment {server.namespace}/contested" in str(err.value)
    live = await kube.get("apps/v1", "Deployment", "contested", server.namespace)
    assert live is not None and live["spec"]["replicas"] == 3

    drift = await kube.diff(desired)
    assert drift.paths == [".spec.replicas"] and drift.conflicts == err.value.conflicts

    await kube.apply(desired, force=True)
    assert not await kube.diff(desired)  # werft owns the field again: no conflict either


async def test_a_typo_in_a_manifest_is_refused_naming_the_field(
    kube: KubeClient, server: Server
) -> None:
    typo = deployment(server, "typo", imagePullPolcy="Always")

    with pytest.raises(PermanentError) as err:
        await kube.apply(typo)

    # Real servers answer an apply that does not fit the schema with 500 (not 400, even
    # with fieldValidation=Strict): werft must still not retry it.
    assert "imagePullPolcy: field not declared in schema" in str(err.value)
    assert not is_transient(err.value)
    assert await kube.get("apps/v1", "Deployment", "typo", server.namespace) is None


async def test_nodes_report_ready_only_with_a_network(kube: KubeClient, server: Server) -> None:
    # On the simulator no CNI runs in this cluster; on a live one, one does.
    nodes = await kube.list("v1", "Node")
    assert nodes
    for node in nodes:
        ready, _ = health(node)
        taints = {t["key"] for t in (node.get("spec") or {}).get("taints") or []}
        assert ready == (server.name == "live")
        assert ("node.kubernetes.io/not-ready" in taints) == (not ready)


async def test_a_conflict_is_answered_once_and_never_retried(sim: SimHandle) -> None:
    # Simulator only: it counts the requests that reached it.
    server = Server("simulator", sim.kubeconfig("c1"), "default")
    async with KubeClient.from_kubeconfig(server.kubeconfig) as kube:
        desired = deployment(server, "answered-once")
        await kube.apply(desired)
        server.edit_as("kubectl-edit", "deployments", "answered-once", {"spec": {"replicas": 2}})
        sim.reset_stats()
        with pytest.raises(ApplyConflict):
            await kube.apply(desired)
    assert sum(sim.stats()["requestsByTarget"]["clusters"].values()) == 1


async def test_transient_server_errors_are_retried_at_the_request(sim: SimHandle) -> None:
    # 30% of this cluster's requests fail with 503; ten tries each make a failure of all
    # twenty requests below a one-in-ten-thousand event.
    fault = sim.add_fault(kind="error", cluster="c1", rate=0.3, status=503)
    patient = RetryPolicy(attempts=10, base=0.01, cap=0.05)
    server = Server("simulator", sim.kubeconfig("c1"), "default")
    before = STATS.snapshot().get("503", 0)
    try:
        async with KubeClient.from_kubeconfig(server.kubeconfig, retry=patient) as kube:
            for index in range(10):
                await kube.apply(deployment(server, f"flaky-{index}"))
                assert await kube.get("apps/v1", "Deployment", f"flaky-{index}", "default")
    finally:
        sim.remove_fault(fault["id"])
    assert STATS.snapshot().get("503", 0) > before
