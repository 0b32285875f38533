"""The object store of a simulated cluster: API semantics without HTTP.

Deterministic: a ManualClock moves time, so "before" and "after" a delay are exact.
"""

from __future__ import annotations

import pytest

from tests.kubefixtures import ManualClock
from werft.sim.kube.cluster import SimCluster
from werft.sim.kube.discovery import BUILTIN_BY_GV
from werft.sim.kube.errors import ApiError
from werft.sim.kube.objects import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    ObjectStore,
)

CM = BUILTIN_BY_GV["v1"]["configmaps"]
NS = BUILTIN_BY_GV["v1"]["namespaces"]
NODES = BUILTIN_BY_GV["v1"]["nodes"]
DEPLOY = BUILTIN_BY_GV["apps/v1"]["deployments"]
DS = BUILTIN_BY_GV["apps/v1"]["daemonsets"]
CRD = BUILTIN_BY_GV["apiextensions.k8s.io/v1"]["customresourcedefinitions"]
APISVC = BUILTIN_BY_GV["apiregistration.k8s.io/v1"]["apiservices"]
DELAY = 20.0  # Delays.workload_available at time scale 1


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def cluster(clock: ManualClock) -> SimCluster:
    c = SimCluster("c1", clock)
    c.bring_up(token="t", kubernetes_version="1.31.1", distribution="kubeadm")
    return c


@pytest.fixture
def store(cluster: SimCluster, clock: ManualClock) -> ObjectStore:
    """The cluster's store, with one Ready worker (its network needs no CNI DaemonSet) for
    workloads to run on."""
    cluster.join_node(
        "w0", role="worker", kubelet_version="1.31.1", ready_at=clock.now(), builtin_network=True
    )
    return cluster.store


def deployment(name: str = "web", image: str = "nginx:1.27", replicas: int | None = 2) -> dict:
    spec: dict = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {
                "containers": [{"name": name, "image": image, "ports": [{"containerPort": 80}]}]
            },
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": spec,
    }


def apply(
    store: ObjectStore,
    rt,
    obj: dict,
    manager: str = "werft",
    force: bool = False,
    namespace: str = "default",
) -> tuple[dict, bool]:
    return store.patch(
        rt,
        namespace if rt.namespaced else "",
        obj["metadata"]["name"],
        obj,
        APPLY_PATCH,
        manager=manager,
        force=force,
    )


def status_of(obj: dict, type_: str) -> str | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return cond["status"]
    return None


# --- metadata and basic verbs --------------------------------------------------------------


def test_bring_up_creates_the_default_namespaces(store: ObjectStore) -> None:
    names = [o["metadata"]["name"] for o in store.list(NS, None)["items"]]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]


def test_create_sets_server_metadata_and_manager(store: ObjectStore) -> None:
    obj = store.create(
        CM, "default", {"metadata": {"name": "a"}, "data": {"k": "v"}}, manager="tester"
    )
    meta = obj["metadata"]
    assert obj["apiVersion"] == "v1" and obj["kind"] == "ConfigMap"
    assert meta["namespace"] == "default" and len(meta["uid"]) == 36
    assert int(meta["resourceVersion"]) == store.resource_version
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["managedFields"][0]["manager"] == "tester"
    assert meta["managedFields"][0]["operation"] == "Update"
    assert meta["managedFields"][0]["fieldsV1"] == {"f:data": {"f:k": {}}}
    with pytest.raises(ApiError) as exc:
        store.create(CM, "default", {"metadata": {"name": "a"}}, manager="tester")
    assert (exc.value.code, exc.value.reason) == (409, "AlreadyExists")


def test_create_rejects_bad_objects_like_the_api_server(store: ObjectStore) -> None:
    cases = [
        ({"metadata": {}}, 422, "Invalid"),
        ({"metadata": {"name": "Bad_Name"}}, 422, "Invalid"),
        ({"apiVersion": "apps/v1", "metadata": {"name": "x"}}, 400, "BadRequest"),
        ({"kind": "Secret", "metadata": {"name": "x"}}, 400, "BadRequest"),
        ({"metadata": {"name": "x", "namespace": "other"}}, 400, "BadRequest"),
    ]
    for body, code, reason in cases:
        with pytest.raises(ApiError) as exc:
            store.create(CM, "default", body, manager="t")
        assert (exc.value.code, exc.value.reason) == (code, reason), body
    with pytest.raises(ApiError) as exc:
        store.create(CM, "nowhere", {"metadata": {"name": "x"}}, manager="t")
    assert exc.value.code == 404 and exc.value.message == 'namespaces "nowhere" not found'
    invalid = store.create
    with pytest.raises(ApiError) as exc:
        invalid(CM, "default", {"metadata": {}}, manager="t")
    assert exc.value.details["causes"][0]["field"] == "metadata.name"


def test_generate_name(store: ObjectStore) -> None:
    obj = store.create(CM, "default", {"metadata": {"generateName": "cfg-"}}, manager="t")
    assert obj["metadata"]["name"].startswith("cfg-") and len(obj["metadata"]["name"]) == 9


def test_replace_checks_resource_version(store: ObjectStore) -> None:
    obj = store.create(CM, "default", {"metadata": {"name": "a"}, "data": {"k": "1"}}, manager="t")
    stale = dict(obj, data={"k": "2"})
    updated = store.replace(CM, "default", "a", stale, manager="t")
    assert updated["data"] == {"k": "2"}
    assert int(updated["metadata"]["resourceVersion"]) > int(obj["metadata"]["resourceVersion"])
    with pytest.raises(ApiError) as exc:
        store.replace(CM, "default", "a", dict(obj, data={"k": "3"}), manager="t")
    assert (exc.value.code, exc.value.reason) == (409, "Conflict")
    with pytest.raises(ApiError) as exc:
        store.replace(CM, "default", "b", {"metadata": {"name": "a"}}, manager="t")
    assert exc.value.code == 400  # name in the body differs from the URL


def test_an_update_that_changes_nothing_keeps_the_resource_version(store: ObjectStore) -> None:
    obj = store.create(CM, "default", {"metadata": {"name": "a"}, "data": {"k": "1"}}, manager="t")
    again = store.replace(CM, "default", "a", obj, manager="t")
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    patched, _ = store.patch(CM, "default", "a", {"data": {"k": "1"}}, MERGE_PATCH, manager="t")
    assert patched["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_delete_returns_status_and_namespace_deletion_removes_contents(
    store: ObjectStore,
) -> None:
    store.create(NS, "", {"metadata": {"name": "team"}}, manager="t")
    store.create(CM, "team", {"metadata": {"name": "a"}}, manager="t")
    status = store.remove(CM, "team", "a")
    assert status["status"] == "Success" and status["details"]["name"] == "a"
    store.create(CM, "team", {"metadata": {"name": "b"}}, manager="t")
    store.remove(NS, "", "team")
    assert store.get("", "v1", "configmaps", "team", "b") is None
    with pytest.raises(ApiError) as exc:
        store.remove(NS, "", "kube-system")
    assert exc.value.code == 403


def test_finalizers_hold_deletion_until_removed(store: ObjectStore) -> None:
    store.create(CM, "default", {"metadata": {"name": "f", "finalizers": ["x/y"]}}, manager="t")
    pending = store.remove(CM, "default", "f")
    assert pending["metadata"]["deletionTimestamp"]
    assert store.get("", "v1", "configmaps", "default", "f") is not None
    store.patch(CM, "default", "f", {"metadata": {"finalizers": None}}, MERGE_PATCH, manager="t")
    assert store.get("", "v1", "configmaps", "default", "f") is None


def test_label_and_field_selectors(store: ObjectStore) -> None:
    for name, labels in (("a", {"app": "x", "tier": "db"}), ("b", {"app": "y"}), ("c", {})):
        store.create(CM, "default", {"metadata": {"name": name, "labels": labels}}, manager="t")

    def names(labels: str | None = None, fields: str | None = None) -> list[str]:
        listing = store.list(CM, "default", labels=labels, fields=fields)
        return [o["metadata"]["name"] for o in listing["items"]]

    assert names("app=x") == ["a"]
    assert names("app==y") == ["b"]
    assert names("app!=x") == ["b", "c"]
    assert names("app in (x, y)") == ["a", "b"]
    assert names("app notin (x)") == ["b", "c"]
    assert names("app") == ["a", "b"]
    assert names("!app") == ["c"]
    assert names("app,tier=db") == ["a"]
    assert names(fields="metadata.name=b") == ["b"]
    assert names(fields="metadata.name!=b") == ["a", "c"]
    with pytest.raises(ApiError) as exc:
        names("app in x")
    assert exc.value.code == 400


def test_dry_run_changes_nothing(store: ObjectStore) -> None:
    before = store.resource_version
    store.create(CM, "default", {"metadata": {"name": "dry"}}, manager="t", dry_run=True)
    assert store.get("", "v1", "configmaps", "default", "dry") is None
    assert store.resource_version == before


def test_secret_string_data_is_stored_base64(store: ObjectStore) -> None:
    rt = BUILTIN_BY_GV["v1"]["secrets"]
    obj = store.create(
        rt, "default", {"metadata": {"name": "s"}, "stringData": {"a": "hi"}}, manager="t"
    )
    assert obj["data"] == {"a": "aGk="} and "stringData" not in obj and obj["type"] == "Opaque"


# --- patches -------------------------------------------------------------------------------


def test_merge_and_json_patch(store: ObjectStore) -> None:
    store.create(
        CM, "default", {"metadata": {"name": "a"}, "data": {"x": "1", "y": "2"}}, manager="t"
    )
    obj, _ = store.patch(
        CM, "default", "a", {"data": {"x": None, "z": "3"}}, MERGE_PATCH, manager="t"
    )
    assert obj["data"] == {"y": "2", "z": "3"}
    obj, _ = store.patch(
        CM,
        "default",
        "a",
        [
            {"op": "replace", "path": "/data/y", "value": "9"},
            {"op": "add", "path": "/data/w", "value": "4"},
        ],
        JSON_PATCH,
        manager="t",
    )
    assert obj["data"] == {"y": "9", "z": "3", "w": "4"}
    with pytest.raises(ApiError) as exc:
        store.patch(
            CM,
            "default",
            "a",
            [{"op": "test", "path": "/data/y", "value": "0"}],
            JSON_PATCH,
            manager="t",
        )
    assert exc.value.code == 422
    with pytest.raises(ApiError) as exc:
        store.patch(CM, "default", "nope", {"data": {}}, MERGE_PATCH, manager="t")
    assert exc.value.code == 404


def test_strategic_merge_patch_merges_containers_by_name(store: ObjectStore) -> None:
    body = deployment()
    body["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "s:1"})
    store.create(DEPLOY, "default", body, manager="t")
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "side", "image": "s:2"},
                        {"name": "web", "$patch": "delete"},
                    ]
                }
            }
        }
    }
    obj, _ = store.patch(DEPLOY, "default", "web", patch, STRATEGIC_PATCH, manager="t")
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("side", "s:2")]
    # Stored with the Container type's defaults, as a real server stores it.
    assert containers[0]["imagePullPolicy"] == "IfNotPresent"
    assert obj["metadata"]["generation"] == 2
    merge, _ = store.patch(
        DEPLOY,
        "default",
        "web",
        {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "o"}]}}}},
        MERGE_PATCH,
        manager="t",
    )
    assert [c["name"] for c in merge["spec"]["template"]["spec"]["containers"]] == ["only"]


# --- server-side apply ---------------------------------------------------------------------


def test_apply_creates_when_absent_and_records_the_manager(store: ObjectStore) -> None:
    obj, created = apply(store, DEPLOY, deployment())
    assert created
    entry = obj["metadata"]["managedFields"][0]
    assert (entry["manager"], entry["operation"], entry["apiVersion"]) == (
        "werft",
        "Apply",
        "apps/v1",
    )
    assert entry["fieldsType"] == "FieldsV1"
    spec = entry["fieldsV1"]["f:spec"]
    assert "f:replicas" in spec
    container = spec["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert "f:image" in container and "." in container
    assert obj["metadata"]["generation"] == 1


def test_reapplying_an_unchanged_object_is_a_no_op(store: ObjectStore) -> None:
    first, _ = apply(store, DEPLOY, deployment())
    rv = store.read(DEPLOY, "default", "web")["metadata"]["resourceVersion"]
    again, created = apply(store, DEPLOY, deployment())
    assert not created
    assert again["metadata"]["resourceVersion"] == rv
    assert again["metadata"]["generation"] == first["metadata"]["generation"] == 1
    assert again["metadata"]["managedFields"] == first["metadata"]["managedFields"]


def test_apply_conflicts_between_managers_and_force_wins(store: ObjectStore) -> None:
    apply(store, DEPLOY, deployment(replicas=2), manager="a")
    # Same value: shared ownership, no conflict.
    apply(store, DEPLOY, deployment(replicas=2), manager="b")
    with pytest.raises(ApiError) as exc:
        apply(store, DEPLOY, deployment(replicas=5), manager="b")
    err = exc.value
    assert (err.code, err.reason) == (409, "Conflict")
    assert err.message.startswith('Apply failed with 1 conflict: conflict with "a"')
    assert err.details["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "a"',
            "field": ".spec.replicas",
        }
    ]
    obj, _ = apply(store, DEPLOY, deployment(replicas=5), manager="b", force=True)
    assert obj["spec"]["replicas"] == 5
    owners = {e["manager"]: e["fieldsV1"] for e in obj["metadata"]["managedFields"]}
    assert "f:replicas" not in owners["a"]["f:spec"]
    assert "f:replicas" in owners["b"]["f:spec"]


def test_apply_removes_fields_the_manager_no_longer_applies(store: ObjectStore) -> None:
    body = deployment()
    body["metadata"]["labels"]["extra"] = "yes"
    body["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "s"})
    apply(store, DEPLOY, body)
    store.patch(
        DEPLOY,
        "default",
        "web",
        {"metadata": {"labels": {"mine": "1"}}},
        MERGE_PATCH,
        manager="someone",
    )
    obj, _ = apply(store, DEPLOY, deployment())
    assert obj["metadata"]["labels"] == {"app": "web", "mine": "1"}
    assert [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]] == ["web"]


def test_an_update_takes_over_fields_and_a_later_apply_conflicts(store: ObjectStore) -> None:
    apply(store, DEPLOY, deployment(replicas=2))
    store.patch_merge("apps", "v1", "deployments", "default", "web", {"spec": {"replicas": 7}})
    with pytest.raises(ApiError) as exc:
        apply(store, DEPLOY, deployment(replicas=2))
    assert 'conflict with "kubectl-edit" using apps/v1' in exc.value.message
    obj, _ = apply(store, DEPLOY, deployment(replicas=2), force=True)
    assert obj["spec"]["replicas"] == 2


def test_apply_requires_a_field_manager_and_kind(store: ObjectStore) -> None:
    with pytest.raises(ApiError) as exc:
        store.patch(
            CM,
            "default",
            "a",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
            APPLY_PATCH,
            manager=None,
        )
    assert exc.value.code == 400
    with pytest.raises(ApiError) as exc:
        store.patch(CM, "default", "a", {"metadata": {"name": "a"}}, APPLY_PATCH, manager="m")
    assert exc.value.code == 400


def test_apply_keeps_server_defaults_and_stays_a_no_op(store: ObjectStore) -> None:
    svc = BUILTIN_BY_GV["v1"]["services"]
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "default"},
        "spec": {"ports": [{"port": 80}], "selector": {"a": "b"}},
    }
    first, _ = apply(store, svc, body)
    assert first["spec"]["clusterIP"].startswith("10.96.")
    assert first["spec"]["ports"] == [{"protocol": "TCP", "targetPort": 80, "port": 80}]
    again, _ = apply(store, svc, body)
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


# --- status, generation and the controllers ------------------------------------------------


def test_deployment_becomes_available_after_the_delay(
    store: ObjectStore, clock: ManualClock
) -> None:
    apply(store, DEPLOY, deployment(replicas=2))
    obj = store.read(DEPLOY, "default", "web")
    assert status_of(obj, "Available") == "False"
    assert obj["status"]["observedGeneration"] == 1
    assert obj["status"].get("availableReplicas", 0) == 0
    clock.advance(DELAY)
    obj = store.read(DEPLOY, "default", "web")
    assert status_of(obj, "Available") == "True" and status_of(obj, "Progressing") == "True"
    assert obj["status"]["availableReplicas"] == obj["status"]["readyReplicas"] == 2
    assert obj["status"]["updatedReplicas"] == 2
    rv = obj["metadata"]["resourceVersion"]
    assert store.read(DEPLOY, "default", "web")["metadata"]["resourceVersion"] == rv


def test_a_rollout_keeps_the_deployment_available_but_not_updated(
    store: ObjectStore, clock: ManualClock
) -> None:
    apply(store, DEPLOY, deployment())
    clock.advance(DELAY)
    obj, _ = apply(store, DEPLOY, deployment(image="nginx:1.28"))
    assert obj["metadata"]["generation"] == 2
    obj = store.read(DEPLOY, "default", "web")
    assert status_of(obj, "Available") == "True"
    assert obj["status"]["updatedReplicas"] == 0 and obj["status"]["observedGeneration"] == 2
    clock.advance(DELAY)
    assert store.read(DEPLOY, "default", "web")["status"]["updatedReplicas"] == 2


def test_main_resource_writes_ignore_status(store: ObjectStore) -> None:
    body = deployment()
    body["status"] = {"replicas": 99}
    obj, _ = apply(store, DEPLOY, body)
    assert obj.get("status", {}).get("replicas") != 99


def test_status_subresource_updates_do_not_bump_generation(store: ObjectStore) -> None:
    apply(store, CRD, crd())
    rt = store.resource_type("example.com", "v1", "widgets")
    assert rt is not None and rt.status
    store.create(
        rt,
        "default",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"size": 1},
            "status": {"ignored": True},
        },
        manager="t",
    )
    obj, _ = store.patch(
        rt,
        "default",
        "w",
        {"status": {"phase": "Ready"}, "spec": {"size": 100}},
        MERGE_PATCH,
        manager="ctl",
        subresource="status",
    )
    assert obj["status"] == {"phase": "Ready"}
    assert obj["spec"] == {"size": 1} and obj["metadata"]["generation"] == 1
    obj, _ = store.patch(
        rt,
        "default",
        "w",
        {"spec": {"size": 2}, "status": {"phase": "X"}},
        MERGE_PATCH,
        manager="t",
    )
    assert obj["metadata"]["generation"] == 2 and obj["status"] == {"phase": "Ready"}
    entries = {(e["manager"], e.get("subresource", "")) for e in obj["metadata"]["managedFields"]}
    assert ("ctl", "status") in entries


def crd(group: str = "example.com", plural: str = "widgets", kind: str = "Widget") -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    # Structural: undeclared fields are pruned, as on a real server.
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def test_crd_serves_its_type_until_deleted(store: ObjectStore) -> None:
    assert store.resource_type("example.com", "v1", "widgets") is None
    obj, _ = apply(store, CRD, crd())
    assert status_of(store.read(CRD, "", obj["metadata"]["name"]), "Established") == "True"
    assert "example.com" in store.group_versions()
    rt = store.resource_type("example.com", "v1", "widgets")
    assert rt is not None and rt.custom and rt.namespaced
    apply(
        store,
        rt,
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"size": 1},
        },
    )
    store.remove(CRD, "", "widgets.example.com")
    assert store.resource_type("example.com", "v1", "widgets") is None
    apply(store, CRD, crd())
    rt = store.resource_type("example.com", "v1", "widgets")
    assert rt is not None and store.list(rt, None)["items"] == []
    with pytest.raises(ApiError) as exc:
        store.patch(rt, "default", "w", {"spec": {}}, STRATEGIC_PATCH, manager="t")
    assert exc.value.code == 415


def test_invalid_crd_is_rejected(store: ObjectStore) -> None:
    bad = crd()
    bad["metadata"]["name"] = "wrong.example.com"
    with pytest.raises(ApiError) as exc:
        apply(store, CRD, bad)
    assert exc.value.code == 422


def test_nodes_turn_ready_lazily_and_follow_the_kubelet(
    cluster: SimCluster, clock: ManualClock
) -> None:
    store = cluster.store
    cluster.join_node(
        "cp",
        role="control-plane",
        kubelet_version="1.31.1",
        ready_at=clock.now() + 30,
        builtin_network=True,
    )
    node = store.get("", "v1", "nodes", None, "cp")
    assert node is not None
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "cp"
    assert "node-role.kubernetes.io/control-plane" in node["metadata"]["labels"]
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.31.1"
    assert status_of(node, "Ready") == "False"
    clock.advance(30)
    assert status_of(store.get("", "v1", "nodes", None, "cp"), "Ready") == "True"
    cluster.set_node_ready("cp", False)  # the kubelet stops posting: Unknown, as real
    assert status_of(store.get("", "v1", "nodes", None, "cp"), "Ready") == "Unknown"
    cluster.set_node_ready("cp", True)
    assert status_of(store.get("", "v1", "nodes", None, "cp"), "Ready") == "True"
    cluster.set_kubelet_version("cp", "1.30.4")
    node = store.get("", "v1", "nodes", None, "cp")
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.30.4"


def test_daemonset_counts_ready_nodes_it_tolerates(cluster: SimCluster, clock: ManualClock) -> None:
    store = cluster.store
    nodes = (("cp", "control-plane", 0), ("w1", "worker", 0), ("w2", "worker", 100))
    for name, role, delay in nodes:
        cluster.join_node(
            name,
            role=role,
            kubelet_version="1.31.1",
            ready_at=clock.now() + delay,
            builtin_network=True,
        )
    body = deployment("agent")
    body["kind"] = "DaemonSet"
    del body["spec"]["replicas"]
    apply(store, DS, body)
    status = store.read(DS, "default", "agent")["status"]
    # The control plane is tainted (kubeadm) and not tolerated; w2 is not Ready yet.
    assert status["desiredNumberScheduled"] == 1 and status["numberReady"] == 0
    clock.advance(DELAY)
    status = store.read(DS, "default", "agent")["status"]
    assert status["numberReady"] == status["numberAvailable"] == 1
    body["spec"]["template"]["spec"]["tolerations"] = [{"operator": "Exists"}]
    apply(store, DS, body)
    clock.advance(100)
    status = store.read(DS, "default", "agent")["status"]
    assert status["desiredNumberScheduled"] == 3 and status["updatedNumberScheduled"] == 3


def test_apiservice_becomes_available(store: ObjectStore, clock: ManualClock) -> None:
    body = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": "v1beta1.metrics.k8s.io"},
        "spec": {
            "group": "metrics.k8s.io",
            "version": "v1beta1",
            "service": {"name": "metrics-server", "namespace": "kube-system"},
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }
    apply(store, APISVC, body)
    assert status_of(store.read(APISVC, "", "v1beta1.metrics.k8s.io"), "Available") == "False"
    clock.advance(DELAY)
    assert status_of(store.read(APISVC, "", "v1beta1.metrics.k8s.io"), "Available") == "True"


def test_scale_subresource(store: ObjectStore) -> None:
    apply(store, DEPLOY, deployment(replicas=2))
    scale = store.read_scale(DEPLOY, "default", "web")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
    scale, _ = store.patch(
        DEPLOY,
        "default",
        "web",
        {"spec": {"replicas": 4}},
        MERGE_PATCH,
        manager="hpa",
        subresource="scale",
    )
    assert scale["spec"]["replicas"] == 4
    assert store.read(DEPLOY, "default", "web")["spec"]["replicas"] == 4


def test_plain_methods_for_drift(cluster: SimCluster) -> None:
    store = cluster.store
    apply(store, DEPLOY, deployment())
    copy = store.get("apps", "v1", "deployments", "default", "web")
    assert copy is not None
    copy["spec"]["replicas"] = 100  # a copy: the store is not affected
    assert store.get("apps", "v1", "deployments", "default", "web")["spec"]["replicas"] == 2
    changed = store.patch_merge(
        "apps", "v1", "deployments", "default", "web", {"metadata": {"labels": {"drift": "yes"}}}
    )
    assert changed is not None and changed["metadata"]["labels"]["drift"] == "yes"
    assert store.delete("apps", "v1", "deployments", "default", "web")
    assert not store.delete("apps", "v1", "deployments", "default", "web")
    assert store.get("apps", "v1", "deployments", "default", "web") is None
    assert store.patch_merge("apps", "v1", "deployments", "default", "web", {}) is None


def test_reset_wipes_the_cluster(cluster: SimCluster) -> None:
    apply(cluster.store, DEPLOY, deployment())
    cluster.reset()
    assert not cluster.api_up and cluster.token is None and not cluster.has_store
    cluster.bring_up(token="t2", kubernetes_version="1.31.2", distribution="k3s")
    assert cluster.store.get("apps", "v1", "deployments", "default", "web") is None
    assert cluster.kubernetes_version == "1.31.2"


def test_a_workload_marked_unavailable_never_becomes_available(
    store: ObjectStore, clock: ManualClock
) -> None:
    body = deployment()
    body["metadata"]["annotations"] = {"sim.werft.dev/unavailable": "ImagePullBackOff"}
    apply(store, DEPLOY, body)
    clock.advance(10 * DELAY)
    assert status_of(store.read(DEPLOY, "default", "web"), "Available") == "False"
    apply(store, DEPLOY, deployment())  # the annotation goes: timed from the spec change
    assert status_of(store.read(DEPLOY, "default", "web"), "Available") == "True"


def test_equal_parts_of_objects_are_shared_across_clusters(clock: ManualClock) -> None:
    clusters = []
    for name in ("a", "b"):
        c = SimCluster(name, clock)
        c.bring_up(token="t", kubernetes_version="1.31.1", distribution="kubeadm")
        apply(c.store, DEPLOY, deployment())
        clusters.append(c)
    one, two = (c.store.objects(("apps", "deployments"))[("default", "web")] for c in clusters)
    assert one is not two and one["spec"] is two["spec"]
    assert one["metadata"]["uid"] != two["metadata"]["uid"]
    # A change in one cluster leaves the other's (shared) spec alone.
    store = clusters[0].store
    store.patch(DEPLOY, "default", "web", {"spec": {"replicas": 9}}, MERGE_PATCH, manager="t")
    assert clusters[1].store.read(DEPLOY, "default", "web")["spec"]["replicas"] == 2


def test_a_crd_with_two_versions_serves_the_same_objects_under_both(store: ObjectStore) -> None:
    definition = crd()
    v1 = definition["spec"]["versions"][0]
    definition["spec"]["versions"] = [{**v1, "name": "v1beta1", "storage": False}, v1]
    apply(store, CRD, definition)
    assert store.group_versions()["example.com"] == ["v1beta1", "v1"]
    new, old = (store.resource_type("example.com", v, "widgets") for v in ("v1", "v1beta1"))
    assert new is not None and old is not None
    apply(
        store,
        new,
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"size": 1},
        },
    )
    seen = store.read(old, "default", "w")
    assert seen["apiVersion"] == "example.com/v1beta1" and seen["spec"] == {"size": 1}
    patched, _ = store.patch(old, "default", "w", {"spec": {"size": 2}}, MERGE_PATCH, manager="t")
    assert patched["apiVersion"] == "example.com/v1beta1"
    assert store.read(new, "default", "w")["spec"] == {"size": 2}
