"""Cluster access that reads like kubectl: get, list, apply (server-side), wait.

One ``KubeClient`` per cluster, built from that cluster's kubeconfig text with the
official ``kubernetes`` client -- never from the process-global configuration, so a
process can talk to thousands of clusters at once. The ``kubernetes`` client is
synchronous; every call runs on a bounded thread pool so one slow cluster never
blocks the event loop, and the pool bounds how many sockets werft opens at once.
A client sends at most ``IN_FLIGHT`` requests to its cluster at once, however many its
callers gather: urllib3 speaks HTTP/1.1, one request per connection at a time, so each
request beyond would open a connection of its own (a TLS handshake on a real cluster,
and a socket on its API server). kubectl and client-go multiplex everything over one
HTTP/2 connection; a few in flight keep a far site's round trips overlapping.

Every failure is mapped once, here, onto werft's error classes:
5xx, 429, 408, connection errors and timeouts are ``TransientError`` (and retried at the
request: every request this client retries is idempotent -- a GET, a server-side apply);
401, 403, 400, 422 and other 4xx are ``PermanentError``, and so is 409: an apply conflict
means another manager owns a field werft wants, which waiting cannot change
(``ApplyConflict``). Messages name the cluster and the object, never the token.

Applies are strict and polite, as an operator's ``kubectl apply --server-side`` is:
``fieldValidation=Strict`` (a typo is a 400 naming the field, not a silently dropped
setting) and no ``force`` unless the caller opts in. ``diff`` asks the server what an
apply would store (``dryRun=All``) and compares that with the live object, so the
server's own normalisation decides what counts as drift.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import urllib3
import yaml
from kubernetes.client import ApiClient, Configuration
from kubernetes.config import new_client_from_config_dict
from kubernetes.config.config_exception import ConfigException

from werft.drift import changed_paths
from werft.errors import PermanentError, TransientError
from werft.retry import DEFAULT, RetryPolicy, retry_after_seconds, retry_sync
from werft.yamlsafe import safe_load

FIELD_MANAGER = "werft"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
DEFAULT_THREADS = 16
IN_FLIGHT = 4  # requests to one cluster at once, so connections to it

T = TypeVar("T")
Obj = dict[str, Any]


class WaitTimeout(TransientError):
    """A wait ran out of time. Transient: the next run (or retry) picks up where it stopped."""


class NotServed(TransientError):
    """The API does not serve this kind (yet): usually a CRD not established so far."""


@dataclass(frozen=True, slots=True)
class FieldConflict:
    """A field werft wants that another field manager owns."""

    manager: str
    field: str


class ApplyConflict(PermanentError):
    """Server-side apply refused: other managers own fields werft sets (HTTP 409)."""

    def __init__(self, message: str, conflicts: list[FieldConflict]) -> None:
        super().__init__(message, reason="Conflict")
        self.conflicts = conflicts


@dataclass(frozen=True, slots=True)
class ObjectDrift:
    """How a live object differs from what werft's apply would make of it.

    ``paths`` are the fields an apply would change (``["."]``: the object is absent);
    ``conflicts`` the fields it would have to take from another manager (only reported
    without force, where the server refuses the apply).
    """

    paths: list[str]
    conflicts: list[FieldConflict]

    @property
    def absent(self) -> bool:
        return self.paths == ["."]

    def __bool__(self) -> bool:
        return bool(self.paths or self.conflicts)


# --- the thread pool -----------------------------------------------------------------------

_default_executor: ThreadPoolExecutor | None = None


def default_executor() -> ThreadPoolExecutor:
    """The process-wide pool used by clients that were not given one."""
    global _default_executor
    if _default_executor is None:
        _default_executor = ThreadPoolExecutor(DEFAULT_THREADS, thread_name_prefix="werft-kube")
    return _default_executor


def _threads(executor: Executor | None) -> int:
    return getattr(executor or default_executor(), "_max_workers", DEFAULT_THREADS)


# --- resources: kind -> URL ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resource:
    """What discovery says about one kind: its plural and whether it lives in a namespace."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, name: str | None = None, namespace: str | None = None) -> str:
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            prefix += f"/namespaces/{quote(namespace, safe='')}"
        path = f"{prefix}/{self.plural}"
        return f"{path}/{quote(name, safe='')}" if name else path


# The built-in kinds never change shape, so they need no discovery request (observing
# 10,000 clusters should not cost 10,000 x 6 discovery calls). Anything else -- CRDs,
# aggregated APIs -- is discovered once per client, as kubectl does.
_BUILTIN: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "Node"): ("nodes", False),
    ("v1", "PersistentVolume"): ("persistentvolumes", False),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "Service"): ("services", True),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "Pod"): ("pods", True),
    ("v1", "Endpoints"): ("endpoints", True),
    ("v1", "PersistentVolumeClaim"): ("persistentvolumeclaims", True),
    ("v1", "LimitRange"): ("limitranges", True),
    ("v1", "ResourceQuota"): ("resourcequotas", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("apps/v1", "DaemonSet"): ("daemonsets", True),
    ("apps/v1", "StatefulSet"): ("statefulsets", True),
    ("apps/v1", "ReplicaSet"): ("replicasets", True),
    ("batch/v1", "Job"): ("jobs", True),
    ("batch/v1", "CronJob"): ("cronjobs", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("coordination.k8s.io/v1", "Lease"): ("leases", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networkpolicies", True),
    ("networking.k8s.io/v1", "Ingress"): ("ingresses", True),
    ("networking.k8s.io/v1", "IngressClass"): ("ingressclasses", False),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ("clusterrolebindings", False),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): (
        "customresourcedefinitions",
        False,
    ),
    ("apiregistration.k8s.io/v1", "APIService"): ("apiservices", False),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"): (
        "validatingwebhookconfigurations",
        False,
    ),
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"): (
        "mutatingwebhookconfigurations",
        False,
    ),
    ("scheduling.k8s.io/v1", "PriorityClass"): ("priorityclasses", False),
    ("storage.k8s.io/v1", "StorageClass"): ("storageclasses", False),
    ("storage.k8s.io/v1", "CSIDriver"): ("csidrivers", False),
}


ObjectKey = tuple[str, str, str, str]  # apiVersion, kind, namespace ("" if none), name


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    """An object's identity as its manifest states it."""
    meta = obj.get("metadata") or {}
    namespace, name = meta.get("namespace") or "", meta.get("name", "")
    return obj.get("apiVersion", ""), obj.get("kind", ""), namespace, name


def _key(obj: Mapping[str, Any], namespaced: bool) -> ObjectKey:
    """Where an object lives: a namespaced manifest without a namespace goes to default,
    as the server puts it there."""
    api_version, kind, namespace, name = object_key(obj)
    return api_version, kind, (namespace or "default") if namespaced else "", name


def describe(obj: Mapping[str, Any]) -> str:
    """``Deployment kube-system/metrics-server``, the way a person names an object."""
    meta = obj.get("metadata") or {}
    name = meta.get("name", "?")
    namespace = meta.get("namespace")
    return (
        f"{obj.get('kind', '?')} {namespace}/{name}" if namespace else f"{obj.get('kind')} {name}"
    )


# --- the client ----------------------------------------------------------------------------


class KubeClient:
    """One cluster's API, spoken the way kubectl speaks it.

    >>> kube = KubeClient.from_kubeconfig(text)
    >>> await kube.apply(manifest)
    >>> await kube.wait("apps/v1", "Deployment", "metrics-server", "kube-system")
    """

    def __init__(
        self,
        api: ApiClient,
        *,
        cluster: str,
        timeout: float = 10.0,
        executor: Executor | None = None,
        retry: RetryPolicy = DEFAULT,
    ) -> None:
        self._api = api
        self.cluster = cluster
        self.server = api.configuration.host
        # A connection that does not open within seconds will not open: fail it fast, so
        # a hung site costs a retry, not a stage.
        self._timeout = (min(timeout, 3.0), timeout)  # (connect, read)
        self._executor = executor
        self._retry = retry
        self._resources: dict[tuple[str, str], Resource] = {}
        # By event loop: a run keeps its clients across stages, and an asyncio semaphore
        # belongs to the loop it first waited on.
        self._in_flight: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()

    @classmethod
    def from_kubeconfig(
        cls,
        text: str,
        *,
        cluster: str | None = None,
        timeout: float = 10.0,
        executor: Executor | None = None,
        retry: RetryPolicy = DEFAULT,
    ) -> KubeClient:
        """A client for the kubeconfig's current context. ``cluster`` names it in messages."""
        try:
            config = safe_load(text)
            configuration = Configuration()
            # werft retries at the request itself (``werft.retry``), within the caller's
            # deadline and only what is idempotent; urllib3 retrying underneath would not.
            configuration.retries = False
            # One connection per thread that may call this cluster at once; urllib3's
            # default of 10 would open and drop sockets (and warn) under a 16-thread pool.
            configuration.connection_pool_maxsize = _threads(executor)
            api = new_client_from_config_dict(
                config, persist_config=False, client_configuration=configuration
            )
            if not _credentials_expire(config):
                # The loader's hook re-copies the kubeconfig into the configuration before
                # every request (and scans the environment for proxies each time: a
                # quarter of a request's CPU here). Only a token from an exec plugin or
                # an auth provider can expire; a static token or client certificate never
                # changes, so nothing is lost.
                api.configuration.refresh_api_key_hook = None
            if cluster is None:
                cluster = str(_current_context(config).get("cluster", "?"))
        except (yaml.YAMLError, ConfigException, TypeError, KeyError, AttributeError) as exc:
            # The kubeconfig holds a token: say what is wrong with it, never what is in it.
            raise PermanentError(
                f"cluster {cluster or '?'}: invalid kubeconfig ({type(exc).__name__})"
            ) from None
        return cls(
            api,
            cluster=cluster,
            timeout=timeout,
            executor=executor,
            retry=retry,
        )

    # -- lifecycle --

    def close(self) -> None:
        self._api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never the token
        return f"KubeClient(cluster={self.cluster!r}, server={self.server!r})"

    # -- kubectl verbs --

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> Obj | None:
        """The live object, or None when it does not exist (nor its kind, as for a custom
        resource whose CRD is not there yet)."""
        return await self._run(self._get, api_version, kind, name, namespace)

    async def get_live(self, manifest: Mapping[str, Any]) -> Obj | None:
        """The live counterpart of a manifest (``kubectl get -f``), or None."""
        meta = manifest.get("metadata") or {}
        return await self.get(
            manifest["apiVersion"], manifest["kind"], meta["name"], meta.get("namespace")
        )

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
    ) -> list[Obj]:
        """Objects of a kind; ``namespace=None`` lists across all namespaces."""
        return await self._run(self._list, api_version, kind, namespace, label_selector)

    async def get_live_all(
        self, manifests: Sequence[Mapping[str, Any]], *, label_selector: str
    ) -> list[Obj | None]:
        """The live counterpart of each manifest (None: absent), by one LIST per kind across
        namespaces instead of a GET per object: ``label_selector`` is the label werft puts
        on everything it applies, so the lists hold every object of werft's and little
        else. An object someone took the label off reads as absent -- it drifted, and the
        next apply puts the label back.

        The lists go one after another in one call on the thread pool, so on one
        connection: a connection of their own would be a TLS handshake per kind, per
        cluster, per verify and drift check on a real cluster."""
        kinds = list(dict.fromkeys((m["apiVersion"], m["kind"]) for m in manifests))

        def list_all() -> list[tuple[bool, list[Obj]]]:
            return [self._list_kind(v, k, label_selector) for v, k in kinds]

        listed = await self._run(list_all)
        namespaced = {kind: scoped for kind, (scoped, _) in zip(kinds, listed, strict=True)}
        live = {_key(item, scoped): item for scoped, items in listed for item in items}
        return [
            live.get(_key(m, namespaced[(m["apiVersion"], m["kind"])])) for m in manifests
        ]

    async def apply(
        self, obj: Mapping[str, Any], *, force: bool = False, dry_run: bool = False
    ) -> Obj:
        """Server-side apply as field manager ``werft`` with strict field validation.

        Without ``force`` a field another manager owns is an ``ApplyConflict``; with it,
        werft takes the field over. ``dry_run`` returns what the server would store.
        """
        return await self._run(self._apply, dict(obj), force, dry_run)

    async def diff(self, obj: Mapping[str, Any], *, force: bool = False) -> ObjectDrift:
        """What applying ``obj`` would change on the live object, decided by the server
        (``kubectl diff --server-side``): a GET, then a dry-run apply if the object exists.
        Makes no change. A conflict (without ``force``) is reported, not raised."""
        return await self.diff_live(obj, await self.get_live(obj), force=force)

    async def diff_live(
        self, obj: Mapping[str, Any], live: Mapping[str, Any] | None, *, force: bool = False
    ) -> ObjectDrift:
        """``diff`` against a live object the caller already holds (e.g. from a LIST)."""
        if live is None:
            return ObjectDrift(["."], [])
        try:
            would_be = await self.apply(obj, force=force, dry_run=True)
        except ApplyConflict as exc:
            return ObjectDrift([c.field for c in exc.conflicts], exc.conflicts)
        return ObjectDrift(changed_paths(would_be, live), [])

    async def delete(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> bool:
        """``kubectl delete``: True if it was there. Idempotent (a retry after a lost
        answer finds it gone), so it is retried like a GET."""
        return await self._run(self._delete, api_version, kind, name, namespace)

    async def readyz(self) -> bool:
        """True when the API answers /readyz with 200; False while it is not up yet."""
        return await self._run(self._probe, "/readyz")

    async def livez(self) -> bool:
        return await self._run(self._probe, "/livez")

    async def version(self) -> str:
        """The API server's gitVersion, e.g. ``v1.31.1``."""
        body = await self._run(self._call, "GET", "/version", what="/version")
        assert body is not None
        return str(body.get("gitVersion", ""))

    async def wait(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        condition: str = "Available",
        timeout: float = 300.0,
        poll: float = 2.0,
        on_probe: Callable[[BaseException | None], None] | None = None,
    ) -> Obj:
        """Like ``kubectl wait --for=condition=...``; returns the object once it holds.

        ``condition="Available"`` means "rolled out and healthy" (see ``health``), so it
        also works for kinds that carry no conditions, such as DaemonSets. ``on_probe``
        hears every read: the transient error, or None when the API answered.
        """
        what = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
        deadline = time.monotonic() + timeout
        last = "not observed yet"
        while True:
            try:
                obj = await self.get(api_version, kind, name, namespace)
            except TransientError as exc:
                obj, last = None, str(exc)
                if on_probe is not None:
                    on_probe(exc)
            else:
                if on_probe is not None:
                    on_probe(None)
                if obj is None:
                    last = "not found"
                else:
                    ok, last = condition_met(obj, condition)
                    if ok:
                        return obj
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(
                    f"cluster {self.cluster}: {what} not {condition} after {timeout:g}s: {last}"
                )
            await asyncio.sleep(min(poll, remaining))

    # -- the synchronous core (runs on the pool) --

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        # The caller's context (its request deadline) goes along onto the pool's thread.
        context = contextvars.copy_context()
        gate = self._in_flight.get(loop)
        if gate is None:
            gate = self._in_flight[loop] = asyncio.Semaphore(IN_FLIGHT)
        async with gate:
            return await loop.run_in_executor(
                self._executor or default_executor(), context.run, call
            )

    def _get(self, api_version: str, kind: str, name: str, namespace: str | None) -> Obj | None:
        try:
            resource = self._resource(api_version, kind)
        except NotServed:
            return None  # no object of a kind the server does not know exists
        path = resource.path(name, namespace or ("default" if resource.namespaced else None))
        what = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
        return self._call("GET", path, what=what, missing_ok=True)

    def _list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None
    ) -> list[Obj]:
        try:
            resource = self._resource(api_version, kind)
        except NotServed:
            return []
        query = {"labelSelector": label_selector} if label_selector else None
        body = self._call("GET", resource.path(None, namespace), query=query, what=f"{kind} list")
        assert body is not None
        # A real server leaves apiVersion and kind out of a built-in kind's list items
        # (kubernetes/kubernetes#3030); filled in as kubectl does, so a listed object
        # compares and keys like a fetched one.
        return [
            {"apiVersion": api_version, "kind": kind, **item} for item in body.get("items") or []
        ]

    def _list_kind(
        self, api_version: str, kind: str, label_selector: str
    ) -> tuple[bool, list[Obj]]:
        """(namespaced, the objects of the kind across namespaces); a kind the server does
        not serve (a CRD not there yet) has none."""
        try:
            resource = self._resource(api_version, kind)
        except NotServed:
            return True, []
        return resource.namespaced, self._list(api_version, kind, None, label_selector)

    def _delete(self, api_version: str, kind: str, name: str, namespace: str | None) -> bool:
        resource = self._resource(api_version, kind)
        path = resource.path(name, namespace or ("default" if resource.namespaced else None))
        what = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
        return self._call("DELETE", path, what=what, missing_ok=True) is not None

    def _apply(self, obj: Obj, force: bool, dry_run: bool) -> Obj:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        name = (obj.get("metadata") or {}).get("name")
        if not (api_version and kind and name):
            raise PermanentError(
                f"cluster {self.cluster}: cannot apply {describe(obj)}: "
                "apiVersion, kind and metadata.name are required"
            )
        resource = self._resource(api_version, kind)
        namespace = None
        if resource.namespaced:
            namespace = obj["metadata"].get("namespace") or "default"
        query = {"fieldManager": FIELD_MANAGER, "fieldValidation": "Strict"}
        if force:
            query["force"] = "true"
        if dry_run:
            query["dryRun"] = "All"
        body = self._call(
            "PATCH",
            resource.path(name, namespace),
            query=query,
            body=obj,
            content_type=APPLY_CONTENT_TYPE,
            what=describe(obj),
        )
        assert body is not None
        return body

    def _probe(self, path: str) -> bool:
        try:
            response = self._send("GET", path, what=path)
        except TransientError:
            return False
        if response.status in (401, 403):
            raise PermanentError(
                f"cluster {self.cluster}: GET {path}: {response.status} (credentials refused)"
            )
        return response.status == 200

    def _resource(self, api_version: str, kind: str) -> Resource:
        key = (api_version, kind)
        cached = self._resources.get(key)
        if cached is not None:
            return cached
        if key in _BUILTIN:
            plural, namespaced = _BUILTIN[key]
            resource = Resource(api_version, kind, plural, namespaced)
        else:
            resource = self._discover(api_version, kind)
        self._resources[key] = resource
        return resource

    def _discover(self, api_version: str, kind: str) -> Resource:
        """Ask the API for a group-version's resources; a hit is cached for the client's
        lifetime, a miss is asked again next time (a CRD may be established meanwhile)."""
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        body = self._call("GET", path, what=f"discovery {api_version}", missing_ok=True)
        for item in (body or {}).get("resources", []):
            if "/" in item.get("name", ""):  # subresources: deployments/status
                continue
            self._resources.setdefault(
                (api_version, item["kind"]),
                Resource(api_version, item["kind"], item["name"], bool(item["namespaced"])),
            )
        found = self._resources.get((api_version, kind))
        if found is None:
            raise NotServed(
                f"cluster {self.cluster}: the server does not serve {kind} in {api_version}"
            )
        return found

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query: Mapping[str, str] | None = None,
        body: Obj | None = None,
        content_type: str | None = None,
        missing_ok: bool = False,
    ) -> Obj | None:
        """One idempotent request (a GET or a server-side apply), retried on transient
        failures within the client's deadline."""

        def attempt() -> Obj | None:
            response = self._send(
                method, path, what=what, query=query, body=body, content_type=content_type
            )
            if response.status == 404 and missing_ok:
                return None
            if not 200 <= response.status < 300:
                raise self._http_error(method, what, response)
            try:
                return json.loads(response.data or b"{}")
            except ValueError:
                raise TransientError(
                    f"cluster {self.cluster}: {method} {what}: the API answered with "
                    "invalid JSON",
                    cause="invalid response",
                ) from None

        return retry_sync(attempt, policy=self._retry)

    def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query: Mapping[str, str] | None = None,
        body: Obj | None = None,
        content_type: str | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if query:
            path = f"{path}?{urlencode(query)}"
        # param_serialize adds the bearer token from this client's own configuration.
        request = self._api.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        try:
            response = self._api.call_api(*request, _request_timeout=self._timeout)
            response.read()
        except urllib3.exceptions.HTTPError as exc:
            cause = _network_reason(exc)
            raise TransientError(
                f"cluster {self.cluster}: {method} {what}: {cause}", cause=cause
            ) from None
        except OSError as exc:
            cause = type(exc).__name__
            raise TransientError(
                f"cluster {self.cluster}: {method} {what}: {cause}", cause=cause
            ) from None
        return response

    def _http_error(self, method: str, what: str, response: Any) -> Exception:
        status = int(response.status)
        payload = _status_body(response.data)
        detail = str(payload.get("message", ""))[:300]
        text = f"cluster {self.cluster}: {method} {what}: {status}" + (
            f" {detail}" if detail else ""
        )
        if status == 500 and _UNTYPABLE in detail:
            # An apply body that does not fit the schema (a typo'd field): real servers
            # answer 500 for it, but no retry can make it fit.
            return PermanentError(text)
        if status >= 500 or status in (408, 429):
            wait = retry_after_seconds((response.headers or {}).get("Retry-After"))
            return TransientError(text, cause=str(status), retry_after=wait)
        if status == 409:
            return _conflict(f"cluster {self.cluster}: {what}", payload, text)
        if status in (401, 403):
            return PermanentError(f"{text} (credentials refused)")
        return PermanentError(text)


# What an API server says when a server-side apply body does not match the schema
# (``.spec.foo: field not declared in schema``), with status 500 (kubernetes#122480).
_UNTYPABLE = "failed to create typed patch object"


def current_cluster_and_user(config: Mapping[str, Any]) -> tuple[Obj, Obj]:
    """A parsed kubeconfig's cluster and user entries for its current context ({} for one
    it does not name)."""
    current = _current_context(config)
    return _entry(config, "clusters", "cluster", current), _entry(config, "users", "user", current)


def _current_context(config: Mapping[str, Any]) -> Obj:
    contexts = {c["name"]: c.get("context") or {} for c in config.get("contexts") or []}
    return dict(contexts.get(config.get("current-context"), {}))


def _entry(config: Mapping[str, Any], section: str, kind: str, context: Obj) -> Obj:
    entries = {e["name"]: e.get(kind) or {} for e in config.get(section) or []}
    return dict(entries.get(context.get(kind), {}))


def _credentials_expire(config: Mapping[str, Any]) -> bool:
    """Whether the current context's user gets its token from an exec plugin or an auth
    provider: the only credentials the kubernetes client refreshes when they expire."""
    _, user = current_cluster_and_user(config)
    return "exec" in user or "auth-provider" in user


def _status_body(data: bytes | None) -> dict[str, Any]:
    """A Kubernetes Status body, or {}; servers never echo tokens in it."""
    if not data:
        return {}
    try:
        payload = json.loads(data)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _conflict(subject: str, payload: Mapping[str, Any], text: str) -> PermanentError:
    """A 409. For an apply, its causes name the other manager and each field:
    ``{"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-edit\" using
    apps/v1", "field": ".spec.replicas"}``."""
    causes = (payload.get("details") or {}).get("causes") or []
    conflicts = [
        FieldConflict(_quoted(str(c.get("message", ""))) or "?", str(c.get("field", "?")))
        for c in causes
        if "FieldManagerConflict" in (c.get("reason"), c.get("type"))
    ]
    if not conflicts:
        return PermanentError(text)
    fields = ", ".join(f"{c.field} (owned by {c.manager!r})" for c in conflicts)
    return ApplyConflict(
        f"{subject}: apply conflicts with other field managers: {fields}", conflicts
    )


def _quoted(text: str) -> str:
    start = text.find('"')
    end = text.find('"', start + 1)
    return text[start + 1 : end] if 0 <= start < end else ""


def _network_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    # NewConnectionError subclasses ConnectTimeoutError in urllib3: test it first.
    if isinstance(reason, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, urllib3.exceptions.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(reason, urllib3.exceptions.ProtocolError | ConnectionError):
        return "connection lost"
    return type(reason).__name__


# --- health --------------------------------------------------------------------------------


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    status = obj.get("status") or {}
    return {c.get("type", ""): c for c in status.get("conditions") or []}


def health(obj: Mapping[str, Any]) -> tuple[bool, str]:
    """Is the object rolled out and healthy? ``(ok, what a person should read)``.

    The same rules as Flux's and kstatus' health checks: the controller has observed the
    latest generation, and the counts (or the Available/Established condition) say ready.
    Kinds without a notion of health are healthy once they exist.
    """
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if (
        kind in ("Deployment", "DaemonSet", "StatefulSet")
        and generation is not None
        and (observed is None or observed < generation)
    ):
        return False, "rollout not observed yet"
    if kind == "Deployment":
        want = spec.get("replicas", 1)
        available = status.get("availableReplicas", 0) or 0
        updated = status.get("updatedReplicas", 0) or 0
        cond = _conditions(obj).get("Available")
        if cond is not None and cond.get("status") != "True":
            return False, f"{available}/{want} available ({cond.get('reason', 'not Available')})"
        if available < want or updated < want:
            return False, f"{available}/{want} available"
        return True, f"{available}/{want} available"
    if kind == "DaemonSet":
        want = status.get("desiredNumberScheduled")
        if want is None:
            return False, "not scheduled yet"
        ready = status.get("numberAvailable", status.get("numberReady", 0)) or 0
        updated = status.get("updatedNumberScheduled", want) or 0
        return (ready >= want and updated >= want), f"{ready}/{want} ready"
    if kind == "StatefulSet":
        want = spec.get("replicas", 1)
        ready = status.get("readyReplicas", 0) or 0
        return ready >= want, f"{ready}/{want} ready"
    for kind_, type_ in (
        ("APIService", "Available"),
        ("CustomResourceDefinition", "Established"),
        ("Node", "Ready"),
    ):
        if kind == kind_:
            cond = _conditions(obj).get(type_)
            if cond is None or cond.get("status") != "True":
                reason = (cond or {}).get("reason") or (cond or {}).get("message") or "unknown"
                return False, f"not {type_} ({reason})"
            return True, type_
    return True, "present"


def condition_met(obj: Mapping[str, Any], condition: str) -> tuple[bool, str]:
    """kubectl's ``--for=condition=X``; "Available" and "Ready" fall back to ``health``."""
    if condition in ("Available", "Ready") and obj.get("kind") != "Pod":
        return health(obj)
    cond = _conditions(obj).get(condition)
    if cond is None:
        return False, f"no {condition} condition yet"
    return cond.get("status") == "True", f"{condition}={cond.get('status')}"
