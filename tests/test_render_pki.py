"""Cluster PKI and the admin kubeconfig: generated once, loaded after, never shown."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client as k8s
from kubernetes.config import new_client_from_config_dict

from tests.renderfixtures import make_cluster
from werft.errors import PermanentError
from werft.render.kubeconfig import kubeconfig_for, render_kubeconfig
from werft.render.pki import SECRET_NAMES, ca_cert_hash, ensure_cluster_pki, secret_name
from werft.secrets import SecretStore


@pytest.fixture
def store(tmp_path: Path) -> SecretStore:
    return SecretStore(tmp_path / "secrets")


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under root with inode, mtime and content: any write changes it."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_first_call_generates_a_kubeadm_compatible_ca(store: SecretStore) -> None:
    cluster = make_cluster()
    pki = ensure_cluster_pki(cluster, store)

    cert = x509.load_pem_x509_certificate(pki.ca.cert_pem.encode())
    assert cert.subject.rfc4514_string() == "CN=kubernetes"
    assert cert.issuer == cert.subject
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime >= timedelta(days=3650)
    assert cert.not_valid_before_utc <= datetime.now(UTC)
    key = serialization.load_pem_private_key(pki.ca.key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert pki.ca.key_pem.startswith("-----BEGIN EC PRIVATE KEY-----")

    for item, cn in (("front-proxy-ca", "front-proxy-ca"), ("etcd-ca", "etcd-ca")):
        pem = store.get(secret_name(cluster.name, f"{item}.crt"))
        assert pem is not None
        assert x509.load_pem_x509_certificate(pem.encode()).subject.rfc4514_string() == f"CN={cn}"

    for item in SECRET_NAMES:
        path = store.root / "clusters" / cluster.name / item
        assert path.is_file(), item
        assert path.stat().st_mode & 0o777 == 0o600, item
    assert store.get(secret_name(cluster.name, "ca.crt")) == pki.ca.cert_pem
    assert store.get(secret_name(cluster.name, "ca.key")) == pki.ca.key_pem


def test_tokens_have_the_shapes_kubeadm_and_tokens_csv_need(store: SecretStore) -> None:
    pki = ensure_cluster_pki(make_cluster(), store)
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", pki.bootstrap_token)
    # 32 random bytes, urlsafe base64: no comma or quote to break tokens.csv
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", pki.admin_token)
    other = ensure_cluster_pki(make_cluster("other"), store)
    assert other.admin_token != pki.admin_token
    assert other.bootstrap_token != pki.bootstrap_token
    assert other.ca.cert_pem != pki.ca.cert_pem


def test_second_call_loads_the_same_pki_and_writes_nothing(store: SecretStore) -> None:
    cluster = make_cluster()
    first = ensure_cluster_pki(cluster, store)
    before = snapshot(store.root)

    second = ensure_cluster_pki(cluster, store)

    assert second == first
    assert snapshot(store.root) == before


def test_repr_and_str_show_no_secret(store: SecretStore) -> None:
    pki = ensure_cluster_pki(make_cluster(), store)
    key_body = pki.ca.key_pem.splitlines()[1]
    sa_body = pki.service_account_key_pem.splitlines()[1]
    for text in (repr(pki), str(pki), repr(pki.ca), repr(pki.etcd_ca), f"{pki}"):
        assert pki.admin_token not in text
        assert pki.bootstrap_token not in text
        assert pki.bootstrap_token.split(".")[1] not in text
        assert key_body not in text and sa_body not in text
    assert "fra1-core-a" in repr(pki)


@pytest.mark.parametrize("lost", ["ca.crt", "ca.key"])
def test_a_half_written_pair_is_generated_anew(store: SecretStore, lost: str) -> None:
    """A crash between writing ca.key and ca.crt (or a lost file) must not wedge the
    next run: the pair is regenerated and matches; other secrets are kept."""
    cluster = make_cluster()
    first = ensure_cluster_pki(cluster, store)
    store.delete(secret_name(cluster.name, lost))

    second = ensure_cluster_pki(cluster, store)

    assert second.ca.cert_pem != first.ca.cert_pem
    cert = x509.load_pem_x509_certificate(second.ca.cert_pem.encode())
    key = serialization.load_pem_private_key(second.ca.key_pem.encode(), password=None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    assert store.get(secret_name(cluster.name, "ca.crt")) == second.ca.cert_pem
    assert second.admin_token == first.admin_token
    assert second.etcd_ca == first.etcd_ca


def test_a_key_that_does_not_match_its_certificate_is_replaced(store: SecretStore) -> None:
    cluster = make_cluster()
    ensure_cluster_pki(cluster, store)
    stray = ensure_cluster_pki(make_cluster("stray"), store)
    store.put(secret_name(cluster.name, "sa.key"), stray.service_account_key_pem)

    pki = ensure_cluster_pki(cluster, store)

    assert pki.service_account_key_pem != stray.service_account_key_pem
    key = serialization.load_pem_private_key(pki.service_account_key_pem.encode(), None)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pub.decode() == pki.service_account_pub_pem


def test_a_malformed_token_is_a_permanent_error_that_does_not_echo_it(
    store: SecretStore,
) -> None:
    cluster = make_cluster()
    ensure_cluster_pki(cluster, store)
    store.put(secret_name(cluster.name, "bootstrap-token"), "NOT-A-TOKEN-s3cr3t")

    with pytest.raises(PermanentError) as info:
        ensure_cluster_pki(cluster, store)
    assert "bootstrap-token" in str(info.value)
    assert "s3cr3t" not in str(info.value)


def test_concurrent_first_calls_agree_on_one_pki(store: SecretStore) -> None:
    cluster = make_cluster()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: ensure_cluster_pki(cluster, store), range(4)))
    assert all(r == results[0] for r in results)
    assert ensure_cluster_pki(cluster, store) == results[0]


def test_ca_cert_hash_is_sha256_of_the_public_key_info(store: SecretStore) -> None:
    pki = ensure_cluster_pki(make_cluster(), store)
    value = ca_cert_hash(pki)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", value)
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed for the independent computation")
    # The computation kubeadm's documentation gives, done by openssl.
    pub = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout"],
        input=pki.ca.cert_pem.encode(),
        capture_output=True,
        check=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"],
        input=pub,
        capture_output=True,
        check=True,
    ).stdout
    assert value == "sha256:" + hashlib.sha256(der).hexdigest()


# --- kubeconfig ------------------------------------------------------------------------


class _FakeAPIServer(BaseHTTPRequestHandler):
    """Answers GET /clusters/<c>/api like a kube-apiserver, only with the right token."""

    token = ""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            body, status = {"kind": "Status", "code": 401, "reason": "Unauthorized"}, 401
        elif self.path.rstrip("/") == "/clusters/c1/api":
            body = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            status = 200
        else:
            body, status = {"kind": "Status", "code": 404}, 404
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[tuple[ThreadingHTTPServer, type[_FakeAPIServer]]]:
    handler = type("Handler", (_FakeAPIServer,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()


def test_kubeconfig_loads_in_the_kubernetes_client_and_authenticates(
    store: SecretStore, api_server: tuple[ThreadingHTTPServer, type[_FakeAPIServer]]
) -> None:
    server, handler = api_server
    endpoint = f"http://127.0.0.1:{server.server_port}/clusters/c1"
    cluster = make_cluster("c1", api_endpoint=endpoint)
    text = kubeconfig_for(cluster, store)
    pki = ensure_cluster_pki(cluster, store)
    handler.token = pki.admin_token

    config = yaml.safe_load(text)
    assert config["users"] == [{"name": "werft-admin", "user": {"token": pki.admin_token}}]
    api = new_client_from_config_dict(config)
    assert api.configuration.host == endpoint
    versions = k8s.CoreApi(api).get_api_versions()
    assert versions.versions == ["v1"]

    handler.token = "someone-else"
    with pytest.raises(k8s.ApiException) as info:
        k8s.CoreApi(api).get_api_versions()
    assert info.value.status == 401

    # Over https the client trusts exactly werft's CA (no connection made here).
    tls = make_cluster("c1", api_endpoint="https://10.20.0.10:6443")
    tls_api = new_client_from_config_dict(yaml.safe_load(render_kubeconfig(tls, pki)))
    assert Path(tls_api.configuration.ssl_ca_cert).read_text() == pki.ca.cert_pem
    assert tls_api.configuration.verify_ssl


def test_kubeconfig_is_stored_once_and_follows_the_endpoint(store: SecretStore) -> None:
    cluster = make_cluster()
    text = kubeconfig_for(cluster, store)
    assert store.get(secret_name(cluster.name, "kubeconfig")) == text
    before = snapshot(store.root)

    assert kubeconfig_for(cluster, store) == text
    assert snapshot(store.root) == before

    moved = make_cluster(api_endpoint="https://10.20.0.10:6443")
    moved_text = kubeconfig_for(moved, store)
    assert yaml.safe_load(moved_text)["clusters"][0]["cluster"]["server"] == (
        "https://10.20.0.10:6443"
    )
    assert store.get(secret_name(cluster.name, "kubeconfig")) == moved_text
