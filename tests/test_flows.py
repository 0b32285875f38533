"""The Prefect flows end to end: real Prefect (one prefect_test_harness server for the
session), the real simulator on loopback, the real stages; small generated fleets at a
high time scale."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client

from flows import api
from flows.deployments import runner_deployments
from flows.drift import DriftRequest, drift_check
from flows.models import ClusterRecord
from flows.provision import provision_cluster
from tests.flowfixtures import (
    TIME_SCALE,
    Fleet,
    artifacts,
    fleet,
    lift_after_first_hit,
    outcomes,
    provision,
    set_rollout,
    task_run_names,
)
from tests.simfixtures import wait_for
from werft.conditions import STAGE_ORDER, ConditionType
from werft.plan import Selector
from werft.retry import DEFAULT
from werft.secrets import SecretStore
from werft.stages import StageContext, observe_clusters

# --- one provisioned fleet, shared by the tests that only look at it ------------------------


@pytest.fixture(scope="module")
def provisioned(
    tmp_path_factory: pytest.TempPathFactory, prefect_api: str
) -> Iterator[tuple[Fleet, object, object]]:
    """1 core site (3 clusters, bare metal and VMs), 1 near-edge, 7 edge sites, provisioned
    once with edge batches of 3 and a canary of 2."""
    workdir = tmp_path_factory.mktemp("fleet")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setenv("WERFT_HOME", str(workdir / ".werft"))
        with fleet(workdir, core=1, near=1, edge=7) as f:
            # One credential lives only in a Prefect Secret block: resolved through it.
            store = SecretStore()
            ref = f.inventory.clusters[f.names("near-edge")[0]].machines[0].bmc.credentials_ref
            Secret(value=store.get(ref)).save(ref, overwrite=True)
            store.delete(ref)
            rollout = {"edge": {"batch_size": 3, "canary_size": 2}}
            state, result = provision(f.request(rollout=rollout))
            yield f, state, result


def test_small_fleet_provisions_end_to_end_in_waves(provisioned) -> None:
    f, state, result = provisioned
    assert state.is_completed(), state.message
    assert set(outcomes(result).values()) == {"Verified"}, outcomes(result)
    assert len(result.clusters) == 11
    assert [w.name for w in result.waves] == ["core-wave-1", "near-edge-wave-2", "edge-wave-3"]
    assert [w.batches for w in result.waves] == [3, 1, 3]  # edge: canary 2, then 3 + 2
    for record in result.clusters:
        assert [record.status(s) for s in STAGE_ORDER] == ["True"] * 4
        assert record.mutations > 0
    # Every cluster really is up: werft's own read-only observation agrees.
    observed = asyncio.run(_observe(f))
    assert all(all(o.values()) for o in observed.values()), observed


async def _observe(f: Fleet) -> dict[str, dict[ConditionType, bool]]:
    ctx = StageContext.for_inventory(f.inventory)
    try:
        return await observe_clusters(list(f.inventory.clusters.values()), ctx)
    finally:
        await ctx.aclose()


def test_task_runs_are_one_per_stage_per_batch_with_readable_names(provisioned) -> None:
    f, state, result = provisioned
    names = task_run_names(str(state.state_details.flow_run_id))
    assert "observe[the whole fleet]" in names
    core = f.names("core")[0]
    assert f"verify[{core}]" in names
    assert "bootstrap[edge-wave-3/canary]" in names
    assert "addons[edge-wave-3/batch-02]" in names
    # 3 core and 1 near-edge single-cluster batches, 3 edge batches: 4 stages each, + observe
    assert len(names) == (3 + 1 + 3) * 4 + 1 == result.task_runs + 1


def test_batches_side_by_side_start_one_after_another(provisioned) -> None:
    """werft.plan.Ramp: the edge wave's batch-02 takes its first stage once batch-01 is past
    its own, not with it -- unless batch-01 took longer than the ramp's bound."""
    _, _, result = provisioned
    edge = [r for r in result.clusters if r.tier == "edge"]  # in plan order
    batch_01, batch_02 = edge[2:5], edge[5:]  # after the canary of 2; batches of 3

    def span(records: list[ClusterRecord]) -> tuple[float, float]:
        conditions = [r.conditions[ConditionType.INFRASTRUCTURE_READY] for r in records]
        ends = [c.last_transition_time.timestamp() for c in conditions]
        starts = [end - c.duration_s for end, c in zip(ends, conditions, strict=True)]
        return min(starts), max(ends)

    start_01, end_01 = span(batch_01)
    start_02, _ = span(batch_02)
    assert start_02 >= end_01 - 0.01 or start_02 - start_01 >= 0.5, (start_01, end_01, start_02)


def test_run_leaves_plan_progress_fleet_and_summary_artifacts(provisioned) -> None:
    f, state, _ = provisioned
    found = artifacts(str(state.state_details.flow_run_id))
    assert {"werft-plan", "werft-fleet", "werft-summary", "werft-edge-wave-3"} <= set(found)
    fleet_rows = json.loads(found["werft-fleet"].data)
    assert {r["cluster"] for r in fleet_rows} == set(f.inventory.clusters)
    assert set(fleet_rows[0]) >= {"cluster", "site", "tier", *STAGE_ORDER, "attempts", "reason"}
    assert found["werft-edge-wave-3"].data == 100.0
    assert "Succeeded" in found["werft-summary"].data
    # nothing secret in what a person sees
    secrets_dir = Path(".werft/secrets")
    for artifact in found.values():
        text = json.dumps(artifact.data)
        for item in secrets_dir.rglob("*"):
            if item.is_file() and len(item.read_text().strip()) > 8:
                assert item.read_text().strip() not in text


def test_second_run_of_a_provisioned_fleet_makes_no_mutating_calls(provisioned) -> None:
    f, _, _ = provisioned
    f.sim.reset_stats()
    state, result = provision(f.request())
    assert state.is_completed()
    assert f.sim.mutations() == 0
    assert result.task_runs == 0  # observation found every cluster in shape: no stage ran
    assert {c.reason for c in result.clusters} == {"AlreadyReady"}


def test_drift_check_reports_a_fleet_in_shape_and_then_a_powered_off_machine(provisioned) -> None:
    f, _, _ = provisioned
    request = DriftRequest(inventory=str(f.root))
    assert asyncio.run(drift_check(request)).out_of_shape == {}
    edge = f.names("edge")[0]
    f.sim.reset_stats()
    f.sim.drift(kind="power-off", machine=f.machines(edge)[0])
    report = asyncio.run(drift_check(request))
    assert list(report.out_of_shape) == [edge]
    assert report.out_of_shape[edge][0] == "InfrastructureReady"
    assert f.sim.mutations() == 0  # the check changed nothing
    # provision-cluster (the API-triggered flow) heals just that one
    result = asyncio.run(provision_cluster(edge, inventory=str(f.root), time_scale=TIME_SCALE))
    assert outcomes(result) == {edge: "Verified"}
    assert asyncio.run(drift_check(request)).out_of_shape == {}


# --- faults -----------------------------------------------------------------------------------


def test_a_transient_fault_is_retried_at_the_request_and_counted(workdir: Path) -> None:
    with fleet(workdir, near=2, edge=0) as f:
        first, second = f.names("near-edge")
        # One of its BMCs answers 503 once.
        rule = f.sim.add_fault(kind="error", status=503, machine=f.machines(first)[0])
        with lift_after_first_hit(f.sim, rule["id"]) as lifted:
            state, result = provision(f.request(retry_backoff_s=0.5))
    assert state.is_completed(), state.message
    assert outcomes(result) == {first: "Verified", second: "Verified"}
    assert lifted  # the BMC did answer 503
    # Retried where it happened, at the request: no stage or task had to run again, and
    # the run says what the blip cost.
    assert all(n == 1 for c in result.clusters for n in c.attempts.values())
    assert result.retries.get("503", 0) >= 1, result.retries


def test_a_fault_that_outlasts_the_request_retries_is_retried_by_the_task(
    workdir: Path,
) -> None:
    with fleet(workdir, near=2, edge=0) as f:
        first, second = f.names("near-edge")
        # Its BMC answers 503 to every try of one request: the first attempt of the
        # infrastructure task fails transiently, the retry after the backoff succeeds.
        rule = f.sim.add_fault(kind="error", status=503, machine=f.machines(first)[0])
        with lift_after_first_hit(f.sim, rule["id"], hits=DEFAULT.attempts) as lifted:
            state, result = provision(f.request(retry_backoff_s=0.5))
    assert state.is_completed(), state.message
    assert outcomes(result) == {first: "Verified", second: "Verified"}
    assert lifted
    attempts = {c.cluster: c.attempts for c in result.clusters}
    assert attempts[first][ConditionType.INFRASTRUCTURE_READY] == 2
    assert attempts[second][ConditionType.INFRASTRUCTURE_READY] == 1
    assert all(n == 1 for n in list(attempts[first].values())[1:])


def test_permanent_fault_fails_that_cluster_only_without_retries(workdir: Path) -> None:
    with fleet(workdir, near=0, edge=4) as f:
        bad, *good = f.names("edge")
        f.sim.add_fault(kind="auth", machine=f.machines(bad)[0])  # BMC refuses the credentials
        state, result = provision(f.request(rollout={"edge": {"max_failures": 1}}))
    # Within the wave's budget the rollout went on, but the run failed for that cluster:
    # its state and its first line say so.
    assert state.is_failed()
    assert state.message == "Failed: 1 of 4 clusters failed"
    assert [(w.halted, w.failed, w.verified) for w in result.waves] == [(False, 1, 3)]
    records = {c.cluster: c for c in result.clusters}
    assert records[bad].outcome == "Failed"
    assert records[bad].reason == "BMCUnauthorized"
    assert records[bad].attempts == {ConditionType.INFRASTRUCTURE_READY: 1}
    assert all(records[g].outcome == "Verified" for g in good)


def test_exceeding_the_failure_budget_halts_the_rollout(workdir: Path) -> None:
    with fleet(workdir, near=2, edge=3) as f:
        first, _ = f.names("near-edge")
        f.sim.add_fault(kind="auth", machine=f.machines(first)[0])
        rollout = {"near-edge": {"max_failures": 0, "canary_size": 0}}
        state, result = provision(f.request(rollout=rollout))
        edge_mutations = sum(f.mutations_of(c) for c in f.names("edge"))
    assert state.is_failed()
    assert "near-edge-wave-2" in state.message and "failure budget of 0" in state.message
    assert [(w.name, w.started, w.halted) for w in result.waves] == [
        ("near-edge-wave-2", True, True),
        ("edge-wave-3", False, False),
    ]
    assert {outcomes(result)[c] for c in f.names("edge")} == {"NotStarted"}
    assert edge_mutations == 0  # the edge wave never touched a machine


def test_offline_edge_site_is_deferred_then_provisioned_by_the_next_run(workdir: Path) -> None:
    with fleet(workdir, near=0, edge=3) as f:
        offline, *others = f.names("edge")
        rule = f.sim.add_fault(kind="offline", site=offline)
        state, result = provision(f.request())
        assert state.is_completed(), state.message  # deferred is not failed
        assert outcomes(result) == {offline: "Deferred", **dict.fromkeys(others, "Verified")}
        assert result.waves[0].deferred == 1 and result.waves[0].failed == 0

        f.sim.remove_fault(rule["id"])
        f.sim.reset_stats()
        state, result = provision(f.request())
        assert state.is_completed()
        assert set(outcomes(result).values()) == {"Verified"}
        assert all(f.mutations_of(c) == 0 for c in others)
        assert f.mutations_of(offline) > 0


def test_site_lost_at_verify_is_deferred_at_once_and_spares_the_failure_budget(
    workdir: Path,
) -> None:
    with fleet(workdir, near=0, edge=3) as f:
        lost, *others = f.names("edge")
        # Only verify asks for /version: the site answers every stage before it, then
        # drops every connection.
        f.sim.add_fault(kind="offline", cluster=lost, path=f"/clusters/{lost}/version")
        state, result = provision(f.request(rollout={"edge": {"max_failures": 0}}))
    records = {c.cluster: c for c in result.clusters}
    assert records[lost].outcome == "Deferred", records[lost]
    assert records[lost].conditions[ConditionType.VERIFIED].reason == "Unreachable"
    assert records[lost].attempts[ConditionType.VERIFIED] == 1  # judged, then not retried
    assert all(records[o].outcome == "Verified" for o in others)
    assert (result.waves[0].deferred, result.waves[0].failed, result.waves[0].halted) == (
        1,
        0,
        False,
    )
    assert state.is_completed(), state.message
    summary = artifacts(str(state.state_details.flow_run_id))["werft-summary"].data
    assert summary.splitlines()[0] == "# werft provisioning: Succeeded (1 deferred to the next run)"


def test_invalid_inventory_fails_the_run_and_touches_nothing(workdir: Path) -> None:
    with fleet(workdir, near=1, edge=1) as f:
        fleet_yaml = f.root / "fleet.yaml"
        fleet_yaml.write_text(fleet_yaml.read_text().replace("batchSize: 25", "batchSize: -3"))
        state, result = provision(f.request())
        assert f.sim.mutations() == 0
    assert state.is_failed()
    assert result.problems and "batchSize" in " ".join(result.problems)
    found = artifacts(str(state.state_details.flow_run_id))
    assert "batchSize" in found["werft-inventory-problems"].data


def test_unknown_cluster_in_the_selection_is_an_error_not_nothing_to_do(workdir: Path) -> None:
    with fleet(workdir, near=1, edge=0) as f:
        state, result = provision(f.request(selector=Selector(clusters=["nope-1"])))
    assert state.is_failed()
    assert "cluster 'nope-1' is not in the inventory" in result.problems[0]


def test_dry_run_plans_and_changes_nothing(workdir: Path) -> None:
    with fleet(workdir, near=1, edge=2) as f:
        state, result = provision(f.request(dry_run=True))
        assert f.sim.mutations() == 0
    assert state.is_completed()
    assert result.task_runs == 8 and [w.started for w in result.waves] == [False, False]
    found = artifacts(str(state.state_details.flow_run_id))
    plan = json.loads(found["werft-plan"].data)
    assert {r["wave"] for r in plan} == {"near-edge-wave-2", "edge-wave-3"}


# --- resume after kill -9 -----------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_mid_rollout_then_rerun_finishes_without_repeating_or_duplicating(
    workdir: Path, prefect_api: str
) -> None:
    with fleet(workdir, near=0, edge=6, time_scale=300) as f:
        # Two edge clusters at a time, so the rollout is still going when we kill it.
        set_rollout(f.root, {"edge": {"batchSize": 1, "maxConcurrency": 2, "canarySize": 0}})
        env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_LOGGING_LEVEL": "WARNING"}
        args = [sys.executable, "-m", "werft.cli", "provision", str(f.root), "--time-scale", "300"]
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        edges = f.names("edge")
        try:
            # With two clusters in flight, a third cluster's add-ons applied means at least
            # one cluster has finished all four stages; not all are done yet.
            wait_for(
                lambda: 3 <= _addons_applied(f) < len(edges),
                timeout=60,
                what="some but not all edge clusters provisioned",
            )
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

        done = [c for c, o in asyncio.run(_observe(f)).items() if all(o.values())]
        assert 0 < len(done) < len(edges)
        before = {m: f.sim.machine(m) for c in done for m in f.machines(c)}
        f.sim.reset_stats()

        state, result = provision(f.request())
        assert state.is_completed(), state.message
        assert set(outcomes(result).values()) == {"Verified"}, [
            (c.cluster, c.outcome, c.reason, c.message) for c in result.clusters
        ]
        for cluster in done:  # finished before the kill: no stage repeated
            assert f.mutations_of(cluster) == 0, cluster
            assert {c.reason for c in result.clusters if c.cluster == cluster} == {"AlreadyReady"}
        for machine, state_before in before.items():  # and the machines were left alone
            assert f.sim.machine(machine) == state_before
        for cluster in edges:  # one seed per machine: nothing was provisioned twice
            # (published under secret URLs and deleted once bootstrapped: count the records)
            seeds = SecretStore().names(f"clusters/{cluster}/seeds/")
            assert len(seeds) == len(f.machines(cluster)), seeds


def _addons_applied(f: Fleet) -> int:
    """Clusters whose API has seen a mutating call: their add-ons are being applied."""
    return sum(1 for n in f.sim.stats()["mutations"]["clusters"].values() if n)


# --- deployments, the REST API, werft serve -------------------------------------------------------


def test_deployments_from_prefect_yaml_register_with_the_drift_check_schedule(
    prefect_api: str,
) -> None:
    async def apply() -> list[str]:
        return [str(await d.aapply()) for d in await runner_deployments(time_scale=50)]

    ids = asyncio.run(apply())
    # + plan-change and reconcile (changes by pull request), provision-batch (work pools)
    assert len(ids) == 6
    with get_client(sync_client=True) as client:
        drift = client.read_deployment_by_name("drift-check/drift-check")
        fleet_dep = client.read_deployment_by_name("provision-fleet/provision-fleet")
        cluster_dep = client.read_deployment_by_name("provision-cluster/provision-cluster")
    assert [s.schedule.interval.total_seconds() for s in drift.schedules] == [900]
    assert fleet_dep.parameters["request"]["time_scale"] == 50
    assert cluster_dep.parameters["time_scale"] == 50
    # the UI renders a form from the pydantic model
    properties = fleet_dep.parameter_openapi_schema["properties"]
    assert "request" in properties
    assert fleet_dep.global_concurrency_limit.limit == 1  # one fleet rollout at a time
    assert str(drift.concurrency_options.collision_strategy).endswith("CANCEL_NEW")

    # and a run can be created over plain REST, as the README shows
    run = api.create_run(prefect_api, {"request": {"dry_run": True}})
    assert run.state_type == "SCHEDULED"
    assert api.read_run(prefect_api, run.id).id == run.id
    assert api.ui_url(prefect_api, run.id).endswith(f"/runs/flow-run/{run.id}")
    httpx.delete(f"{prefect_api}/flow_runs/{run.id}").raise_for_status()  # nobody runs it


@pytest.mark.slow
def test_via_api_with_werft_serve_runs_the_deployment(workdir: Path, prefect_api: str) -> None:
    with fleet(workdir, near=1, edge=1) as f:
        env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
        serve = subprocess.Popen(
            [sys.executable, "-m", "werft.cli", "serve", "--time-scale", str(TIME_SCALE)],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for(lambda: _served(prefect_api), timeout=60, what="werft serve")
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "werft.cli",
                    "provision",
                    str(f.root),
                    "--via-api",
                    "--timeout",
                    "90",
                ],
                env=env,
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            os.killpg(serve.pid, signal.SIGTERM)
            serve.wait(timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 Verified" in out.stdout
    run_id = out.stdout.split("/runs/flow-run/")[1].split()[0]
    run = httpx.get(f"{prefect_api}/flow_runs/{run_id}").json()
    # what the CLI did not say kept the deployment's value (werft serve --time-scale)
    assert run["parameters"]["request"]["time_scale"] == TIME_SCALE
    assert run["parameters"]["request"]["inventory"] == str(f.root)


def _served(api_url: str) -> bool:
    """provision-fleet is registered by this `werft serve` (its time scale) and polled."""
    try:
        r = httpx.get(f"{api_url}/deployments/name/provision-fleet/provision-fleet", timeout=5)
    except httpx.HTTPError:
        return False
    if r.status_code != 200:
        return False
    deployment = r.json()
    request = deployment["parameters"].get("request", {})
    return request.get("time_scale") == TIME_SCALE and deployment["status"] == "READY"
