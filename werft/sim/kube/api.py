"""The Kubernetes API of every simulated cluster, as one ASGI app.

Mounted at ``/clusters``, it serves ``/clusters/<cluster>/api/v1/...`` for every cluster
of the registry, and the official ``kubernetes`` client and ``kubectl`` work against it
(see tests/test_sim_kube*.py for what is verified). Routing is done by hand on the split
path -- dictionary lookups, no per-cluster route objects -- so 10,000 clusters cost
nothing until they are asked something.

Answers before any resource logic, in this order:

1. ``before_request(cluster)`` runs first (the lifecycle advances the cluster).
2. Unknown cluster: 404 ``Status``.
3. API not up yet (``SimCluster.api_up`` false): 503 ``Status`` with reason
   ``ServiceUnavailable`` -- what a client sees from a starting API server behind a load
   balancer. Clients treat it as transient.
4. Authentication: ``Authorization: Bearer <the cluster's token>``. A wrong token gets 401
   everywhere; no credentials at all is "anonymous", which -- as on a kubeadm cluster
   (system:public-info-viewer) -- may read ``/version``, ``/healthz``, ``/livez`` and
   ``/readyz`` and nothing else (401).

Served: ``/version``, health endpoints, discovery (``/api``, ``/apis``, group versions;
an aggregated-discovery ``Accept`` gets the legacy documents, which kubectl falls back to),
and for every resource: list (``labelSelector``, ``fieldSelector``), watch (``?watch=1``,
polled, see ``_Watch``), create, get, replace, patch (merge, strategic merge, JSON,
apply), delete, deletecollection, ``/status`` and ``/scale``; self reviews for
``kubectl auth can-i`` / ``whoami``. ``kubectl get`` receives server-side Tables
(kubetables.py); ``/openapi/v2`` and ``/openapi/v3`` say just enough for kubectl to leave
validation to the server (kubeopenapi.py), which validates as a real one does
(``fieldValidation``: kubedecoding.py; quantities, defaults: kubeschema.py, kubedefaults.py).

Over plain HTTP, kubectl sends no token at all (client-go reads credentials only for TLS
transports), so a person's kubectl needs the app served over HTTPS (kubetls.py); the
Python client sends the token either way.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
import yaml

from werft.sim.clock import Clock
from werft.sim.kube import openapi as kubeopenapi
from werft.sim.kube import tables as kubetables
from werft.sim.kube.cluster import SimCluster
from werft.sim.kube.decoding import IGNORE, Decoder, directive, find_duplicates, warning_header
from werft.sim.kube.discovery import (
    ResourceType,
    api_group,
    api_group_list,
    api_versions,
    resource_list,
)
from werft.sim.kube.errors import (
    ApiError,
    bad_request,
    cluster_not_found,
    method_not_allowed,
    not_found_path,
    service_unavailable,
    unauthorized,
)
from werft.sim.kube.objects import APPLY_PATCH, ObjectStore
from werft.yamlsafe import safe_load

Obj = dict[str, Any]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset({"version", "healthz", "livez", "readyz"})
WATCH_TICK = 0.05  # seconds between two looks of a watch at its objects
WATCH_DEFAULT_TIMEOUT = 300.0  # a watch without timeoutSeconds ends after this; clients re-watch
_JSON = [(b"content-type", b"application/json")]
_TEXT = [(b"content-type", b"text/plain; charset=utf-8"), (b"x-content-type-options", b"nosniff")]


class _Request:
    __slots__ = ("accept", "body", "content_type", "headers", "method", "query", "user_agent")

    def __init__(self, scope: Scope, body: bytes) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.headers = headers
        self.method: str = scope["method"]
        self.body = body
        self.query = dict(
            parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        )
        self.accept = headers.get("accept", "")
        self.content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        self.user_agent = headers.get("user-agent", "")

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("true", "1", "yes")

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == "All"

    @property
    def field_manager(self) -> str | None:
        return self.query.get("fieldManager") or None

    def default_manager(self) -> str:
        """What the API server names an unnamed manager: the User-Agent up to its '/'."""
        return self.field_manager or (self.user_agent.split("/")[0][:128] or "unknown")

    def decoder(self) -> Decoder:
        """How this write is decoded: its fieldValidation, the fields its body repeats."""
        validation = directive(self.query.get("fieldValidation"))
        duplicates = []
        if validation != IGNORE and self.body:
            json_body = self.body.lstrip()[:1] in (b"{", b"[")
            duplicates = find_duplicates(self.body, json_body=json_body)
        return Decoder(validation, duplicates)

    def parsed_body(self) -> Any:
        if not self.body:
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            pass
        if "yaml" in self.content_type or self.content_type == APPLY_PATCH:
            try:
                return safe_load(self.body)
            except yaml.YAMLError as exc:
                raise bad_request(f"error decoding YAML: {exc}") from None
        raise bad_request("the body of the request could not be decoded as JSON")


def _route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps the full path in ``path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, headers: list) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _json(status: int, obj: Any) -> tuple[int, bytes, list]:
    return status, orjson.dumps(obj), _JSON


def _warned(response: tuple[int, bytes, list], decoder: Decoder) -> tuple[int, bytes, list]:
    """The response with one ``Warning`` header per warning the decoding gave."""
    if not decoder.warnings:
        return response
    status, body, headers = response
    warnings = [(b"warning", warning_header(w).encode()) for w in decoder.warnings]
    return status, body, [*headers, *warnings]


def kube_api_app(
    registry: Mapping[str, SimCluster],
    clock: Clock,
    before_request: Callable[[str], None] | None = None,
) -> ASGIApp:
    """The ASGI app serving ``/<cluster>/...`` for every cluster of ``registry``."""
    del clock  # each cluster carries its own clock; kept in the signature for the contract

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # served directly by uvicorn (tools, benchmarks)
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        parts = [unquote(p) for p in _route_path(scope).split("/") if p]
        body = await _read_body(receive)
        try:
            if not parts:
                raise not_found_path()
            name, rest = parts[0], parts[1:]
            if before_request is not None:
                before_request(name)
            cluster = registry.get(name)
            if cluster is None:
                raise cluster_not_found(name)
            if not cluster.api_up:
                raise service_unavailable(name)
            request = _Request(scope, body)
            _authenticate(cluster, request, rest)
            result = _serve(cluster, request, rest, scope)
            if isinstance(result, _Watch):
                await result.stream(send, receive)
                return
            status, payload, headers = result
        except ApiError as exc:
            status, payload, headers = _json(exc.code, exc.status())
        await _respond(send, status, payload, headers)

    return app


def _authenticate(cluster: SimCluster, request: _Request, rest: list[str]) -> None:
    header = request.headers.get("authorization")
    if header is None:
        if rest and rest[0] in PUBLIC_PATHS:
            return  # anonymous may read health and version, as on kubeadm clusters
        raise unauthorized()
    scheme, _, token = header.partition(" ")
    expected = cluster.token or ""
    if (
        scheme.lower() != "bearer"
        or not expected
        or not hmac.compare_digest(token.strip().encode(), expected.encode())
    ):
        raise unauthorized()


def _serve(cluster: SimCluster, request: _Request, rest: list[str], scope: Scope) -> Any:
    store = cluster.store
    head = rest[0] if rest else ""
    if head in ("healthz", "livez", "readyz"):
        return 200, b"ok", _TEXT
    discovery = (
        head in ("version", "openapi", "")
        or (head == "api" and len(rest) <= 2)
        or (head == "apis" and len(rest) <= 3)
    )
    if discovery and request.method != "GET":
        raise method_not_allowed(request.method)
    if head == "version" and len(rest) == 1:
        return _json(200, _version(cluster))
    if head == "api":
        if len(rest) == 1:
            return _json(200, api_versions(_server_address(scope)))
        if rest[1] != "v1":
            raise not_found_path()
        if len(rest) == 2:
            return _doc(
                ("gv", "v1", store.custom_key),
                lambda: resource_list("v1", store.resources_of("v1")),
            )
        return _resources(cluster, request, "", "v1", rest[2:])
    if head == "apis":
        if len(rest) > 3:  # a resource: no need to look at the groups
            return _resources(cluster, request, rest[1], rest[2], rest[3:])
        groups = store.group_versions()
        if len(rest) == 1:
            return _doc(("apis", store.custom_key), lambda: api_group_list(groups))
        group = rest[1]
        if group not in groups:
            raise not_found_path()
        if len(rest) == 2:
            return _doc(("group", group, store.custom_key), lambda: api_group(group, groups[group]))
        version = rest[2]
        if version not in groups[group]:
            raise not_found_path()
        gv = f"{group}/{version}"
        return _doc(("gv", gv, store.custom_key), lambda: resource_list(gv, store.resources_of(gv)))
    if head == "openapi":
        return _openapi(cluster, request, rest[1:], scope)
    if head == "":
        return _json(
            200,
            {"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]},
        )
    raise not_found_path()


def _openapi(cluster: SimCluster, request: _Request, rest: list[str], scope: Scope) -> Any:
    store = cluster.store
    version = cluster.kubernetes_version or "0.0.0"
    if rest == ["v2"]:
        body, content_type = kubeopenapi.v2_document(request.accept, version)
        return 200, body, [(b"content-type", content_type.encode())]
    if rest[:1] != ["v3"]:
        raise not_found_path()
    if len(rest) == 1:
        gvs = {"v1": store.resources_of("v1")}
        for group, versions in store.group_versions().items():
            for v in versions:
                gvs[f"{group}/{v}"] = store.resources_of(f"{group}/{v}")
        mount = f"{scope.get('root_path', '')}/{cluster.name}"
        return _json(200, kubeopenapi.v3_root(gvs, mount))
    if rest[1:] == ["api", "v1"]:
        group, gv_version = "", "v1"
    elif len(rest) == 4 and rest[1] == "apis":
        group, gv_version = rest[2], rest[3]
    else:
        raise not_found_path()
    types = store.resources_of(f"{group}/{gv_version}" if group else gv_version)
    if not types:
        raise not_found_path()
    return 200, kubeopenapi.v3_document(group, gv_version, types, version), _JSON


# Discovery documents depend only on the set of custom types a cluster serves (none, for
# most): rendered once, shared by every cluster with the same set.
_DOCS: dict[tuple[Any, ...], bytes] = {}


def _doc(key: tuple[Any, ...], build: Callable[[], Obj]) -> tuple[int, bytes, list]:
    body = _DOCS.get(key)
    if body is None:
        body = orjson.dumps(build())
        if len(_DOCS) < 4096:
            _DOCS[key] = body
    return 200, body, _JSON


def _version(cluster: SimCluster) -> Obj:
    version = cluster.kubernetes_version or "0.0.0"
    major, minor = [*version.split("."), "0", "0"][:2]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{version}",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-09-11T21:22:08Z",
        "goVersion": "go1.22.6",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _server_address(scope: Scope) -> str:
    server = scope.get("server") or ("127.0.0.1", 8686)
    return f"{server[0]}:{server[1]}"


def _resources(
    cluster: SimCluster, request: _Request, group: str, version: str, segs: list[str]
) -> Any:
    store = cluster.store

    def alive() -> bool:  # a watch ends when its cluster goes down or is wiped
        return cluster.api_up and cluster.has_store and cluster.store is store

    namespace: str | None = None
    if (
        len(segs) >= 3
        and segs[0] == "namespaces"
        and not (len(segs) == 3 and segs[2] in ("status", "finalize"))
    ):
        namespace, segs = segs[1], segs[2:]
    if len(segs) > 3:
        raise not_found_path()
    plural = segs[0]
    name = segs[1] if len(segs) > 1 else None
    sub = segs[2] if len(segs) > 2 else ""
    rt = store.resource_type(group, version, plural)
    if rt is None:
        raise not_found_path()
    if rt.namespaced and namespace is None and name is not None:
        raise not_found_path()
    if not rt.namespaced and namespace is not None:
        raise not_found_path()
    if sub and not ((sub == "status" and rt.status) or (sub == "scale" and rt.scale)):
        raise not_found_path()
    ns = namespace or ""
    method = request.method
    if rt.verbs == ("create",):
        if method != "POST" or name is not None:
            raise method_not_allowed(method)
        return _json(201, _review(rt, request.parsed_body()))
    q = request.query
    if name is None:
        if method == "GET":
            if request.flag("watch"):
                return _Watch(store, rt, namespace, request, None, alive)
            listing = store.list(
                rt, namespace, labels=q.get("labelSelector"), fields=q.get("fieldSelector")
            )
            return _json(200, kubetables.maybe_table(rt, listing, request.accept, q))
        if method == "POST":
            if rt.namespaced and namespace is None:
                raise method_not_allowed(method)
            decoder = request.decoder()
            created = store.create(
                rt,
                ns,
                request.parsed_body(),
                manager=request.default_manager(),
                dry_run=request.dry_run,
                decoder=decoder,
            )
            return _warned(_json(201, created), decoder)
        if method == "DELETE":
            return _json(
                200,
                store.remove_collection(
                    rt,
                    namespace,
                    labels=q.get("labelSelector"),
                    fields=q.get("fieldSelector"),
                    dry_run=request.dry_run,
                ),
            )
        raise method_not_allowed(method)
    if method == "GET":
        if request.flag("watch"):
            return _Watch(store, rt, namespace, request, name, alive)
        if sub == "scale":
            return _json(200, store.read_scale(rt, ns, name))
        obj = store.read(rt, ns, name)
        return _json(200, kubetables.maybe_table(rt, obj, request.accept, q))
    if method == "PUT":
        decoder = request.decoder()
        replaced = store.replace(
            rt,
            ns,
            name,
            request.parsed_body(),
            manager=request.default_manager(),
            subresource=sub,
            dry_run=request.dry_run,
            decoder=decoder,
        )
        return _warned(_json(200, replaced), decoder)
    if method == "PATCH":
        patch_type = request.content_type
        manager = request.field_manager if patch_type == APPLY_PATCH else request.default_manager()
        decoder = request.decoder()
        obj, created = store.patch(
            rt,
            ns,
            name,
            request.parsed_body(),
            patch_type,
            manager=manager,
            force=request.flag("force"),
            subresource=sub,
            dry_run=request.dry_run,
            decoder=decoder,
        )
        return _warned(_json(201 if created else 200, obj), decoder)
    if method == "DELETE":
        if sub:
            raise method_not_allowed(method)
        options = request.parsed_body() if request.body else None
        return _json(
            200,
            store.remove(
                rt,
                ns,
                name,
                options=options if isinstance(options, dict) else None,
                dry_run=request.dry_run,
            ),
        )
    raise method_not_allowed(method)


ADMIN_USER = {"username": "werft-admin", "groups": ["system:masters", "system:authenticated"]}


def _review(rt: ResourceType, body: Any) -> Obj:
    """Self reviews: the one identity a cluster knows is its admin, allowed everything."""
    review = dict(body) if isinstance(body, dict) else {}
    review.update(apiVersion=rt.group_version, kind=rt.kind)
    review["metadata"] = {"creationTimestamp": None}
    if rt.kind == "SelfSubjectAccessReview":
        review["status"] = {"allowed": True, "reason": "werft-admin is in system:masters"}
    elif rt.kind == "SelfSubjectRulesReview":
        review["status"] = {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    else:
        review["status"] = {"userInfo": ADMIN_USER}
    return review


class _Watch:
    """A watch: JSON lines of ``{"type": ADDED|MODIFIED|DELETED, "object": ...}``.

    The store has no change feed; a watch looks at its objects every ``WATCH_TICK`` and
    reports what differs from its last look (the lazy controllers run during each look,
    so a Deployment turning Available shows up as MODIFIED). ``resourceVersion=N`` starts
    with the objects changed after N (deletions before the watch started are not
    replayed); without it, or with 0, every object is first sent as ADDED.
    """

    def __init__(
        self,
        store: ObjectStore,
        rt: ResourceType,
        namespace: str | None,
        request: _Request,
        name: str | None,
        alive: Callable[[], bool],
    ) -> None:
        self.store = store
        self.alive = alive
        self.rt = rt
        self.namespace = namespace
        query = request.query
        # kubectl get -w asks for Tables: each event then carries a one-row Table.
        self.table = kubetables.wants_table(request.accept)
        self.include = query.get("includeObject") or "Metadata"
        self.labels = query.get("labelSelector")
        fields = query.get("fieldSelector") or ""
        if name is not None:
            fields = ",".join(filter(None, [fields, f"metadata.name={name}"]))
        self.fields = fields or None
        since = query.get("resourceVersion") or "0"
        self.since = int(since) if since.isdigit() else 0
        timeout = query.get("timeoutSeconds")
        self.timeout = float(timeout) if timeout and timeout.isdigit() else WATCH_DEFAULT_TIMEOUT
        # Fail early (400) on a bad selector, before the 200 goes out.
        store.select(rt, namespace, labels=self.labels, fields=self.fields)

    def _event(self, kind: str, obj: Obj) -> bytes:
        if self.table:
            rv = obj["metadata"].get("resourceVersion", "")
            obj = kubetables.table(self.rt, [obj], rv, self.include)
        return orjson.dumps({"type": kind, "object": obj}) + b"\n"

    async def stream(self, send: Send, receive: Receive) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"cache-control", b"no-cache, private"),
                ],
            }
        )
        disconnected = asyncio.ensure_future(_disconnect(receive))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        known: dict[Any, Obj] = {}
        first = True
        try:
            while True:
                _, found = self.store.select(
                    self.rt, self.namespace, labels=self.labels, fields=self.fields
                )
                current = dict(found)
                chunks = []
                for key, obj in current.items():
                    before = known.get(key)
                    rv = int(obj["metadata"].get("resourceVersion") or 0)
                    if first:
                        if self.since == 0:
                            chunks.append(self._event("ADDED", obj))
                        elif rv > self.since:
                            chunks.append(self._event("MODIFIED", obj))
                    elif before is None:
                        chunks.append(self._event("ADDED", obj))
                    elif before["metadata"].get("resourceVersion") != obj["metadata"].get(
                        "resourceVersion"
                    ):
                        chunks.append(self._event("MODIFIED", obj))
                for key in known.keys() - current.keys():
                    chunks.append(self._event("DELETED", known[key]))
                known, first = current, False
                if chunks:
                    await send(
                        {"type": "http.response.body", "body": b"".join(chunks), "more_body": True}
                    )
                remaining = deadline - loop.time()
                if remaining <= 0 or not self.alive():
                    break
                done, _ = await asyncio.wait({disconnected}, timeout=min(WATCH_TICK, remaining))
                if done:
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            disconnected.cancel()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
