"""The Kubernetes emulation inside the whole simulator (tests/simfixtures.py's running_sim):
the admin bootstrap, the admin kubeconfig, mutation counting and drift injection all
reach the same per-cluster API that werft's client talks to.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.kubefixtures import poll
from tests.simfixtures import SimHandle, running_sim

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "metrics-server",
        "namespace": "kube-system",
        "labels": {"app": "metrics-server"},
    },
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "metrics-server"}},
        "template": {
            "metadata": {"labels": {"app": "metrics-server"}},
            "spec": {
                "containers": [
                    {"name": "metrics-server", "image": "registry.k8s.io/metrics-server:v0.7.2"}
                ]
            },
        },
    },
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    with running_sim(clusters=["edge-a", "edge-b"], time_scale=200.0) as handle:
        yield handle


def kube(sim: SimHandle, cluster: str) -> client.ApiClient:
    return config.new_client_from_config_dict(
        yaml.safe_load(sim.kubeconfig(cluster)), persist_config=False
    )


def apply(api: client.ApiClient, body: dict) -> client.V1Deployment:
    return client.AppsV1Api(api).patch_namespaced_deployment(
        body["metadata"]["name"],
        body["metadata"]["namespace"],
        body,
        field_manager="werft",
        force=True,
        _content_type="application/apply-patch+yaml",
    )


def test_a_cluster_answers_503_until_bootstrapped_then_serves_its_nodes(sim: SimHandle) -> None:
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(
            config.new_client_from_config_dict(
                yaml.safe_load(_kubeconfig_for(sim, "edge-b", "early")), persist_config=False
            )
        ).list_node()
    assert exc.value.status == 503
    sim.bootstrap("edge-a", "token-a", nodes=2, cni=True)
    with kube(sim, "edge-a") as api:
        nodes = client.CoreV1Api(api).list_node().items
        assert len(nodes) == 2
        assert all(
            {c.type: c.status for c in n.status.conditions}["Ready"] == "True" for n in nodes
        )
        assert client.VersionApi(api).get_code().git_version == "v1.31.1"


def test_applies_count_as_mutations_and_a_no_op_reapply_is_one_call(sim: SimHandle) -> None:
    sim.bootstrap("edge-a", "token-a", nodes=1, cni=True)
    with kube(sim, "edge-a") as api:
        sim.reset_stats()
        apply(api, DEPLOYMENT)
        apps = client.AppsV1Api(api)

        def available() -> client.V1Deployment | None:
            d = apps.read_namespaced_deployment("metrics-server", "kube-system")
            return d if d.status.available_replicas == 1 else None

        settled = poll(available, timeout=10)
        again = apply(api, DEPLOYMENT)
        # Nothing changed: same resourceVersion and generation, one (no-op) PATCH counted.
        assert again.metadata.resource_version == settled.metadata.resource_version
        assert again.metadata.generation == 1
        assert sim.stats()["mutations"]["clusters"]["edge-a"] == 2


def test_drift_changes_the_object_werft_then_reapplies(sim: SimHandle) -> None:
    sim.bootstrap("edge-a", "token-a", nodes=1)
    with kube(sim, "edge-a") as api:
        apply(api, DEPLOYMENT)
        sim.drift(
            kind="change-object",
            cluster="edge-a",
            apiVersion="apps/v1",
            objectKind="Deployment",
            namespace="kube-system",
            name="metrics-server",
            patch={"spec": {"replicas": 5}},
        )
        apps = client.AppsV1Api(api)
        drifted = apps.read_namespaced_deployment("metrics-server", "kube-system")
        assert drifted.spec.replicas == 5 and drifted.metadata.generation == 2
        healed = apply(api, DEPLOYMENT)
        assert healed.spec.replicas == 1 and healed.metadata.generation == 3
        sim.drift(
            kind="delete-object",
            cluster="edge-a",
            apiVersion="apps/v1",
            resource="deployments",
            namespace="kube-system",
            name="metrics-server",
        )
        with pytest.raises(ApiException) as exc:
            apps.read_namespaced_deployment("metrics-server", "kube-system")
        assert exc.value.status == 404


def _kubeconfig_for(sim: SimHandle, cluster: str, token: str) -> str:
    server = f"{sim.url}/clusters/{cluster}"
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": cluster,
            "clusters": [{"name": cluster, "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "u"}}],
        }
    )
