"""YAML files -> raw documents that remember the line of every field.

PyYAML's composer gives each node a start mark; walking the node tree once gives a map
from a field's path (``("spec", "machines", 1, "bootMACAddress")``) to its line, so a
pydantic error ``loc`` or a fleet-wide check can point at the exact line of the field.
The same walk catches what the schema cannot see: duplicate keys (PyYAML silently keeps the
last) and literal secrets anywhere in a document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from werft.errors import Problem
from werft.inventory.rules import (
    FIX_LITERAL_SECRET,
    ref_looks_like_credentials,
    url_has_password,
)
from werft.yamlsafe import SafeLoader

Path_ = tuple[str | int, ...]
_KEY_SHOWN = 64
# Nodes that aliases may add to a document beyond those written in it: reusing a BMC block
# for a hundred machines adds a few hundred; a "billion laughs" adds billions.
ALIAS_EXPANSION_MAX = 10_000

# Keys whose value is, by name, a secret. A reference to one is spelled `...Ref`.
_SECRET_KEY = re.compile(
    r"(?i)^(password|passwd|pwd|pass|secret|token|api[-_]?key|private[-_]?key|"
    r"secret[-_]?key|access[-_]?key|client[-_]?secret|bearer[-_]?token|[a-z]*password)$"
)


def format_path(path: Path_) -> str:
    """``("spec", "machines", 0, "bmc")`` -> ``spec.machines[0].bmc``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = str(part)
            if len(key) > _KEY_SHOWN:  # a hostile key is named by its start, not printed whole
                key = f"{key[:_KEY_SHOWN]}..."
            text += f".{key}" if text else key
    return text


@dataclass
class RawDoc:
    """One YAML document before schema validation."""

    rel: str  # path relative to the inventory root, POSIX
    file: str  # how problems name the file
    index: int  # position of the document in its file
    line: int
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    # Paths already reported as literal secrets; schema errors there would only repeat it.
    secret_paths: set[Path_] = field(default_factory=set)
    # Unquoted scalars YAML did not read as strings (52:54:00:12:34:56 is a base-60 int in
    # YAML 1.1, 1.30 a float): their text as written, for a "quote it" hint.
    plain: dict[Path_, str] = field(default_factory=dict)

    @property
    def kind(self) -> str | None:
        kind = self.data.get("kind") if isinstance(self.data, dict) else None
        return kind if isinstance(kind, str) else None

    @property
    def name(self) -> str | None:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else None

    def line_of(self, path: Path_) -> int:
        """The line of ``path``, or of its nearest ancestor that exists."""
        key = _fold(path)
        for end in range(len(key), 0, -1):
            line = self.lines.get(key[:end])
            if line is not None:
                return line
        return self.line

    def written(self, path: Path_) -> str | None:
        """The text of an unquoted non-string scalar at ``path``, as written."""
        return self.plain.get(_fold(path))

    def problem(self, path: Path_, message: str, fix: str = "") -> Problem:
        return Problem(self.file, self.line_of(path), format_path(path), message, fix)


def _fold(path: Path_) -> Path_:
    # Lines are looked up case-insensitively: the YAML may say bootMacAddress where the
    # schema's canonical spelling is bootMACAddress.
    return tuple(p.lower() if isinstance(p, str) else p for p in path)


def parse_yaml_file(rel: str, file: str, text: str) -> tuple[list[RawDoc], list[Problem]]:
    """Every non-empty document in ``text``; a syntax error is one problem for the file."""
    docs: list[RawDoc] = []
    problems: list[Problem] = []
    try:
        nodes = list(yaml.compose_all(text, Loader=SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = exc.problem or str(exc)
        return [], [Problem(file, line, "yaml", f"not valid YAML: {what}", "fix the YAML syntax")]
    except yaml.YAMLError as exc:
        return [], [Problem(file, None, "yaml", f"not valid YAML: {exc}", "fix the YAML syntax")]
    for index, node in enumerate(nodes):
        if node is None:
            continue
        if isinstance(node, yaml.ScalarNode) and node.value == "" and node.tag.endswith("null"):
            continue  # an empty document between two '---'
        bomb = alias_bomb(node, file)
        if bomb is not None:
            problems.append(bomb)  # nothing else of this document is looked at
            continue
        doc = RawDoc(rel, file, index, node.start_mark.line + 1, None)
        _walk(node, (), doc, problems, depth=0)
        try:
            doc.data = SafeConstructor().construct_document(node)
        except yaml.YAMLError as exc:
            problems.append(Problem(file, doc.line, "yaml", f"not valid YAML: {exc}", ""))
            continue
        docs.append(doc)
    return docs, problems


def alias_bomb(root: yaml.Node, file: str) -> Problem | None:
    """A Problem if aliases make ``root`` expand past ``ALIAS_EXPANSION_MAX`` nodes more than
    it holds (a "billion laughs"), or refer to themselves; None for an ordinary document.

    The composer shares an anchored node among its aliases, so the node graph stays as small
    as the text; the expansion happens in whoever walks it as a tree (the constructor's
    consumers, pydantic, the line walk). Sizes are counted on the graph, each node once,
    without recursion, before anything walks it.
    """
    children = _children
    distinct = _count_distinct(root)
    limit = distinct + ALIAS_EXPANSION_MAX
    size: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_stack.discard(key)
            total = 1 + sum(size[id(child)] for child in children(node))
            size[key] = min(total, limit + 1)  # capped: past the limit the value is moot
            if total > limit:
                return Problem(
                    file,
                    node.start_mark.line + 1,
                    "yaml",
                    f"aliases (*name) expand the value at this line to more than "
                    f"{limit:,} nodes, over {ALIAS_EXPANSION_MAX:,} more than the document "
                    "holds (a 'billion laughs'); it was not read further",
                    "write the values out, or use fewer and smaller anchors and aliases",
                )
            continue
        if key in size:
            continue
        on_stack.add(key)
        stack.append((node, True))
        for child in children(node):
            if id(child) in on_stack:
                return Problem(
                    file,
                    child.start_mark.line + 1,
                    "yaml",
                    "an alias refers to the value that contains it (a recursive anchor)",
                    "replace the alias with the values it should hold",
                )
            if id(child) not in size:
                stack.append((child, False))
    return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _count_distinct(root: yaml.Node) -> int:
    seen: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) not in seen:
            seen.add(id(node))
            pending += _children(node)
    return len(seen)


def _walk(node: yaml.Node, path: Path_, doc: RawDoc, problems: list[Problem], depth: int) -> None:
    """Record lines; report duplicate keys and literal secrets."""
    if depth > 64:  # an alias cycle; the constructor will complain in its own words
        return
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            child = (*path, key)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    doc_problem(
                        doc,
                        child,
                        line,
                        f"duplicate key (first at line {seen[key]})",
                        "keep one of them: YAML would silently use the last",
                    )
                )
            seen.setdefault(key, line)
            doc.lines.setdefault(_fold(child), line)
            _check_secret(key, value_node, child, line, doc, problems)
            _walk(value_node, child, doc, problems, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            doc.lines.setdefault(_fold(child), item.start_mark.line + 1)
            _walk(item, child, doc, problems, depth + 1)
    elif isinstance(node, yaml.ScalarNode) and not node.style and not node.tag.endswith(":str"):
        # plain (unquoted) style is None in PyYAML and "" in libyaml
        doc.plain[_fold(path)] = node.value
    elif (
        isinstance(node, yaml.ScalarNode)
        and url_has_password(node.value)
        and path not in doc.secret_paths
    ):
        doc.secret_paths.add(path)
        problems.append(
            doc_problem(
                doc,
                path,
                node.start_mark.line + 1,
                "URL has credentials written into it (user:password@)",
                FIX_LITERAL_SECRET,
            )
        )


def _check_secret(
    key: object, value: yaml.Node, path: Path_, line: int, doc: RawDoc, problems: list[Problem]
) -> None:
    if not isinstance(key, str) or not isinstance(value, yaml.ScalarNode) or value.value == "":
        return
    if _SECRET_KEY.match(key):
        message = f"'{key}' holds a literal secret; the inventory may only reference secrets"
    elif key == "credentialsRef" and ref_looks_like_credentials(value.value):
        message = "credentialsRef looks like 'user:password', a literal credential"
    else:
        return
    doc.secret_paths.add(path)
    problems.append(doc_problem(doc, path, line, message, FIX_LITERAL_SECRET))


def doc_problem(doc: RawDoc, path: Path_, line: int, message: str, fix: str) -> Problem:
    # The secret's value is never echoed: the message names the field only.
    return Problem(doc.file, line, format_path(path), message, fix)
