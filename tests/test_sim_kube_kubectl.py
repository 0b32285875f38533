"""kubectl against the simulated API, as a person would poke at a simulated cluster.

Served over TLS: kubectl (client-go) never sends a token to an ``http://`` server, so
the server here uses a self-signed certificate that the kubeconfig trusts. Works with
kubectl 1.20 (Debian's kubernetes-client) through 1.33.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.kubefixtures import KubeServer, poll
from werft.sim.clock import Clock
from werft.sim.kube.tls import self_signed

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: demo, labels: {app: web}}
data: {level: info}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 80}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: demo}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      tolerations: [{operator: Exists}]
      containers: [{name: agent, image: busybox}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"""

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns: [{name: Size, type: integer, jsonPath: .spec.size}]
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, namespace: default}
spec: {size: 3}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[KubeServer]:
    srv = KubeServer(Clock(time_scale=40.0), tls=self_signed()).start()
    yield srv
    srv.stop()


class Kubectl:
    def __init__(self, server: KubeServer, cluster: str, home: Path) -> None:
        self.cluster = cluster
        self.home = home
        self.kubeconfig = home / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(server.kubeconfig(cluster)))

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.home)}
        done = subprocess.run(
            [
                KUBECTL,
                "--kubeconfig",
                str(self.kubeconfig),
                "--cache-dir",
                str(self.home / "cache"),
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done


@pytest.fixture
def kubectl(server: KubeServer, tmp_path: Path, request: pytest.FixtureRequest) -> Kubectl:
    name = request.node.name.replace("_", "-")[:40].strip("-")
    server.add(name, nodes=2, builtin_network=True)
    return Kubectl(server, name, tmp_path)


def test_get_nodes_prints_the_server_side_table(kubectl: Kubectl) -> None:
    out = kubectl("get", "nodes").stdout.splitlines()
    assert out[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = [line.split() for line in out[1:]]
    assert [r[0] for r in rows] == [f"{kubectl.cluster}-node-0", f"{kubectl.cluster}-node-1"]
    assert [(r[1], r[2], r[4]) for r in rows] == [
        ("Ready", "control-plane", "v1.31.1"),
        ("Ready", "<none>", "v1.31.1"),
    ]


def test_server_side_apply_wait_and_get_json(kubectl: Kubectl, server: KubeServer) -> None:
    applied = kubectl("apply", "--server-side", "-f", "-", stdin=MANIFEST).stdout
    assert applied.count("serverside-applied") == 5
    waited = kubectl(
        "wait", "--for=condition=Available", "deployment/web", "-n", "demo", "--timeout=30s"
    )
    assert "condition met" in waited.stdout

    before = json.loads(kubectl("get", "deploy", "-n", "demo", "-o", "json").stdout)
    kubectl("apply", "--server-side", "-f", "-", stdin=MANIFEST)
    after = json.loads(kubectl("get", "deploy", "-n", "demo", "-o", "json").stdout)
    [deploy] = after["items"]
    assert deploy["kind"] == "Deployment" and deploy["status"]["availableReplicas"] == 2
    # Re-applying the same manifest is a no-op: nothing changed, not even the version.
    assert (
        deploy["metadata"]["resourceVersion"] == before["items"][0]["metadata"]["resourceVersion"]
    )
    live = server.registry[kubectl.cluster].store.get("apps", "v1", "deployments", "demo", "web")
    assert live is not None  # kubectl hides managedFields; the store shows who applied what
    assert {(e["manager"], e["operation"]) for e in live["metadata"]["managedFields"]} == {
        ("kubectl", "Apply")
    }

    ds = kubectl("get", "ds", "agent", "-n", "demo", "-o", "jsonpath={.status.numberReady}")
    assert ds.stdout == "2"
    svc = kubectl("get", "svc", "web", "-n", "demo", "-o", "jsonpath={.spec.clusterIP}")
    assert svc.stdout.startswith("10.96.")
    selected = kubectl("get", "cm", "-n", "demo", "-l", "app=web", "-o", "name").stdout
    assert selected.split() == ["configmap/settings"]


def test_client_side_apply_and_crds(kubectl: Kubectl) -> None:
    deployment = yaml.safe_load(MANIFEST.split("---")[2])
    deployment["metadata"]["namespace"] = "default"
    containers = deployment["spec"]["template"]["spec"]["containers"]
    containers[0]["env"] = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    created = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(deployment))
    assert "deployment.apps/web created" in created.stdout
    containers[0]["env"] = [{"name": "A", "value": "1"}]
    containers[0]["image"] = "nginx:1.28"
    configured = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(deployment))
    assert "deployment.apps/web configured" in configured.stdout
    live = json.loads(kubectl("get", "deploy", "web", "-o", "json").stdout)
    assert live["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    assert live["metadata"]["generation"] == 2

    definition, widget = CRD.split("---\n")
    kubectl("apply", "-f", "-", stdin=definition)  # as on a real cluster: CRD first
    kubectl("apply", "-f", "-", stdin=widget)
    table = kubectl("get", "wd").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "AGE"] and table[1].split()[:2] == ["w1", "3"]
    kubectl("delete", "widget", "w1")
    gone = kubectl("get", "widget", "w1", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_kubectl_sends_no_token_over_plain_http(tmp_path: Path) -> None:
    plain = KubeServer(Clock()).start()
    try:
        plain.add("plain")
        result = Kubectl(plain, "plain", tmp_path)("get", "namespaces", check=False)
    finally:
        plain.stop()
    # client-go reads the kubeconfig's credentials only for TLS: hence the TLS server above.
    assert result.returncode != 0 and "must be logged in" in result.stderr


def test_the_sample_fleet_addons_apply_and_become_healthy(kubectl: Kubectl) -> None:
    from werft.inventory.load import load_inventory
    from werft.render import render_addons

    inventory = load_inventory(Path(__file__).parents[1] / "inventory")
    cluster = next(iter(inventory.clusters.values()))
    manifests = render_addons(cluster, inventory)
    text = yaml.safe_dump_all(manifests)
    applied = kubectl("apply", "--server-side", "-f", "-", stdin=text)
    assert applied.stdout.count("serverside-applied") == len(manifests)
    [apiservice] = [m["metadata"]["name"] for m in manifests if m["kind"] == "APIService"]
    kubectl("wait", "--for=condition=Available", f"apiservice/{apiservice}", "--timeout=30s")

    def workloads() -> dict[str, dict]:
        out = kubectl("get", "deploy,ds", "--all-namespaces", "-o", "json").stdout
        return {f"{i['kind']}/{i['metadata']['name']}": i for i in json.loads(out)["items"]}

    def healthy() -> dict[str, dict] | None:
        found = workloads()
        for item in found.values():
            status = item.get("status", {})
            if item["kind"] == "Deployment":
                ok = status.get("availableReplicas") == item["spec"]["replicas"]
            else:
                ok = status.get("numberAvailable") == status.get("desiredNumberScheduled") > 0
            if not ok:
                return None
        return found

    settled = poll(healthy, timeout=30, interval=0.2)
    wanted = {
        f"{m['kind']}/{m['metadata']['name']}"
        for m in manifests
        if m["kind"] in ("Deployment", "DaemonSet")
    }
    assert set(settled) == wanted
    kubectl("apply", "--server-side", "-f", "-", stdin=text)
    after = workloads()
    assert {k: v["metadata"]["resourceVersion"] for k, v in after.items()} == {
        k: v["metadata"]["resourceVersion"] for k, v in settled.items()
    }
