"""The simulated API server and kubelet are as strict as real ones, over real HTTP.

One uvicorn server on loopback for the module, driven by a ManualClock (time moves only
when a test says so); each test brings its own cluster. What "real" means is cited where
it matters: the kubelet's NotReady message, the DaemonSet controller's tolerations,
apimachinery's apply-conflict Status, the strict decoder's messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.kubefixtures import KubeServer, ManualClock, cni_daemonset
from werft.sim.kube.cluster import SimCluster

DELAY = 20.0  # Delays.workload_available at time scale 1
NO_CNI = (
    "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
    "message:Network plugin returns error: cni plugin not initialized"
)
NOT_READY = "node.kubernetes.io/not-ready"
APPLY = "application/apply-patch+yaml"


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def server(clock: ManualClock) -> Iterator[KubeServer]:
    srv = KubeServer(clock).start()
    yield srv
    srv.stop()


class Api:
    """A cluster's API over HTTP, spoken the way werft and kubectl speak it."""

    def __init__(self, server: KubeServer, cluster: str) -> None:
        self.http = httpx.Client(
            base_url=server.endpoint(cluster),
            headers={"Authorization": "Bearer t0ken"},
            trust_env=False,
            timeout=10,
        )

    def get(self, path: str) -> dict[str, Any]:
        response = self.http.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def apply(
        self,
        path: str,
        body: dict[str, Any] | bytes,
        *,
        manager: str = "werft",
        force: bool = False,
        dry_run: bool = False,
        validation: str | None = "Strict",
    ) -> httpx.Response:
        params: dict[str, str] = {"fieldManager": manager}
        if force:
            params["force"] = "true"
        if dry_run:
            params["dryRun"] = "All"
        if validation:
            params["fieldValidation"] = validation
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.patch(
            path, params=params, content=content, headers={"Content-Type": APPLY}
        )

    def node(self, name: str) -> dict[str, Any]:
        return self.get(f"/api/v1/nodes/{name}")


def ready(node: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in node["status"]["conditions"] if c["type"] == "Ready")


def taints(node: dict[str, Any]) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in node["spec"].get("taints", [])}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def deployment(name: str = "web", **container: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": name, "image": "nginx:1.27", **container}]},
            },
        },
    }


DEPLOY = "/apis/apps/v1/namespaces/default/deployments"
CNI = "/apis/apps/v1/namespaces/kube-system/daemonsets/cni"


def new_cluster(server: KubeServer, name: str, *, distribution: str = "kubeadm") -> SimCluster:
    cluster = server.add(name, token=None)
    cluster.bring_up(token="t0ken", kubernetes_version="1.31.1", distribution=distribution)
    for n, role in enumerate(("control-plane", "worker")):
        cluster.join_node(
            f"{name}-node-{n}", role=role, kubelet_version="v1.31.1", ready_at=server.clock.now()
        )
    return cluster


# --- 1. nodes are NotReady until a CNI runs ------------------------------------------------


def test_nodes_register_not_ready_with_the_kubelets_cni_message_and_taints(
    server: KubeServer,
) -> None:
    new_cluster(server, "fresh")
    api = Api(server, "fresh")
    server.clock.advance(10 * DELAY)  # however long it takes: no CNI, no network
    for name in ("fresh-node-0", "fresh-node-1"):
        node = api.node(name)
        cond = ready(node)
        assert (cond["status"], cond["reason"], cond["message"]) == (
            "False",
            "KubeletNotReady",
            NO_CNI,
        )
        assert {(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")} <= taints(node)
    # kubeadm's own control-plane taint is kept alongside.
    assert ("node-role.kubernetes.io/control-plane", "NoSchedule") in taints(
        api.node("fresh-node-0")
    )


def test_a_cni_daemonset_makes_nodes_ready_and_lifts_the_not_ready_taints(
    server: KubeServer,
) -> None:
    new_cluster(server, "cni")
    api = Api(server, "cni")
    assert api.apply(CNI, cni_daemonset()).status_code == 201
    ds = api.get(CNI)["status"]
    # It tolerates the not-ready taint: scheduled on both nodes at once, not ready yet.
    assert ds["desiredNumberScheduled"] == 2 and ds["numberReady"] == 0
    assert ready(api.node("cni-node-1"))["status"] == "False"
    server.clock.advance(DELAY)
    for name in ("cni-node-0", "cni-node-1"):
        node = api.node(name)
        assert ready(node)["status"] == "True" and ready(node)["reason"] == "KubeletReady"
        assert not {t for t in taints(node) if t[0] == NOT_READY}
    assert ("node-role.kubernetes.io/control-plane", "NoSchedule") in taints(
        api.node("cni-node-0")
    )
    assert api.get(CNI)["status"]["numberReady"] == 2


def test_a_deployment_stays_unavailable_until_a_node_is_ready(server: KubeServer) -> None:
    new_cluster(server, "wait")
    api = Api(server, "wait")
    assert api.apply(f"{DEPLOY}/web", deployment()).status_code == 201
    server.clock.advance(10 * DELAY)
    available = condition(api.get(f"{DEPLOY}/web"), "Available")
    assert (available["status"], available["reason"]) == ("False", "MinimumReplicasUnavailable")
    assert api.get(f"{DEPLOY}/web")["status"]["unavailableReplicas"] == 2
    server.clock.advance(600)  # the default progressDeadlineSeconds
    progressing = condition(api.get(f"{DEPLOY}/web"), "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    api.apply(CNI, cni_daemonset())
    server.clock.advance(DELAY)  # the worker turns Ready; the pods start on it now
    assert condition(api.get(f"{DEPLOY}/web"), "Available")["status"] == "False"
    server.clock.advance(DELAY)
    status = api.get(f"{DEPLOY}/web")["status"]
    assert condition(api.get(f"{DEPLOY}/web"), "Available")["status"] == "True"
    assert status["availableReplicas"] == 2


def test_a_daemonset_without_the_not_ready_toleration_waits_for_ready_nodes(
    server: KubeServer,
) -> None:
    new_cluster(server, "agents")
    api = Api(server, "agents")
    agent = cni_daemonset(name="agent")
    spec = agent["spec"]["template"]["spec"]
    del spec["tolerations"], spec["volumes"]  # a plain agent: the controller's own only
    path = "/apis/apps/v1/namespaces/kube-system/daemonsets/agent"
    api.apply(path, agent)
    server.clock.advance(DELAY)
    assert api.get(path)["status"]["desiredNumberScheduled"] == 0
    api.apply(CNI, cni_daemonset())
    server.clock.advance(2 * DELAY)
    status = api.get(path)["status"]
    # The worker only: the control plane's NoSchedule taint is not among the tolerations
    # the DaemonSet controller adds.
    assert status["desiredNumberScheduled"] == 1 and status["numberReady"] == 1


def test_a_cni_that_does_not_tolerate_the_taint_or_never_runs_leaves_nodes_not_ready(
    server: KubeServer,
) -> None:
    new_cluster(server, "stuck")
    api = Api(server, "stuck")
    untolerant = cni_daemonset()
    del untolerant["spec"]["template"]["spec"]["tolerations"]
    api.apply(CNI, untolerant)
    server.clock.advance(10 * DELAY)
    assert ready(api.node("stuck-node-1"))["status"] == "False"  # the real deadlock
    broken = cni_daemonset()
    broken["metadata"]["annotations"] = {"sim.werft.dev/unavailable": "ImagePullBackOff"}
    api.apply(CNI, broken)
    server.clock.advance(10 * DELAY)
    assert ready(api.node("stuck-node-1"))["status"] == "False"


def test_k3s_nodes_need_a_cni_in_k3s_own_cni_directory(server: KubeServer) -> None:
    new_cluster(server, "k3s", distribution="k3s")
    api = Api(server, "k3s")
    api.apply(CNI, cni_daemonset("kubeadm"))  # /etc/cni/net.d: not where k3s looks
    server.clock.advance(2 * DELAY)
    assert ready(api.node("k3s-node-1"))["status"] == "False"
    api.apply(CNI, cni_daemonset("k3s"))
    server.clock.advance(DELAY)
    assert ready(api.node("k3s-node-1"))["status"] == "True"


def test_a_node_whose_kubelet_stopped_stays_not_ready(server: KubeServer) -> None:
    cluster = new_cluster(server, "down")
    api = Api(server, "down")
    api.apply(CNI, cni_daemonset())
    server.clock.advance(DELAY)
    assert ready(api.node("down-node-1"))["status"] == "True"
    cluster.set_node_ready("down-node-1", False)  # what the sim's power-off drift does
    server.clock.advance(10 * DELAY)
    node = api.node("down-node-1")
    cond = ready(node)
    assert (cond["status"], cond["reason"]) == ("Unknown", "NodeStatusUnknown")
    assert cond["message"] == "Kubelet stopped posting node status."
    unreachable = "node.kubernetes.io/unreachable"
    assert {(unreachable, "NoSchedule"), (unreachable, "NoExecute")} <= taints(node)
    cluster.set_node_ready("down-node-1", True)  # back: its CNI pod starts again
    assert ready(api.node("down-node-1"))["status"] == "False"
    server.clock.advance(DELAY)
    assert ready(api.node("down-node-1"))["status"] == "True"


# --- 4. server-side apply: conflicts and dry runs --------------------------------------------


def ready_cluster(server: KubeServer, name: str) -> Api:
    server.add(name, nodes=2, builtin_network=True)
    return Api(server, name)


def test_apply_without_force_conflicts_like_a_real_server(server: KubeServer) -> None:
    api = ready_cluster(server, "conflicts")
    assert api.apply(f"{DEPLOY}/web", deployment()).status_code == 201
    edited = api.http.patch(
        f"{DEPLOY}/web",
        params={"fieldManager": "kubectl-edit"},
        json={"spec": {"replicas": 5}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert edited.status_code == 200
    response = api.apply(f"{DEPLOY}/web", deployment())
    assert response.status_code == 409
    assert response.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: '
        ".spec.replicas",
        "reason": "Conflict",
        "details": {
            "causes": [
                {
                    "reason": "FieldManagerConflict",
                    "message": 'conflict with "kubectl-edit" using apps/v1',
                    "field": ".spec.replicas",
                }
            ]
        },
        "code": 409,
    }
    assert api.get(f"{DEPLOY}/web")["spec"]["replicas"] == 5  # nothing moved
    forced = api.apply(f"{DEPLOY}/web", deployment(), force=True)
    assert forced.status_code == 200 and forced.json()["spec"]["replicas"] == 2
    owners = {e["manager"] for e in forced.json()["metadata"]["managedFields"]}
    assert "werft" in owners


def test_conflicts_with_several_managers_are_listed_per_manager(server: KubeServer) -> None:
    api = ready_cluster(server, "conflicts2")
    api.apply(f"{DEPLOY}/web", deployment())
    for manager, patch in (
        ("kubectl-edit", {"spec": {"replicas": 5}}),
        ("hpa", {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "x"}]}}}}),
    ):
        api.http.patch(
            f"{DEPLOY}/web",
            params={"fieldManager": manager},
            json=patch,
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        )
    response = api.apply(f"{DEPLOY}/web", deployment())
    assert response.status_code == 409
    assert response.json()["message"] == (
        "Apply failed with 2 conflicts: "
        'conflicts with "hpa" using apps/v1:\n'
        '- .spec.template.spec.containers[name="web"].image\n'
        'conflicts with "kubectl-edit" using apps/v1:\n'
        "- .spec.replicas"
    )


def test_list_merge_follows_the_schemas_list_type_and_keys(server: KubeServer) -> None:
    """topologySpreadConstraints is a map list keyed by topologyKey+whenUnsatisfiable in the
    upstream schema: two managers each own their item. args is atomic: one owner."""
    api = ready_cluster(server, "lists")

    def spread(key: str) -> dict[str, Any]:
        body = deployment()
        body["spec"]["template"]["spec"]["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "web"}},
            }
        ]
        return body

    assert api.apply(f"{DEPLOY}/web", spread("zone")).status_code == 201
    second = api.apply(f"{DEPLOY}/web", spread("kubernetes.io/hostname"), manager="other")
    assert second.status_code == 200, second.text
    keys = [c["topologyKey"] for c in second.json()["spec"]["template"]["spec"][
        "topologySpreadConstraints"
    ]]
    assert keys == ["zone", "kubernetes.io/hostname"]


def test_dry_run_apply_returns_the_stored_form_without_storing(server: KubeServer) -> None:
    api = ready_cluster(server, "dryrun")
    body = deployment(resources={"requests": {"cpu": "1000m", "memory": "1024Mi"}})
    created = api.apply(f"{DEPLOY}/web", body)
    live = api.get(f"{DEPLOY}/web")
    body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = {"cpu": "0.5"}
    dry = api.apply(f"{DEPLOY}/web", body, dry_run=True)
    assert created.status_code == 201 and dry.status_code == 200
    container = dry.json()["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "500m"},
    }
    assert api.get(f"{DEPLOY}/web") == live  # nothing stored
    # The same configuration as stored: the dry run equals the live object (no drift).
    del body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    again = api.apply(f"{DEPLOY}/web", body, dry_run=True).json()
    assert again["spec"] == live["spec"]
    # Conflicts are part of the pipeline too.
    api.http.patch(
        f"{DEPLOY}/web",
        params={"fieldManager": "kubectl-edit"},
        json={"spec": {"replicas": 7}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert api.apply(f"{DEPLOY}/web", body, dry_run=True).status_code == 409


# --- 2. storage: quantities and defaults -----------------------------------------------------


def test_quantities_are_stored_canonically_and_int_or_string_as_given(
    server: KubeServer,
) -> None:
    api = ready_cluster(server, "quantities")
    body = deployment(
        resources={
            "requests": {"cpu": "1000m", "memory": "1024Mi", "ephemeral-storage": "1e3"},
            "limits": {"cpu": 0.5, "memory": "1.5Gi"},
        },
        ports=[{"containerPort": 8080}],
        readinessProbe={"httpGet": {"port": "http"}},
    )
    body["spec"]["strategy"] = {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    stored = api.apply(f"{DEPLOY}/web", body).json()
    container = stored["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1e3"},
        "limits": {"cpu": "500m", "memory": "1536Mi"},
    }
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    assert stored["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}
    # Re-applying the non-canonical text changes nothing: same resourceVersion.
    again = api.apply(f"{DEPLOY}/web", body).json()
    assert again["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    bad = deployment(resources={"requests": {"cpu": "one"}})
    response = api.apply(f"{DEPLOY}/bad", {**bad, "metadata": {"name": "bad"}})
    assert response.status_code == 400 and "quantities must match" in response.json()["message"]


def test_the_real_servers_defaults_are_stored(server: KubeServer) -> None:
    api = ready_cluster(server, "defaults")
    body = deployment(
        image="nginx",  # no tag: pulled Always
        ports=[{"containerPort": 80}],
        livenessProbe={"httpGet": {"port": 80}},
        resources={"requests": {"cpu": "100u"}},  # rounded up to milli units
    )
    del body["spec"]["replicas"]
    body["spec"]["template"]["spec"]["volumes"] = [
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "host", "hostPath": {"path": "/run"}},
    ]
    spec = api.apply(f"{DEPLOY}/web", body).json()["spec"]
    assert (spec["replicas"], spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (
        1,
        10,
        600,
    )
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    pod = spec["template"]["spec"]
    assert (pod["restartPolicy"], pod["dnsPolicy"], pod["schedulerName"]) == (
        "Always",
        "ClusterFirst",
        "default-scheduler",
    )
    assert pod["terminationGracePeriodSeconds"] == 30 and pod["securityContext"] == {}
    [container] = pod["containers"]
    assert container["imagePullPolicy"] == "Always"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert container["livenessProbe"] == {
        "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert container["resources"] == {"requests": {"cpu": "1m"}}
    assert pod["volumes"] == [
        {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}},
        {"name": "host", "hostPath": {"path": "/run", "type": ""}},
    ]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
    }
    svc = api.apply("/api/v1/namespaces/default/services/web", service).json()["spec"]
    assert svc["ports"] == [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]
    assert (svc["type"], svc["sessionAffinity"], svc["internalTrafficPolicy"]) == (
        "ClusterIP",
        "None",
        "Cluster",
    )
    assert (svc["ipFamilies"], svc["ipFamilyPolicy"]) == (["IPv4"], "SingleStack")


# --- 3. fieldValidation ----------------------------------------------------------------------


def test_unknown_fields_by_field_validation_on_create(server: KubeServer) -> None:
    api = ready_cluster(server, "fields")
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "labelz": {"a": "b"}},
        "data": {"k": "v"},
        "extra": 1,
    }
    path = "/api/v1/namespaces/default/configmaps"
    strict = api.http.post(path, params={"fieldValidation": "Strict"}, json=body)
    assert strict.status_code == 400
    assert strict.json()["reason"] == "BadRequest"
    assert strict.json()["message"] == (  # in the order of the document
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: '
        'unknown field "metadata.labelz", unknown field "extra"'
    )
    warned = api.http.post(path, json=body)  # no parameter: the server's default, Warn
    assert warned.status_code == 201
    assert sorted(warned.headers.get_list("warning")) == [
        '299 - "unknown field \\"extra\\""',
        '299 - "unknown field \\"metadata.labelz\\""',
    ]
    assert "extra" not in warned.json() and "labelz" not in warned.json()["metadata"]
    body["metadata"]["name"] = "cm2"
    ignored = api.http.post(path, params={"fieldValidation": "Ignore"}, json=body)
    assert ignored.status_code == 201 and "warning" not in ignored.headers


def test_duplicate_fields_are_rejected_or_warned(server: KubeServer) -> None:
    api = ready_cluster(server, "dups")
    raw = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","name":"b"}}'
    path = "/api/v1/namespaces/default/configmaps"
    headers = {"Content-Type": "application/json"}
    strict = api.http.post(path, params={"fieldValidation": "Strict"}, content=raw, headers=headers)
    assert strict.status_code == 400
    message = strict.json()["message"]
    assert message.endswith('strict decoding error: duplicate field "metadata.name"')
    warned = api.http.post(path, params={"fieldValidation": "Warn"}, content=raw, headers=headers)
    assert warned.status_code == 201 and warned.json()["metadata"]["name"] == "b"
    assert warned.headers["warning"] == '299 - "duplicate field \\"metadata.name\\""'
    applied = api.apply("/api/v1/namespaces/default/configmaps/b", raw)
    assert applied.status_code == 400
    assert applied.json()["message"] == (
        "error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n"
        '  line 1: key "name" already set in map'
    )


def test_unknown_fields_in_an_apply_fail_as_on_a_real_server(server: KubeServer) -> None:
    api = ready_cluster(server, "typed")
    body = deployment()
    body["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    for validation in ("Strict", "Warn", "Ignore"):
        response = api.apply(f"{DEPLOY}/web", body, validation=validation)
        # A real server converts the configuration to a typed object first and answers a
        # plain (non-Status) error: 500 with no reason (kubernetes/kubernetes#122480).
        assert response.status_code == 500
        assert response.json() == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "failed to create typed patch object (default/web; apps/v1, "
            "Kind=Deployment): .spec.template.spec.containers[name=\"web\"]."
            "imagePullPolicyy: field not declared in schema",
            "code": 500,
        }
    assert api.http.get(f"{DEPLOY}/web").status_code == 404


def test_merge_patches_are_strictly_decoded_too(server: KubeServer) -> None:
    api = ready_cluster(server, "patches")
    api.apply(f"{DEPLOY}/web", deployment())
    response = api.http.patch(
        f"{DEPLOY}/web",
        params={"fieldValidation": "Strict", "fieldManager": "kubectl-edit"},
        json={"spec": {"replica": 3}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 400
    assert response.json()["message"] == 'strict decoding error: unknown field "spec.replica"'


def test_custom_resources_follow_their_crds_structural_schema(server: KubeServer) -> None:
    api = ready_cluster(server, "crs")
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "size": {"type": "integer"},
                                        "extra": {
                                            "type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True,
                                        },
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    assert api.apply("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                     "widgets.example.com", crd).status_code == 201
    path = "/apis/example.com/v1/namespaces/default/widgets"
    widget = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": 1, "extra": {"anything": True}},
    }
    assert api.apply(f"{path}/w", widget).status_code == 201
    widget["spec"]["colour"] = "red"
    response = api.apply(f"{path}/w", widget)
    assert response.status_code == 500
    assert ".spec.colour: field not declared in schema" in response.json()["message"]


def test_list_items_of_built_in_kinds_carry_no_kind_as_on_a_real_server(
    server: KubeServer,
) -> None:
    # kubernetes/kubernetes#3030: a real server leaves apiVersion and kind out of a
    # built-in kind's list items (a GET of one object has them); a client that keys or
    # compares listed objects by kind must fill them in. Custom resources keep theirs.
    api = ready_cluster(server, "typemeta")
    assert api.apply(f"{DEPLOY}/web", deployment()).status_code == 201
    listed = api.get(DEPLOY)
    assert (listed["kind"], listed["apiVersion"]) == ("DeploymentList", "apps/v1")
    assert [sorted(set(item) & {"kind", "apiVersion"}) for item in listed["items"]] == [[]]
    assert api.get(f"{DEPLOY}/web")["kind"] == "Deployment"
