"""The HTTP plumbing shared by the Redfish and simulated providers.

``httpx.AsyncClient`` connection pools shared by the machines of a batch (a provider's,
see ``RedfishProvider``), explicit timeouts, and ``Calls``: a per-operation view of a
client that classifies every failure, retries the idempotent requests at the request
(``werft.retry``: backoff with jitter, ``Retry-After``, never past the stage's deadline)
and counts the mutating requests it sends.

The deadline reaches the provider through ``werft.retry.request_deadline`` (a context
variable the running stage sets): the Provider protocol stays free of it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from werft import secrets, tls
from werft.errors import PermanentError, TransientError
from werft.providers.base import MutationLedger
from werft.providers.errors import CA_BUNDLE_INVALID, TIMED_OUT, Target, classify
from werft.providers.records import DEFAULT_SETTLE
from werft.retry import DEFAULT, RetryPolicy, current_deadline, retry_async

_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Safe to send again with the same body: a read, a PUT of a whole definition, a PATCH of
# a setting (the same boot override twice is the same boot override). POST actions
# (Reset, InsertMedia, a domain start) are not: their callers observe, then decide.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})

@dataclass(frozen=True)
class HttpOptions:
    """Timeouts, retries and pool sizes for providers that speak HTTP."""

    # Reads of a BMC: a healthy one answers a GET within a few seconds; a hung connection
    # costs this much per try, and the try is repeated (``retry``) within the deadline.
    timeout: httpx.Timeout = field(default_factory=lambda: httpx.Timeout(8.0, connect=3.0))
    # Actions: many BMCs fetch the image during InsertMedia before they answer.
    action_timeout: httpx.Timeout = field(default_factory=lambda: httpx.Timeout(30.0, connect=3.0))
    # Per provider (= per endpoint origin). BMCs fall over under many parallel
    # connections; the simulator serves thousands of machines behind one origin.
    max_connections: int = 32
    max_keepalive_connections: int = 16
    retry: RetryPolicy = DEFAULT
    # No second reset within this many seconds of the last one werft sent a machine
    # (``werft.providers.records``); tests against the simulator scale it like the
    # stage deadlines.
    reset_settle: float = DEFAULT_SETTLE

    def scaled(self, time_scale: float, *, min_settle: float = 0.5) -> HttpOptions:
        """The same options in simulated time: only the settle time is the machines'."""
        return HttpOptions(
            timeout=self.timeout,
            action_timeout=self.action_timeout,
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_keepalive_connections,
            retry=self.retry,
            reset_settle=max(self.reset_settle / time_scale, min_settle),
        )


def tls_verify(
    *, disable: bool = False, ca_bundle: str | None = None, endpoint: str = "the endpoint"
) -> ssl.SSLContext:
    """What httpx's ``verify`` gets: a shared context (``werft.tls``), verifying by
    default, with a CA bundle when given (also for an http:// endpoint: BMCs redirect to
    https). ``endpoint`` ("BMC https://10.0.0.5") names whose caBundle it is in the error
    for a missing or unreadable file (``ProviderPool`` adds the machine)."""
    if disable:
        return tls.no_verification()
    if ca_bundle:
        try:
            return tls.ca_bundle(ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            what = "missing" if isinstance(exc, FileNotFoundError) else "unreadable"
            raise PermanentError(
                f"{endpoint}: caBundle {ca_bundle} is {what} "
                f"({type(exc).__name__}: {getattr(exc, 'strerror', None) or exc})",
                reason=CA_BUNDLE_INVALID,
            ) from None
    return tls.system_trust()


def new_client(
    base_url: str, options: HttpOptions, *, verify: ssl.SSLContext | None = None
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=options.timeout,
        verify=verify or tls_verify(),
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
        retry: RetryPolicy = DEFAULT,
        timeout_tries: int = 2,
    ) -> None:
        self._client = client
        self._timeout_tries = timeout_tries
        self._target = target
        self._auth = auth
        self._action_timeout = action_timeout
        self._ledger = ledger
        self._retry = retry
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
        retry: bool | None = None,
    ) -> httpx.Response:
        """Send; raise the classified error for a failure unless its status is in ``allow``
        (``fetches_media``: the endpoint downloads an image for this request, see
        ``werft.providers.errors.classify``).

        Idempotent requests (``IDEMPOTENT``, or ``retry=True``) are retried on transient
        failures within the stage's deadline; the others are sent once, and a transient
        failure leaves marked ``retry=False``: the caller observes, then decides.
        """
        if retry is None:
            retry = method in IDEMPOTENT
        if not retry:
            try:
                return await self._send(method, path, action, json, headers, allow, fetches_media)
            except TransientError as exc:
                exc.retry = False  # outcome unknown: never repeated blindly
                raise
        hung = 0

        async def attempt() -> httpx.Response:
            nonlocal hung
            try:
                return await self._send(method, path, action, json, headers, allow, fetches_media)
            except TransientError as exc:
                # Every try of a hung endpoint costs the whole timeout: one more try (a
                # dropped packet), then the caller -- and the stage's deadline -- decide.
                if exc.cause == TIMED_OUT:
                    hung += 1
                    exc.retry = exc.retry and hung < self._timeout_tries
                raise

        return await retry_async(attempt, policy=self._retry, deadline=current_deadline())

    async def _send(
        self,
        method: str,
        path: str,
        action: str,
        json: Any,
        headers: dict[str, str] | None,
        allow: frozenset[int],
        fetches_media: bool,
    ) -> httpx.Response:
        mutating = method in _MUTATING
        kwargs: dict[str, Any] = {"json": json, "headers": headers}
        if self._auth is not None:
            kwargs["auth"] = self._auth
        if mutating and self._action_timeout is not None:
            kwargs["timeout"] = self._action_timeout
        deadline = current_deadline()
        if deadline is not None:
            # A hung connection must not outlive the stage: no try waits past its deadline.
            left = max(0.5, deadline - time.monotonic())
            base = kwargs.get("timeout") or self._client.timeout
            kwargs["timeout"] = _capped(base, left)
        if mutating:
            # Counted when sent: a request that times out may still have been applied.
            self.mutations += 1
            if self._ledger is not None:
                self._ledger.add(self._target.machine)
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            failed: TransientError | PermanentError | None = classify(exc, self._target, action)
        else:
            failed = None
        if failed is not None:
            # Raised outside the handler: the httpx error, whose request holds the
            # Authorization header, must not ride along as the __context__.
            raise failed
        if response.status_code >= 400 and response.status_code not in allow:
            if response.status_code == 401 and self._target.credentials_ref:
                secrets.invalidate(self._target.credentials_ref)  # rotated? read it afresh
            raise classify(response, self._target, action, fetches_media=fetches_media)
        return response

    async def get_json(self, path: str, action: str) -> tuple[dict[str, Any], httpx.Response]:
        body, response = await self.get_json_or_none(path, action, missing_ok=False)
        if body is None:  # unreachable: without missing_ok a 404 raises in request()
            raise PermanentError(f"{self._target}: {action}: {path} not found")
        return body, response

    async def get_json_or_none(
        self,
        path: str,
        action: str,
        *,
        missing_ok: bool = True,
        refused: frozenset[int] = frozenset(),
    ) -> tuple[dict[str, Any] | None, httpx.Response]:
        """The JSON object at ``path``; (None, response) for a 404 when ``missing_ok``, and
        for a status in ``refused`` (a query the server does not support)."""
        allow = (frozenset({404}) if missing_ok else frozenset()) | refused
        response = await self.request("GET", path, action, allow=allow)
        if response.status_code in allow:
            return None, response
        try:
            body = response.json()
        except ValueError:  # a BMC's HTML error page, a truncated body
            body = None
        if not isinstance(body, dict):
            raise PermanentError(f"{self._target}: {action}: {path} did not return a JSON object")
        return body, response


def _capped(timeout: httpx.Timeout, seconds: float) -> httpx.Timeout:
    def cap(value: float | None) -> float:
        return seconds if value is None else min(value, seconds)

    return httpx.Timeout(
        connect=cap(timeout.connect),
        read=cap(timeout.read),
        write=cap(timeout.write),
        pool=cap(timeout.pool),
    )


async def act_observed(
    send: Callable[[], Awaitable[object]],
    took_effect: Callable[[], Awaitable[bool]],
    *,
    policy: RetryPolicy = DEFAULT,
) -> None:
    """Send a request that is not idempotent (InsertMedia, a domain start) and make sure it
    took effect, without ever sending it blindly twice: after a transient failure, observe
    (``took_effect``: a read) and send again only when the machine shows it did not --
    within the retry policy and the stage's deadline.
    """

    async def attempt() -> None:
        try:
            await send()
        except TransientError as exc:
            if await took_effect():
                return  # the answer was lost, not the request
            exc.retry = True  # observed: not applied, so sending it again is safe
            raise

    await retry_async(attempt, policy=policy, deadline=current_deadline())
