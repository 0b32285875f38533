"""The Prefect shell's pieces that need no server: the retry decision, results, the
deployment definitions, the API parameter merge (against a loopback stand-in server)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prefect.states import Completed, Failed

from flows import api
from flows.artifacts import summary
from flows.deployments import _schedule_options, deployment_specs, flow_of
from flows.models import ClusterRecord, FleetResult, ProvisionRequest, WaveReport
from flows.provision import judge
from tasks.batch import retry_worthy
from tasks.policy import concurrency_tags, retry_if_transient, retry_options
from werft.conditions import Condition, ConditionType
from werft.errors import PermanentError, TransientError
from werft.inventory.model import Tier
from werft.plan import Outcome
from werft.retry import STATS, RetryPolicy, counting_retries, retry_sync

INFRA = ConditionType.INFRASTRUCTURE_READY


def failed(reason: str, transient: bool) -> Condition:
    return Condition(type=INFRA, status="False", reason=reason, transient=transient)


def test_only_transient_failures_are_worth_a_retry() -> None:
    assert retry_worthy(failed("ProviderError", transient=True), defer_unreachable=False)
    assert not retry_worthy(failed("BMCUnauthorized", transient=False), defer_unreachable=False)
    assert not retry_worthy(Condition(type=INFRA, status="True", reason="Provisioned"), False)
    # an offline edge site is deferred to the next run, not retried within this one
    assert retry_worthy(failed("Unreachable", transient=True), defer_unreachable=False)
    assert not retry_worthy(failed("Unreachable", transient=True), defer_unreachable=True)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TransientError("3 of 25 clusters failed transiently"), True),
        (PermanentError("BMC refused the credentials"), False),
        (ValueError("a bug"), False),
    ],
)
def test_retry_condition_asks_is_transient_about_the_raised_exception(
    exc: Exception, expected: bool
) -> None:
    state = Failed(data=exc)
    assert asyncio.run(retry_if_transient(None, None, state)) is expected  # type: ignore[arg-type]


def test_retry_condition_never_retries_a_success() -> None:
    assert asyncio.run(retry_if_transient(None, None, Completed(data=1))) is False  # type: ignore[arg-type]


def test_retry_policy_is_exponential_with_jitter() -> None:
    options = retry_options(retries=4, backoff_s=0.5)
    assert options["retries"] == 4
    assert options["retry_delay_seconds"](4) == [0.5, 1.0, 2.0, 4.0]
    assert options["retry_jitter_factor"] > 0


def test_fleet_table_row_and_summary_name_every_condition_and_failure() -> None:
    record = ClusterRecord(
        cluster="edge-00007",
        site="edge-00007",
        tier=Tier.EDGE,
        outcome=Outcome.FAILED,
        observed=[],
        conditions={INFRA: failed("BMCUnauthorized", transient=False)},
        attempts={INFRA: 1},
        reason="BMCUnauthorized",
        message="edge-00007-n0: the BMC refused the credentials",
    )
    row = record.row()
    assert row["InfrastructureReady"] == "False"
    assert row["Verified"] == "Unknown"
    assert row["attempts"] == "1,-,-,-"
    result = FleetResult(
        source="inventory",
        selector="the whole fleet",
        succeeded=False,
        reason="edge-wave-3: 3 of 20 clusters failed, over its failure budget of 1",
        clusters=[record],
        waves=[
            WaveReport(
                name="edge-wave-3",
                tier=Tier.EDGE,
                clusters=20,
                batches=2,
                failed=3,
                failure_budget=1,
                started=True,
                halted=True,
            )
        ],
    )
    text = summary(result)
    assert "# werft provisioning: Failed" in text
    assert "| edge-wave-3 | 20 | 2 | 0 | 3 | 0 | 1 | halted |" in text
    assert "| edge-00007 | BMCUnauthorized |" in text


def _record(name: str, outcome: Outcome) -> ClusterRecord:
    return ClusterRecord(cluster=name, site=name, tier=Tier.EDGE, outcome=outcome)


def _fleet(*outcomes: Outcome) -> FleetResult:
    result = FleetResult(source="inventory", selector="the whole fleet")
    result.clusters = [_record(f"edge-{i:05d}", o) for i, o in enumerate(outcomes)]
    return result


def test_a_run_with_a_failed_cluster_inside_the_budget_is_not_succeeded() -> None:
    result = _fleet(Outcome.VERIFIED, Outcome.FAILED, Outcome.DEFERRED, Outcome.VERIFIED)
    judge(result, halted="")
    assert not result.succeeded
    assert result.reason == "1 of 4 clusters failed (1 deferred)"
    first_line = summary(result).splitlines()[0]
    assert first_line == "# werft provisioning: Failed: 1 of 4 clusters failed (1 deferred)"


def test_verified_and_deferred_within_policy_is_succeeded_and_says_how_many_deferred() -> None:
    result = _fleet(Outcome.VERIFIED, Outcome.DEFERRED, Outcome.VERIFIED)
    judge(result, halted="")
    assert result.succeeded and result.reason == ""
    assert summary(result).splitlines()[0] == (
        "# werft provisioning: Succeeded (1 deferred to the next run)"
    )


def test_a_halted_rollout_counts_the_clusters_it_never_started() -> None:
    result = _fleet(Outcome.FAILED, Outcome.NOT_STARTED, Outcome.NOT_STARTED)
    judge(result, halted="near-edge-wave-2: over its failure budget of 0; the rollout halted")
    assert not result.succeeded
    assert result.reason.startswith("1 of 3 clusters failed (2 not started); near-edge-wave-2")


def test_the_summary_prints_requests_retried_by_cause_most_first() -> None:
    result = _fleet(Outcome.VERIFIED)
    result.retries = {"timeout": 3, "503": 9, "connection refused": 3}
    judge(result, halted="")
    assert (
        "- requests retried: 15 (503: 9, connection refused: 3, timeout: 3)"
        in summary(result).splitlines()
    )


async def test_a_run_counts_its_own_retries_not_those_of_another_run_in_the_process() -> None:
    """A served deployment runs flow runs side by side in one process; each run's summary
    says what the flakiness cost it, counted on its tasks and on the kube thread pool."""
    fast = RetryPolicy(attempts=3, base=0.001, cap=0.002)

    def blips_once(cause: str) -> Callable[[], str]:
        failures = [TransientError("blip", cause=cause)]

        def call() -> str:
            if failures:
                raise failures.pop()
            return "ok"

        return call

    async def run(cause: str, requests: int) -> dict[str, int]:
        with counting_retries() as retries:
            await asyncio.gather(
                *(asyncio.to_thread(retry_sync, blips_once(cause), policy=fast)
                  for _ in range(requests))
            )
            await asyncio.sleep(0.01)  # the other run retries meanwhile
            return retries.snapshot()

    STATS.add("503")  # before either run: not theirs
    first, second = await asyncio.gather(run("503", 2), run("timeout", 3))
    assert (first, second) == ({"503": 2}, {"timeout": 3})


def test_request_is_a_form_friendly_model_with_per_tier_overrides() -> None:
    request = ProvisionRequest.model_validate(
        {"selector": {"tiers": ["edge"]}, "rollout": {"edge": {"batch_size": 50}}}
    )
    assert request.rollout[Tier.EDGE].batch_size == 50
    schema = ProvisionRequest.model_json_schema()
    assert {"inventory", "git_ref", "selector", "dry_run", "rollout"} <= set(schema["properties"])
    with pytest.raises(ValueError):
        ProvisionRequest.model_validate({"rollout": {"edge": {"batch_size": 0}}})


def test_prefect_yaml_declares_the_three_deployments_and_the_15_minute_schedule() -> None:
    specs = {s["name"]: s for s in deployment_specs()}
    assert set(specs) == {
        "provision-fleet",
        "provision-cluster",
        "drift-check",
        "plan-change",
        "reconcile",
        "provision-batch",
    }
    assert _schedule_options(specs["drift-check"])["interval"][0].total_seconds() == 900
    assert all(s["work_pool"]["name"] == "werft-process" for s in specs.values())
    names = {flow_of(s["entrypoint"]).name for s in specs.values()}
    assert names == {
        "provision-fleet",
        "provision-cluster",
        "drift-check",
        "plan-change",
        "reconcile",
        "provision-batch",
    }


# --- the REST client against a loopback stand-in for the Prefect API --------------------------


@pytest.fixture
def fake_api() -> Iterator[tuple[str, list[dict[str, Any]], list[int]]]:
    posted: list[dict[str, Any]] = []
    busy_posts = [0]  # how many POSTs are answered 503 first (a test sets it)

    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: Any, status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/api/deployments/name/provision-fleet/provision-fleet":
                defaults = {"request": {"inventory": "inventory", "time_scale": 150}}
                self._send({"id": "d1", "parameters": defaults})
            else:
                self._send({"detail": "Not Found"}, 404)

        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            posted.append(json.loads(self.rfile.read(length)))
            if len(posted) <= busy_posts[0]:  # a server whose database another writer holds
                self._send({"exception_message": "Service Unavailable"}, 503)
                return
            if self.path == "/api/artifacts/filter":
                rows = [{"cluster": "edge-00001", "outcome": "Verified"}]
                self._send([{"key": "werft-fleet", "data": json.dumps(rows)}])
                return
            self._send(
                {
                    "id": "r1",
                    "name": "brave-run",
                    "state": {"type": "SCHEDULED", "name": "Scheduled"},
                },
                201,
            )

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api", posted, busy_posts
    finally:
        server.shutdown()
        server.server_close()


def test_create_run_merges_the_request_onto_the_deployment_defaults(fake_api) -> None:
    url, posted, _ = fake_api
    run = api.create_run(url, {"request": {"dry_run": True}})
    assert (run.id, run.state_type) == ("r1", "SCHEDULED")
    assert [p["parameters"] for p in posted] == [
        {"request": {"inventory": "inventory", "time_scale": 150, "dry_run": True}}
    ]
    assert api.ui_url(url, run.id) == url.removesuffix("/api") + "/runs/flow-run/r1"


def test_a_busy_server_is_asked_again_under_the_same_idempotency_key(fake_api) -> None:
    """A 503 (the server's database held by another writer) is asked again; the key makes
    the server hand back the run a lost answer created instead of a second one."""
    url, posted, busy_posts = fake_api
    busy_posts[0] = 2
    run = api.create_run(url, {"request": {"dry_run": True}})
    assert run.id == "r1"
    keys = [p["idempotency_key"] for p in posted]
    assert len(keys) == 3 and len(set(keys)) == 1 and keys[0].startswith("werft-api-")
    assert api.create_run(url, {}).id == "r1"
    assert posted[-1]["idempotency_key"] != keys[0]  # another run asked for: another key


def test_the_webhook_starter_asks_a_busy_server_again_under_the_delivery_id(fake_api) -> None:
    """A delivery that meets a busy server still starts its run, within the seconds a forge
    waits; the delivery id is the key, so a redelivery can never start a second run."""
    url, posted, busy_posts = fake_api
    busy_posts[0] = 2
    start = api.WebhookStarter(url)
    assert start("provision-fleet/provision-fleet", {"request": {}}, "delivery-7") == "r1"
    assert [p["idempotency_key"] for p in posted] == ["webhook-delivery-7"] * 3
    policy = api.WEBHOOK_RETRY  # every backoff at its ceiling: still inside GitHub's 10 s
    assert sum(min(policy.cap, policy.base * 2**n) for n in range(policy.attempts - 1)) < 10


def test_the_fleet_table_is_asked_for_again_while_the_server_is_busy(fake_api) -> None:
    """The table `werft provision --via-api` prints at the end: a 503 there is asked
    again, not shown as a run without clusters."""
    url, posted, busy_posts = fake_api
    busy_posts[0] = 2
    assert api.fleet_table(url, "r1") == [{"cluster": "edge-00001", "outcome": "Verified"}]
    assert len(posted) == 3
    assert posted[-1]["artifacts"]["flow_run_id"] == {"any_": ["r1"]}


def test_create_run_of_a_missing_deployment_says_what_to_start(fake_api) -> None:
    url, _, _ = fake_api
    with pytest.raises(api.ApiError, match="werft serve"):
        api.create_run(url, {}, deployment="nope/nope")


def test_only_a_single_site_batch_is_tagged_for_concurrency_limits() -> None:
    # Any tag costs the task run a slot request to the server before it starts (0.4 s on
    # the path of every stage of every edge batch); a site's limit protects its shared BMCs.
    assert concurrency_tags(Tier.NEAR_EDGE, ["muc1"]) == ["tier:near-edge", "site:muc1"]
    assert concurrency_tags(Tier.CORE, ["fra1", "fra1"]) == ["tier:core", "site:fra1"]
    assert concurrency_tags(Tier.EDGE, ["edge-00001", "edge-00002"]) == []
