"""`make up`'s change loop: a push to the local bare repository reaches the receiver as a
signed forge event (a real `git push`, its post-receive hook, real HTTP)."""

from __future__ import annotations

from pathlib import Path

import git
import pytest

from tests.gitopsfixtures import serve_asgi
from tests.test_webhook import Starts
from werft.gitops.localrepo import ensure_local_repo
from werft.inventory.generate import write_fleet
from werft.secrets import SecretStore
from werft.webhook import PLAN_DEPLOYMENT, RECONCILE_DEPLOYMENT, WebhookSettings, create_app


def test_pushes_to_the_local_repository_start_plan_and_reconcile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    # The receiver resolves the secret from the same store the hook does.
    monkeypatch.setenv("WERFT_HOME", str(home))
    store = SecretStore(home / "secrets")
    store.put("werft-webhook", "local-secret")
    write_fleet(tmp_path / "inventory", edge_sites=2, near_edge_sites=1, core_sites=0)
    bare = tmp_path / "inventory.git"
    starts = Starts()
    settings = WebhookSettings(repo=str(bare), github_secret_ref="werft-webhook", github_api="")
    with serve_asgi(create_app(settings, starts)) as url:
        assert ensure_local_repo(bare, tmp_path / "inventory", hook_url=f"{url}/hooks/github",
                                 secret_ref="werft-webhook", home=home)
        assert starts.calls == []  # seeding main happens before the hook exists
        clone = git.Repo.clone_from(str(bare), tmp_path / "clone")
        clone.git.switch("-c", "my-change")
        path = tmp_path / "clone" / "inventory" / "addons" / "gitops" / "addonset.yaml"
        path.write_text(path.read_text().replace("logLevel: info", "logLevel: debug", 1))
        clone.git.add("-A")
        actor = git.Actor("erin", "erin@example.test")
        head = clone.index.commit("debug logs", author=actor, committer=actor).hexsha

        pushed = clone.git.push("origin", "my-change", with_extended_output=True)
        clone.git.push("origin", "my-change:main")

    [(plan, plan_params, _), (merge, merge_params, _)] = starts.calls
    assert plan == PLAN_DEPLOYMENT
    request = plan_params["request"]
    assert (request["base"], request["head"], request["author"]) == ("main", head, "erin")
    assert request["forge"] is None  # no forge to comment on: the plan is an artifact
    assert merge == RECONCILE_DEPLOYMENT and merge_params["request"]["expected"] == head
    # The person pushing sees what was started.
    assert "started plan-change/plan-change run" in pushed[2]
