"""Two revisions of the inventory repository: resolved to commits, and what changed.

A pull request is compared from where it branched (the merge base of base and head), as
the forges show it: commits that reached main after the branch was cut are not the pull
request's changes and must not show up as reverted by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from werft.inventory.tree import InventoryNotFound


@dataclass(frozen=True)
class Revisions:
    base: str  # as given: "main", "origin/main", a sha
    head: str
    base_sha: str  # the merge base of base and head
    head_sha: str
    head_author: str = ""  # the head commit's author name (the default request author)

    @property
    def base_short(self) -> str:
        return self.base_sha[:10]

    @property
    def head_short(self) -> str:
        return self.head_sha[:10]


def resolve(repo_dir: Path, base: str, head: str) -> Revisions:
    """Both refs as commits (InventoryNotFound, a usage error, when one does not exist)."""
    import git

    try:
        repo = git.Repo(repo_dir, search_parent_directories=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise InventoryNotFound(f"{repo_dir} is not a Git repository") from exc
    try:
        commits = []
        for ref in (base, head):
            try:
                commits.append(repo.commit(ref))
            except (git.BadName, ValueError, git.GitCommandError) as exc:
                raise InventoryNotFound(
                    f"revision {ref!r} not found in {repo_dir} (fetch it first if it is only "
                    "on a remote)"
                ) from exc
        base_commit, head_commit = commits
        merge_bases = repo.merge_base(base_commit, head_commit)
        start = merge_bases[0] if merge_bases else base_commit
        return Revisions(
            base, head, start.hexsha, head_commit.hexsha, str(head_commit.author.name or "")
        )
    finally:
        repo.close()


def changed_files(
    repo_dir: Path, revisions: Revisions, folder: PurePosixPath
) -> list[tuple[str, str]]:
    """(change type A/D/M/R/T, path) of every file under ``folder`` that differs."""
    import git

    repo = git.Repo(repo_dir, search_parent_directories=False)
    try:
        base = repo.commit(revisions.base_sha)
        head = repo.commit(revisions.head_sha)
        paths = [] if str(folder) in ("", ".") else [str(folder)]
        found = []
        for item in base.diff(head, paths=paths or None):
            path = item.b_path or item.a_path or ""
            found.append((str(item.change_type or "M"), path))
        return sorted(found, key=lambda entry: entry[1])
    finally:
        repo.close()


def head_sha(repo_dir: Path, ref: str) -> str:
    """The commit ``ref`` names now (InventoryNotFound when it does not exist)."""
    import git

    try:
        repo = git.Repo(repo_dir, search_parent_directories=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise InventoryNotFound(f"{repo_dir} is not a Git repository") from exc
    try:
        return repo.commit(ref).hexsha
    except (git.BadName, ValueError, git.GitCommandError) as exc:
        raise InventoryNotFound(f"revision {ref!r} not found in {repo_dir}") from exc
    finally:
        repo.close()


def fetch(repo_dir: Path, refspecs: list[str], remote: str = "origin") -> bool:
    """Fetch ``refspecs`` from ``remote`` when the repository has one (a mirror of the forge);
    False when it has none (a repository pushed to directly, as in `make up`)."""
    import git

    from werft.errors import TransientError

    repo = git.Repo(repo_dir, search_parent_directories=False)
    try:
        if remote not in [r.name for r in repo.remotes]:
            return False
        try:
            repo.remote(remote).fetch(refspecs)
        except git.GitCommandError as exc:
            # Mostly the network or the forge being away; a later attempt may well work.
            raise TransientError(f"git fetch {remote}: {exc.stderr.strip()[:300]}") from exc
        return True
    finally:
        repo.close()
