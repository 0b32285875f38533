"""The change flows on real Prefect: plan-change tells a (loopback) forge; reconcile
provisions only what a merge touched; the receiver's starter creates real flow runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import git
import pytest
from prefect.client.orchestration import get_client

from flows.api import WebhookStarter
from flows.plan_change import PlanChangeRequest, PlanChangeResult, plan_change
from flows.reconcile import ReconcileRequest, ReconcileResult, reconcile, variable_name
from tests.flowfixtures import TIME_SCALE, fleet, provision
from tests.gitopsfixtures import make_repo, new_edge_row, recording_forge
from werft.gitops.forge import ForgeTarget
from werft.webhook import PLAN_DEPLOYMENT

TOKEN = "ghp-not-a-real-token"


def _run_plan(request: PlanChangeRequest) -> PlanChangeResult:
    state = asyncio.run(plan_change(request, return_state=True))
    result = state.result()
    assert isinstance(result, PlanChangeResult)
    return result


def test_plan_change_comments_the_plan_and_sets_the_status(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WERFT_SECRET_FORGE_TOKEN", TOKEN)
    repo = make_repo(workdir / "repo")
    rows = repo.edge_rows()
    repo.branch("add-site")
    repo.write_edge_rows([*rows, new_edge_row(rows, "edge-09999", "02:00:00:00:99:99")])
    head = repo.commit("add edge-09999", author="alice")

    with recording_forge() as forge:
        forge.approved_by = ["bob"]  # a platform approver: the blast-radius rule passes
        target = ForgeTarget(api_url=forge.url, repository="acme/fleet", number=7, sha=head,
                             token_ref="forge-token")
        request = PlanChangeRequest(repo=str(repo.path), base="main", head=head, forge=target)
        first = _run_plan(request)
        forge.approved_by = []  # the approval was withdrawn: the next plan is denied
        second = _run_plan(request)

    assert first.state == "success" and first.provision == ["edge-09999"]
    [comment] = forge.made("POST", "/repos/acme/fleet/issues/7/comments")
    body = comment.body["body"]
    assert "werft plan: allowed" in body
    assert "edge-09999" in body and "edge-wave" in body and "new cluster" in body
    assert comment.headers["authorization"] == f"Bearer {TOKEN}"
    statuses = forge.made("POST", f"/repos/acme/fleet/statuses/{head}")
    assert [s.body["state"] for s in statuses] == ["pending", "success", "pending", "failure"]
    assert {s.body["context"] for s in statuses} == {"werft/plan"}
    # The second plan updates werft's comment instead of adding another.
    [update] = forge.made("PATCH", "/repos/acme/fleet/issues/comments/")
    assert "blast-radius/over-10-percent-of-a-tier" in update.body["body"]
    assert second.state == "denied" and second.exit_code == 4
    assert TOKEN not in first.model_dump_json() + second.model_dump_json()


def test_the_receivers_starter_creates_one_plan_change_run_per_delivery(
    prefect_api: str, tmp_path: Path
) -> None:
    async def register() -> None:
        deployment = await plan_change.ato_deployment(name="plan-change")
        await deployment.aapply()

    asyncio.run(register())
    starter = WebhookStarter(prefect_api)
    parameters = {"request": {"repo": str(tmp_path), "base": "main", "head": "b" * 40}}

    first = starter(PLAN_DEPLOYMENT, parameters, "delivery-1")
    again = starter(PLAN_DEPLOYMENT, parameters, "delivery-1")
    other = starter(PLAN_DEPLOYMENT, parameters, "delivery-2")

    assert first == again != other  # the server refuses a second run for one delivery
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(first)
    assert run.parameters["request"]["head"] == "b" * 40


def _reconcile(request: ReconcileRequest) -> tuple[Any, ReconcileResult]:
    state = asyncio.run(reconcile(request, return_state=True))
    result = state.result(raise_on_failure=False)
    assert isinstance(result, ReconcileResult), result
    return state, result


@pytest.mark.slow
def test_merge_reconciles_only_the_affected_clusters(workdir: Path) -> None:
    with fleet(workdir, near=1, edge=3) as f:
        (workdir / ".gitignore").write_text(".werft/\n")
        repo = git.Repo.init(workdir, initial_branch="main")
        repo.git.add("-A")
        repo.index.commit("the fleet")
        _, result = provision(f.request())
        assert result.all_verified, result.reason
        request = ReconcileRequest(repo=str(workdir), time_scale=TIME_SCALE)

        _, baseline = _reconcile(request)
        assert baseline.action == "recorded"
        _, unchanged = _reconcile(request)
        assert unchanged.action == "up-to-date"

        # A merge: one value of an AddonSet that only the near-edge clusters use.
        path = f.root / "addons/observability/addonset.yaml"
        path.write_text(path.read_text().replace("metricResolution: 15s",
                                                 "metricResolution: 30s"))
        repo.git.add("-A")
        merged = repo.index.commit("metrics every 30s").hexsha
        before = f.sim.stats()["mutations"]
        counts_before = {c: f.mutations_of(c) for c in f.inventory.clusters}

        state, after = _reconcile(request)

        assert state.is_completed(), state.message
        assert after.action == "provisioned" and after.current == merged
        assert after.clusters == f.names("near-edge")
        changed = {c for c in f.inventory.clusters if f.mutations_of(c) != counts_before[c]}
        assert changed == set(f.names("near-edge"))
        assert all(f.mutations_of(c) == counts_before[c] for c in f.names("edge"))
        assert before != f.sim.stats()["mutations"]

        async def last() -> Any:
            from prefect.variables import Variable

            return await Variable.aget(variable_name(str(workdir), "main"))

        assert asyncio.run(last()) == merged

        # Removing an edge site is a decommission: flagged, never run, nothing touched.
        csv = f.root / "edge-sites.csv"
        lines = csv.read_text().splitlines(keepends=True)
        gone = lines[-1].split(",")[0]
        csv.write_text("".join(lines[:-1]))
        repo.git.add("-A")
        retired = repo.index.commit("retire a site").hexsha
        counts = {c: f.mutations_of(c) for c in f.inventory.clusters}

        _, removal = _reconcile(request)

        assert removal.action == "nothing-to-run" and removal.current == retired
        assert removal.flagged == [f"{gone}: decommission"]
        assert {c: f.mutations_of(c) for c in f.inventory.clusters} == counts


def test_a_signed_pr_event_creates_a_run_and_a_forged_one_does_not(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import hmac
    import json

    import httpx
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from tests.gitopsfixtures import serve_asgi
    from werft.webhook import WebhookSettings, create_app

    async def register() -> None:
        await (await plan_change.ato_deployment(name="plan-change")).aapply()

    asyncio.run(register())
    monkeypatch.setenv("WERFT_SECRET_HOOK", "hook-secret")
    settings = WebhookSettings(repo=str(tmp_path), github_secret_ref="hook", github_api="")
    head = "d" * 40
    body = json.dumps({
        "action": "synchronize",
        "pull_request": {"number": 12, "state": "open", "head": {"sha": head},
                         "base": {"ref": "main"}, "user": {"login": "erin"}},
        "repository": {"full_name": "acme/fleet"},
    }).encode()

    def runs() -> list[Any]:
        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["plan-change"])))
        return [r for r in found if r.parameters["request"].get("head") == head]

    def post(client: httpx.Client, secret: str, delivery: str) -> httpx.Response:
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return client.post("/hooks/github", content=body, headers={
            "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature})

    with serve_asgi(create_app(settings, WebhookStarter(prefect_api))) as url, \
            httpx.Client(base_url=url) as client:
        forged = post(client, "wrong", "delivery-a")
        assert forged.status_code == 401 and runs() == []
        started = post(client, "hook-secret", "delivery-b")

    assert started.status_code == 202, started.text
    [run] = runs()
    assert str(run.id) == started.json()["flow_run_id"]
    assert run.parameters["request"]["author"] == "erin"
