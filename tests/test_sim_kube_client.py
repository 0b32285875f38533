"""The official ``kubernetes`` Python client against the simulated API over real HTTP.

One uvicorn server on loopback for the module; each test brings its own cluster(s).
Clients are built per cluster from a kubeconfig dict, never from the global config.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

from tests.kubefixtures import KubeServer, poll
from werft.sim.clock import Clock

FAST = Clock(time_scale=100.0)  # workload_available (20 s) takes 0.2 s


@pytest.fixture(scope="module")
def server() -> Iterator[KubeServer]:
    srv = KubeServer(FAST).start()
    yield srv
    srv.stop()


def api_client(server: KubeServer, cluster: str, token: str = "t0ken") -> client.ApiClient:
    return config.new_client_from_config_dict(
        server.kubeconfig(cluster, token), persist_config=False
    )


def deployment_body(name: str, image: str = "nginx:1.27", replicas: int = 2) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image}]},
            },
        },
    }


def test_core_v1_nodes_namespaces_and_not_found(server: KubeServer) -> None:
    server.add("core", nodes=2, builtin_network=True)
    with api_client(server, "core") as api:
        core = client.CoreV1Api(api)
        nodes = core.list_node()
        assert [n.metadata.name for n in nodes.items] == ["core-node-0", "core-node-1"]
        assert all(n.status.node_info.kubelet_version == "v1.31.1" for n in nodes.items)
        ready = {c.type: c.status for c in nodes.items[0].status.conditions}
        assert ready["Ready"] == "True"

        created = core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name="team-a", labels={"owner": "a"}))
        )
        assert created.metadata.uid and created.status.phase == "Active"
        names = {n.metadata.name for n in core.list_namespace(label_selector="owner=a").items}
        assert names == {"team-a"}

        with pytest.raises(ApiException) as exc:
            core.read_namespaced_config_map("missing", "team-a")
        assert exc.value.status == 404
        assert '"reason":"NotFound"' in exc.value.body

        with pytest.raises(ApiException) as exc:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="team-a")))
        assert exc.value.status == 409


def test_apps_v1_deployment_becomes_available(server: KubeServer) -> None:
    server.add("apps", nodes=2, builtin_network=True)  # node 0: a tainted control plane
    with api_client(server, "apps") as api:
        apps = client.AppsV1Api(api)
        created = apps.create_namespaced_deployment("default", deployment_body("web"))
        assert created.metadata.generation == 1

        def available() -> bool:
            d = apps.read_namespaced_deployment("web", "default")
            conds = {c.type: c.status for c in d.status.conditions or []}
            return conds.get("Available") == "True" and d.status.available_replicas == 2

        poll(available, timeout=10)
        status = apps.read_namespaced_deployment_status("web", "default").status
        assert status.observed_generation == 1 and status.updated_replicas == 2


def test_authentication_and_api_availability(server: KubeServer) -> None:
    server.add("locked")
    base = server.endpoint("locked")
    with api_client(server, "locked", token="wrong") as api:
        with pytest.raises(ApiException) as exc:
            client.CoreV1Api(api).list_namespace()
        assert exc.value.status == 401
    unauthorized = httpx.get(f"{base}/api/v1/namespaces")
    assert unauthorized.status_code == 401
    assert unauthorized.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    # Anonymous may read version and health, as on a kubeadm cluster; a bad token may not.
    assert httpx.get(f"{base}/readyz").text == "ok"
    assert httpx.get(f"{base}/version").json()["gitVersion"] == "v1.31.1"
    assert httpx.get(f"{base}/version", headers={"Authorization": "Bearer no"}).status_code == 401

    starting = server.add("starting", token=None)
    with api_client(server, "starting") as api:
        with pytest.raises(ApiException) as exc:
            client.CoreV1Api(api).list_namespace()
        assert exc.value.status == 503
        assert '"reason":"ServiceUnavailable"' in exc.value.body
        starting.bring_up(token="t0ken", kubernetes_version="1.30.5", distribution="k3s")
        assert len(client.CoreV1Api(api).list_namespace().items) == 4
        assert client.VersionApi(api).get_code().git_version == "v1.30.5"
    assert httpx.get(server.endpoint("nobody") + "/version").status_code == 404


def test_dynamic_client_discovers_and_applies_a_crd_and_its_resource(
    server: KubeServer, tmp_path: Path
) -> None:
    server.add("dyn")
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {
                "plural": "gadgets",
                "singular": "gadget",
                "kind": "Gadget",
                "shortNames": ["gd"],
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
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
    with api_client(server, "dyn") as api:
        dyn = dynamic.DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))
        crds = dyn.resources.get(
            api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
        )
        applied = crds.server_side_apply(body=crd, field_manager="werft")
        assert applied.metadata.managedFields[0].manager == "werft"
        established = {
            c.type: c.status for c in crds.get(name=crd["metadata"]["name"]).status.conditions
        }
        assert established == {"NamesAccepted": "True", "Established": "True"}

        dyn.resources.invalidate_cache()  # as kubectl does after applying CRDs
        gadgets = dyn.resources.get(api_version="example.com/v1", kind="Gadget")
        assert gadgets.namespaced and "status" in gadgets.subresources
        body = {
            "apiVersion": "example.com/v1",
            "kind": "Gadget",
            "metadata": {"name": "g1", "namespace": "default"},
            "spec": {"size": 3},
        }
        first = gadgets.server_side_apply(body=body, field_manager="werft")
        assert first.spec.size == 3 and first.metadata.generation == 1
        again = gadgets.server_side_apply(body=body, field_manager="werft")
        assert again.metadata.resourceVersion == first.metadata.resourceVersion

        status = gadgets.status.patch(
            name="g1",
            namespace="default",
            body={"status": {"phase": "Ready"}},
            content_type="application/merge-patch+json",
        )
        assert status.status.phase == "Ready" and status.metadata.generation == 1
        listed = gadgets.get(namespace="default")
        assert [i.metadata.name for i in listed.items] == ["g1"]


def test_server_side_apply_semantics_through_the_client(server: KubeServer) -> None:
    server.add("ssa", clock=Clock(time_scale=1.0))  # no status change between applies
    with api_client(server, "ssa") as api:
        apps = client.AppsV1Api(api)
        body = deployment_body("api", replicas=1)
        first = apps.patch_namespaced_deployment(
            "api",
            "default",
            body,
            field_manager="werft",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        entry = first.metadata.managed_fields[0]
        assert (entry.manager, entry.operation) == ("werft", "Apply")
        assert "f:replicas" in entry.fields_v1["f:spec"]

        again = apps.patch_namespaced_deployment(
            "api",
            "default",
            body,
            field_manager="werft",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        assert again.metadata.resource_version == first.metadata.resource_version
        assert again.metadata.generation == 1

        other = deployment_body("api", replicas=3)
        with pytest.raises(ApiException) as exc:
            apps.patch_namespaced_deployment(
                "api",
                "default",
                other,
                field_manager="autoscaler",
                _content_type="application/apply-patch+yaml",
            )
        assert exc.value.status == 409 and "FieldManagerConflict" in exc.value.body
        forced = apps.patch_namespaced_deployment(
            "api",
            "default",
            other,
            field_manager="autoscaler",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        assert forced.spec.replicas == 3 and forced.metadata.generation == 2

        merged = apps.patch_namespaced_deployment(
            "api",
            "default",
            {"metadata": {"labels": {"team": "x"}}},
            _content_type="application/merge-patch+json",
        )
        assert merged.metadata.labels == {"app": "api", "team": "x"}
        json_patched = apps.patch_namespaced_deployment(
            "api",
            "default",
            [{"op": "replace", "path": "/spec/replicas", "value": 4}],
            _content_type="application/json-patch+json",
        )
        assert json_patched.spec.replicas == 4


def test_replace_conflict_and_label_selectors(server: KubeServer) -> None:
    server.add("crud")
    with api_client(server, "crud") as api:
        core = client.CoreV1Api(api)
        for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
            core.create_namespaced_config_map(
                "default",
                client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(name=name, labels={"tier": tier}), data={"n": name}
                ),
            )
        web = core.list_namespaced_config_map("default", label_selector="tier=web")
        assert [c.metadata.name for c in web.items] == ["a", "c"]
        assert web.metadata.resource_version
        not_db = core.list_namespaced_config_map("default", label_selector="tier notin (db)")
        assert len(not_db.items) == 2

        current = core.read_namespaced_config_map("a", "default")
        current.data = {"n": "changed"}
        core.replace_namespaced_config_map("a", "default", current)
        current.data = {"n": "stale"}
        with pytest.raises(ApiException) as exc:
            core.replace_namespaced_config_map("a", "default", current)
        assert exc.value.status == 409

        core.delete_namespaced_config_map("b", "default")
        names = [c.metadata.name for c in core.list_config_map_for_all_namespaces().items]
        assert names == ["a", "c"]
        deleted = core.delete_collection_namespaced_config_map("default", label_selector="tier=web")
        assert deleted is not None
        assert core.list_namespaced_config_map("default").items == []


def test_watch_sees_a_deployment_turn_available(server: KubeServer) -> None:
    server.add("watch", clock=Clock(time_scale=40.0), nodes=2, builtin_network=True)
    with api_client(server, "watch") as api:
        apps = client.AppsV1Api(api)
        created = apps.create_namespaced_deployment("default", deployment_body("w", replicas=1))
        events = []
        stream = watch.Watch().stream(
            apps.list_namespaced_deployment,
            "default",
            resource_version=created.metadata.resource_version,
            timeout_seconds=10,
        )
        for event in stream:
            events.append(event["type"])
            conds = {c.type: c.status for c in event["object"].status.conditions or []}
            if conds.get("Available") == "True":
                break
        assert events and set(events) <= {"ADDED", "MODIFIED"}


def test_discovery_documents_and_openapi(server: KubeServer) -> None:
    server.add("disco")
    base = server.endpoint("disco")
    auth = {"Authorization": "Bearer t0ken"}
    aggregated = (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    )
    # kubectl asks for aggregated discovery first and falls back to the legacy documents.
    api = httpx.get(f"{base}/api", headers={**auth, "Accept": aggregated})
    assert api.headers["content-type"] == "application/json"
    assert api.json()["kind"] == "APIVersions" and api.json()["versions"] == ["v1"]
    groups = httpx.get(f"{base}/apis", headers=auth).json()
    names = [g["name"] for g in groups["groups"]]
    assert {
        "apps",
        "rbac.authorization.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "policy",
    } <= set(names)
    apps = httpx.get(f"{base}/apis/apps/v1", headers=auth).json()
    resources = {r["name"]: r for r in apps["resources"]}
    assert resources["deployments"]["shortNames"] == ["deploy"]
    assert resources["deployments"]["namespaced"] is True
    assert "patch" in resources["deployments"]["verbs"]
    assert resources["deployments/scale"]["kind"] == "Scale"
    assert {"deployments/status", "daemonsets/status"} <= resources.keys()
    assert httpx.get(f"{base}/apis/nope.example.com/v1", headers=auth).status_code == 404

    # OpenAPI v3: just enough for kubectl to leave validation to the server.
    root = httpx.get(f"{base}/openapi/v3", headers=auth).json()
    url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/clusters/disco/openapi/v3/apis/apps/v1?hash=")
    doc = httpx.get(f"http://127.0.0.1:{server.port}{url}", headers=auth).json()
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Deployment"
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}

    review = httpx.post(
        f"{base}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        headers=auth,
        json={"spec": {"resourceAttributes": {"verb": "create", "resource": "deployments"}}},
    )
    assert review.status_code == 201 and review.json()["status"]["allowed"] is True


def test_table_output_for_kubectl_get(server: KubeServer) -> None:
    server.add("tables", nodes=1, builtin_network=True)
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    table = httpx.get(
        server.endpoint("tables") + "/api/v1/nodes",
        headers={"Authorization": "Bearer t0ken", "Accept": accept},
    ).json()
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0] == [
        "Name",
        "Status",
        "Roles",
        "Age",
        "Version",
    ]
    [row] = table["rows"]
    assert row["cells"][:3] == ["tables-node-0", "Ready", "control-plane"]
    assert row["object"]["kind"] == "PartialObjectMetadata"


def test_before_request_runs_first_and_may_bring_the_api_up() -> None:
    seen: list[str] = []
    holder: dict[str, KubeServer] = {}

    def before(cluster: str) -> None:
        seen.append(cluster)
        sim = holder["server"].registry.get(cluster)
        if sim is not None and not sim.api_up:  # the lifecycle notices the API came up
            sim.bring_up(token="t0ken", kubernetes_version="1.31.1", distribution="kubeadm")

    server = holder["server"] = KubeServer(FAST, before_request=before).start()
    try:
        server.add("lazy", token=None)
        with api_client(server, "lazy") as api:
            assert len(client.CoreV1Api(api).list_namespace().items) == 4
        assert httpx.get(server.endpoint("unknown") + "/version").status_code == 404
    finally:
        server.stop()
    assert seen[-2:] == ["lazy", "unknown"]
