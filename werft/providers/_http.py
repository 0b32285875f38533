"""The HTTP plumbing shared by the Redfish and simulated providers.

One ``httpx.AsyncClient`` per provider instance (connection pooling across every machine
of a batch), explicit timeouts, and ``Calls``: a per-operation view of the client that
classifies every failure and counts the mutating requests it sends.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

import httpx

from werft.errors import PermanentError
from werft.providers.base import MutationLedger
from werft.providers.errors import Target, classify

_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class HttpOptions:
    """Timeouts and pool sizes for providers that speak HTTP."""

    # Reads of a BMC: BMCs are slow, but a healthy one answers a GET within seconds.
    timeout: httpx.Timeout = field(default_factory=lambda: httpx.Timeout(10.0, connect=5.0))
    # Actions: many BMCs fetch the image during InsertMedia before they answer.
    action_timeout: httpx.Timeout = field(default_factory=lambda: httpx.Timeout(60.0, connect=5.0))
    # Per provider (= per endpoint origin). BMCs fall over under many parallel
    # connections; the simulator serves thousands of machines behind one origin.
    max_connections: int = 32
    max_keepalive_connections: int = 16


def tls_verify(*, disable: bool = False, ca_bundle: str | None = None) -> bool | ssl.SSLContext:
    """What httpx's ``verify`` gets: on by default, a CA bundle when given."""
    if disable:
        return False
    if ca_bundle:
        try:
            return ssl.create_default_context(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise PermanentError(f"cannot load CA bundle {ca_bundle}: {exc}") from None
    return True


def new_client(
    base_url: str, options: HttpOptions, *, verify: bool | ssl.SSLContext = True
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=options.timeout,
        verify=verify,
        limits=httpx.Limits(
            max_connections=options.max_connections,
            max_keepalive_connections=options.max_keepalive_connections,
        ),
        # Same-origin redirects only keep the Authorization header (httpx drops it for
        # another origin); sushy-tools redirects a system's name to its UUID.
        follow_redirects=True,
        headers={"Accept": "application/json"},
    )


class Calls:
    """Requests made on behalf of one machine in one operation.

    Every failure leaves as a classified werft error; ``mutations`` counts the mutating
    requests sent (what ``Provider.ensure`` returns), and so does the provider's
    ``ledger`` (what ``Provider.mutations_sent`` reads, failed operations included).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        target: Target,
        *,
        auth: tuple[str, str] | None = None,
        action_timeout: httpx.Timeout | None = None,
        ledger: MutationLedger | None = None,
    ) -> None:
        self._client = client
        self._target = target
        self._auth = auth
        self._action_timeout = action_timeout
        self._ledger = ledger
        self.mutations = 0

    @property
    def target(self) -> Target:
        return self._target

    async def request(
        self,
        method: str,
        path: str,
        action: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        allow: frozenset[int] = frozenset(),
        fetches_media: bool = False,
    ) -> httpx.Response:
        """Send; raise the classified error for a failure unless its status is in ``allow``
        (``fetches_media``: the endpoint downloads an image for this request, see
        ``werft.providers.errors.classify``)."""
        mutating = method in _MUTATING
        kwargs: dict[str, Any] = {"json": json, "headers": headers}
        if self._auth is not None:
            kwargs["auth"] = self._auth
        if mutating and self._action_timeout is not None:
            kwargs["timeout"] = self._action_timeout
        if mutating:
            # Counted when sent: a request that times out may still have been applied.
            self.mutations += 1
            if self._ledger is not None:
                self._ledger.add(self._target.machine)
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise classify(exc, self._target, action) from None
        if response.status_code >= 400 and response.status_code not in allow:
            raise classify(response, self._target, action, fetches_media=fetches_media) from None
        return response

    async def get_json(self, path: str, action: str) -> tuple[dict[str, Any], httpx.Response]:
        body, response = await self.get_json_or_none(path, action, missing_ok=False)
        if body is None:  # unreachable: without missing_ok a 404 raises in request()
            raise PermanentError(f"{self._target}: {action}: {path} not found")
        return body, response

    async def get_json_or_none(
        self, path: str, action: str, *, missing_ok: bool = True
    ) -> tuple[dict[str, Any] | None, httpx.Response]:
        """The JSON object at ``path``; (None, response) for a 404 when ``missing_ok``."""
        allow = frozenset({404}) if missing_ok else frozenset()
        response = await self.request("GET", path, action, allow=allow)
        if response.status_code == 404:
            return None, response
        try:
            body = response.json()
        except ValueError:  # a BMC's HTML error page, a truncated body
            body = None
        if not isinstance(body, dict):
            raise PermanentError(f"{self._target}: {action}: {path} did not return a JSON object")
        return body, response
