"""Just enough OpenAPI for kubectl to trust the server with validation.

kubectl ``apply`` / ``create`` validate manifests (``--validate=strict`` by default). Since
v1.27 kubectl asks OpenAPI v3 whether the server's PATCH operation for the kind takes
the ``fieldValidation`` query parameter; if it does, kubectl leaves validation to the
server (which validates with the upstream schemas: decoding.py) and needs none. So:

- ``/openapi/v3`` lists one document per group version (``serverRelativeURL`` carries
  the mount prefix: client-go requests it as an absolute path);
- each document has, per resource, a PATCH operation tagged with
  ``x-kubernetes-group-version-kind`` and the ``fieldValidation`` parameter -- and no
  request body, so kubectl's client-side apply computes strategic merge patches from its
  compiled-in types instead of looking for schemas that are not there;
- ``/openapi/v2`` is an empty document (protobuf: zero bytes; JSON: no definitions). Older
  kubectl (the 1.20 of Debian) validates against v2 and skips kinds it has no schema for.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from werft.sim.kube.discovery import ResourceType

Obj = dict[str, Any]

PROTOBUF_V2 = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_PARAMS = [
    {"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
    for name in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")
]


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _document(group: str, version: str, types: list[ResourceType], kube_version: str) -> Obj:
    paths: Obj = {}
    prefix = "/" + _gv_path(group, version)
    for t in types:
        where = (
            f"{prefix}/namespaces/{{namespace}}/{t.plural}"
            if t.namespaced
            else f"{prefix}/{t.plural}"
        )
        paths[f"{where}/{{name}}"] = {
            "patch": {
                "operationId": f"patch{t.kind}",
                "parameters": _PARAMS,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {
                    "group": group,
                    "version": version,
                    "kind": t.kind,
                },
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": f"v{kube_version}"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _hash(types: list[ResourceType]) -> str:
    names = ",".join(sorted(f"{t.group_version}/{t.plural}/{t.kind}" for t in types))
    return hashlib.sha256(names.encode()).hexdigest()[:16].upper()


def v3_root(group_versions: dict[str, list[ResourceType]], mount: str) -> Obj:
    """``{"paths": {"apis/apps/v1": {"serverRelativeURL": ...}}}``; ``mount`` is the
    path prefix of the cluster, e.g. ``/clusters/edge-0001``."""
    paths = {}
    for gv, types in group_versions.items():
        group, _, version = gv.rpartition("/")
        path = _gv_path(group, version)
        paths[path] = {"serverRelativeURL": f"{mount}/openapi/v3/{path}?hash={_hash(types)}"}
    return {"paths": paths}


def v3_document(group: str, version: str, types: list[ResourceType], kube_version: str) -> bytes:
    return orjson.dumps(_document(group, version, types, kube_version))


def v2_document(accept: str, kube_version: str) -> tuple[bytes, str]:
    """(body, content type): an empty document in whichever encoding was asked for."""
    if "protobuf" in accept:
        return b"", PROTOBUF_V2  # an empty openapi_v2.Document message
    doc = {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": f"v{kube_version}"},
        "paths": {},
        "definitions": {},
    }
    return orjson.dumps(doc), "application/json"
