"""The signed-webhook receiver: forge events -> Prefect runs, through Prefect's REST API.

Prefect's open-source server has no incoming webhooks (they are a Cloud feature), so werft
brings this small starlette app (`werft webhook serve`). Per request, in this order:

  1. size: a body over ``max_body_bytes`` is 413, read no further than the limit;
  2. signature: GitHub's ``X-Hub-Signature-256`` (HMAC-SHA256 of the body) or GitLab's
     ``X-Gitlab-Token``, compared in constant time with the secret the reference resolves
     to now (so a rotated secret needs no restart); anything else is 401 and starts nothing;
  3. replay: a delivery id (``X-GitHub-Delivery``, ``X-Gitlab-Event-UUID``) already acted on
     is 409; the id is also the run's idempotency key, so the Prefect server refuses a
     second run for it even when another receiver replica saw the first delivery;
  4. the event: a pull / merge request starts ``plan-change/plan-change``; a push to the
     main branch starts ``reconcile/reconcile``; other events are 202 and start nothing;
     a known event with a malformed payload is 400.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from werft.errors import WerftError
from werft.gitops.events import Forge, MalformedEvent, PullRequestEvent, PushEvent, parse
from werft.secrets import resolve

log = logging.getLogger("werft.webhook")

PLAN_DEPLOYMENT = "plan-change/plan-change"
RECONCILE_DEPLOYMENT = "reconcile/reconcile"
MAX_BODY_BYTES = 1 << 20  # 1 MiB: PR and push payloads are a few tens of KiB
SEEN_IDS = 10_000  # delivery ids remembered (oldest forgotten first)

# (deployment "flow/deployment", parameters, delivery id) -> the flow run's id. The one
# `werft webhook serve` uses is flows.api.WebhookStarter: the REST API, the delivery id as
# the run's idempotency key, a busy server asked again for a few seconds.
Starter = Callable[[str, dict[str, Any], str], str]


@dataclass(frozen=True)
class WebhookSettings:
    repo: str  # the local clone (or bare repository) plans and reconciles read
    inventory: str = "inventory"
    main_branch: str = "main"
    github_secret_ref: str | None = None  # the webhook secret, by reference
    gitlab_token_ref: str | None = None
    github_api: str = "https://api.github.com"
    gitlab_api: str | None = None  # default: from the project's web_url
    forge_token_ref: str | None = None  # the API token plans comment with, by reference
    max_body_bytes: int = MAX_BODY_BYTES


class _Seen:
    """Delivery ids already acted on, the oldest forgotten first (bounded memory)."""

    def __init__(self, size: int = SEEN_IDS) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def __contains__(self, key: str) -> bool:
        return key in self._ids

    def add(self, key: str) -> None:
        self._ids[key] = None
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)


class _TooLarge(Exception):
    pass


def create_app(settings: WebhookSettings, starter: Starter) -> Starlette:
    """The receiver: POST /hooks/github, POST /hooks/gitlab, GET /healthz."""
    seen = _Seen()

    async def github(request: Request) -> JSONResponse:
        return await _receive(request, "github", settings, starter, seen)

    async def gitlab(request: Request) -> JSONResponse:
        return await _receive(request, "gitlab", settings, starter, seen)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/hooks/github", github, methods=["POST"]),
            Route("/hooks/gitlab", gitlab, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


async def _receive(
    request: Request, forge: Forge, settings: WebhookSettings, starter: Starter, seen: _Seen
) -> JSONResponse:
    try:
        body = await _read_bounded(request, settings.max_body_bytes)
    except _TooLarge:
        return _answer(413, "refused", f"body over {settings.max_body_bytes} bytes")
    if not _signed(request, forge, body, settings):
        log.warning("webhook %s: bad or missing signature; nothing started", forge)
        return _answer(401, "refused", "bad or missing signature")
    delivery = request.headers.get(
        "x-github-delivery" if forge == "github" else "x-gitlab-event-uuid", ""
    )
    if not delivery or len(delivery) > 128:
        return _answer(400, "refused", "no delivery id")
    if delivery in seen:
        return _answer(409, "refused", f"delivery {delivery} was already received (a replay)")
    kind = request.headers.get("x-github-event" if forge == "github" else "x-gitlab-event", "")
    try:
        payload = json.loads(body)
        event = parse(forge, kind, payload)
    except (ValueError, MalformedEvent) as exc:  # JSONDecodeError is a ValueError
        return _answer(400, "refused", f"malformed {kind or 'event'} payload: {exc}")
    if event is None:
        seen.add(delivery)
        return _answer(202, "ignored", f"{kind or 'event'}: nothing for werft to do")
    if isinstance(event, PushEvent) and event.branch != settings.main_branch:
        seen.add(delivery)
        return _answer(202, "ignored", f"push to {event.branch}, not {settings.main_branch}")
    deployment, parameters = _run_for(event, settings)
    try:
        run_id = await run_in_threadpool(starter, deployment, parameters, delivery)
    except (WerftError, KeyError, ValueError) as exc:
        # Not marked as seen: the forge's redelivery of this id should succeed.
        log.error("webhook %s: could not start %s: %s", forge, deployment, exc)
        return _answer(502, "error", f"could not start {deployment}: {type(exc).__name__}")
    seen.add(delivery)
    log.info("webhook %s %s (%s): started %s run %s", forge, kind, delivery, deployment, run_id)
    return JSONResponse(
        {"status": "started", "deployment": deployment, "flow_run_id": run_id}, status_code=202
    )


async def _read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge  # refused before reading a byte of it
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def _signed(request: Request, forge: Forge, body: bytes, settings: WebhookSettings) -> bool:
    ref = settings.github_secret_ref if forge == "github" else settings.gitlab_token_ref
    if not ref:
        return False  # a forge without a configured secret is not accepted at all
    try:
        secret = resolve(ref).encode()
    except WerftError:
        log.error("webhook %s: secret reference %s resolves to nothing", forge, ref)
        return False
    if forge == "github":
        given = request.headers.get("x-hub-signature-256", "").encode()
        expected = b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        return hmac.compare_digest(given, expected)
    return hmac.compare_digest(request.headers.get("x-gitlab-token", "").encode(), secret)


def _run_for(
    event: PullRequestEvent | PushEvent, settings: WebhookSettings
) -> tuple[str, dict[str, Any]]:
    if isinstance(event, PushEvent):
        request = {
            "repo": settings.repo,
            "inventory": settings.inventory,
            "branch": event.branch,
            "expected": event.after,
        }
        return RECONCILE_DEPLOYMENT, {"request": request}
    api_url = settings.github_api if event.forge == "github" else (
        settings.gitlab_api or event.api_url
    )
    forge = None
    if api_url:
        forge = {
            "kind": event.forge,
            "api_url": api_url,
            "repository": event.repository,
            "number": event.number,
            "sha": event.head_sha,
            "token_ref": settings.forge_token_ref,
        }
    request = {
        "repo": settings.repo,
        "inventory": settings.inventory,
        "base": event.base,
        "head": event.head_sha,
        "head_ref": event.head_ref,
        "author": event.author,
        "forge": forge,
    }
    return PLAN_DEPLOYMENT, {"request": request}


def _answer(status: int, state: str, reason: str) -> JSONResponse:
    return JSONResponse({"status": state, "reason": reason}, status_code=status)
