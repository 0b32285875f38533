"""Forge webhook payloads -> what werft should do: plan a pull request, or reconcile a push.

Only the fields werft needs are read, from the documented shapes of
GitHub (``X-GitHub-Event: pull_request | pull_request_review | push``) and
GitLab (``X-Gitlab-Event: Merge Request Hook | Push Hook``). Anything else is not for werft
(``None``: the receiver answers 202 and starts nothing); a payload of a known event that
lacks a field werft needs is malformed (``MalformedEvent``: 400).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

Forge = Literal["github", "gitlab"]

# Actions that change what a pull request would merge, or who approved it.
_GITHUB_PR_ACTIONS = {"opened", "synchronize", "reopened", "ready_for_review", "edited"}
_GITLAB_MR_ACTIONS = {
    "open", "update", "reopen", "approved", "unapproved", "approval", "unapproval"
}


class MalformedEvent(ValueError):
    """A known event whose payload lacks what werft needs."""


@dataclass(frozen=True)
class PullRequestEvent:
    forge: Forge
    repository: str  # owner/name (GitHub), group/project path (GitLab)
    number: int
    base: str  # the target branch
    head_sha: str
    head_ref: str  # the forge's ref for the head: refs/pull/7/head, refs/merge-requests/7/head
    author: str
    api_url: str | None  # GitLab: derived from the project's URL; GitHub: configured


@dataclass(frozen=True)
class PushEvent:
    forge: Forge
    repository: str
    branch: str
    after: str  # the new head commit


Event = PullRequestEvent | PushEvent


def parse(forge: Forge, event: str, payload: Any) -> Event | None:
    """The event werft acts on, or None for events it ignores."""
    if not isinstance(payload, dict):
        raise MalformedEvent("the payload is not a JSON object")
    try:
        if forge == "github":
            return _github(event, payload)
        return _gitlab(event, payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEvent(f"{event} payload lacks {exc}") from exc


def _github(event: str, payload: dict[str, Any]) -> Event | None:
    if event in ("pull_request", "pull_request_review"):
        action = payload["action"]
        if event == "pull_request" and action not in _GITHUB_PR_ACTIONS:
            return None
        if event == "pull_request_review" and action not in ("submitted", "dismissed"):
            return None
        pr = payload["pull_request"]
        if pr.get("state", "open") != "open":
            return None
        number = int(pr["number"])
        return PullRequestEvent(
            forge="github",
            repository=str(payload["repository"]["full_name"]),
            number=number,
            base=str(pr["base"]["ref"]),
            head_sha=_sha(pr["head"]["sha"]),
            head_ref=f"refs/pull/{number}/head",
            author=str(pr["user"]["login"]),
            api_url=None,
        )
    if event == "push":
        ref = str(payload["ref"])
        if not ref.startswith("refs/heads/") or payload.get("deleted"):
            return None
        return PushEvent(
            "github",
            str(payload["repository"]["full_name"]),
            ref.removeprefix("refs/heads/"),
            _sha(payload["after"]),
        )
    return None


def _gitlab(event: str, payload: dict[str, Any]) -> Event | None:
    if event == "Merge Request Hook":
        attrs = payload["object_attributes"]
        if attrs.get("action") not in _GITLAB_MR_ACTIONS or attrs.get("state") != "opened":
            return None
        project = payload["project"]
        iid = int(attrs["iid"])
        return PullRequestEvent(
            forge="gitlab",
            repository=str(project["path_with_namespace"]),
            number=iid,
            base=str(attrs["target_branch"]),
            head_sha=_sha(attrs["last_commit"]["id"]),
            head_ref=f"refs/merge-requests/{iid}/head",
            author=str(payload["user"]["username"]),
            api_url=_gitlab_api(str(project.get("web_url") or "")),
        )
    if event == "Push Hook":
        ref = str(payload["ref"])
        after = payload.get("checkout_sha") or payload["after"]
        if not ref.startswith("refs/heads/") or not after or set(str(after)) == {"0"}:
            return None  # a deleted branch
        return PushEvent(
            "gitlab",
            str(payload["project"]["path_with_namespace"]),
            ref.removeprefix("refs/heads/"),
            _sha(after),
        )
    return None


def _sha(value: Any) -> str:
    text = str(value)
    if not (7 <= len(text) <= 64) or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"a commit id (got {text[:20]!r})")
    return text


def _gitlab_api(web_url: str) -> str | None:
    parts = urlsplit(web_url)
    return f"{parts.scheme}://{parts.netloc}/api/v4" if parts.scheme and parts.netloc else None
