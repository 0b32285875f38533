"""A self-signed certificate for serving the simulated Kubernetes APIs over HTTPS.

Why this exists: kubectl (client-go) never sends credentials to an ``http://`` server --
it reads the kubeconfig's user (token, client certificate, exec plugin) only for TLS
transports (kubernetes/kubectl#744). Against ``http://127.0.0.1:8686/clusters/<c>``
kubectl therefore always gets 401, while the Python ``kubernetes`` client sends the token
either way. So a person's kubectl needs a TLS listener: uvicorn with this certificate
(``ssl_certfile`` / ``ssl_keyfile``) and a kubeconfig that trusts it
(``certificate-authority-data`` = the certificate, base64).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class ServingCert:
    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:  # never the key
        return "ServingCert(<127.0.0.1>)"


def self_signed(
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 365
) -> ServingCert:
    """A CA-flagged self-signed certificate valid for ``hosts`` (IPs and DNS names)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "werft-sim-kube-apiserver")])
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return ServingCert(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
