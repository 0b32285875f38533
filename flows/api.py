"""Starting a provisioning run through the Prefect REST API -- what `werft provision
--via-api` does, and what any other system (a ticketing tool, a vendor portal) can do:

    GET  {api}/deployments/name/provision-fleet/provision-fleet     -> {"id": ...}
    POST {api}/deployments/{id}/create_flow_run  {"parameters": {"request": {...}}}
    GET  {api}/flow_runs/{run id}                                   -> state, until final

The run executes wherever the deployment is served (`werft serve`) or on a worker of
its work pool; this client only creates it and follows it. Plain httpx, no Prefect client.
The webhook receiver (`werft webhook serve`) starts its runs through ``WebhookStarter``.

A server that is busy (503 while its database is locked, 429, a 502/504 from a proxy) or
a connection that fails is asked again (``werft.retry``). Every request here is safe to
repeat: the reads, and the creation too, which carries an idempotency key made once per
``create_run``, so a creation whose answer was lost returns the same run, never a second.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from werft.errors import TransientError, WerftError
from werft.retry import RetryPolicy, retry_after_seconds, retry_sync

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
BUSY = frozenset({429, 502, 503, 504})
# A Prefect server on SQLite answers 503 while another writer holds the database: seconds.
API_RETRY = RetryPolicy(attempts=8, base=0.5, cap=5.0)
# A forge gives up on a webhook delivery after 10 s (GitHub) and does not send it again by
# itself: a busy server is asked again for a few seconds at most, well inside that.
WEBHOOK_RETRY = RetryPolicy(attempts=5, base=0.25, cap=2.0, max_retry_after=2.0)


class ApiError(WerftError):
    pass


@dataclass
class RunState:
    id: str
    name: str
    state_type: str
    state_name: str
    message: str


def _client(api_url: str) -> httpx.Client:
    return httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=30)


def _send(
    client: httpx.Client,
    method: str,
    path: str,
    what: str,
    policy: RetryPolicy = API_RETRY,
    **kwargs: Any,
) -> Any:
    """One request, asked again while the server is busy or unreachable; its JSON."""

    def attempt() -> Any:
        try:
            response = client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TransientError(f"{what}: {type(exc).__name__}", cause="connection") from None
        if response.status_code in BUSY:
            raise TransientError(
                f"{what}: HTTP {response.status_code}: {response.text[:300]}",
                cause=str(response.status_code),
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        return _check(response, what)

    try:
        return retry_sync(attempt, policy=policy)
    except TransientError as exc:
        raise ApiError(str(exc)) from None


def _check(response: httpx.Response, what: str) -> Any:
    if response.status_code == 404:
        raise ApiError(f"{what}: not found (is `werft serve` running against this server?)")
    if response.is_error:
        raise ApiError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


def create_run(
    api_url: str,
    parameters: dict[str, Any],
    deployment: str = "provision-fleet/provision-fleet",
    *,
    idempotency_key: str | None = None,
    policy: RetryPolicy = API_RETRY,
) -> RunState:
    """Create a flow run of ``deployment``. The server replaces top-level parameters whole,
    so an object parameter (``request``) given here is merged onto the deployment's default
    first: what is not said keeps the deployment's value (e.g. `werft serve --time-scale`).

    The server makes one run per ``idempotency_key`` however often it is asked (by default
    a key of this call's own): a caller acting on an event passes the event's id."""
    run_key = idempotency_key or f"werft-api-{uuid.uuid4()}"
    with _client(api_url) as client:
        found = _send(
            client, "GET", f"deployments/name/{deployment}", f"deployment {deployment}", policy
        )
        defaults = found.get("parameters") or {}
        merged = {
            key: {**defaults[key], **value}
            if isinstance(value, dict) and isinstance(defaults.get(key), dict)
            else value
            for key, value in parameters.items()
        }
        created = _send(
            client,
            "POST",
            f"deployments/{found['id']}/create_flow_run",
            "create_flow_run",
            policy,
            json={"parameters": merged, "idempotency_key": run_key},
        )
    return _state(created)


@dataclass(frozen=True)
class WebhookStarter:
    """What the webhook receiver starts runs with (``werft.webhook.Starter``): a run of
    ``deployment`` per delivery id, the id being the run's idempotency key, so a forge's
    redelivery, or a second receiver replica, never starts a second run."""

    api_url: str

    def __call__(self, deployment: str, parameters: dict[str, Any], delivery: str) -> str:
        run = create_run(
            self.api_url,
            parameters,
            deployment,
            idempotency_key=f"webhook-{delivery}",
            policy=WEBHOOK_RETRY,
        )
        return run.id


def read_run(api_url: str, run_id: str) -> RunState:
    with _client(api_url) as client:
        return _state(_send(client, "GET", f"flow_runs/{run_id}", f"flow run {run_id}"))


def follow(api_url: str, run_id: str, timeout_s: float, poll_s: float = 1.0) -> RunState:
    """Poll the run until it is in a final state, or ``timeout_s`` passes (ApiError)."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = read_run(api_url, run_id)
        if run.state_type in FINAL_STATES:
            return run
        if time.monotonic() > deadline:
            raise ApiError(f"flow run {run_id} still {run.state_name} after {timeout_s:.0f}s")
        time.sleep(poll_s)


def fleet_table(api_url: str, run_id: str) -> list[dict[str, Any]]:
    """The rows of the run's ``werft-fleet`` table artifact ([] if it made none)."""
    body = {
        "artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": ["werft-fleet"]}},
        "sort": "CREATED_DESC",
        "limit": 1,
    }
    with _client(api_url) as client:
        artifacts = _send(client, "POST", "artifacts/filter", "the fleet table", json=body)
    if not artifacts:
        return []
    data = artifacts[0]["data"]
    return json.loads(data) if isinstance(data, str) else data


def ui_url(api_url: str, run_id: str) -> str:
    """The UI page of a flow run (the UI is served by the same server, without /api)."""
    return f"{api_url.rstrip('/').removesuffix('/api')}/runs/flow-run/{run_id}"


def _state(run: dict[str, Any]) -> RunState:
    state = run.get("state") or {}
    return RunState(
        id=run["id"],
        name=run.get("name", ""),
        state_type=state.get("type", "PENDING"),
        state_name=state.get("name", "Pending"),
        message=state.get("message") or "",
    )
