"""A BMC's caBundle: a missing or unreadable file names the machine and the BMC; a bundle
that does not sign the BMC's certificate says so instead of asking to set one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.providerfixtures import LoopbackHttp, bmc_machine, minimal_redfish, self_signed_tls
from werft.errors import PermanentError
from werft.providers import ProviderPool
from werft.providers._http import HttpOptions
from werft.retry import NEVER
from werft.secrets import SecretStore

FAST = HttpOptions(timeout=httpx.Timeout(5.0), retry=NEVER)


@pytest.fixture
def store(tmp_path: Path) -> SecretStore:
    secrets = SecretStore(tmp_path / "secrets")
    secrets.put("bmc-test", "admin:s3cret-Pa55word")
    return secrets


@pytest.fixture
async def bmc(tmp_path: Path) -> AsyncIterator[LoopbackHttp]:
    context, _ = self_signed_tls(tmp_path)
    server = await LoopbackHttp(tls=context).start()
    minimal_redfish(server)
    yield server
    await server.stop()


def _address(bmc: LoopbackHttp) -> str:
    return f"redfish+https://127.0.0.1:{bmc.port}/redfish/v1/Systems/System.Embedded.1"


@pytest.mark.parametrize("problem", ["missing", "unreadable"])
async def test_a_bad_ca_bundle_names_the_machine_and_the_bmc(
    bmc: LoopbackHttp, store: SecretStore, tmp_path: Path, problem: str
) -> None:
    bundle = tmp_path / "bmc-ca.pem"
    if problem == "unreadable":
        bundle.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    machine = bmc_machine("edge-17-cp0", _address(bmc), ca_bundle=str(bundle))
    async with ProviderPool(store, options=FAST) as pool:
        with pytest.raises(PermanentError) as caught:
            await pool.get(machine).observe(machine)
    text = str(caught.value)
    assert "machine edge-17-cp0" in text
    assert f"BMC https://127.0.0.1:{bmc.port}" in text
    assert f"caBundle {bundle} is {problem}" in text
    assert caught.value.reason == "CABundleInvalid"


async def test_a_ca_bundle_that_does_not_sign_the_certificate_says_so(
    bmc: LoopbackHttp, store: SecretStore, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    _, wrong_ca = self_signed_tls(other)  # a valid CA, but not the BMC's
    signed = bmc_machine("edge-17-cp0", _address(bmc), ca_bundle=str(wrong_ca))
    unset = bmc_machine("edge-17-cp0", _address(bmc))
    async with ProviderPool(store, options=FAST) as pool:
        with pytest.raises(PermanentError) as wrong:
            await pool.get(signed).observe(signed)
        with pytest.raises(PermanentError) as missing:
            await pool.get(unset).observe(unset)
    assert wrong.value.reason == missing.value.reason == "CertificateUntrusted"
    assert f"the caBundle {wrong_ca} does not sign it" in str(wrong.value)
    assert "set caBundle" not in str(wrong.value)
    assert "set caBundle or disableCertificateVerification" in str(missing.value)
