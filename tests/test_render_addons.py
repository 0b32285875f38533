"""Add-on rendering: every sample manifest is a valid Kubernetes object, in apply order."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.renderfixtures import (
    ARTIFACTS_URL,
    SAMPLE_INVENTORY,
    make_cluster,
    make_inventory,
    sample_addon_files,
)
from werft.errors import PermanentError
from werft.render.addons import render_addons


def schema_version(kubernetes_version: str) -> str:
    """kubernetes-validate ships schemas per minor release: 1.31.1 -> 1.31.0."""
    major, minor, _ = kubernetes_version.split(".")
    return f"{major}.{minor}.0"


def validate(obj: dict[str, Any], kubernetes_version: str) -> None:
    kubernetes_validate.validate(obj, schema_version(kubernetes_version), strict=True)


def is_custom_resource(obj: dict[str, Any], crds: set[tuple[str, str]]) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return (group, obj["kind"]) in crds


def rank_of(obj: dict[str, Any]) -> int:
    kind = obj["kind"]
    if kind in ("Namespace", "CustomResourceDefinition"):
        return 0
    if kind in ("ClusterRole", "ClusterRoleBinding", "PriorityClass"):
        return 1
    return 2


def key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


# --- the sample add-on sets ------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "distribution"),
    [("1.31.1", "kubeadm"), ("1.30.4", "kubeadm"), ("1.31.1", "k3s")],
)
def test_every_sample_manifest_validates_against_the_kubernetes_openapi_schema(
    version: str, distribution: str
) -> None:
    cluster = make_cluster(version=version, distribution=distribution)
    objects = render_addons(cluster, make_inventory(sample_addon_files(), [cluster]))

    kinds = {obj["kind"] for obj in objects}
    assert {"DaemonSet", "Deployment", "CustomResourceDefinition", "APIService"} <= kinds
    crds = {
        (obj["spec"]["group"], obj["spec"]["names"]["kind"])
        for obj in objects
        if obj["kind"] == "CustomResourceDefinition"
    }
    for obj in objects:
        if not is_custom_resource(obj, crds):
            validate(obj, version)  # raises ValidationError naming the field


def test_the_schema_validation_is_not_vacuous() -> None:
    cluster = make_cluster()
    objects = render_addons(cluster, make_inventory(sample_addon_files(), [cluster]))
    daemonset = next(o for o in objects if o["kind"] == "DaemonSet")
    broken = json.loads(json.dumps(daemonset))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, "1.31.1")
    crd = next(o for o in objects if o["kind"] == "CustomResourceDefinition")
    broken = json.loads(json.dumps(crd))
    broken["spec"]["versions"][0]["served"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, "1.31.1")


def test_sample_add_ons_cover_cni_metrics_node_exporter_and_flux() -> None:
    cluster = make_cluster()
    objects = render_addons(cluster, make_inventory(sample_addon_files(), [cluster]))
    names = {key(o) for o in objects}
    assert {
        ("Namespace", "kube-flannel"),
        ("DaemonSet", "kube-flannel-ds"),
        ("Deployment", "metrics-server"),
        ("APIService", "v1beta1.metrics.k8s.io"),
        ("DaemonSet", "node-exporter"),
        ("Namespace", "flux-system"),
        ("CustomResourceDefinition", "gitrepositories.source.toolkit.fluxcd.io"),
        ("CustomResourceDefinition", "kustomizations.kustomize.toolkit.fluxcd.io"),
        ("Deployment", "source-controller"),
        ("Deployment", "kustomize-controller"),
    } <= names
    assert len(names) == len(objects)  # no object rendered twice


def test_flannel_uses_the_cluster_pod_network_and_k3s_cni_folders() -> None:
    kubeadm = make_cluster(pod_cidr="10.42.0.0/16")
    k3s = make_cluster(distribution="k3s")
    files = sample_addon_files()
    for cluster, cni_dir in ((kubeadm, "/opt/cni/bin"), (k3s, "/var/lib/rancher/k3s/data/cni")):
        objects = render_addons(cluster, make_inventory(files, [cluster]))
        config = next(o for o in objects if key(o) == ("ConfigMap", "kube-flannel-cfg"))
        assert json.loads(config["data"]["net-conf.json"])["Network"] == cluster.network.pod_cidr
        json.loads(config["data"]["cni-conf.json"])  # valid JSON, too
        daemonset = next(o for o in objects if key(o) == ("DaemonSet", "kube-flannel-ds"))
        volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
        assert volumes["cni-plugin"]["hostPath"]["path"] == cni_dir


def test_objects_carry_werft_labels_with_add_on_name_and_version() -> None:
    cluster = make_cluster()
    objects = render_addons(cluster, make_inventory(sample_addon_files(), [cluster]))
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "werft"
        assert labels["werft.dev/addon"]
        assert labels["werft.dev/addon-version"]
    metrics = next(o for o in objects if key(o) == ("Deployment", "metrics-server"))
    assert metrics["metadata"]["labels"]["werft.dev/addon"] == "metrics-server"
    assert metrics["metadata"]["labels"]["werft.dev/addon-version"] == "v0.7.2"
    assert metrics["metadata"]["labels"]["k8s-app"] == "metrics-server"  # template's own kept
    image = metrics["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.k8s.io/metrics-server/metrics-server:v0.7.2"


def test_namespaces_and_crds_come_first_then_cluster_rbac_then_the_rest() -> None:
    cluster = make_cluster()
    objects = render_addons(cluster, make_inventory(sample_addon_files(), [cluster]))
    ranks = [rank_of(o) for o in objects]
    assert ranks == sorted(ranks)
    assert ranks[0] == 0 and ranks[-1] == 2
    position = {key(o): i for i, o in enumerate(objects)}
    # Flux's kustomize-controller depends on source-controller: its Deployment comes later.
    assert (
        position[("Deployment", "source-controller")]
        < position[("Deployment", "kustomize-controller")]
    )


def test_rendering_is_repeatable_and_does_not_share_objects() -> None:
    cluster = make_cluster()
    inventory = make_inventory(sample_addon_files(), [cluster])
    first = render_addons(cluster, inventory)
    first[0]["metadata"]["labels"]["mutated"] = "yes"
    second = render_addons(cluster, inventory)
    assert "mutated" not in second[0]["metadata"]["labels"]
    assert [key(o) for o in first] == [key(o) for o in second]


# --- ordering rules on made-up add-ons -------------------------------------------------


def addon_set(name: str, addons: list[dict[str, Any]]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "werft.dev/v1alpha1",
            "kind": "AddonSet",
            "metadata": {"name": name},
            "spec": {"version": "1", "addons": addons},
        }
    )


def config_map(name: str, namespace: str = "apps") -> str:
    return (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
        f"  namespace: {namespace}\ndata:\n  cluster: '{{{{ cluster.name }}}}'\n"
    )


def test_depends_on_orders_add_ons_even_against_declaration_order() -> None:
    files = {
        "addons/apps/addonset.yaml": addon_set(
            "apps",
            [
                {
                    "name": "frontend",
                    "version": "1",
                    "manifests": ["frontend.yaml.j2"],
                    "dependsOn": ["backend"],
                },
                {
                    "name": "backend",
                    "version": "1",
                    "manifests": ["backend.yaml.j2"],
                    "dependsOn": ["database"],
                },
                {"name": "database", "version": "1", "manifests": ["db.yaml.j2"]},
            ],
        ),
        "addons/apps/frontend.yaml.j2": config_map("frontend"),
        "addons/apps/backend.yaml.j2": config_map("backend"),
        "addons/apps/db.yaml.j2": config_map("database")
        + "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n",
    }
    cluster = make_cluster(addon_sets=("apps",))
    objects = render_addons(cluster, make_inventory(files, [cluster]))
    assert [key(o) for o in objects] == [
        ("Namespace", "apps"),  # namespaces first, whichever add-on has them
        ("ConfigMap", "database"),
        ("ConfigMap", "backend"),
        ("ConfigMap", "frontend"),
    ]
    assert objects[1]["data"] == {"cluster": cluster.name}


def test_custom_resources_come_after_their_crd_from_an_earlier_set() -> None:
    files = sample_addon_files()
    files["addons/sync/addonset.yaml"] = addon_set(
        "sync",
        [
            {
                "name": "fleet-sync",
                "version": "1",
                "manifests": ["sync.yaml.j2"],
                "dependsOn": ["kustomize-controller"],
                "values": {"url": "https://git.example.test/fleet.git"},
            }
        ],
    )
    files["addons/sync/sync.yaml.j2"] = """\
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: fleet
  namespace: flux-system
spec:
  interval: 5m
  url: {{ addon.values.url | tojson }}
  ref:
    branch: main
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: {{ cluster.name }}
  namespace: flux-system
spec:
  interval: 10m
  prune: true
  path: {{ ("./clusters/" ~ cluster.name) | tojson }}
  sourceRef:
    kind: GitRepository
    name: fleet
"""
    cluster = make_cluster(addon_sets=("sync", "base", "observability", "gitops"))
    objects = render_addons(cluster, make_inventory(files, [cluster]))
    position = {key(o): i for i, o in enumerate(objects)}
    assert (
        position[("GitRepository", "fleet")]
        > position[("CustomResourceDefinition", "gitrepositories.source.toolkit.fluxcd.io")]
    )
    assert (
        position[("Kustomization", cluster.name)] > position[("Deployment", "kustomize-controller")]
    )


def test_admission_webhooks_come_last() -> None:
    webhook = """\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: policy
webhooks:
  - name: policy.example.test
    admissionReviewVersions: [v1]
    sideEffects: None
    clientConfig:
      service: {name: policy, namespace: apps}
"""
    files = {
        "addons/apps/addonset.yaml": addon_set(
            "apps", [{"name": "policy", "version": "1", "manifests": ["policy.yaml.j2"]}]
        ),
        "addons/apps/policy.yaml.j2": webhook + "---\n" + config_map("policy-config"),
    }
    cluster = make_cluster(addon_sets=("apps",))
    objects = render_addons(cluster, make_inventory(files, [cluster]))
    assert [o["kind"] for o in objects] == ["ConfigMap", "ValidatingWebhookConfiguration"]
    validate(objects[1], cluster.kubernetes_version)


# --- failures name the add-on and the file ---------------------------------------------


def broken_inventory(template: str) -> tuple[Any, Any]:
    files = {
        "addons/demo/addonset.yaml": addon_set(
            "demo", [{"name": "demo", "version": "1", "manifests": ["templates/demo.yaml.j2"]}]
        ),
        "addons/demo/templates/demo.yaml.j2": template,
    }
    cluster = make_cluster(addon_sets=("demo",))
    return cluster, make_inventory(files, [cluster])


def test_a_template_syntax_error_names_the_add_on_file_and_line() -> None:
    cluster, inventory = broken_inventory("apiVersion: v1\nkind: ConfigMap\n{% if %}\n")
    with pytest.raises(PermanentError) as info:
        render_addons(cluster, inventory)
    message = str(info.value)
    assert "'demo'" in message and "addons/demo/templates/demo.yaml.j2:3" in message


def test_an_undefined_value_names_the_add_on_file_and_line() -> None:
    template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ addon.values.nope }}\n"
    cluster, inventory = broken_inventory(template)
    with pytest.raises(PermanentError) as info:
        render_addons(cluster, inventory)
    message = str(info.value)
    assert "addons/demo/templates/demo.yaml.j2:4" in message and "nope" in message


def test_output_that_is_not_yaml_names_the_file_and_rendered_line() -> None:
    template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n"
    cluster, inventory = broken_inventory(template)
    with pytest.raises(PermanentError) as info:
        render_addons(cluster, inventory)
    message = str(info.value)
    assert "addons/demo/templates/demo.yaml.j2" in message and "line" in message


def test_a_document_that_is_not_a_kubernetes_object_is_refused() -> None:
    cluster, inventory = broken_inventory("apiVersion: v1\nkind: ConfigMap\n---\n- a list\n")
    with pytest.raises(PermanentError, match=r"demo\.yaml\.j2: document 1"):
        render_addons(cluster, inventory)


def test_a_dependency_cycle_is_a_permanent_error() -> None:
    files = {
        "addons/loop/addonset.yaml": addon_set(
            "loop",
            [
                {"name": "a", "version": "1", "manifests": ["a.j2"], "dependsOn": ["b"]},
                {"name": "b", "version": "1", "manifests": ["a.j2"], "dependsOn": ["a"]},
            ],
        ),
        "addons/loop/a.j2": config_map("a"),
    }
    cluster = make_cluster(addon_sets=("loop",))
    with pytest.raises(PermanentError, match="a -> b -> a"):
        render_addons(cluster, make_inventory(files, [cluster]))


def test_a_dependency_outside_the_clusters_sets_is_a_permanent_error() -> None:
    # gitops needs the pod network of base (flux-system depends on flannel)
    cluster = make_cluster(addon_sets=("base", "gitops"))
    render_addons(cluster, make_inventory(sample_addon_files(), [cluster]))
    alone = make_cluster(addon_sets=("gitops",))
    with pytest.raises(PermanentError, match="'flannel'"):
        render_addons(alone, make_inventory(sample_addon_files(), [alone]))
    files = sample_addon_files()
    files["addons/extra/addonset.yaml"] = addon_set(
        "extra",
        [{"name": "x", "version": "1", "manifests": ["x.j2"], "dependsOn": ["flannel"]}],
    )
    files["addons/extra/x.j2"] = config_map("x")
    cluster = make_cluster(addon_sets=("extra",))
    with pytest.raises(PermanentError, match="'flannel'"):
        render_addons(cluster, make_inventory(files, [cluster]))


# --- the real sample fleet -------------------------------------------------------------


def test_the_sample_fleet_renders_and_validates() -> None:
    """Through the real loader: every distinct (profile, version, distribution) shape of
    the sample fleet renders valid manifests and a readable seed."""
    load = pytest.importorskip("werft.inventory.load")
    if not (SAMPLE_INVENTORY / "fleet.yaml").is_file():
        pytest.skip("the sample fleet is not in place")
    from werft.render.cloudinit import render_user_data
    from werft.render.pki import ensure_cluster_pki
    from werft.render.seed import build_seed_iso, read_seed
    from werft.secrets import SecretStore

    inventory = load.load_inventory(SAMPLE_INVENTORY)
    assert inventory.addon_sets.keys() >= {"base", "observability", "gitops"}
    shapes: dict[tuple[object, ...], Any] = {}
    for cluster in inventory.select():
        shape = (cluster.addon_sets, cluster.kubernetes_version, cluster.distribution)
        shapes.setdefault(shape, cluster)
    assert shapes
    artifacts_url = inventory.fleet.spec.artifacts.base_url
    for cluster in shapes.values():
        objects = render_addons(cluster, inventory)
        crds = {
            (o["spec"]["group"], o["spec"]["names"]["kind"])
            for o in objects
            if o["kind"] == "CustomResourceDefinition"
        }
        for obj in objects:
            if not is_custom_resource(obj, crds):
                validate(obj, cluster.kubernetes_version)

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as home:
        store = SecretStore(Path(home) / "secrets")
        for cluster in shapes.values():
            pki = ensure_cluster_pki(cluster, store)
            machine = cluster.machines[0]
            iso = build_seed_iso(cluster, machine, pki, artifacts_url=artifacts_url)
            text = render_user_data(cluster, machine, pki, artifacts_url=artifacts_url)
            assert read_seed(iso)["user-data"] == text
    assert artifacts_url == ARTIFACTS_URL


def test_templates_cannot_reach_outside_their_context() -> None:
    template = "{{ cluster.__class__.__init__.__globals__ }}\n"
    cluster, inventory = broken_inventory(template)
    with pytest.raises(PermanentError, match=r"demo\.yaml\.j2:1: .*unsafe"):
        render_addons(cluster, inventory)
