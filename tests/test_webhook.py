"""The webhook receiver over real HTTP on loopback: signatures, replays, limits, events."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flows.api import ApiError
from tests.gitopsfixtures import serve_asgi
from werft.webhook import PLAN_DEPLOYMENT, RECONCILE_DEPLOYMENT, WebhookSettings, create_app

SECRET = "s3cret-webhook-value"
GITLAB_TOKEN = "gl-token-value"
HEAD = "a" * 40


class Starts:
    """A recording starter (what the receiver hands runs to), optionally failing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], str]] = []
        self.fail = False
        self._lock = threading.Lock()

    def __call__(self, deployment: str, parameters: dict[str, Any], key: str) -> str:
        if self.fail:
            raise ApiError("create_flow_run: ConnectError")  # as flows.api.WebhookStarter
        with self._lock:
            self.calls.append((deployment, parameters, key))
        return f"run-{len(self.calls)}"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[httpx.Client, Starts]]:
    # Secrets are references, resolved at request time (here from the environment).
    monkeypatch.setenv("WERFT_SECRET_GH_HOOK", SECRET)
    monkeypatch.setenv("WERFT_SECRET_GL_HOOK", GITLAB_TOKEN)
    settings = WebhookSettings(
        repo="/srv/inventory.git",
        github_secret_ref="gh-hook",
        gitlab_token_ref="gl-hook",
        forge_token_ref="forge-token",
        github_api="http://forge.invalid/api",
    )
    starts = Starts()
    with serve_asgi(create_app(settings, starts)) as url, httpx.Client(base_url=url) as client:
        yield client, starts


def _pr(action: str = "opened", number: int = 7) -> dict[str, Any]:
    return {
        "action": action,
        "pull_request": {
            "number": number,
            "state": "open",
            "head": {"sha": HEAD, "ref": "add-site"},
            "base": {"ref": "main"},
            "user": {"login": "erin"},
        },
        "repository": {"full_name": "acme/fleet"},
    }


def _github(
    client: httpx.Client,
    event: str,
    payload: Any,
    *,
    delivery: str | None = None,
    secret: str = SECRET,
    body: bytes | None = None,
) -> httpx.Response:
    data = body if body is not None else json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
        "Content-Type": "application/json",
    }
    return client.post("/hooks/github", content=data, headers=headers)


def _signed_headers(sent: httpx.Response, *, delivery: str) -> dict[str, str]:
    """The event and signature headers of a request already sent, under a new delivery id."""
    headers = sent.request.headers
    return {
        "X-GitHub-Event": headers["x-github-event"],
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": headers["x-hub-signature-256"],
    }


def test_signed_pull_request_starts_a_plan_change_run(
    receiver: tuple[httpx.Client, Starts],
) -> None:
    client, starts = receiver
    response = _github(client, "pull_request", _pr(), delivery="d-1")

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "started"
    [(deployment, parameters, key)] = starts.calls
    assert deployment == PLAN_DEPLOYMENT and key == "d-1"
    request = parameters["request"]
    assert (request["base"], request["head"], request["author"]) == ("main", HEAD, "erin")
    assert request["head_ref"] == "refs/pull/7/head"
    assert request["forge"]["number"] == 7 and request["forge"]["repository"] == "acme/fleet"
    # The token travels as a reference, never as a value.
    assert request["forge"]["token_ref"] == "forge-token"
    assert SECRET not in json.dumps(parameters)


def test_forged_or_missing_signature_is_401_and_starts_nothing(
    receiver: tuple[httpx.Client, Starts],
) -> None:
    client, starts = receiver
    forged = _github(client, "pull_request", _pr(), secret="not-the-secret")
    body = json.dumps(_pr()).encode()
    unsigned = client.post("/hooks/github", content=body,
                           headers={"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "x"})
    # A valid signature of another body does not sign this one.
    other = _github(client, "pull_request", _pr(), body=body + b" ")
    tampered = client.post(
        "/hooks/github",
        content=body.replace(b"erin", b"root"),
        headers=_signed_headers(other, delivery="tampered"),
    )

    assert [r.status_code for r in (forged, unsigned, tampered)] == [401, 401, 401]
    assert other.status_code == 202  # its own body was signed: the control case
    assert len(starts.calls) == 1


def test_replayed_delivery_is_refused(receiver: tuple[httpx.Client, Starts]) -> None:
    client, starts = receiver
    first = _github(client, "pull_request", _pr(), delivery="same-id")
    replay = _github(client, "pull_request", _pr(), delivery="same-id")

    assert (first.status_code, replay.status_code) == (202, 409)
    assert len(starts.calls) == 1


def test_a_10_mb_body_is_413_and_starts_nothing(receiver: tuple[httpx.Client, Starts]) -> None:
    client, starts = receiver
    huge = json.dumps({**_pr(), "padding": "x" * (10 * 2**20)}).encode()
    declared = _github(client, "pull_request", None, body=huge)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for start in range(0, len(huge), 2**16):
            yield huge[start : start + 2**16]

    streamed = client.post("/hooks/github", content=chunks(),
                           headers=_signed_headers(declared, delivery="streamed"))

    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert starts.calls == []


def test_malformed_payloads_are_400_and_start_nothing(
    receiver: tuple[httpx.Client, Starts],
) -> None:
    client, starts = receiver
    not_json = _github(client, "pull_request", None, body=b"{not json")
    no_pr = _github(client, "pull_request", {"action": "opened", "repository": {}})
    bad_sha = _pr()
    bad_sha["pull_request"]["head"]["sha"] = "$(rm -rf /)"
    injected = _github(client, "pull_request", bad_sha)
    not_object = _github(client, "push", ["a", "list"])

    assert [r.status_code for r in (not_json, no_pr, injected, not_object)] == [400] * 4
    assert starts.calls == []


def test_unknown_and_irrelevant_events_are_202_and_start_nothing(
    receiver: tuple[httpx.Client, Starts],
) -> None:
    client, starts = receiver
    issue = _github(client, "issues", {"action": "opened"})
    closed = _github(client, "pull_request", _pr(action="closed"))
    other_branch = _github(client, "push", {"ref": "refs/heads/feature", "after": HEAD,
                                            "repository": {"full_name": "acme/fleet"}})

    assert [r.status_code for r in (issue, closed, other_branch)] == [202] * 3
    assert {r.json()["status"] for r in (issue, closed, other_branch)} == {"ignored"}
    assert starts.calls == []


def test_push_to_main_starts_reconcile(receiver: tuple[httpx.Client, Starts]) -> None:
    client, starts = receiver
    response = _github(client, "push", {"ref": "refs/heads/main", "after": HEAD,
                                        "repository": {"full_name": "acme/fleet"}})

    assert response.status_code == 202
    [(deployment, parameters, _)] = starts.calls
    assert deployment == RECONCILE_DEPLOYMENT
    assert parameters["request"]["branch"] == "main"
    assert parameters["request"]["expected"] == HEAD


def test_gitlab_merge_request_with_its_token_starts_a_plan(
    receiver: tuple[httpx.Client, Starts],
) -> None:
    client, starts = receiver
    payload = {
        "object_kind": "merge_request",
        "user": {"username": "carl"},
        "project": {"path_with_namespace": "acme/fleet",
                    "web_url": "https://gitlab.example/acme/fleet"},
        "object_attributes": {"iid": 3, "action": "open", "state": "opened",
                              "target_branch": "main", "last_commit": {"id": HEAD}},
    }
    body = json.dumps(payload).encode()

    def send(token: str) -> httpx.Response:
        return client.post("/hooks/gitlab", content=body, headers={
            "X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": token,
            "X-Gitlab-Event-UUID": str(uuid.uuid4())})

    wrong = send("guess")
    right = send(GITLAB_TOKEN)

    assert (wrong.status_code, right.status_code) == (401, 202)
    [(deployment, parameters, _)] = starts.calls
    forge = parameters["request"]["forge"]
    assert deployment == PLAN_DEPLOYMENT
    assert (forge["kind"], forge["api_url"], forge["number"]) == (
        "gitlab", "https://gitlab.example/api/v4", 3)
    assert parameters["request"]["head_ref"] == "refs/merge-requests/3/head"


def test_when_the_run_cannot_start_the_forge_may_redeliver(
    receiver: tuple[httpx.Client, Starts],
) -> None:
    client, starts = receiver
    starts.fail = True
    failed = _github(client, "pull_request", _pr(), delivery="retry-me")
    starts.fail = False
    redelivered = _github(client, "pull_request", _pr(), delivery="retry-me")

    assert (failed.status_code, redelivered.status_code) == (502, 202)
    assert len(starts.calls) == 1
