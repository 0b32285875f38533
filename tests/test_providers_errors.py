"""Failure classification over real responses and real socket errors on loopback."""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.providerfixtures import LoopbackHttp, Reply, free_port
from werft.errors import (
    GENERIC_REASONS,
    PermanentError,
    SecretNotFound,
    TransientError,
    is_transient,
)
from werft.providers.errors import Target, classify, redfish_message

TARGET = Target("node-7", "127.0.0.1:8443", "BMC", "bmc-fra1")


def redfish_error(message_id: str, message: str | None = None) -> dict[str, object]:
    info: dict[str, str] = {"MessageId": message_id}
    if message:
        info["Message"] = message
    return {"error": {"code": "Base.1.8.GeneralError", "@Message.ExtendedInfo": [info]}}


@pytest.fixture
async def server() -> AsyncIterator[LoopbackHttp]:
    loopback = await LoopbackHttp().start()
    yield loopback
    await loopback.stop()


async def outcome(server: LoopbackHttp, reply: Reply, timeout: float = 5.0) -> Exception:
    server.routes[("GET", "/x")] = reply
    async with httpx.AsyncClient(base_url=server.origin, timeout=timeout) as client:
        try:
            response = await client.get("/x")
        except httpx.HTTPError as exc:
            return classify(exc, TARGET, "read /x")
    assert response.status_code >= 400, "the case must fail"
    return classify(response, TARGET, "read /x")


@pytest.mark.parametrize(
    ("reply", "transient", "text"),
    [
        (Reply(500, redfish_error("Base.1.8.InternalError", "boom")), True, "HTTP 500: boom"),
        (Reply(502, "<html>bad gateway</html>"), True, "HTTP 502"),
        (Reply(503, {}), True, "busy"),
        (Reply(429, {}, headers={"Retry-After": "5"}), True, "HTTP 429"),
        (Reply(408), True, "HTTP 408"),
        (Reply(412), True, "HTTP 412"),  # ETag moved on: re-observe and retry
        (
            Reply(400, redfish_error("Base.1.5.ServiceTemporarilyUnavailable", "try later")),
            True,
            "try later",
        ),
        (Reply(409, redfish_error("Base.1.8.ResourceInUse")), True, "HTTP 409"),
        (Reply(404, redfish_error("Base.1.8.ResourceMissingAtURI")), False, "/x not found"),
        (Reply(501, {}), False, "not implemented"),
        (Reply(405, {}), False, "HTTP 405"),
        (Reply(409, {"error": {"message": "media already inserted"}}), False, "already inserted"),
    ],
)
async def test_status_classification(
    server: LoopbackHttp, reply: Reply, transient: bool, text: str
) -> None:
    error = await outcome(server, reply)
    assert is_transient(error) is transient
    assert isinstance(error, TransientError if transient else PermanentError)
    assert text in str(error)
    assert str(error).startswith("machine node-7 (BMC 127.0.0.1:8443): read /x: ")


async def test_bad_request_carries_the_redfish_extended_info_messages(
    server: LoopbackHttp,
) -> None:
    body = {
        "error": {
            "code": "Base.1.8.GeneralError",
            "message": "A general error has occurred. See ExtendedInfo for more information.",
            "@Message.ExtendedInfo": [
                {
                    "MessageId": "Base.1.8.PropertyValueNotInList",
                    "Message": "The value Floppy for the property MediaType is not in the list "
                    "of acceptable values.",
                },
                {"MessageId": "Base.1.8.Other", "Message": "Second problem."},
            ],
        }
    }
    error = await outcome(server, Reply(400, body))
    assert isinstance(error, PermanentError)
    assert str(error).endswith(
        "HTTP 400: The value Floppy for the property MediaType is not in the list of "
        "acceptable values.; Second problem."
    )


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_permanent_and_name_the_reference(
    server: LoopbackHttp, status: int
) -> None:
    body = {"error": {"message": "Incorrect password for user admin: hunter2"}}
    error = await outcome(server, Reply(status, body, headers={"WWW-Authenticate": "Basic"}))
    assert isinstance(error, PermanentError)
    assert "BMC refused the credentials for bmc-fra1" in str(error)
    assert "hunter2" not in str(error)  # the BMC's own words are left out


async def test_connection_refused_is_transient() -> None:
    port = free_port()
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(f"http://127.0.0.1:{port}/")
    error = classify(caught.value, TARGET, "read the service root")
    assert isinstance(error, TransientError)
    assert "cannot connect" in str(error)


async def test_read_timeout_is_transient(server: LoopbackHttp) -> None:
    error = await outcome(server, Reply(200, {}, delay=2.0), timeout=0.2)
    assert isinstance(error, TransientError)
    assert "timed out (ReadTimeout)" in str(error)


async def test_connection_dropped_mid_request_is_transient(server: LoopbackHttp) -> None:
    error = await outcome(server, Reply(drop=True))
    assert isinstance(error, TransientError)
    assert "connection failed" in str(error)


async def test_unsupported_url_scheme_is_permanent() -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(httpx.UnsupportedProtocol) as caught:
            await client.get("gopher://127.0.0.1/")
    assert isinstance(classify(caught.value, TARGET, "read"), PermanentError)


def test_redfish_message_falls_back_to_the_error_message() -> None:
    # sushy-tools' shape: no Message in ExtendedInfo, text in error.message.
    body = {
        "error": {
            "code": "Base.1.0.GeneralError",
            "message": "Fake system x was not found",
            "@Message.ExtendedInfo": [{"MessageId": "Base.1.0.GeneralError"}],
        }
    }
    assert redfish_message(body) == (
        "Fake system x was not found",
        ["Base.1.0.GeneralError", "Base.1.0.GeneralError"],
    )
    assert redfish_message({"not": "redfish"}) == (None, [])
    assert redfish_message(None) == (None, [])


# --- reasons: machine-readable, set here once ---------------------------------------------


async def reason_of(
    server: LoopbackHttp, reply: Reply, *, target: Target = TARGET, fetches_media: bool = False
) -> str:
    server.routes[("POST", "/x")] = reply
    async with httpx.AsyncClient(base_url=server.origin, timeout=0.5) as client:
        try:
            response = await client.post("/x", json={})
        except httpx.HTTPError as exc:
            error = classify(exc, target, "insert media")
        else:
            error = classify(response, target, "insert media", fetches_media=fetches_media)
    assert isinstance(error, TransientError | PermanentError)
    return error.reason


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(500, redfish_error("Base.1.8.InternalError", "boom")), "ProviderError"),
        (Reply(503, {}), "ProviderError"),
        (Reply(429, {}), "ProviderError"),
        (Reply(401, {}), "BMCUnauthorized"),
        (Reply(403, {}), "BMCUnauthorized"),
        (Reply(404, {}), "SystemNotFound"),
        (Reply(drop=True), "Unreachable"),
        (Reply(200, {}, delay=2.0), "Unreachable"),  # read timeout (0.5 s)
        # A plain rejection: nothing more specific to say; the stage names it.
        (Reply(400, redfish_error("Base.1.8.PropertyValueNotInList")), "Permanent"),
        (Reply(501, {}), "Permanent"),
    ],
)
async def test_errors_carry_a_reason_from_the_source(
    server: LoopbackHttp, reply: Reply, reason: str
) -> None:
    assert await reason_of(server, reply) == reason


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        # What the simulator's BMC answers when it cannot fetch the image.
        (
            Reply(400, redfish_error("Base.1.8.ActionParameterValueError", "HTTP 404")),
            "MediaUnavailable",
        ),
        (Reply(422, {}), "MediaUnavailable"),
        # The simulated hypervisor's error shape, for a PUT whose media it cannot fetch.
        (Reply(400, {"error": "could not fetch image 'x': HTTP 404"}), "MediaUnavailable"),
        # Not about the image: a drive holding media, a busy BMC, an unreachable one.
        (Reply(409, {"error": {"message": "media already inserted"}}), "Permanent"),
        (Reply(503, {}), "ProviderError"),
        (Reply(drop=True), "Unreachable"),
    ],
)
async def test_a_refused_media_fetch_is_media_unavailable(
    server: LoopbackHttp, reply: Reply, reason: str
) -> None:
    assert await reason_of(server, reply, fetches_media=True) == reason
    if reason == "MediaUnavailable":  # only where the request makes the endpoint fetch
        assert await reason_of(server, reply, fetches_media=False) == "Permanent"


async def test_a_hypervisor_refusing_credentials_is_unauthorized(server: LoopbackHttp) -> None:
    hypervisor = Target("vm-1", "127.0.0.1:8686", "hypervisor")
    assert await reason_of(server, Reply(401, {}), target=hypervisor) == "Unauthorized"


async def test_connection_refused_is_unreachable() -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(f"http://127.0.0.1:{free_port()}/")
    error = classify(caught.value, TARGET, "read the service root")
    assert (type(error), error.reason) == (TransientError, "Unreachable")


def test_reason_defaults_to_the_class_and_survives_pickling() -> None:
    assert TransientError("x").reason == "Transient"
    assert PermanentError("x").reason == "Permanent"
    assert SecretNotFound("x").reason == "SecretNotFound"
    assert {"Transient", "Permanent"} == GENERIC_REASONS
    # Prefect may carry a task's exception across processes.
    error = pickle.loads(pickle.dumps(TransientError("gone", reason="Unreachable")))
    assert (str(error), error.reason, is_transient(error)) == ("gone", "Unreachable", True)
