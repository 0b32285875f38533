"""What the API server's decoding does to a written object, from the upstream schemas.

A real API server decodes every write into its typed object: fields the schema does not
declare are unknown (dropped, or reported: ``fieldValidation``), and ``resource.Quantity``
leaves are re-encoded canonically (quantity.py). Built-in kinds use the schemas compiled
from upstream OpenAPI (schemagen.py, ``schemas/k8s-v1.31.json``); custom resources use
their CRD version's structural schema (``openAPIV3Schema``), where
``x-kubernetes-preserve-unknown-fields`` keeps unknown fields and
``x-kubernetes-int-or-string`` marks int-or-string values.

``decode`` is the one walk over an object: it returns the object as it would be stored
(new containers only along changed paths, the input is not modified) and the paths of
the unknown fields it found. Compiled schemas are cached: the walk does no schema work
per request beyond following it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werft.sim.kube.defaults import DEFAULTERS
from werft.sim.kube.quantity import QuantityError, canonical_value

Obj = dict[str, Any]
Node = Mapping[str, Any]
PathElement = str | tuple[int, Obj | None, Any]  # field name | (index, map keys, set value)

_SCHEMAS = Path(__file__).parent / "schemas" / "k8s-v1.31.json"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_ANY: Node = {"t": "any"}


@functools.cache
def _compiled() -> Obj:
    return json.loads(_SCHEMAS.read_text())


def _definitions() -> Obj:
    return _compiled()["definitions"]


def definition(name: str) -> Node:
    """A compiled definition by its upstream name."""
    return _definitions()[name]


def builtin_root(group_version: str, kind: str) -> Node | None:
    """The schema of a built-in kind, or None when the simulator has none for it."""
    name = _compiled()["kinds"].get(f"{group_version}/{kind}")
    return None if name is None else {"$": name}


# --- custom resources -----------------------------------------------------------------------


def _crd_node(schema: Mapping[str, Any]) -> Node:
    if schema.get("x-kubernetes-int-or-string"):
        return {"t": "is"}
    if schema.get("x-kubernetes-embedded-resource"):
        return _ANY
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    kind = schema.get("type")
    props = schema.get("properties")
    if kind == "object" or props:
        if props:
            node: Obj = {"o": {k: _crd_node(v) for k, v in props.items()}}
            if preserve:
                node["pu"] = True
            return node
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            return {"x": _crd_node(extra)}
        return _ANY if preserve or extra is True or kind is None else {"o": {}}
    if kind == "array":
        node = {"l": _crd_node(schema.get("items") or {})}
        if schema.get("x-kubernetes-list-type"):
            node["lt"] = schema["x-kubernetes-list-type"]
        if schema.get("x-kubernetes-list-map-keys"):
            node["k"] = list(schema["x-kubernetes-list-map-keys"])
        return node
    return _ANY if preserve or not kind else {"t": "s"}


@functools.lru_cache(maxsize=1024)
def _custom_root(schema_json: str) -> Node:
    schema = json.loads(schema_json)
    root = dict(_crd_node(schema))
    if "o" in root:
        props = dict(root["o"])
        props.update(
            apiVersion={"t": "s"}, kind={"t": "s"}, metadata={"$": _OBJECT_META}
        )
        root["o"] = props
    return root


def custom_root(crd: Mapping[str, Any], version: str) -> Node | None:
    """The schema of a CRD's version (None: the CRD gives none, anything goes)."""
    for v in (crd.get("spec") or {}).get("versions") or []:
        if v.get("name") == version:
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
            if not isinstance(schema, Mapping):
                return None
            return _custom_root(json.dumps(schema, sort_keys=True))
    return None


# --- the walk -------------------------------------------------------------------------------


@dataclass
class Decoded:
    """The result of ``decode``."""

    obj: Any
    unknown: list[tuple[PathElement, ...]] = field(default_factory=list)


class InvalidQuantity(ValueError):
    def __init__(self, path: tuple[PathElement, ...], error: QuantityError) -> None:
        super().__init__(str(error))
        self.path = path


def decode(
    root: Node | None, obj: Any, *, drop_unknown: bool, defaults: bool = True
) -> Decoded:
    """``obj`` as decoding stores it: quantities canonical, unknown fields dropped when
    ``drop_unknown`` (and always listed), the types' defaults set (defaults.py) when
    ``defaults``. Raises InvalidQuantity."""
    found: list[tuple[PathElement, ...]] = []
    if root is None:
        return Decoded(obj, found)
    return Decoded(_walk(root, obj, (), found, _Options(drop_unknown, defaults)), found)


@dataclass(frozen=True, slots=True)
class _Options:
    drop: bool
    defaults: bool


def _walk(
    node: Node, value: Any, path: tuple[PathElement, ...], found: list, opts: _Options
) -> Any:
    name = node.get("$")
    if name is not None:
        node = _definitions()[name]
        defaulter = DEFAULTERS.get(name) if opts.defaults else None
        if defaulter is not None and isinstance(value, dict):
            value = defaulter(value)  # as defaulter-gen: the type's own, then its fields
    leaf = node.get("t")
    if leaf is not None:
        if leaf == "q" and value is not None:
            try:
                return canonical_value(value)
            except QuantityError as exc:
                raise InvalidQuantity(path, exc) from None
        return value
    if isinstance(value, dict):
        props = node.get("o")
        extra = node.get("x")
        if props is None and extra is None:
            return value
        out: Obj | None = None
        for key, child_value in value.items():
            child = props.get(key) if props is not None else extra
            if child is None:
                if node.get("pu"):
                    continue
                found.append((*path, key))
                if opts.drop:
                    if out is None:
                        out = dict(value)
                    del out[key]
                continue
            new = _walk(child, child_value, (*path, key), found, opts)
            if new is not child_value:
                if out is None:
                    out = dict(value)
                out[key] = new
        return value if out is None else out
    if isinstance(value, list) and "l" in node:
        items = node["l"]
        keys = node.get("k")
        out_list: list | None = None
        for n, item in enumerate(value):
            key = None
            if keys and isinstance(item, dict):
                key = {k: item[k] for k in keys if k in item}
            element = (n, key, item if node.get("lt") == "set" else None)
            new = _walk(items, item, (*path, element), found, opts)
            if new is not item:
                if out_list is None:
                    out_list = list(value)
                out_list[n] = new
        return value if out_list is None else out_list
    return value


def strict_path(path: tuple[PathElement, ...]) -> str:
    """``spec.template.spec.containers[0].foo``: how the strict JSON decoder names it."""
    text = ""
    for element in path:
        if isinstance(element, str):
            text += f".{element}" if text else element
        else:
            text += f"[{element[0]}]"
    return text


def typed_path(path: tuple[PathElement, ...]) -> str:
    """``.spec.template.spec.containers[name="app"].foo``: how server-side apply names it."""
    text = ""
    for element in path:
        if isinstance(element, str):
            text += f".{element}"
        else:
            index, key, value = element
            if key:
                text += "[" + ",".join(
                    f"{k}={json.dumps(v)}" for k, v in sorted(key.items())
                ) + "]"
            elif value is not None:
                text += f"[={json.dumps(value)}]"
            else:
                text += f"[{index}]"
    return text
