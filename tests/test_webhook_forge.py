"""The forge client's GitHub and GitLab shapes, against a loopback forge that records."""

from __future__ import annotations

import pytest

from tests.gitopsfixtures import recording_forge
from werft.errors import TransientError
from werft.gitops.forge import ForgeClient, ForgeTarget

SHA = "c" * 40


def test_gitlab_notes_statuses_and_approvals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WERFT_SECRET_GL_API", "glpat-secret")
    with recording_forge() as forge:
        forge.approved_by = ["carl", "bob"]
        target = ForgeTarget(kind="gitlab", api_url=f"{forge.url}/api/v4",
                             repository="acme/fleet", number=3, sha=SHA, token_ref="gl-api")
        with ForgeClient(target) as client:
            approvers = client.approvers()
            client.comment("<!-- m -->\nfirst", "<!-- m -->")
            client.comment("<!-- m -->\nsecond", "<!-- m -->")
            client.status("denied", "DENIED: " + "x" * 300)

    assert approvers == ["bob", "carl"]
    [note] = forge.made("POST", "/api/v4/projects/acme%2Ffleet/merge_requests/3/notes")
    assert note.body == {"body": "<!-- m -->\nfirst"}
    [update] = forge.made("PUT", "/api/v4/projects/acme%2Ffleet/merge_requests/3/notes/1")
    assert update.body == {"body": "<!-- m -->\nsecond"}
    [status] = forge.made("POST", f"/api/v4/projects/acme%2Ffleet/statuses/{SHA}")
    assert status.body["state"] == "failed" and status.body["name"] == "werft/plan"
    assert len(status.body["description"]) == 140
    assert {r.headers["private-token"] for r in forge.requests} == {"glpat-secret"}


def test_github_reviews_and_an_unreachable_forge_is_transient() -> None:
    with recording_forge() as forge:
        target = ForgeTarget(api_url=forge.url, repository="acme/fleet", number=9, sha=SHA)
        forge.approved_by = ["alice"]
        with ForgeClient(target) as client:
            assert client.approvers() == ["alice"]
        gone = ForgeTarget(api_url=f"{forge.url.rsplit(':', 1)[0]}:1", repository="a/b",
                           number=1, sha=SHA)
        with ForgeClient(gone) as client, pytest.raises(TransientError):
            client.status("success", "ok")
