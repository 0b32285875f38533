"""Reading a field path (``.spec.template.spec.containers[name="app"].image``) back.

``changed_paths`` writes paths as the API server does; this module walks them again: into
an object, for the desired and the live value, and into a ``managedFields`` entry's
``fieldsV1`` set, to find which field manager owns a field (``f:spec`` / ``f:replicas``,
list items by key as ``k:{"name":"app"}``, by position never: lists without a merge key
are atomic, owned as a whole).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# .key | ["quoted key"] | [key=value] | [0]
_TOKEN = re.compile(
    r'\.(?P<plain>[A-Za-z0-9_-]+)|\["(?P<quoted>(?:[^"\\]|\\.)*)"\]'
    r"|\[(?P<mkey>[A-Za-z0-9_]+)=(?P<mval>\"(?:[^\"\\]|\\.)*\"|[^\]]*)\]|\[(?P<index>\d+)\]"
)

MISSING: Any = object()  # the path leads nowhere in this object


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # "field" | "key" | "index"
    name: str = ""
    value: Any = None
    index: int = 0


def parse(path: str) -> list[Step]:
    """The steps of a path; ``.`` (the whole object) has none."""
    steps: list[Step] = []
    pos = 0
    if path == ".":
        return steps
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if match is None:
            raise ValueError(f"cannot read field path {path!r} at {path[pos:]!r}")
        if match["plain"] is not None:
            steps.append(Step("field", match["plain"]))
        elif match["quoted"] is not None:
            steps.append(Step("field", json.loads(f'"{match["quoted"]}"')))
        elif match["mkey"] is not None:
            raw = match["mval"]
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            steps.append(Step("key", match["mkey"], value))
        else:
            steps.append(Step("index", index=int(match["index"])))
        pos = match.end()
    return steps


def server_text(path: str) -> str:
    """The path as an API server writes it in conflict causes: field names unquoted
    (``.data.net-conf.json``), list items by key (``[name="app"]``)."""
    out = ""
    for step in parse(path):
        if step.kind == "field":
            out += f".{step.name}"
        elif step.kind == "key":
            out += f"[{step.name}={json.dumps(step.value)}]"
        else:
            out += f"[{step.index}]"
    return out


def value_at(obj: Any, path: str) -> Any:
    """The value at ``path`` in ``obj``, or ``MISSING``."""
    node = obj
    for step in parse(path):
        if step.kind == "field":
            if not isinstance(node, Mapping) or step.name not in node:
                return MISSING
            node = node[step.name]
        elif step.kind == "index":
            if not isinstance(node, list) or step.index >= len(node):
                return MISSING
            node = node[step.index]
        else:
            if not isinstance(node, list):
                return MISSING
            found = [
                item
                for item in node
                if isinstance(item, Mapping) and _same(item.get(step.name), step.value)
            ]
            if not found:
                return MISSING
            node = found[0]
    return node


def _same(a: Any, b: Any) -> bool:
    return a == b or str(a) == str(b)


def owned_by(fields_v1: Mapping[str, Any] | None, path: str) -> bool:
    """Does a ``fieldsV1`` set own ``path`` (the field itself, or an atomic parent)?"""
    node: Any = fields_v1 or {}
    for step in parse(path):
        if not isinstance(node, Mapping):
            return False
        if not node:  # a leaf above the path: an atomic value owned whole
            return True
        if step.kind == "field":
            key = f"f:{step.name}"
        elif step.kind == "key":
            key = _item_key(node, step)
        else:
            return True  # a list addressed by position is atomic: its owner owns the item
        if key is None or key not in node:
            return False
        node = node[key]
    return True


def _item_key(node: Mapping[str, Any], step: Step) -> str | None:
    """The ``k:{...}`` entry of a list item; items keyed by several fields
    (``k:{"containerPort":80,"protocol":"TCP"}``) match on the one the path names."""
    for key in node:
        if not key.startswith("k:"):
            continue
        try:
            ident = json.loads(key[2:])
        except ValueError:
            continue
        if isinstance(ident, dict) and _same(ident.get(step.name), step.value):
            return str(key)
    return None
