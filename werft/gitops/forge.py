"""Tell the forge what a plan says: a comment on the pull request and a commit status.

A small httpx client for the two REST shapes werft speaks:

  GitHub   POST {api}/repos/{owner}/{repo}/issues/{number}/comments        {"body"}
           PATCH {api}/repos/{owner}/{repo}/issues/comments/{id}          (werft's own comment)
           POST {api}/repos/{owner}/{repo}/statuses/{sha}   {"state", "context", "description"}
  GitLab   POST {api}/projects/{id}/merge_requests/{iid}/notes            {"body"}
           PUT  {api}/projects/{id}/merge_requests/{iid}/notes/{note_id}  (werft's own note)
           POST {api}/projects/{id}/statuses/{sha}          {"state", "name", "description"}

werft updates its own comment (found by a hidden marker) instead of adding one per push.
The token is a secret reference resolved at run time (werft.secrets), never a parameter.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from werft.errors import PermanentError, TransientError
from werft.secrets import resolve

STATUS_CONTEXT = "werft/plan"
TIMEOUT = httpx.Timeout(15.0, connect=5.0)

# A plan's state -> each forge's commit status state.
_GITHUB_STATE = {"success": "success", "denied": "failure", "failure": "error",
                 "pending": "pending"}
_GITLAB_STATE = {"success": "success", "denied": "failed", "failure": "failed",
                 "pending": "pending"}


class ForgeTarget(BaseModel):
    """Where a plan's result goes: a pull (merge) request on GitHub or GitLab."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["github", "gitlab"] = "github"
    api_url: str = Field(description="https://api.github.com, https://gitlab.example/api/v4")
    repository: str = Field(description="owner/name (GitHub), project id or path (GitLab)")
    number: int = Field(ge=1, description="pull request number / merge request iid")
    sha: str = Field(description="the head commit the status is for")
    token_ref: str | None = Field(None, description="secret reference of the API token")
    target_url: str | None = Field(None, description="link for the status (the flow run)")


class ForgeClient:
    """Posts plan comments and statuses to one forge."""

    def __init__(self, target: ForgeTarget) -> None:
        self.target = target
        headers = {"User-Agent": "werft"}
        token = resolve(target.token_ref) if target.token_ref else None
        if target.kind == "github":
            headers["Accept"] = "application/vnd.github+json"
            headers["X-GitHub-Api-Version"] = "2022-11-28"
            if token:
                headers["Authorization"] = f"Bearer {token}"
        elif token:
            headers["PRIVATE-TOKEN"] = token
        self._client = httpx.Client(
            base_url=target.api_url.rstrip("/") + "/",
            headers=headers,
            timeout=TIMEOUT,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ForgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what werft posts ----------------------------------------------------------------

    def comment(self, body: str, marker: str) -> str:
        """Create werft's comment, or update it when one with ``marker`` exists; its URL."""
        existing = self._find_comment(marker)
        base = self._comments_path()
        if existing is None:
            found = self._call("POST", base, {"body": body})
        elif self.target.kind == "github":
            repo = self._github_repo()
            found = self._call("PATCH", f"repos/{repo}/issues/comments/{existing}", {"body": body})
        else:
            found = self._call("PUT", f"{base}/{existing}", {"body": body})
        return str(found.get("html_url") or found.get("id") or "")

    def approvers(self) -> list[str]:
        """Who approved the pull request (GitHub reviews, GitLab approvals); sorted."""
        target = self.target
        if target.kind == "github":
            reviews = self._call(
                "GET",
                f"repos/{self._github_repo()}/pulls/{target.number}/reviews",
                params={"per_page": 100},
            )
            # A reviewer's latest review counts: an approval later dismissed is no approval.
            latest: dict[str, str] = {}
            for review in reviews if isinstance(reviews, list) else []:
                login = ((review or {}).get("user") or {}).get("login")
                if login:
                    latest[login] = str(review.get("state", ""))
            return sorted(login for login, state in latest.items() if state == "APPROVED")
        found = self._call(
            "GET", f"projects/{self._gitlab_project()}/merge_requests/{target.number}/approvals"
        )
        users = [(item.get("user") or {}).get("username") for item in found.get("approved_by", [])]
        return sorted(u for u in users if u)

    def status(self, state: str, description: str) -> None:
        """Set the ``werft/plan`` commit status of the head commit."""
        target = self.target
        text = description[:140]  # GitHub refuses longer descriptions
        if target.kind == "github":
            body: dict[str, Any] = {
                "state": _GITHUB_STATE[state],
                "context": STATUS_CONTEXT,
                "description": text,
            }
            path = f"repos/{self._github_repo()}/statuses/{target.sha}"
        else:
            body = {"state": _GITLAB_STATE[state], "name": STATUS_CONTEXT, "description": text}
            path = f"projects/{self._gitlab_project()}/statuses/{target.sha}"
        if target.target_url:
            body["target_url"] = target.target_url
        self._call("POST", path, body)

    # --- REST plumbing ----------------------------------------------------------------------

    def _comments_path(self) -> str:
        number = self.target.number
        if self.target.kind == "github":
            return f"repos/{self._github_repo()}/issues/{number}/comments"
        return f"projects/{self._gitlab_project()}/merge_requests/{number}/notes"

    def _find_comment(self, marker: str) -> int | None:
        params = {"per_page": 100}
        try:
            items = self._call("GET", self._comments_path(), params=params)
        except PermanentError:
            return None  # cannot list (e.g. a token that may only write): add a comment
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and marker in str(item.get("body") or ""):
                return int(item["id"])
        return None

    def _github_repo(self) -> str:
        owner, _, name = self.target.repository.partition("/")
        return f"{quote(owner, safe='')}/{quote(name, safe='')}"

    def _gitlab_project(self) -> str:
        return quote(self.target.repository, safe="")  # "group/app" -> "group%2Fapp"

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        try:
            response = self._client.request(method, path, json=body, params=params)
        except httpx.TransportError as exc:
            raise TransientError(f"{self.target.kind}: {method} {path}: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            status = response.status_code
            raise TransientError(f"{self.target.kind}: {method} {path}: HTTP {status}")
        if response.is_error:
            raise PermanentError(
                f"{self.target.kind}: {method} {path}: HTTP {response.status_code}: "
                f"{response.text[:200]}"
            )
        return response.json() if response.content else {}
