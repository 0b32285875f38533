"""The drift-check flow on a provisioned edge fleet (real Prefect, the simulator, a real Git
repository): one group for the same edit on every cluster, report changes nothing, accept
writes a branch that validates, remediate converges (and prunes), locks keep drift and
provisioning apart.

Each test leaves the fleet as it found it (converged against the committed inventory), so
they run in any order. EDGE is 30 here; tests/test_drift_scale.py does 300 (slow)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import git
import pytest

from flows.models import ProvisionRequest
from tests.driftfixtures import (
    FLANNEL_CM,
    drift_policy,
    events_of_run,
    flannel_backend,
    provisioned_edge_fleet,
    run_drift,
)
from tests.flowfixtures import TIME_SCALE, Fleet, artifacts, outcomes, provision
from werft.drift.accept import accept
from werft.drift.state import DriftState
from werft.exitcodes import ExitCode
from werft.inventory.load import load_inventory
from werft.locks import ClusterLocks
from werft.plan import Selector
from werft.secrets import werft_home

EDGE = 30


@pytest.fixture(scope="module")
def edge_fleet(
    tmp_path_factory: pytest.TempPathFactory, prefect_api: str
) -> Iterator[tuple[Fleet, git.Repo]]:
    with provisioned_edge_fleet(tmp_path_factory, EDGE) as found:
        yield found


def test_converged_fleet_is_in_shape_with_no_mutating_call(edge_fleet) -> None:
    f, _ = edge_fleet
    f.sim.reset_stats()
    state, result = run_drift(f)
    assert state.is_completed()
    assert (result.exit_code, result.groups, result.counts) == (0, [], {"InShape": EDGE})
    assert f.sim.mutations() == 0
    assert f.sim.stats()["requests"] > 0


def test_same_edit_on_every_edge_cluster_is_one_group_and_report_changes_nothing(
    edge_fleet,
) -> None:
    f, _ = edge_fleet
    names = f.names("edge")
    for name in names:
        flannel_backend(f, name, "host-gw")
    f.sim.reset_stats()
    try:
        state, result = run_drift(f)

        assert state.is_completed(), state.message  # drift is a finding, not a failure
        assert result.exit_code == ExitCode.DRIFT
        [group] = result.groups
        assert group["clusters"] == str(EDGE)
        assert (group["object"], group["field"], group["manager"]) == (
            "ConfigMap kube-flannel/kube-flannel-cfg", '.data["net-conf.json"]', "kubectl-edit")
        assert "host-gw" in group["live"] and "vxlan" in group["desired"]
        assert group["policy"] == "report"
        assert f.sim.mutations() == 0  # report changes nothing
        assert result.events == {"werft.drift.detected": 1, "werft.drift.cleared": 0}
        [event] = events_of_run(str(state.state_details.flow_run_id), "werft.drift.detected")
        assert event["resource"]["prefect.resource.id"] == f"werft.drift.{group['id']}"
        assert event["resource"]["werft.drift.policy"] == "report"
        assert (event["payload"]["clusters"], event["payload"]["manager"]) == (EDGE, "kubectl-edit")
        found = artifacts(str(state.state_details.flow_run_id))
        assert {"werft-drift-summary", "werft-drift-groups", "werft-drift-clusters"} <= set(found)
        assert f"on {EDGE} clusters (edge, " in found["werft-drift-summary"].data
        rows = json.loads(found["werft-drift-clusters"].data)
        assert {r["cluster"] for r in rows} == set(names)

        # remediate, but another manager owns the field and forceConflicts is off: blocked
        with drift_policy(f.root, {"remediation": "remediate"}):
            state, blocked = run_drift(f)
        assert state.is_completed() and blocked.remediated == []
        assert set(blocked.blocked) == set(names)
        assert "forceConflicts is off" in next(iter(blocked.blocked.values()))
        assert f.sim.mutations() == 0
    finally:
        for name in names:
            flannel_backend(f, name, "vxlan")
    state, clean = run_drift(f)
    assert clean.exit_code == 0 and clean.events["werft.drift.cleared"] == 1
    [cleared] = events_of_run(str(state.state_details.flow_run_id), "werft.drift.cleared")
    assert cleared["resource"]["prefect.resource.id"] == f"werft.drift.{group['id']}"


def test_accept_commits_a_validating_branch_and_the_next_check_is_clean(edge_fleet) -> None:
    f, repo = edge_fleet
    names = f.names("edge")
    for name in names:
        flannel_backend(f, name, "host-gw")
    try:
        _, result = run_drift(f)
        [group] = result.groups
        message = accept(group["id"], f.root, home=werft_home())
        branch = f"werft/drift-accept-{group['id']}"

        assert branch in [h.name for h in repo.heads] and repo.active_branch.name != branch
        changed = repo.git.diff("HEAD", branch)
        assert "-        backend: vxlan" in changed and '+        backend: "host-gw"' in changed
        assert "addons/base/addonset.yaml" in message
        accepted = load_inventory(f.root, git_ref=branch, repo=f.root)  # it validates
        assert accepted.addon_sets["base"].spec.addons[0].values["backend"] == "host-gw"
        assert repo.git.status("--porcelain") == ""  # the checkout was left alone

        at_branch = {"repo": str(f.root), "git_ref": branch, "inventory": "."}
        state, prov = provision(ProvisionRequest(time_scale=TIME_SCALE, **at_branch))
        assert state.is_completed(), outcomes(prov)
        _, after = run_drift(f, **at_branch)
        assert (after.exit_code, after.groups) == (0, [])
    finally:
        for name in names:
            flannel_backend(f, name, "vxlan")
    assert run_drift(f)[1].exit_code == 0


def test_prune_candidates_are_reported_and_removed_only_under_remediate(edge_fleet) -> None:
    f, _ = edge_fleet
    addonset = f.root / "addons" / "gitops" / "addonset.yaml"
    before = addonset.read_text()
    addonset.write_text(before[: before.index("    - name: kustomize-controller")])
    dropped = f.names("edge")[:2]
    for name in dropped:
        f.sim.drift(kind="delete-object", cluster=name, **FLANNEL_CM)
    try:
        f.sim.reset_stats()
        _, reported = run_drift(f)
        prune = [g for g in reported.groups if "prune" in g["field"]]
        assert {g["object"] for g in prune} >= {"Deployment flux-system/kustomize-controller"}
        assert all(g["clusters"] == str(EDGE) for g in prune)
        missing = [g for g in reported.groups if g["field"] == "missing"]
        assert [g["clusters"] for g in missing] == ["2"]
        assert f.sim.mutations() == 0 and reported.pruned == 0

        with drift_policy(f.root, {"remediation": "remediate"}):
            state, fixed = run_drift(f)
            assert state.is_completed(), (state.message, fixed.remediation)
            assert fixed.pruned >= EDGE * len(prune) // 2
            assert set(fixed.remediated) == set(f.names("edge"))
            _, after = run_drift(f)
        assert (after.exit_code, after.groups) == (0, []), after.groups
    finally:
        addonset.write_text(before)
    state, back = provision(f.request())
    assert state.is_completed(), outcomes(back)
    assert run_drift(f)[1].exit_code == 0


def test_remediation_waits_its_time_and_for_clusters_a_provisioning_run_holds(
    edge_fleet,
) -> None:
    f, _ = edge_fleet
    held, free = f.names("edge")[:2]
    for name in (held, free):
        f.sim.drift(kind="delete-object", cluster=name, **FLANNEL_CM)
    locks = ClusterLocks(werft_home(), holder="provision-fleet-run-elsewhere")
    assert locks.try_acquire(held)
    try:
        with drift_policy(f.root, {"remediation": "remediate", "after": "1h"}):
            f.sim.reset_stats()
            _, early = run_drift(f)
        assert early.remediated == [] and f.sim.mutations() == 0
        assert early.groups[0]["policy"] == "remediate after 1h"

        with drift_policy(f.root, {"remediation": "remediate"}):
            state, skipped = run_drift(f)
            assert state.is_completed(), skipped.remediation
            assert (skipped.busy, skipped.remediated) == ([held], [free])
            assert skipped.counts["Busy"] == 1

            # provisioning leaves a cluster another run holds alone, too
            state, prov = provision(f.request(selector=Selector(clusters=[held])))
            [record] = prov.clusters
            assert (str(record.outcome), record.reason) == ("Deferred", "ClusterBusy")

            # the other run finishes while this one waits for it
            threading.Timer(0.3, locks.release, args=([held],)).start()
            state, waited = run_drift(f, lock_wait_s=30.0)
        assert (waited.busy, waited.remediated) == ([], [held]), waited
    finally:
        locks.release([held])
    assert run_drift(f)[1].exit_code == 0


def test_state_carries_a_group_over_while_its_clusters_cannot_be_checked(edge_fleet) -> None:
    f, _ = edge_fleet
    name = f.names("edge")[0]
    f.sim.drift(kind="delete-object", cluster=name, **FLANNEL_CM)
    try:
        _, seen = run_drift(f)
        gid = seen.groups[0]["id"]
        rule = f.sim.add_fault(kind="offline", site=f.inventory.clusters[name].site)
        try:
            # Long enough for a healthy cluster on a loaded machine; the dark one is judged
            # by its refused connections, well before.
            _, dark = run_drift(f, deadline_s=15.0)
        finally:
            f.sim.remove_fault(rule["id"])
        assert dark.counts.get("Unreachable") == 1 and dark.exit_code == ExitCode.NOT_FINE
        assert dark.events["werft.drift.cleared"] == 0  # not seen gone: not cleared
        assert gid in DriftState(werft_home()).seen()
    finally:
        provision(f.request(selector=Selector(clusters=[name])))
    assert run_drift(f)[1].exit_code == 0
