"""Every failure of a BMC or hypervisor call is classified here, once.

``classify`` turns an httpx exception or an HTTP error response into werft's
vocabulary: :class:`~werft.errors.TransientError` (worth retrying: timeouts, refused or
reset connections, DNS failures, 5xx, 429, a busy BMC) or
:class:`~werft.errors.PermanentError` (retrying cannot help: refused credentials, an
unknown system, a request the BMC rejects). Messages name the machine and the endpoint
(host:port) and never carry credentials: the exceptions are raised ``from None`` so no
request object (which holds the Authorization header) travels with them.

Each error also carries a machine-readable ``reason`` (the constants below), set here and
nowhere else; the infrastructure stage puts it into its Condition as it is. A failure
none of them fits keeps the class's generic reason and the stage names it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from werft.errors import PermanentError, TransientError
from werft.retry import retry_after_seconds

# Redfish MessageIds (Base registry, any version) that mean "busy, come back later",
# whatever HTTP status a BMC pairs them with (some send 400 or 409 for these).
BUSY_MESSAGES = frozenset(
    {
        "ServiceTemporarilyUnavailable",
        "ServiceShuttingDown",
        "ResourceInUse",
        "SessionLimitExceeded",
    }
)

# Statuses that are worth retrying even though they are < 500.
_TRANSIENT_4XX = frozenset({408, 412, 425, 429})
# What a BMC (or hypervisor) answers when it could not use the image it was told to
# fetch: the sim and sushy-tools say 400, some BMCs 422.
_MEDIA_REFUSED = frozenset({400, 422})

# Reasons (Condition vocabulary).
UNREACHABLE = "Unreachable"  # transient: no answer (refused, reset, timed out, DNS)
PROVIDER_ERROR = "ProviderError"  # transient: the endpoint answered (5xx, busy, 429)
BMC_UNAUTHORIZED = "BMCUnauthorized"  # permanent: 401/403 from a BMC
UNAUTHORIZED = "Unauthorized"  # permanent: 401/403 from a hypervisor
SYSTEM_NOT_FOUND = "SystemNotFound"  # permanent: no such system/domain (or no API) there
MEDIA_UNAVAILABLE = "MediaUnavailable"  # permanent: the endpoint could not fetch an image
CERTIFICATE_UNTRUSTED = "CertificateUntrusted"  # permanent: TLS verification failed
CA_BUNDLE_INVALID = "CABundleInvalid"  # permanent: the caBundle file is missing or unreadable
CREDENTIALS_MISSING = "CredentialsMissing"  # permanent: the credentialsRef resolves to nothing
TIMEOUT = "Timeout"  # transient: a wait of the provider's own ran out

# Causes (what happened at the wire, for retry statistics; besides the HTTP status).
TIMED_OUT = "timeout"
REFUSED = "connection refused"
LOST = "connection lost"


@dataclass(frozen=True)
class Target:
    """Who was being talked to, for messages: never holds a secret."""

    machine: str
    endpoint: str  # host:port
    kind: str = "BMC"  # "BMC", "hypervisor", "libvirt"
    credentials_ref: str | None = None
    ca_bundle: str | None = None  # the BMC's caBundle (a path), when the inventory sets one

    def __str__(self) -> str:
        return f"machine {self.machine} ({self.kind} {self.endpoint})"


def classify(
    failure: httpx.HTTPError | httpx.Response,
    target: Target,
    action: str,
    *,
    fetches_media: bool = False,
) -> TransientError | PermanentError:
    """The one place that decides transient vs permanent, and the reason, for
    HTTP-speaking providers.

    ``action`` says what werft was doing ("read the service root", "insert media"), so
    the message reads: ``machine m1 (BMC 10.0.0.5:443): insert media: HTTP 400: ...``.
    ``fetches_media``: the request makes the endpoint download an image (Redfish
    InsertMedia; defining a simulated domain, whose CD-ROMs are fetched then); its
    refusal (400/422) means the image could not be fetched or used: MediaUnavailable.
    """
    if isinstance(failure, httpx.Response):
        return _classify_response(failure, target, action, fetches_media=fetches_media)
    return _classify_exception(failure, target, action)


def redfish_message(body: Any) -> tuple[str | None, list[str]]:
    """(human message, MessageIds) from a Redfish error body, if it is one.

    The standard puts the useful text in ``error.@Message.ExtendedInfo[].Message``;
    some BMCs (sushy-tools among them) only fill ``error.message``. The simulator's
    hypervisor API answers ``{"error": "text"}``.
    """
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"] or None, []
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None, []
    error = body["error"]
    infos = error.get("@Message.ExtendedInfo")
    infos = [i for i in infos if isinstance(i, dict)] if isinstance(infos, list) else []
    ids = [str(i["MessageId"]) for i in infos if i.get("MessageId")]
    if error.get("code"):
        ids.append(str(error["code"]))
    texts = [str(i["Message"]) for i in infos if i.get("Message")]
    if not texts and error.get("message"):
        texts = [str(error["message"])]
    return ("; ".join(texts) or None), ids


def _is_busy(message_ids: list[str]) -> bool:
    # "Base.1.8.ServiceTemporarilyUnavailable" -> "ServiceTemporarilyUnavailable"
    return any(mid.rsplit(".", 1)[-1] in BUSY_MESSAGES for mid in message_ids)


def _classify_response(
    response: httpx.Response, target: Target, action: str, *, fetches_media: bool
) -> TransientError | PermanentError:
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:  # not JSON (an HTML error page from a proxy, an empty body)
        body = None
    text, ids = redfish_message(body)
    detail = f": {text}" if text else ""
    head = f"{target}: {action}: HTTP {status}"

    if status in (401, 403):
        # The BMC's own text is left out: some echo the user name back.
        ref = target.credentials_ref or "this endpoint"
        return PermanentError(
            f"{head}: {target.kind} refused the credentials for {ref}"
            + (" (not allowed to do this)" if status == 403 else ""),
            reason=BMC_UNAUTHORIZED if target.kind == "BMC" else UNAUTHORIZED,
        )
    if status == 503 or status in _TRANSIENT_4XX or _is_busy(ids):
        return TransientError(
            f"{head} (busy or rate limited, retry later){detail}",
            reason=PROVIDER_ERROR,
            cause=str(status),
            retry_after=retry_after(response),
            # 412: the resource changed since werft read it; the same request with the
            # same If-Match fails again. The caller reads it afresh.
            retry=status != 412,
        )
    if status == 404:
        # No such system (a typo in the address) or no BMC / hypervisor API at all there.
        path = response.request.url.path
        return PermanentError(f"{head}: {path} not found{detail}", reason=SYSTEM_NOT_FOUND)
    if status == 501:  # the BMC does not implement the operation: no retry changes that
        return PermanentError(f"{head}: not implemented by this endpoint{detail}")
    if status >= 500:
        return TransientError(
            f"{head}{detail}",
            reason=PROVIDER_ERROR,
            cause=str(status),
            retry_after=retry_after(response),
        )
    reason = MEDIA_UNAVAILABLE if fetches_media and status in _MEDIA_REFUSED else None
    return PermanentError(f"{head}{detail or ': ' + response.reason_phrase}", reason=reason)


def _classify_exception(
    exc: httpx.HTTPError, target: Target, action: str
) -> TransientError | PermanentError:
    head = f"{target}: {action}"
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(
            f"{head}: timed out ({type(exc).__name__})", reason=UNREACHABLE, cause=TIMED_OUT
        )
    if isinstance(exc, httpx.ConnectError) and _tls_verification_failed(exc):
        # An untrusted certificate does not heal by retrying; the inventory must say
        # which CA to trust.
        if target.ca_bundle:  # set, but it is not the CA that signed this certificate
            advice = (
                f"the caBundle {target.ca_bundle} does not sign it: give the CA that "
                "issued the BMC's certificate"
            )
        else:
            advice = "set caBundle or disableCertificateVerification on the BMC"
        return PermanentError(
            f"{head}: TLS certificate not trusted ({_reason(exc)}); {advice}",
            reason=CERTIFICATE_UNTRUSTED,
        )
    if isinstance(exc, httpx.ConnectError):  # refused, unreachable, DNS failure
        return TransientError(
            f"{head}: cannot connect ({_reason(exc)})", reason=UNREACHABLE, cause=REFUSED
        )
    if isinstance(exc, httpx.TransportError) and not isinstance(
        exc, httpx.UnsupportedProtocol | httpx.ProxyError
    ):  # reset, closed mid-response, protocol garbage from a rebooting BMC
        return TransientError(
            f"{head}: connection failed ({_reason(exc)})", reason=UNREACHABLE, cause=LOST
        )
    return PermanentError(f"{head}: {_reason(exc)}")


def retry_after(response: httpx.Response) -> float | None:
    return retry_after_seconds(response.headers.get("Retry-After"))


def _tls_verification_failed(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


# libvirt error codes worth retrying: the hypervisor host is unreachable or busy, or the
# domain changed state under us (another actor started it a moment ago). Looked up by
# name so this module needs no libvirt import. The first three mean "no answer".
_LIBVIRT_UNREACHABLE = (
    "VIR_ERR_NO_CONNECT",
    "VIR_ERR_SYSTEM_ERROR",  # socket/ssh failures: connection refused, host down
    "VIR_ERR_RPC",
)
_LIBVIRT_TRANSIENT = (
    *_LIBVIRT_UNREACHABLE,
    "VIR_ERR_OPERATION_TIMEOUT",
    "VIR_ERR_AGENT_UNRESPONSIVE",
    "VIR_ERR_RESOURCE_BUSY",
    "VIR_ERR_OPERATION_INVALID",
    "VIR_ERR_OPERATION_ABORTED",
)


def classify_libvirt(
    exc: Exception, target: Target, action: str, module: Any
) -> TransientError | PermanentError:
    """The same decision for a ``libvirt.libvirtError`` (``module`` is the imported
    libvirt module, passed in because libvirt is an optional dependency)."""
    code = exc.get_error_code() if hasattr(exc, "get_error_code") else None
    message = (exc.get_error_message() if hasattr(exc, "get_error_message") else None) or exc
    head = f"{target}: {action}"
    if code in _codes(module, _LIBVIRT_UNREACHABLE):
        cause = REFUSED if "refused" in str(message).lower() else LOST
        return TransientError(f"{head}: {message}", reason=UNREACHABLE, cause=cause)
    if code in _codes(module, ("VIR_ERR_OPERATION_TIMEOUT",)):
        return TransientError(f"{head}: {message}", reason=PROVIDER_ERROR, cause=TIMED_OUT)
    if code in _codes(module, _LIBVIRT_TRANSIENT):
        return TransientError(f"{head}: {message}", reason=PROVIDER_ERROR, cause="busy")
    if code in _codes(module, ("VIR_ERR_AUTH_FAILED", "VIR_ERR_AUTH_CANCELLED")):
        return PermanentError(f"{head}: {message}", reason=UNAUTHORIZED)
    if code in _codes(module, ("VIR_ERR_NO_DOMAIN",)):
        return PermanentError(f"{head}: {message}", reason=SYSTEM_NOT_FOUND)
    return PermanentError(f"{head}: {message}")


def _codes(module: Any, names: tuple[str, ...]) -> set[int]:
    return {code for name in names if (code := getattr(module, name, None)) is not None}
