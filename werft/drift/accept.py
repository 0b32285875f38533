"""``werft drift accept ID``: make a finding's live value the desired one, in the inventory.

The inventory is the source of truth, so accepting drift is an inventory change a person
reviews: a Git branch (turned into a pull request) or a patch file, never a write to a
cluster. For an add-on field, werft finds the add-on value (or version) the field is
rendered from -- it tries each value of the add-on whose rendering contains the desired
value, changes it to give the live one, renders again and keeps the change that yields
exactly the live value -- and edits that one YAML scalar in the AddonSet file, keeping
its comments and layout. The changed inventory must load and validate before anything is
written. A field written literally in a template is not a value: the message names the
template to change instead.

AddonSets are shared: the change applies to every cluster with the set, which the message
says (those not in the finding change at their next provisioning).
"""

from __future__ import annotations

import difflib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from werft.drift.findings import Kind
from werft.drift.paths import MISSING, value_at
from werft.drift.state import DriftState
from werft.drift.triage import FindingGroup
from werft.errors import InventoryError, WerftError
from werft.inventory.load import load_inventory
from werft.inventory.resolved import Inventory
from werft.kube import describe
from werft.render.addons import render_addons

ValuePath = tuple[str | int, ...]  # ("values", "backend") or ("version",)


class AcceptError(WerftError):
    """The finding cannot be accepted as it is; the message says what to do instead."""


@dataclass
class Change:
    file: str  # relative to the inventory root
    where: ValuePath
    old: Any
    new: Any
    before: str
    after: str


def accept(gid: str, inventory_root: Path, *, home: Path, patch: Path | None = None,
           branch: str | None = None) -> str:
    report = DriftState(home).last_report()
    group = report.group(gid) if report else None
    if group is None:
        raise AcceptError(f"no finding {gid!r} in the last drift report (run `werft drift`)")
    inventory = _load(inventory_root)
    change = find_change(group, inventory, inventory_root)
    note = _reach(group, inventory)
    if patch is not None or not _in_git(inventory_root):
        target = patch or Path(f"drift-accept-{group.id}.patch")
        target.write_text(unified_diff(change, inventory_root))
        return f"wrote {target}: {_what(change)}. {note}"
    name = branch or f"werft/drift-accept-{group.id}"
    commit = commit_on_branch(change, inventory_root, name, group.headline())
    return f"committed {commit[:12]} on branch {name}: {_what(change)}. {note}"


def find_change(group: FindingGroup, inventory: Inventory, root: Path) -> Change:
    f = group.finding
    if f.kind is not Kind.FIELD:
        raise AcceptError(f"{f.describe()}: only an add-on field's value can be accepted "
                          "into the inventory; fix this one in the fleet or the inventory")
    cluster = inventory.clusters.get(group.clusters[0])
    addon_set = inventory.addon_sets.get(f.addon_set)
    if cluster is None or addon_set is None:
        raise AcceptError(f"{group.id}: the inventory no longer has cluster "
                          f"{group.clusters[0]!r} or AddonSet {f.addon_set!r}")
    index = next((i for i, a in enumerate(addon_set.spec.addons) if a.name == f.addon), None)
    if index is None:
        raise AcceptError(f"AddonSet {f.addon_set!r} no longer has add-on {f.addon!r}")
    try:
        live = json.loads(f.live) if f.live != "(absent)" else MISSING
    except ValueError:  # a Secret's (hidden) or a redacted value: never taken from a cluster
        raise AcceptError(f"{f.object} {f.field}: its live value is not shown (a secret); "
                          "put the value in the secret store and the inventory by hand") from None
    desired = _rendered(inventory, cluster.name, f.object, f.field)
    source = inventory.sources[("AddonSet", f.addon_set)].file
    text = (root / source).read_text()
    addon = addon_set.spec.addons[index]
    tried = []
    for where, old, new in _candidates(addon.model_dump(include={"values", "version"}),
                                       desired, live):
        after = edit_scalar(text, f.addon_set, (*("spec", "addons", index), *where), new)
        if after is None:
            continue
        tried.append(".".join(map(str, where)))
        changed = _try(root, source, after, cluster.name, f.object, f.field)
        if changed is not None and _same(changed, live):
            return Change(source, where, old, new, text, after)
    templates = f.template or "its template"
    raise AcceptError(
        f"{f.field} of {f.object} does not come from a value of add-on {f.addon!r}"
        + (f" (tried {', '.join(tried)})" if tried else "")
        + f": change it in {templates} and open a pull request"
    )


def _candidates(addon: dict[str, Any], desired: Any, live: Any) -> Iterator[
        tuple[ValuePath, Any, Any]]:
    """(where, old, new) for each value that could render ``desired`` as ``live``."""
    for where, old in _leaves(addon, ()):
        new = _invert(old, desired, live)
        if new is not None and new != old:
            yield where, old, new


def _leaves(node: Any, where: ValuePath) -> Iterator[tuple[ValuePath, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*where, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*where, i))
    else:
        yield where, node


def _invert(old: Any, desired: Any, live: Any) -> Any:
    """The value that renders ``live`` where ``old`` rendered ``desired``, or None."""
    if isinstance(desired, list) and isinstance(live, list) and len(desired) == len(live):
        differ = [(d, v) for d, v in zip(desired, live, strict=True) if d != v]
        return _invert(old, *differ[0]) if len(differ) == 1 else None
    if old == desired and not isinstance(old, bool | dict | list):
        return live if type(live) is type(old) or not isinstance(old, str) else str(live)
    if not (isinstance(old, str) and isinstance(desired, str) and isinstance(live, str)):
        return None
    # The changed span of the text must lie inside one occurrence of the value.
    prefix = len(_common_prefix(desired, live))
    suffix = len(_common_prefix(desired[prefix:][::-1], live[prefix:][::-1]))
    start = desired.find(old)
    while start >= 0:
        end = start + len(old)
        if start <= prefix and end >= len(desired) - suffix:
            return live[start : len(live) - (len(desired) - end)]
        start = desired.find(old, start + 1)
    return None


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _rendered(inventory: Inventory, cluster: str, what: str, field: str) -> Any:
    for obj in render_addons(inventory.clusters[cluster], inventory):
        if describe(obj) == what:
            return value_at(obj, field)
    raise AcceptError(f"the inventory no longer renders {what} for {cluster}")


def _try(root: Path, source: str, text: str, cluster: str, what: str, field: str) -> Any:
    """The field as the changed inventory renders it (None if it does not validate)."""
    with tempfile.TemporaryDirectory(prefix="werft-accept-") as tmp:
        copy = Path(tmp) / "inventory"
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".git"))
        (copy / source).write_text(text)
        try:
            changed = load_inventory(copy)
        except InventoryError:
            return None
        if cluster not in changed.clusters:
            return None
        return _rendered(changed, cluster, what, field)


def edit_scalar(text: str, set_name: str, where: ValuePath, value: Any) -> str | None:
    """``text`` with the scalar at ``where`` in AddonSet ``set_name``'s document replaced
    by ``value``, everything else (comments, order, quoting elsewhere) as it was."""
    offset = 0
    for chunk in _documents(text):
        node = yaml.compose(chunk)
        if _is_addon_set(node, set_name):
            target = _node_at(node, where)
            if not isinstance(target, yaml.ScalarNode):
                return None
            start, end = target.start_mark.index, target.end_mark.index
            new = json.dumps(value) if isinstance(value, str) else yaml.safe_dump(
                value, default_flow_style=True).removesuffix("\n...\n").strip()
            return text[: offset + start] + new + text[offset + end :]
        offset += len(chunk)
    return None


def _documents(text: str) -> list[str]:
    """The text split at ``---`` lines, each keeping its own characters (offsets add up)."""
    parts, current = [], []
    for line in text.splitlines(keepends=True):
        if line.rstrip() == "---" and current:
            parts.append("".join(current))
            current = []
        current.append(line)
    parts.append("".join(current))
    return parts


def _is_addon_set(node: Any, name: str) -> bool:
    if not isinstance(node, yaml.MappingNode):
        return False
    kind = _node_at(node, ("kind",))
    meta = _node_at(node, ("metadata", "name"))
    return getattr(kind, "value", None) == "AddonSet" and getattr(meta, "value", None) == name


def _node_at(node: Any, where: ValuePath) -> Any:
    for step in where:
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            node = next((v for k, v in node.value if k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            node = node.value[step] if step < len(node.value) else None
        else:
            return None
        if node is None:
            return None
    return node


def unified_diff(change: Change, root: Path) -> str:
    rel = _repo_relative(root / change.file)
    return "".join(difflib.unified_diff(
        change.before.splitlines(keepends=True), change.after.splitlines(keepends=True),
        fromfile=f"a/{rel}", tofile=f"b/{rel}",
    ))


def commit_on_branch(change: Change, root: Path, branch: str, headline: str) -> str:
    """Commit the change on a new branch from HEAD, in a temporary worktree: the person's
    checkout (and whatever they have uncommitted in it) is left alone."""
    import git

    repo = git.Repo(root, search_parent_directories=True)
    if branch in [h.name for h in repo.heads]:
        raise AcceptError(f"branch {branch!r} exists already; give another with --branch")
    rel = Path(root / change.file).resolve().relative_to(Path(repo.working_tree_dir or ".")
                                                         .resolve())
    with tempfile.TemporaryDirectory(prefix="werft-accept-") as tmp:
        tree = Path(tmp) / "tree"
        repo.git.worktree("add", "-b", branch, str(tree), "HEAD")
        try:
            work = git.Repo(tree)
            target = tree / rel
            if not target.exists() or target.read_text() != change.before:
                raise AcceptError(f"{rel} differs between HEAD and the working tree; commit "
                                  "it first, or use --patch")
            target.write_text(change.after)
            work.index.add([str(rel)])
            message = f"drift: accept the live value\n\n{headline}\n\n{_what(change)}\n"
            commit = work.index.commit(message)
        except BaseException:
            repo.git.worktree("remove", "--force", str(tree))
            repo.git.branch("-D", branch)
            raise
        repo.git.worktree("remove", "--force", str(tree))
    return commit.hexsha


def _repo_relative(path: Path) -> str:
    try:
        import git

        repo = git.Repo(path.parent, search_parent_directories=True)
        return str(path.resolve().relative_to(Path(repo.working_tree_dir or ".").resolve()))
    except Exception:  # no repository: relative to the current directory
        return str(path)


def _in_git(root: Path) -> bool:
    try:
        import git

        git.Repo(root, search_parent_directories=True)
    except Exception:
        return False
    return True


def _load(root: Path) -> Inventory:
    try:
        return load_inventory(root)
    except InventoryError as exc:
        raise AcceptError(f"the inventory {root} is invalid now; fix it first: "
                          f"{exc.problems[0] if exc.problems else exc}") from None


def _what(change: Change) -> str:
    where = ".".join(str(p) for p in change.where)
    return f"{change.file}: {where} {json.dumps(change.old)} -> {json.dumps(change.new)}"


def _reach(group: FindingGroup, inventory: Inventory) -> str:
    users = [c.name for c in inventory.clusters.values()
             if group.finding.addon_set in c.addon_sets]
    others = len(set(users) - set(group.clusters))
    if not others:
        return f"All {len(users)} clusters with AddonSet {group.finding.addon_set} had it."
    return (f"AddonSet {group.finding.addon_set} is on {others} more cluster(s) than the "
            f"finding's {group.count}: they change at their next provisioning.")
