"""Where inventory files come from: a folder on disk, or a folder at a Git revision.

Both sources answer the same two questions -- which files are there, and what bytes does one
hold -- so nothing after this module knows whether it is reading a working tree or history.
Git revisions are read blob by blob through GitPython's object database: no checkout, no
worktree, no index change, so validating ``HEAD~3`` is safe while someone edits the folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Protocol

from werft.errors import WerftError

_CHUNK = 2**20  # bytes per piece when a file is scanned rather than held whole


class InventoryNotFound(WerftError):
    """The inventory folder, repository or revision does not exist (a usage error)."""


class Tree(Protocol):
    """A read-only view of an inventory folder. Paths are POSIX, relative to the root."""

    origin: str  # "inventory" or "/repo@HEAD~1", shown to people

    def files(self) -> list[str]: ...

    def read(self, rel: str) -> bytes: ...

    def size(self, rel: str) -> int:
        """The file's size in bytes, without reading it."""
        ...

    def chunks(self, rel: str) -> Iterator[bytes]:
        """The file's bytes a piece at a time (to look into a file too big to hold)."""
        ...

    def exists(self, rel: str) -> bool: ...

    def close(self) -> None:
        """Release what reading needed (Git helper processes); a folder needs nothing."""
        ...

    def display(self, rel: str) -> str:
        """How a file is named in problems, e.g. ``inventory/sites/fra1.yaml``."""
        ...


def _skipped(parts: tuple[str, ...]) -> bool:
    # Hidden folders (.git, .werft) and editor droppings never hold inventory documents.
    return any(part.startswith(".") for part in parts)


class DirTree:
    """An inventory folder on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.origin = str(root)

    def files(self) -> list[str]:
        found = []
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # never descend into .git
            base = Path(folder).relative_to(self.root)
            found += [(base / n).as_posix() for n in names if not n.startswith(".")]
        return sorted(found)

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def size(self, rel: str) -> int:
        return (self.root / rel).stat().st_size

    def chunks(self, rel: str) -> Iterator[bytes]:
        with (self.root / rel).open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                yield chunk

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def close(self) -> None:
        pass

    def display(self, rel: str) -> str:
        return (PurePosixPath(self.root.as_posix()) / rel).as_posix()


class GitTree:
    """An inventory folder as it was at a Git revision, read from blobs."""

    def __init__(self, repo_dir: Path, folder: PurePosixPath, ref: str) -> None:
        import git  # GitPython is only needed when a revision is asked for

        try:
            self._repo = git.Repo(repo_dir, search_parent_directories=False)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise InventoryNotFound(f"{repo_dir} is not a Git repository") from exc
        try:
            commit = self._repo.commit(ref)
        except (git.BadName, ValueError, git.GitCommandError) as exc:
            self.close()
            raise InventoryNotFound(
                f"revision {ref!r} not found in {repo_dir} (give a branch, tag or commit "
                "that `git rev-parse` knows; fetch it first if it is only on a remote)"
            ) from exc
        tree = commit.tree
        if str(folder) not in ("", "."):
            try:
                tree = tree / str(folder)
            except KeyError as exc:
                self.close()
                raise InventoryNotFound(f"{folder}/ does not exist at {ref} in {repo_dir}") from exc
            if tree.type != "tree":
                self.close()
                raise InventoryNotFound(f"{folder} is not a folder at {ref} in {repo_dir}")
        self.ref = ref
        self.folder = folder if str(folder) not in ("", ".") else PurePosixPath()
        self.origin = f"{repo_dir}@{ref}"
        self._blobs = {
            rel: item for item, rel in self._walk(tree) if not _skipped(PurePosixPath(rel).parts)
        }

    @staticmethod
    def _walk(tree: object) -> Iterator[tuple[object, str]]:
        root_path = tree.path  # type: ignore[attr-defined]
        for item in tree.traverse():  # type: ignore[attr-defined]
            if item.type == "blob":
                rel = PurePosixPath(item.path).relative_to(root_path) if root_path else item.path
                yield item, str(rel)

    def files(self) -> list[str]:
        return sorted(self._blobs)

    def read(self, rel: str) -> bytes:
        return self._blobs[rel].data_stream.read()  # type: ignore[attr-defined]

    def size(self, rel: str) -> int:
        return int(self._blobs[rel].size)  # type: ignore[attr-defined]

    def chunks(self, rel: str) -> Iterator[bytes]:
        stream = self._blobs[rel].data_stream  # type: ignore[attr-defined]
        try:
            while chunk := stream.read(_CHUNK):
                yield chunk
        finally:
            # git cat-file serves every blob through one pipe: a blob left half-read would
            # be read as the start of the next one, so the rest is drained (and dropped).
            while stream.read(_CHUNK):
                pass

    def exists(self, rel: str) -> bool:
        return rel in self._blobs

    def display(self, rel: str) -> str:
        # git's own notation for "this file at that revision": HEAD~1:inventory/sites/a.yaml
        return f"{self.ref}:{(self.folder / rel).as_posix()}"

    def close(self) -> None:
        """Stop the git cat-file helpers GitPython keeps running."""
        self._repo.close()


def open_tree(path: Path | str, *, git_ref: str | None = None, repo: Path | None = None) -> Tree:
    """The inventory at ``path`` on disk, or at revision ``git_ref`` of a Git repository.

    With ``git_ref``, a relative ``path`` is relative to ``repo`` when one is given (the folder
    need not exist in the working tree), otherwise to the current directory; ``repo``
    defaults to the repository that contains ``path``.
    """
    path = Path(path)
    if git_ref is None:
        if path.exists() and not path.is_dir():
            raise InventoryNotFound(
                f"{path} is a file, not a folder: give the inventory folder (the one that "
                "holds fleet.yaml)"
            )
        if not path.is_dir():
            raise InventoryNotFound(
                f"inventory folder {path} does not exist (give the folder that holds "
                "fleet.yaml; the default is ./inventory)"
            )
        return DirTree(path)
    if repo is not None:
        repo_dir = Path(repo).resolve()
        absolute = path if path.is_absolute() else repo_dir / path
    else:
        absolute = path.resolve()
        repo_dir = _repo_root(absolute)
    try:
        folder = PurePosixPath(absolute.resolve().relative_to(repo_dir).as_posix())
    except ValueError as exc:
        raise InventoryNotFound(f"{path} is not inside the repository {repo_dir}") from exc
    return GitTree(repo_dir, folder, git_ref)


def _repo_root(start: Path) -> Path:
    """The working-tree root of the repository holding ``start`` (which may not exist now)."""
    probe = start
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    for candidate in (probe, *probe.parents):
        if (candidate / ".git").exists():
            return candidate
    raise InventoryNotFound(f"{start} is not inside a Git repository (give --repo)")
