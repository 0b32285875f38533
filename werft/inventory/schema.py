"""One document's schema check: pydantic errors -> Problems a person can act on.

Pydantic reports ``loc`` with the YAML spelling of each field plus internal tags (union
members such as ``int``/``str``, ``function-after[...]``, ``[key]``). Walking the ``loc``
against the document's own data keeps the real keys, drops the tags, and finds the line.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from werft.errors import Problem
from werft.inventory.model import (
    API_VERSION,
    KINDS,
    MAC_PATTERN,
    NAME_PATTERN,
    SECRET_REF_PATTERN,
    VERSION_PATTERN,
    Document,
)
from werft.inventory.rules import (
    FIX_LATITUDE,
    FIX_LONGITUDE,
    FIX_MAC,
    FIX_NAME,
    FIX_SECRET_REF,
    shown,
    too_long,
)
from werft.inventory.rules import FIX_VERSION as _FIX_VERSION
from werft.inventory.yamldocs import Path_, RawDoc, format_path

# pattern -> (what the value is not, fix)
_PATTERNS = {
    NAME_PATTERN: ("a DNS-1123 label", FIX_NAME),
    MAC_PATTERN: ("a MAC address", FIX_MAC),
    VERSION_PATTERN: ("a Kubernetes version", _FIX_VERSION),
    SECRET_REF_PATTERN: ("a secret reference", FIX_SECRET_REF),
}
_FIELD_FIXES = {
    "latitude": FIX_LATITUDE,
    "longitude": FIX_LONGITUDE,
    "apiVersion": f"use apiVersion: {API_VERSION}",
    "kind": "one of " + ", ".join(KINDS),
    "maxFailures": "a count like 3 or a share of the wave like '5%'",
}


def validate_document(doc: RawDoc) -> tuple[Document | None, list[Problem]]:
    """The typed model of ``doc``, or None and the problems that prevent it."""
    data = doc.data
    if not isinstance(data, dict):
        return None, [
            doc.problem(
                (),
                "a document must be a mapping with apiVersion, kind, metadata, spec",
                "see inventory/fleet.yaml for the shape",
            )
        ]
    kind = doc.kind
    if data.get("apiVersion") != API_VERSION:
        got = data.get("apiVersion")
        message = (
            "apiVersion is missing"
            if got is None
            else f"apiVersion {shown(got)} is not {API_VERSION}"
        )
        return None, [
            doc.problem(
                ("apiVersion",),
                f"{message}: not a werft document",
                f"set apiVersion: {API_VERSION}; a plain Kubernetes manifest belongs in an "
                "AddonSet's manifests, not loose in the inventory",
            )
        ]
    if kind not in KINDS:
        return None, [
            doc.problem(
                ("kind",),
                f"kind {shown(data.get('kind'))} is not an inventory kind",
                _FIELD_FIXES["kind"],
            )
        ]
    model = KINDS[kind]
    try:
        return model.model_validate(data), []
    except ValidationError as err:
        return None, problems_from_error(doc, model, err)


def problems_from_error(doc: RawDoc, model: type[BaseModel], err: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for error in err.errors(include_url=False):
        path, leaf = _real_path(doc.data, error["loc"], error["type"])
        if any(path[: len(p)] == p for p in doc.secret_paths):
            continue  # already reported as a literal secret
        where = format_path(path)
        if where in seen:
            continue  # a union reports once per member; the first says enough
        seen.add(where)
        message, fix = _explain(error, leaf, model, path, doc.written(path))
        problems.append(Problem(doc.file, doc.line_of(path), where, message, fix))
    return problems


def _real_path(data: Any, loc: tuple[str | int, ...], kind: str) -> tuple[Path_, str]:
    """Map pydantic's ``loc`` onto the document's keys; the last item is the leaf name."""
    path: list[str | int] = []
    node = data
    for position, item in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(node, dict) and isinstance(item, str):
            key = _find_key(node, item)
            if key is not None:
                path.append(key)
                node = node[key]
            elif kind == "missing" and last:
                path.append(item)
        elif isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
            path.append(item)
            node = node[item]
        # anything else is a pydantic tag (union member, validator name): not a field
    leaf = next((p for p in reversed(path) if isinstance(p, str)), "")
    return tuple(path), leaf


def _find_key(mapping: dict[Any, Any], item: str) -> Any:
    if item in mapping:
        return item
    folded = item.lower()  # bootMacAddress in the YAML, bootMACAddress in the loc
    return next((k for k in mapping if isinstance(k, str) and k.lower() == folded), None)


def _explain(
    error: Any, leaf: str, model: type[BaseModel], path: Path_, written: str | None
) -> tuple[str, str]:
    kind = error["type"]
    value = error.get("input")
    msg = str(error["msg"]).removeprefix("Value error, ")
    if kind == "string_too_long":
        what = f"'{leaf}'" if len(leaf) <= 64 else "a key"
        return too_long(what, len(value), int(error["ctx"]["max_length"]))
    if kind == "string_type" and written is not None and value is not None:
        return (
            f"YAML reads the unquoted {written} as a {type(value).__name__}, not text",
            f'quote it: {leaf}: "{written}"',
        )
    if kind == "string_pattern_mismatch":
        pattern = error["ctx"]["pattern"]
        what, fix = _PATTERNS.get(pattern, ("valid", ""))
        if pattern == SECRET_REF_PATTERN:  # never echo what may be the password itself
            return f"{leaf} is not {what} name", fix
        return f"{shown(value)} is not {what}", fix
    if kind == "missing":
        return f"required field '{leaf}' is missing", f"add '{leaf}'"
    if kind == "extra_forbidden":
        allowed = _allowed_fields(model, path[:-1])
        close = difflib.get_close_matches(leaf, allowed, n=1, cutoff=0.6)
        if close:
            return f"unknown field '{leaf}'", f"did you mean '{close[0]}'?"
        listing = ", ".join(allowed) if allowed else "none"
        return f"unknown field '{leaf}'", f"remove it; fields allowed here: {listing}"
    fix = _FIELD_FIXES.get(leaf, "")
    if kind == "value_error":  # our own validators: the value, then what is wrong with it
        return (f"{shown(value)}: {msg}" if _is_scalar(value) else msg), fix
    if _is_scalar(value):
        return f"{shown(value)}: {msg}", fix
    return msg, fix


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _allowed_fields(model: type[BaseModel], path: Path_) -> list[str]:
    """The YAML field names of the model found at ``path`` (for did-you-mean)."""
    current: Any = model
    for part in path:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            fieldinfo = next(
                (f for n, f in current.model_fields.items() if part in (n, f.alias)), None
            )
            if fieldinfo is None:
                return []
            current = fieldinfo.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` down to the interesting type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation
