"""The drift domain's pure parts: field paths and ownership, triage, policy, locks, the
inventory edit behind `werft drift accept`, and the policy fields' validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from werft.drift.accept import _invert, edit_scalar
from werft.drift.addons import owner
from werft.drift.findings import Area, ClusterReport, Finding, Kind, Outcome
from werft.drift.paths import MISSING, owned_by, server_text, value_at
from werft.drift.policy import clusters_to_remediate, decide
from werft.drift.report import DriftReport
from werft.drift.state import DriftState
from werft.drift.triage import triage
from werft.errors import InventoryError
from werft.exitcodes import ExitCode
from werft.inventory.generate import write_fleet
from werft.inventory.load import load_inventory

DEPLOY = {
    "spec": {"replicas": 2, "template": {"spec": {"containers": [
        {"name": "app", "image": "a:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
        {"name": "side", "image": "b:1"},
    ]}}},
    "data": {"net-conf.json": "{}"},
}


def test_paths_read_back_what_changed_paths_writes() -> None:
    assert value_at(DEPLOY, '.spec.template.spec.containers[name="side"].image') == "b:1"
    assert value_at(DEPLOY, '.data["net-conf.json"]') == "{}"
    ports = '.spec.template.spec.containers[name="app"].ports[containerPort=80].protocol'
    assert value_at(DEPLOY, ports) == "TCP"
    assert value_at(DEPLOY, ".spec.paused") is MISSING
    assert server_text('.data["net-conf.json"]') == ".data.net-conf.json"


def test_ownership_follows_fields_v1_including_multi_key_items_and_atomic_lists() -> None:
    fields = {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
        'k:{"name":"app"}': {".": {}, "f:args": {},
                             "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {
                                 "f:protocol": {}}}}}}}}}
    assert owned_by(fields, ".spec.replicas")
    assert owned_by(fields, '.spec.template.spec.containers[name="app"].args[1]')
    assert owned_by(fields, '.spec.template.spec.containers[name="app"].ports'
                            '[containerPort=80].protocol')
    assert not owned_by(fields, '.spec.template.spec.containers[name="side"].image')
    assert not owned_by(fields, ".spec.paused")


def test_owner_is_the_latest_other_manager_never_werft() -> None:
    fields = {"f:spec": {"f:replicas": {}}}
    live = {"metadata": {"managedFields": [
        {"manager": "werft", "operation": "Apply", "time": "2026-01-03T00:00:00Z",
         "fieldsV1": fields},
        {"manager": "kubectl-edit", "operation": "Update", "time": "2026-01-01T00:00:00Z",
         "fieldsV1": fields},
        {"manager": "hpa", "operation": "Update", "time": "2026-01-02T00:00:00Z",
         "fieldsV1": fields},
    ]}}
    manager, since = owner(live, ".spec.replicas")
    assert manager == "hpa" and since == datetime(2026, 1, 2, tzinfo=UTC)
    assert owner(live, ".spec.paused") == ("", None)


def _report(name: str, tier: str, region: str, *findings: Finding) -> ClusterReport:
    return ClusterReport(cluster=name, site=name, tier=tier, region=region,
                         outcome=Outcome.DRIFTED if findings else Outcome.IN_SHAPE,
                         findings=list(findings))


def _replicas(live: str = "1", manager: str = "kubectl-edit", **more: object) -> Finding:
    return Finding(area=Area.ADDON, kind=Kind.FIELD, object="Deployment kube-system/ms",
                   field=".spec.replicas", desired="2", live=live, manager=manager,
                   addon="ms", addon_set="observability", **more)


def test_identical_drift_is_one_group_ranked_by_reach_weighted_by_tier() -> None:
    power = Finding(area=Area.MACHINE, kind=Kind.MACHINE, object="Machine", field="power",
                    desired="On", live="Off")
    reports = [_report(f"edge-{i}", "edge", "eu-west" if i % 2 else "us-east", _replicas())
               for i in range(5)]
    reports += [_report("core-a", "core", "eu-central", power.model_copy(update={"where": "m0"}),
                        power.model_copy(update={"where": "m1"}))]
    reports += [_report("edge-9", "edge", "eu-west", _replicas(live="3"))]

    groups = triage(reports)

    assert [g.count for g in groups] == [1, 5, 1]  # one core cluster outranks 5 edge sites
    assert groups[0].finding.field == "power" and groups[0].clusters == ["core-a"]
    assert groups[1].headline() == ("Deployment kube-system/ms .spec.replicas 2 → 1 by "
                                    "kubectl-edit on 5 clusters (edge, us-east, eu-west)")
    assert groups[1].id == triage(reports[:1])[0].id  # stable across runs
    assert DriftReport.of(reports).exit_code() == ExitCode.DRIFT


def test_unreachable_is_neither_drift_nor_shape() -> None:
    dark = ClusterReport(cluster="e", site="e", tier="edge", region="r",
                         outcome=Outcome.UNREACHABLE, reason="connection refused")
    report = DriftReport.of([dark, _report("f", "edge", "r")])
    assert report.groups == [] and report.exit_code() == ExitCode.NOT_FINE
    assert DriftReport.of([_report("f", "edge", "r")]).exit_code() == ExitCode.OK


@pytest.fixture(name="inventory_root")
def inventory_root_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "inventory"
    write_fleet(root, edge_sites=3, core_sites=1, near_edge_sites=0)
    return root


def _set_drift(root: Path, fleet: dict[str, object], addon_set: dict[str, object] | None) -> None:
    path = root / "fleet.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["drift"] = fleet
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    if addon_set is not None:
        path = root / "addons" / "observability" / "addonset.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["spec"]["drift"] = addon_set
        path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_policy_is_the_addonsets_then_the_tiers_then_the_fleets(inventory_root: Path) -> None:
    _set_drift(inventory_root, {"remediation": "report",
                                "tiers": {"edge": {"remediation": "remediate", "after": "30m"}}},
               None)
    inventory = load_inventory(inventory_root)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    reports = [_report("e1", "edge", "r", _replicas(manager="", since=now - timedelta(hours=1))),
               _report("e2", "edge", "r", _replicas(live="5", manager="",
                                                    since=now - timedelta(minutes=5))),
               _report("c1", "core", "r", _replicas(live="7", manager=""))]
    groups = triage(reports)
    decisions = decide(inventory, {r.cluster: r for r in reports}, groups, {}, now)
    by_cluster = {g.clusters[0]: decisions[g.id] for g in groups}
    assert by_cluster["e1"].remediate == ["e1"]  # persisted 1h > 30m
    assert list(by_cluster["e2"].waiting) == ["e2"]  # only 5 min so far
    assert by_cluster["c1"].remediate == [] and not by_cluster["c1"].waiting  # core: report
    assert {g.policy for g in groups} == {"remediate after 30m", "report"}

    _set_drift(inventory_root, {"remediation": "remediate"}, {"remediation": "report"})
    inventory = load_inventory(inventory_root)
    decisions = decide(inventory, {r.cluster: r for r in reports}, groups, {}, now)
    assert clusters_to_remediate(decisions) == ([], {})  # the AddonSet says report


def test_a_field_another_manager_owns_is_never_remediated(inventory_root: Path) -> None:
    _set_drift(inventory_root, {"remediation": "remediate"}, None)
    inventory = load_inventory(inventory_root)
    mine = _report("e1", "edge", "r", _replicas(conflict=True),
                   Finding(area=Area.ADDON, kind=Kind.MISSING, object="ConfigMap x/y",
                           addon="ms", addon_set="observability"))
    other = _report("e2", "edge", "r", Finding(area=Area.ADDON, kind=Kind.MISSING,
                                               object="ConfigMap x/y", addon="ms",
                                               addon_set="observability"))
    groups = triage([mine, other])
    chosen, blocked = clusters_to_remediate(
        decide(inventory, {"e1": mine, "e2": other}, groups, {}, datetime.now(UTC)))
    assert chosen == ["e2"] and list(blocked) == ["e1"]
    assert "kubectl-edit owns .spec.replicas" in blocked["e1"]


@pytest.mark.parametrize("policy, words", [
    ({"remediation": "report", "after": "30m"}, "'after' only applies to remediation"),
    ({"remediation": "remediate", "after": "soon"}, "a duration like"),
    ({"remediation": "fix-it"}, "remediation"),
])
def test_invalid_policy_is_an_inventory_problem_with_its_file(
    inventory_root: Path, policy: dict[str, object], words: str
) -> None:
    _set_drift(inventory_root, policy, None)
    with pytest.raises(InventoryError) as caught:
        load_inventory(inventory_root)
    text = "\n".join(str(p) for p in caught.value.problems)
    assert "fleet.yaml" in text and words in text, text


def test_state_clears_a_group_only_when_its_clusters_were_checked(tmp_path: Path) -> None:
    state = DriftState(tmp_path)
    first = DriftReport.of([_report("e1", "edge", "r", _replicas()),
                            _report("e2", "edge", "r", _replicas())])
    assert state.update(first).new == [first.groups[0].id]
    dark = ClusterReport(cluster="e2", site="e2", tier="edge", region="r",
                         outcome=Outcome.UNREACHABLE)
    assert state.update(DriftReport.of([_report("e1", "edge", "r"), dark])).cleared == {}
    cleared = state.update(DriftReport.of([_report("e1", "edge", "r"),
                                           _report("e2", "edge", "r")])).cleared
    assert list(cleared) == [first.groups[0].id]
    assert state.last_report() is not None


def test_accept_inverts_the_value_inside_the_rendered_text() -> None:
    desired = '{\n  "Backend": {"Type": "vxlan"}\n}\n'
    live = '{\n  "Backend": {"Type": "host-gw"}\n}\n'
    assert _invert("vxlan", desired, live) == "host-gw"
    assert _invert("info", ["--log-level=info", "--x"], ["--log-level=debug", "--x"]) == "debug"
    assert _invert(2, 2, 5) == 5
    assert _invert("vxlan", desired, '{"Backend": {"Type": "vxlan"}, "extra": 1}') is None


def test_accept_edits_one_scalar_and_keeps_comments() -> None:
    text = ("# the pod network\napiVersion: werft.dev/v1alpha1\nkind: AddonSet\n"
            "metadata:\n  name: base\nspec:\n  version: \"1.0.0\"\n  addons:\n"
            "    - name: flannel\n      values:\n        # vxlan works everywhere\n"
            "        backend: vxlan\n")
    after = edit_scalar(text, "base", ("spec", "addons", 0, "values", "backend"), "host-gw")
    assert after is not None
    assert after == text.replace("backend: vxlan", 'backend: "host-gw"')
    assert edit_scalar(text, "other", ("spec", "version"), "2") is None


def test_the_documented_automation_matches_the_events_the_flow_emits() -> None:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from flows.deployments import deployment_specs
    from flows.drift import DriftRequest

    [spec] = [s for s in deployment_specs() if s["name"] == "drift-check"]
    [trigger] = [DeploymentEventTrigger.model_validate(t) for t in spec["triggers"]]
    assert trigger.expect == {"werft.drift.detected"} and not trigger.enabled
    assert trigger.match.root["werft.drift.due"] == "true"
    request = trigger.parameters["request"]
    assert request["group"] == "{{ event.payload.group }}"
    DriftRequest.model_validate({**request, "group": "d-0123456789"})  # a valid run
