"""A local bare repository that behaves like a forge, so a person can try the change loop
on one machine (`make up`): clone it, branch, push.

A ``post-receive`` hook turns each push into the event a forge would send, signed with the
webhook secret, to the local receiver (`werft webhook serve`): a push to ``main`` is a
GitHub-shaped ``push`` (-> reconcile), a push to any other branch a ``pull_request``
opened or synchronized from that branch into main (-> plan-change). The hook never blocks
a push: when the receiver is not up, it says so and the push stands.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shlex
import shutil
import sys
import tempfile
import uuid
import zlib
from pathlib import Path
from typing import Any

import git
import httpx

ZERO = "0" * 40
REPOSITORY = "local/inventory"


def ensure_local_repo(
    path: Path, inventory: Path, *, hook_url: str, secret_ref: str, home: Path
) -> bool:
    """The bare repository at ``path`` with ``main`` holding ``inventory/``; True if created.
    The hook is (re)written every time, so it follows the receiver's URL."""
    created = not (path / "HEAD").exists()
    if created:
        git.Repo.init(path, bare=True, initial_branch="main").close()
        with tempfile.TemporaryDirectory() as tmp:
            work = git.Repo.clone_from(str(path), tmp)
            shutil.copytree(inventory, Path(tmp) / "inventory")
            work.git.add("-A")
            actor = git.Actor("werft demo", "demo@werft.invalid")
            work.index.commit(f"the inventory from {inventory}", author=actor, committer=actor)
            work.git.push("origin", "HEAD:refs/heads/main")
            work.close()
    hook = path / "hooks" / "post-receive"
    hook.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "werft.gitops.localrepo", hook_url, secret_ref]
    # The hook runs in the bare repository: WERFT_HOME names the secret store absolutely.
    env = f"WERFT_HOME={shlex.quote(str(home.resolve()))}"
    line = " ".join(shlex.quote(c) for c in command)
    hook.write_text(f"#!/bin/sh\n{env} exec {line}\n")
    hook.chmod(0o755)
    return created


def events_for(repo: git.Repo, old: str, new: str, ref: str) -> tuple[str, dict[str, Any]] | None:
    """The forge event a pushed ref update stands for (None for a deleted branch, a tag)."""
    if not ref.startswith("refs/heads/") or new == ZERO:
        return None
    branch = ref.removeprefix("refs/heads/")
    if branch == "main":
        return "push", {"ref": ref, "before": old, "after": new,
                        "repository": {"full_name": REPOSITORY}}
    author = str(repo.commit(new).author.name or "unknown")
    number = zlib.crc32(branch.encode()) % 100_000 + 1  # one stable number per branch
    return "pull_request", {
        "action": "opened" if old == ZERO else "synchronize",
        "pull_request": {
            "number": number,
            "state": "open",
            "head": {"sha": new, "ref": branch},
            "base": {"ref": "main"},
            "user": {"login": author},
        },
        "repository": {"full_name": REPOSITORY},
    }


def send(url: str, secret: str, event: str, payload: dict[str, Any]) -> str:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
        "Content-Type": "application/json",
    }
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=10, trust_env=False)
    except httpx.HTTPError as exc:
        return f"the webhook receiver at {url} is not answering ({type(exc).__name__})"
    data = response.json() if response.content else {}
    if data.get("status") == "started":
        return f"{event}: started {data['deployment']} run {data['flow_run_id']}"
    return f"{event}: HTTP {response.status_code} {data.get('reason', '')}"


def main(argv: list[str]) -> int:
    """The post-receive hook: ``<old> <new> <ref>`` lines on stdin."""
    from werft.secrets import resolve

    url, secret_ref = argv
    secret = resolve(secret_ref)
    repo = git.Repo(".")
    for line in sys.stdin:
        old, new, ref = line.split()
        found = events_for(repo, old, new, ref)
        if found is not None:
            print(f"werft: {send(url, secret, *found)}", flush=True)
    return 0  # a push is never refused by the hook


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
