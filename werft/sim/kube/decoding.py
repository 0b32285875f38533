"""Field validation (``?fieldValidation=``) and decoding of writes, as the API server does.

``Strict``: unknown or duplicated fields fail the request with 400 BadRequest.
``Warn`` (the server's default when the parameter is absent, since 1.27): they are
dropped and each is reported in a ``Warning: 299 - "..."`` response header.
``Ignore``: dropped silently. The messages are the real ones:

- create / replace: ``Deployment in version "v1" cannot be handled as a Deployment:
  strict decoding error: unknown field "spec.foo", duplicate field "metadata.name"``;
- merge / strategic / JSON patch: ``strict decoding error: unknown field "spec.foo"``;
- server-side apply: unknown fields fail whatever ``fieldValidation`` says, because the
  patch is converted to a typed object first -- and a real server answers that with
  **500** and no reason: ``failed to create typed patch object (ns/name; apps/v1,
  Kind=Deployment): .spec.foo: field not declared in schema`` (kubernetes#122480); only
  duplicated fields follow ``fieldValidation`` (``error strict decoding YAML: ...``).

Every write also stores its ``resource.Quantity`` fields canonically (quantity.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from werft.sim.kube import schema as kubeschema
from werft.sim.kube.discovery import ResourceType
from werft.sim.kube.errors import ApiError, bad_request

Obj = dict[str, Any]
STRICT, WARN, IGNORE = "Strict", "Warn", "Ignore"
DIRECTIVES = (STRICT, WARN, IGNORE)


def directive(value: str | None) -> str:
    """The fieldValidation of a request; absent means Warn, as on a real server."""
    if not value:
        return WARN
    if value not in DIRECTIVES:
        raise bad_request(
            f'fieldValidation: Unsupported value: "{value}": supported values: '
            '"Ignore", "Strict", "Warn"'
        )
    return value


def warning_header(text: str) -> str:
    """A ``Warning`` header value (RFC 7234 warn-code 299, agent "-")."""
    return "299 - " + json.dumps(text.replace("\n", " "), ensure_ascii=False)


class Decoder:
    """The decoding of one write request: its directive, what it found, its warnings."""

    __slots__ = ("duplicates", "validation", "warnings")

    def __init__(
        self,
        validation: str = IGNORE,
        duplicates: list[tuple[str, int]] | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.validation = validation
        # (strict-decoder path, line), e.g. ("metadata.name", 1): see find_duplicates
        self.duplicates = duplicates or []
        self.warnings = warnings if warnings is not None else []

    def _report(self, errors: list[str], fail: Any) -> None:
        if not errors or self.validation == IGNORE:
            return
        if self.validation == STRICT:
            raise fail(errors)
        self.warnings.extend(errors)

    def write(
        self, rt: ResourceType, root: kubeschema.Node | None, obj: Obj, *, patch: bool
    ) -> Obj:
        """Create, replace or (non-apply) patch: the object as decoding stores it."""
        decoded = self._decode(rt, root, obj)
        errors = [f'duplicate field "{p}"' for p, _ in self.duplicates]
        errors += [f'unknown field "{kubeschema.strict_path(p)}"' for p in decoded.unknown]

        def fail(found: list[str]) -> ApiError:
            message = "strict decoding error: " + ", ".join(found)
            if not patch:
                message = (
                    f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                    + message
                )
            return bad_request(message)

        self._report(errors, fail)
        return decoded.obj

    def apply_config(
        self, rt: ResourceType, root: kubeschema.Node | None, body: Mapping[str, Any]
    ) -> None:
        """Server-side apply: the configuration must be typed (500 if it is not), then
        duplicated fields follow the directive."""
        decoded = self._decode(rt, root, body, drop=False, defaults=False)
        if decoded.unknown:
            meta = body.get("metadata") or {}
            where = f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"
            errors = [
                f"{kubeschema.typed_path(p)}: field not declared in schema"
                for p in decoded.unknown
            ]
            text = errors[0] if len(errors) == 1 else "\n".join(
                ["errors:", *("  " + e for e in errors)]
            )
            raise ApiError(
                500,
                "",
                f"failed to create typed patch object ({where}; {_gvk(rt)}): {text}",
            )
        if self.duplicates:
            lines = [
                f'  line {line}: key "{_last_key(p)}" already set in map'
                for p, line in self.duplicates
            ]
            text = "error converting YAML to JSON: yaml: unmarshal errors:\n" + "\n".join(lines)
            self._report(
                [text], lambda found: bad_request("error strict decoding YAML: " + found[0])
            )

    def stored(self, rt: ResourceType, root: kubeschema.Node | None, obj: Obj) -> Obj:
        """An apply's result as decoding stores it (quantities canonical)."""
        return self._decode(rt, root, obj).obj

    @staticmethod
    def _decode(
        rt: ResourceType,
        root: kubeschema.Node | None,
        obj: Any,
        *,
        drop: bool = True,
        defaults: bool = True,
    ) -> kubeschema.Decoded:
        try:
            return kubeschema.decode(root, obj, drop_unknown=drop, defaults=defaults)
        except kubeschema.InvalidQuantity as exc:
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: {exc}'
            ) from None


def _gvk(rt: ResourceType) -> str:
    return f"{rt.group}/{rt.version}, Kind={rt.kind}"


def _last_key(path: str) -> str:
    return path.rsplit(".", 1)[-1]


class _Duplicated(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Duplicated
    return out


def find_duplicates(body: bytes, *, json_body: bool) -> list[tuple[str, int]]:
    """Keys set twice in one mapping of a JSON or YAML body: (path as the strict JSON
    decoder names it, 1-based line of the second occurrence)."""
    if json_body:
        try:  # the C scanner finds none in the common case; only then do the slow walk
            json.loads(body, object_pairs_hook=_no_duplicates)
            return []
        except _Duplicated:
            pass
        except ValueError:
            return []
    try:
        root = yaml.compose(body, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    found: list[tuple[str, int]] = []
    _walk_yaml(root, "", found)
    return found


def _walk_yaml(node: Any, path: str, found: list[tuple[str, int]]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            child = f"{path}.{name}" if path else name
            if name in seen:
                found.append((child, key.start_mark.line + 1))
            seen.add(name)
            _walk_yaml(value, child, found)
    elif isinstance(node, yaml.SequenceNode):
        for n, item in enumerate(node.value):
            _walk_yaml(item, f"{path}[{n}]", found)
