"""Field paths where two versions of one Kubernetes object differ.

Both sides come from the API server (a dry-run apply's result and the live object), so
they are already normalised alike and a plain structural comparison is exact. Paths read
like jq, with list items named by their merge key where they have one:
``.spec.template.spec.containers[name="app"].image``, as the API server writes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

# Metadata the server maintains on every write; a dry run and the live object disagree on
# it without anything having drifted. ``status`` is the controllers', never werft's.
_SERVER_METADATA = frozenset(
    {"managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink"}
)
_NOT_DESIRED = frozenset({"status"})
# List items Kubernetes merges by key (containers by name, ports by containerPort, ...).
_MERGE_KEYS = ("name", "containerPort", "port", "mountPath", "devicePath", "ip", "type")


def changed_paths(would_be: Mapping[str, Any], live: Mapping[str, Any] | None) -> list[str]:
    """Where ``live`` differs from what an apply would store (``would_be``); ``[]`` means the
    apply would change nothing, ``["."]`` that the object does not exist."""
    if live is None:
        return ["."]
    return list(_diff_maps(_comparable(would_be), _comparable(live), ""))


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k not in _NOT_DESIRED}
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        out["metadata"] = {k: v for k, v in meta.items() if k not in _SERVER_METADATA}
    return out


def _join(path: str, key: str) -> str:
    simple = key.replace("-", "").replace("_", "").isalnum()
    return f"{path}.{key}" if simple else f'{path}["{key}"]'


def _diff(want: Any, have: Any, path: str) -> Iterator[str]:
    if isinstance(want, Mapping) and isinstance(have, Mapping):
        yield from _diff_maps(want, have, path)
    elif isinstance(want, list) and isinstance(have, list):
        yield from _diff_lists(want, have, path)
    elif type(want) is not type(have) or want != have:
        yield path or "."


def _diff_maps(want: Mapping[str, Any], have: Mapping[str, Any], path: str) -> Iterator[str]:
    for key in dict.fromkeys([*want, *have]):
        yield from _diff(want.get(key), have.get(key), _join(path, str(key)))


def _diff_lists(want: list[Any], have: list[Any], path: str) -> Iterator[str]:
    key = _merge_key(want, have)
    if key is None:
        if len(want) != len(have):
            yield path
            return
        for index, (w, h) in enumerate(zip(want, have, strict=True)):
            yield from _diff(w, h, f"{path}[{index}]")
        return
    mine = {_key_text(item[key]): item for item in want}
    theirs = {_key_text(item[key]): item for item in have}
    for name in dict.fromkeys([*mine, *theirs]):
        yield from _diff(mine.get(name), theirs.get(name), f"{path}[{key}={name}]")


def _key_text(value: Any) -> str:
    """A merge key as the API server writes it in field paths (``[name="app"]``,
    ``[containerPort=80]``), so werft's paths and a conflict's read the same."""
    return json.dumps(value) if isinstance(value, str) else str(value)


def _merge_key(*lists: list[Any]) -> str | None:
    items = [item for items in lists for item in items]
    if not items or not all(isinstance(item, Mapping) for item in items):
        return None
    for key in _MERGE_KEYS:
        if all(
            all(item.get(key) is not None for item in items)
            and len({str(item[key]) for item in items}) == len(items)
            for items in lists
        ):
            return key
    return None
