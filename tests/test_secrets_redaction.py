"""One redaction layer: every secret handed out is masked in every log record and every
Condition, and failures carry no httpx request (its Authorization header) along."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings

from tests.providerfixtures import LoopbackHttp, Reply, free_port
from tests.renderfixtures import make_cluster
from werft import redact, secrets
from werft.conditions import Condition, ConditionType
from werft.providers._http import Calls
from werft.providers.errors import Target
from werft.render.pki import ensure_cluster_pki
from werft.retry import NEVER
from werft.secrets import SecretStore

PASSWORD = "s3cret-Pa55word"


@pytest.fixture
def store(tmp_path: Path) -> SecretStore:
    return SecretStore(tmp_path / "secrets")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything the root logger writes, formatted with tracebacks, as a handler would."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture
async def server() -> AsyncIterator[LoopbackHttp]:
    loopback = await LoopbackHttp().start()
    yield loopback
    await loopback.stop()


def test_store_values_are_masked_in_every_logger_and_traceback(
    store: SecretStore, captured: io.StringIO
) -> None:
    store.put("bmc-fra1", f"admin:{PASSWORD}")
    user, password = secrets.basic_auth("bmc-fra1", store)
    header = base64.b64encode(f"{user}:{password}".encode()).decode()

    logging.getLogger("werft.stages").info("using %s", password)
    # Outside a flow run, Prefect's API handler warns that it has nowhere to send this.
    with temporary_settings({PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}):
        logging.getLogger("prefect.task_runs").warning("server said: Authorization: Basic %s",
                                                       header)
    logging.getLogger("httpx").debug(f"echoed {password!r}")  # pre-formatted
    try:
        raise RuntimeError(f"BMC rejected {password}")
    except RuntimeError:
        logging.getLogger("werft.providers.redfish").exception("failed")

    text = captured.getvalue()
    assert password not in text and header not in text
    assert text.count(redact.MASK) == 4
    assert "RuntimeError: BMC rejected ***" in text  # the traceback is still there


def test_generated_keys_are_masked_even_rewrapped(
    store: SecretStore, captured: io.StringIO
) -> None:
    pki = ensure_cluster_pki(make_cluster("fresh"), store)  # generated in this process
    key_lines = [line for line in pki.ca.key_pem.splitlines() if not line.startswith("-----")]

    logging.getLogger("werft").error("bad key %r", pki.ca.key_pem)  # newlines escaped
    logging.getLogger("werft").error("token %s", pki.admin_token)

    text = captured.getvalue()
    assert all(line not in text for line in key_lines)
    assert pki.admin_token not in text
    assert "BEGIN EC PRIVATE KEY" in text  # only the secret part is masked


def test_condition_messages_are_masked(store: SecretStore) -> None:
    store.put("bmc-x", f"root:{PASSWORD}")
    secrets.resolve("bmc-x", store)
    condition = Condition(
        type=ConditionType.VERIFIED,
        status="False",
        reason="InternalError",
        message=f"KeyError: 'root:{PASSWORD}'",
        checks=[f"echo {PASSWORD}"],
    )
    assert PASSWORD not in condition.model_dump_json()
    assert condition.message == "KeyError: '***'"


def test_a_kubeconfig_masks_its_credentials_not_its_structure() -> None:
    token = "Zx9" + "a" * 20 + "B7"
    redact.register_secret(
        "apiVersion: v1\nclusters:\n- cluster:\n    server: https://10.0.0.1:6443\n"
        "  name: edge-0001-cluster-a\nusers:\n- name: admin\n  user:\n"
        f"    token: {token}\n"
    )
    text = "apiVersion: v1 on edge-0001-cluster-a at https://10.0.0.1:6443"
    assert redact.redact(text) == text
    assert redact.redact(f"Bearer {token}") == "Bearer ***"


def test_short_values_are_not_registered() -> None:
    redact.register_secret("abc")
    assert redact.redact("abc abc") == "abc abc"


def test_a_public_certificate_is_not_masked(store: SecretStore) -> None:
    pki = ensure_cluster_pki(make_cluster("public"), store)
    assert store.get("clusters/public/ca.crt") == pki.ca.cert_pem
    body = pki.ca.cert_pem.splitlines()[1]
    assert redact.redact(body) == body


async def test_a_failed_request_carries_no_httpx_context(server: LoopbackHttp) -> None:
    target = Target("m1", f"127.0.0.1:{server.port}", "BMC", "bmc-ctx")
    server.routes[("GET", "/x")] = Reply(500, {"error": {"message": "boom"}})
    async with httpx.AsyncClient(base_url=server.origin, timeout=5) as client:
        calls = Calls(client, target, auth=("admin", PASSWORD), retry=NEVER)
        with pytest.raises(Exception) as refused:
            await calls.request("GET", "/x", "read x")
    assert refused.value.__context__ is None and refused.value.__cause__ is None

    port = free_port()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
        calls = Calls(client, target, auth=("admin", PASSWORD), retry=NEVER)
        with pytest.raises(Exception) as unreachable:
            await calls.request("GET", "/x", "read x")
    # The httpx.ConnectError holds the request and its Authorization header.
    assert unreachable.value.__context__ is None and unreachable.value.__cause__ is None


async def test_a_401_makes_the_next_resolve_read_the_secret_afresh(server: LoopbackHttp) -> None:
    asked: list[str] = []
    values = iter(["admin:old-password", "admin:new-password"])
    cache: dict[str, str] = {}

    def backend(ref: str) -> str | None:
        if ref != "bmc-rotated":
            return None
        if ref not in cache:
            asked.append(ref)
            cache[ref] = next(values)
        return cache[ref]

    secrets.register_backend(backend, invalidate=lambda ref: cache.pop(ref, None))
    try:
        empty = SecretStore(Path("/nonexistent-werft-store"))
        assert secrets.basic_auth("bmc-rotated", empty) == ("admin", "old-password")
        assert secrets.basic_auth("bmc-rotated", empty) == ("admin", "old-password")  # cached
        server.routes[("GET", "/x")] = Reply(401, {}, headers={"WWW-Authenticate": "Basic"})
        target = Target("m1", f"127.0.0.1:{server.port}", "BMC", "bmc-rotated")
        async with httpx.AsyncClient(base_url=server.origin, timeout=5) as client:
            with pytest.raises(Exception, match="refused the credentials"):
                await Calls(client, target, auth=("admin", "old"), retry=NEVER).request(
                    "GET", "/x", "read x"
                )
        assert secrets.basic_auth("bmc-rotated", empty) == ("admin", "new-password")
        assert asked == ["bmc-rotated", "bmc-rotated"]
    finally:
        secrets._extra_backends.remove(backend)
        secrets._invalidators.clear()


def test_escaping_exceptions_are_scrubbed_in_place_or_replaced() -> None:
    redact.register_secret(PASSWORD)
    with pytest.raises(secrets.SecretNotFound) as kept, redact.redacted_exceptions():
        raise secrets.SecretNotFound(f"no {PASSWORD} here")
    assert str(kept.value) == "no *** here"  # same type: retry conditions still work

    with pytest.raises(redact.RedactedError) as replaced, redact.redacted_exceptions():
        raise FileNotFoundError(2, "No such file", f"/tmp/{PASSWORD}")
    assert PASSWORD not in str(replaced.value)
    assert str(replaced.value).startswith("FileNotFoundError: ")
