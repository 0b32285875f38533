"""`werft plan`: two revisions of a real Git repository -> what a merge would do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.gitopsfixtures import InventoryRepo, make_repo, new_edge_row
from werft.cli import app
from werft.conditions import STAGE_ORDER, ConditionType
from werft.exitcodes import ExitCode
from werft.gitops.change import plan_change
from werft.gitops.impact import Action
from werft.gitops.report import markdown
from werft.inventory.load import load_inventory


@pytest.fixture
def fleet_repo(tmp_path: Path) -> InventoryRepo:
    return make_repo(tmp_path / "repo", edge=3, near=2)


def _add_edge_site(fleet_repo: InventoryRepo, name: str = "edge-09999") -> None:
    rows = fleet_repo.edge_rows()
    fleet_repo.write_edge_rows([*rows, new_edge_row(rows, name, "02:00:00:00:99:99")])


TEAMS = {"edge-ops-eu-west": "erin", "edge-ops-eu-central": "carl",
         "edge-ops-eu-north": "nora", "edge-ops-us-east": "uma",
         "edge-ops-us-west": "walt", "edge-ops-ap-southeast": "amit"}


def rows_owner(fleet_repo: InventoryRepo) -> str:
    return fleet_repo.edge_rows()[0]["owner"]


def _member(team: str) -> str:
    return TEAMS[team]


def test_pr_adding_an_edge_site_plans_exactly_that_cluster(fleet_repo: InventoryRepo) -> None:
    fleet_repo.branch("add-site")
    _add_edge_site(fleet_repo)
    fleet_repo.commit("add edge-09999", author="alice")

    plan = plan_change(fleet_repo.path, "main", "add-site")

    assert plan.valid
    assert [(i.name, i.action, i.stages) for i in plan.impacts] == [
        ("edge-09999", Action.CREATE, STAGE_ORDER)
    ]
    assert [w.clusters for w in plan.waves] == [("edge-09999",)]
    assert {c.key for c in plan.changes} == {"Site/edge-09999", "Cluster/edge-09999"}
    assert plan.radius.by_tier == {"edge": 1}
    assert plan.radius.share("edge") == pytest.approx(1 / 4)
    # A new cluster's add-ons are all new: every diff is an addition on that cluster only.
    assert plan.manifests.diffs
    assert all(d.change == "added" and d.clusters == ["edge-09999"] for d in plan.manifests.diffs)
    # The new row's owner may add it (CREATE: no oldObject); only the blast radius (1 of 4
    # edge clusters) still needs a platform approver.
    owner = plan_change(fleet_repo.path, "main", "add-site", author=_member(rows_owner(fleet_repo)))
    assert [d.rule for d in owner.verdicts.denials] == ["blast-radius/over-10-percent-of-a-tier"]


def test_addon_value_change_runs_addons_and_verify_on_the_sets_users(
    fleet_repo: InventoryRepo,
) -> None:
    fleet_repo.branch("debug")
    fleet_repo.replace("addons/gitops/addonset.yaml", "logLevel: info", "logLevel: debug", 1)
    fleet_repo.commit("source-controller: debug logs")

    plan = plan_change(fleet_repo.path, "main", "debug")

    head = load_inventory(fleet_repo.inventory)
    users = sorted(c.name for c in head.clusters.values() if "gitops" in c.addon_sets)
    assert users and len(users) < len(head.clusters) + 1
    assert [i.name for i in plan.impacts] == users
    assert {i.stages for i in plan.impacts} == {
        (ConditionType.ADDONS_READY, ConditionType.VERIFIED)
    }
    # One object changed the same way everywhere: one diff, with every user counted.
    [diff] = plan.manifests.diffs
    assert diff.object == "apps/v1 Deployment flux-system/source-controller"
    assert diff.clusters == users
    assert "-        - --log-level=info\n+        - --log-level=debug" in diff.diff
    # Grouping renders far fewer clusters than it reports on.
    assert plan.manifests.renders <= 2 * len({head.clusters[u].network for u in users})
    [change] = plan.changes
    assert change.fields == ("spec.addons[source-controller].values.logLevel",)


def test_bmc_change_runs_every_stage_from_infrastructure(fleet_repo: InventoryRepo) -> None:
    head = load_inventory(fleet_repo.inventory)
    target = next(c for c in head.clusters.values() if c.tier == "near-edge")
    machine = target.machines[0]
    assert machine.bmc is not None
    fleet_repo.branch("bmc")
    site_file = f"sites/{target.site}.yaml"
    fleet_repo.replace(site_file, machine.bmc.address, machine.bmc.address + "0")
    fleet_repo.commit("new BMC", author="bob")

    plan = plan_change(fleet_repo.path, "main", "bmc")

    assert [(i.name, i.stages) for i in plan.impacts] == [(target.name, STAGE_ORDER)]
    [change] = [c for c in plan.changes if c.kind == "Cluster"]
    assert change.fields == (f"spec.machines[{machine.name}].bmc.address",)


def test_version_change_is_flagged_as_upgrade_and_refused(fleet_repo: InventoryRepo) -> None:
    rows = fleet_repo.edge_rows()
    head = load_inventory(fleet_repo.inventory)
    other = next(
        v for v in head.fleet.spec.kubernetes_versions
        if v.lstrip("v") != head.clusters[rows[0]["site"]].kubernetes_version
    )
    fleet_repo.branch("upgrade")
    rows[0]["kubernetes_version"] = other
    fleet_repo.write_edge_rows(rows)
    fleet_repo.commit("upgrade one site", author="alice")

    plan = plan_change(fleet_repo.path, "main", "upgrade", approvers=("bob",))

    [impact] = plan.impacts
    assert impact.action is Action.UPGRADE and impact.stages == ()
    assert plan.waves == []  # nothing is run
    assert plan.exit_code == ExitCode.DENIED
    assert [d.rule for d in plan.verdicts.denials] == ["werft/upgrade-unsupported"]
    assert "not supported yet" in plan.verdicts.denials[0].message


def test_removed_cluster_is_a_decommission_that_needs_two_approvals(
    fleet_repo: InventoryRepo,
) -> None:
    rows = fleet_repo.edge_rows()
    gone = rows[-1]["site"]
    fleet_repo.branch("remove")
    fleet_repo.write_edge_rows(rows[:-1])
    fleet_repo.commit("retire a site", author="alice")

    one = plan_change(fleet_repo.path, "main", "remove", approvers=("bob",))
    [impact] = one.impacts
    assert (impact.name, impact.action, impact.destructive) == (gone, Action.DECOMMISSION, True)
    assert one.runnable() == [] and one.waves == []
    assert "decommission/two-approvals" in {d.rule for d in one.verdicts.denials}

    two = plan_change(fleet_repo.path, "main", "remove", approvers=("bob", "carl"))
    assert two.verdicts.allowed, two.verdicts.denials
    # Still never provisioned: an allowed decommission is flagged, not run.
    assert two.runnable() == []


def test_decommission_without_any_matching_rule_is_denied(tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "bare", policies=False)
    rows = bare.edge_rows()
    bare.branch("remove")
    bare.write_edge_rows(rows[:-1])
    bare.commit("retire a site")

    plan = plan_change(bare.path, "main", "remove", approvers=("a", "b", "c"))

    assert [d.rule for d in plan.verdicts.denials] == ["werft/decommission-needs-approval-rule"]


def test_non_owner_is_denied_with_the_rule_object_and_approvers_named(
    fleet_repo: InventoryRepo,
) -> None:
    rows = fleet_repo.edge_rows()
    owner = rows[0]["owner"]
    outsider = next(login for team, login in TEAMS.items() if team != owner)
    insider = TEAMS[owner]
    fleet_repo.branch("move")
    rows[0]["latitude"] = "48.0"
    fleet_repo.write_edge_rows(rows)
    fleet_repo.commit("move a site", author=outsider)

    denied = plan_change(fleet_repo.path, "main", "move")
    allowed = plan_change(fleet_repo.path, "main", "move", author=insider)

    assert denied.request.author == outsider  # the head commit's author by default
    assert denied.exit_code == ExitCode.DENIED
    [denial] = denied.verdicts.denials
    assert denial.rule == "ownership/owner-or-platform"
    assert denial.object == f"Site/{rows[0]['site']}"
    assert denial.could_approve == ("platform (alice, bob)",)
    assert allowed.verdicts.allowed, allowed.verdicts.denials
    # Moving a site changes where it is, not what runs there.
    assert denied.runnable() == []


def test_a_pull_request_is_judged_by_the_base_policy_not_its_own(
    fleet_repo: InventoryRepo,
) -> None:
    rows = fleet_repo.edge_rows()
    fleet_repo.branch("sneaky")
    fleet_repo.replace("policies/change-policy.yaml", "teams:\n    platform: [alice, bob]",
                       "teams:\n    platform: [alice, bob, mallory]")
    rows[0]["latitude"] = "48.0"
    fleet_repo.write_edge_rows(rows)
    fleet_repo.commit("let me in", author="mallory")

    plan = plan_change(fleet_repo.path, "main", "sneaky")

    rules = {d.rule for d in plan.verdicts.denials}
    assert {"teams/policy-changes-by-platform", "ownership/owner-or-platform"} <= rules


def test_an_invalid_head_exits_1_with_every_problem(fleet_repo: InventoryRepo) -> None:
    fleet_repo.branch("broken")
    rows = fleet_repo.edge_rows()
    rows[0]["boot_mac"] = "not-a-mac"
    rows[1]["region"] = "Not A Region"
    fleet_repo.write_edge_rows(rows)
    fleet_repo.commit("typos")

    result = CliRunner().invoke(
        app, ["plan", "--repo", str(fleet_repo.path), "--base", "main", "--head", "broken"]
    )

    assert result.exit_code == ExitCode.NOT_FINE, result.output
    assert "boot_mac" in result.output and "region" in result.output


def test_cli_outputs_json_and_markdown_with_the_exit_code_of_the_verdict(
    fleet_repo: InventoryRepo,
) -> None:
    fleet_repo.branch("add-site")
    _add_edge_site(fleet_repo)
    fleet_repo.commit("add edge-09999", author="alice")
    args = ["plan", "--repo", str(fleet_repo.path), "--base", "main", "--head", "add-site"]
    runner = CliRunner()

    # 1 of 4 edge clusters is more than 10% of the tier: a platform approver is needed.
    as_json = runner.invoke(app, [*args, "-o", "json"])
    approved = runner.invoke(app, [*args, "-o", "markdown", "--approver", "bob"])
    text = runner.invoke(app, [*args, "--approver", "bob"])

    assert as_json.exit_code == ExitCode.DENIED, as_json.output
    data = json.loads(as_json.output)
    assert [c["cluster"] for c in data["clusters"]] == ["edge-09999"]
    assert data["policy"]["denials"][0]["rule"] == "blast-radius/over-10-percent-of-a-tier"
    assert approved.exit_code == ExitCode.OK, approved.output
    assert "werft plan: allowed" in approved.output and "edge-09999" in approved.output
    assert text.exit_code == ExitCode.OK
    assert "edge-wave" in text.output


def test_markdown_folds_long_sections_and_stays_under_the_comment_limit(
    fleet_repo: InventoryRepo,
) -> None:
    rows = fleet_repo.edge_rows()
    fleet_repo.branch("many")
    extra = [new_edge_row(rows, f"edge-0{9000 + i}", f"02:00:00:00:9a:{i:02x}") for i in range(40)]
    fleet_repo.write_edge_rows([*rows, *extra])
    fleet_repo.commit("40 new sites")

    plan = plan_change(fleet_repo.path, "main", "many")
    text = markdown(plan, limit=8_000)

    assert len(plan.impacts) == 40
    assert "<details><summary>Clusters (40)</summary>" in text
    assert len(text) <= 8_000
    # The new sites render alike: each added object is listed once, for all 40.
    assert all(len(d.clusters) == 40 for d in plan.manifests.diffs)


def test_a_policy_rule_that_does_not_compile_is_an_inventory_problem(tmp_path: Path) -> None:
    fleet = make_repo(tmp_path / "repo")
    fleet.replace("policies/change-policy.yaml", "size(request.approvers.filter(a, a != request"
                  ".author)) >= 2", "size(request.approvers.filter(a, a != )) >= 2")
    from werft.inventory.load import check_inventory

    problems = check_inventory(fleet.inventory).errors
    [problem] = problems
    assert problem.field == "spec.rules[0].expression"
    assert "two-approvals" in problem.message and problem.line


def test_edge_owner_may_not_change_addon_values_reaching_other_owners_clusters(
    fleet_repo: InventoryRepo,
) -> None:
    fleet_repo.branch("values")
    fleet_repo.replace("addons/gitops/addonset.yaml", "logLevel: info", "logLevel: debug", 1)
    fleet_repo.commit("debug logs", author="erin")  # edge-ops-eu-west
    fleet_repo.branch("image", start="main")
    fleet_repo.replace("addons/gitops/addonset.yaml", "version: v1.3.0", "version: v1.3.1", 1)
    fleet_repo.commit("newer controller", author="erin")

    values = plan_change(fleet_repo.path, "main", "values", approvers=("carl",))
    image = plan_change(fleet_repo.path, "main", "image")
    approved = plan_change(fleet_repo.path, "main", "values", approvers=("bob",))

    rule = "ownership/edge-owner-addon-values-of-own-clusters"
    assert rule in {d.rule for d in values.verdicts.denials}
    denial = next(d for d in values.verdicts.denials if d.rule == rule)
    assert denial.objects == ("AddonSet/gitops",)
    assert rule in {d.rule for d in image.verdicts.denials}  # not a value: never the owner's
    assert approved.verdicts.allowed, approved.verdicts.denials  # a platform approver


def test_bmc_change_by_someone_outside_the_platform_team_is_denied(
    fleet_repo: InventoryRepo,
) -> None:
    head = load_inventory(fleet_repo.inventory)
    target = next(c for c in head.clusters.values() if c.tier == "near-edge")
    bmc = target.machines[0].bmc
    assert bmc is not None
    fleet_repo.branch("bmc")
    fleet_repo.replace(f"sites/{target.site}.yaml", bmc.address, bmc.address + "0")
    fleet_repo.commit("new BMC", author="erin")

    denied = plan_change(fleet_repo.path, "main", "bmc")
    # 1 of the 2 near-edge clusters is over 10% of the tier: a platform approver is needed too.
    by_platform = plan_change(fleet_repo.path, "main", "bmc", author="bob", approvers=("alice",))

    assert "machines/bmc-and-machines-by-platform" in {d.rule for d in denied.verdicts.denials}
    assert by_platform.verdicts.allowed, by_platform.verdicts.denials


def test_an_unknown_revision_is_a_usage_error(fleet_repo: InventoryRepo) -> None:
    result = CliRunner().invoke(
        app, ["plan", "--repo", str(fleet_repo.path), "--base", "main", "--head", "nope"]
    )

    assert result.exit_code == ExitCode.USAGE
    assert "revision 'nope' not found" in result.output
