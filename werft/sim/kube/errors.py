"""Kubernetes ``Status`` errors, shaped like the real API server's.

Clients branch on ``code`` and ``reason`` (``kubernetes.client.ApiException.status``,
kubectl's ``IsNotFound`` / ``IsConflict``), and people read ``message``; all three follow
k8s.io/apimachinery/pkg/api/errors so that tools behave as they would against a real
cluster.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


class ApiError(Exception):
    """An API call that fails with a ``Status`` body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Obj | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if not self.reason:  # an error that is no Status (a plain Go error): no reason
            del body["reason"]
        if self.details is not None:
            body["details"] = self.details
        return body


def qualified(group: str, plural: str) -> str:
    """``deployments.apps`` for groups, ``configmaps`` for the core group (as kubectl says)."""
    return f"{plural}.{group}" if group else plural


def _details(group: str, plural: str, name: str, **extra: Any) -> Obj:
    details: Obj = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = plural
    details.update(extra)
    return details


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified(group, plural)} "{name}" not found',
        _details(group, plural, name),
    )


def namespace_not_found(namespace: str) -> ApiError:
    return not_found("", "namespaces", namespace)


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(group, plural)} "{name}" already exists',
        _details(group, plural, name),
    )


def conflict(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(group, plural)} "{name}": the object '
        "has been modified; please apply your changes to the latest version and try again",
        _details(group, plural, name),
    )


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; each cause is ``(reason, field, message)`` like field.ErrorList."""
    text = ", ".join(f"{field}: {message}" for _, field, message in causes)
    details = _details(group, kind, name)
    details["causes"] = [
        {"reason": reason, "message": message, "field": field} for reason, field, message in causes
    ]
    what = f"{kind}.{group}" if group else kind
    return ApiError(422, "Invalid", f'{what} "{name}" is invalid: {text}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(method: str) -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource ({method})",
        {},
    )


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - "
        f"accepted media types include: application/json-patch+json, application/merge-patch"
        f"+json, application/apply-patch+yaml (got {content_type or 'none'})",
    )


def forbidden(group: str, plural: str, name: str, why: str) -> ApiError:
    return ApiError(
        403,
        "Forbidden",
        f'{qualified(group, plural)} "{name}" is forbidden: {why}',
        _details(group, plural, name),
    )


def unprocessable(message: str) -> ApiError:
    """What a patch that cannot be applied (JSON patch ``test`` failed, ...) answers."""
    return ApiError(422, "Invalid", message)


def unauthorized() -> ApiError:
    # Exactly what kube-apiserver answers: no details, nothing about the credentials.
    return ApiError(401, "Unauthorized", "Unauthorized")


def service_unavailable(cluster: str) -> ApiError:
    return ApiError(
        503, "ServiceUnavailable", f"the API server of cluster {cluster} is not available yet"
    )


def cluster_not_found(cluster: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'cluster "{cluster}" is not known to the simulator', {"name": cluster}
    )


def not_found_path() -> ApiError:
    # The real server answers an unknown path with this exact message and no details.
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})
