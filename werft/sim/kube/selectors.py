"""Label and field selectors, in the string syntax of ``?labelSelector=`` / ``?fieldSelector=``.

Label selectors support what k8s.io/apimachinery/pkg/labels parses: ``a=b``, ``a==b``,
``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a`` (exists) and ``!a`` (does not exist),
joined by commas. Field selectors support ``=``, ``==`` and ``!=`` on any dotted path
(``metadata.name``, ``metadata.namespace``, ``spec.nodeName``, ``status.phase``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from werft.sim.kube.errors import bad_request

Predicate = Callable[[Mapping[str, Any]], bool]

_SET = re.compile(r"^\s*(!?)\s*([^\s!=()]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")
_OP = re.compile(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*([^\s]*)\s*$")


def _split(selector: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(selector):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    return [p for p in (p.strip() for p in parts) if p]


def label_selector(selector: str | None) -> Predicate | None:
    """A predicate over an object's labels, or None when the selector selects everything."""
    if not selector or not selector.strip():
        return None
    requirements: list[Callable[[Mapping[str, str]], bool]] = []
    for part in _split(selector):
        requirements.append(_label_requirement(part))

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(req(labels) for req in requirements)

    return matches


def _label_requirement(part: str) -> Callable[[Mapping[str, str]], bool]:
    op_match = _OP.match(part)
    if op_match and "(" not in part:
        key, op, value = op_match.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    set_match = _SET.match(part)
    if not set_match:
        raise bad_request(f"unable to parse requirement: {part!r}")
    negate, key, op, values = set_match.groups()
    if op:
        if negate:
            raise bad_request(f"unable to parse requirement: {part!r}")
        options = {v.strip() for v in values.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in options
        return lambda labels: labels.get(key) not in options
    if negate:
        return lambda labels: key not in labels
    return lambda labels: key in labels


def lookup(obj: Mapping[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def field_selector(selector: str | None) -> Predicate | None:
    if not selector or not selector.strip():
        return None
    requirements: list[tuple[str, bool, str]] = []
    for part in _split(selector):
        match = _OP.match(part)
        if not match:
            raise bad_request(f"invalid selector: {selector!r}; can't understand {part!r}")
        path, op, value = match.groups()
        requirements.append((path, op != "!=", value))

    def matches(obj: Mapping[str, Any]) -> bool:
        for path, equal, value in requirements:
            found = lookup(obj, path)
            text = "" if found is None else str(found)
            if (text == value) != equal:
                return False
        return True

    return matches
