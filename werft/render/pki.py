"""The cluster PKI werft owns: generated once per cluster, before the cluster exists.

Because werft creates the CA itself, it holds a working admin kubeconfig from the first
second (a bearer token the API server accepts through ``--token-auth-file``) and every
joining node can pin the CA through ``caCertHashes``.

What is generated (kubeadm's shared control-plane material, so additional control planes
can join without ``--certificate-key`` -- werft distributes the keys through the seed):

  cluster CA (CN "kubernetes"), front-proxy CA, etcd CA, service-account key pair,
  an admin bearer token, a kubeadm bootstrap token and k3s's server token.

The bootstrap token expires (``bootstrap-token.expires``, the fleet's
``defaults.bootstrapTokenTTLHours``, 24 h like kubeadm's default): a joining node needs it
only until it has joined, and a seed that leaks later must not let anyone join a node.
Asked with a TTL, ``ensure_cluster_pki`` renews a token that is past half its life, so a
machine (re)installed from then on gets a fresh one with enough life left for its
install; until then every render is the same, so seeds stay byte-stable. k3s servers
cannot join with a bootstrap token and k3s encrypts its datastore with the server token,
so that one is separate and never changes.

Keys are ECDSA P-256: kubeadm (an existing ``ca.key`` of any supported type is used as is)
and k3s (whose own CAs are ECDSA) both accept them, and they cost ~1 ms to generate
against ~100 ms for RSA-2048 -- which matters for 10,000 edge clusters.

Everything lives in the SecretStore under ``clusters/<cluster>/``; the names are listed in
``SECRET_NAMES``. A second call loads what is there and writes nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import re
import secrets
import string
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from werft.errors import PermanentError
from werft.inventory.resolved import Inventory, ResolvedCluster
from werft.secrets import SecretStore

log = logging.getLogger(__name__)

CA_VALIDITY = timedelta(days=3650)
# Backdate certificates a little so a node whose clock lags does not reject them.
CLOCK_SKEW = timedelta(minutes=5)

BOOTSTRAP_TOKEN_PATTERN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
# kubeadm's group for joining nodes (k3s's agents are authorised the same way).
BOOTSTRAP_GROUP = "system:bootstrappers:kubeadm:default-node-token"
# A new one is an admin-style token; one carried over from before is a bootstrap token.
SERVER_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{22,}$")
# token_urlsafe(32) gives 43 characters; never a comma, so tokens.csv stays well-formed.
ADMIN_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{43,}$")

DEFAULT_BOOTSTRAP_TOKEN_TTL = timedelta(hours=24)  # kubeadm's own default

SECRET_NAMES = (
    "ca.crt",
    "ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd-ca.crt",
    "etcd-ca.key",
    "sa.pub",
    "sa.key",
    "admin-token",
    "bootstrap-token",
    "bootstrap-token.expires",
    "server-token",
)


def secret_name(cluster: str, item: str) -> str:
    """The SecretStore name of one piece of a cluster's PKI, e.g. ``clusters/c1/ca.key``."""
    return f"clusters/{cluster}/{item}"


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate (public) and its key (secret), both PEM."""

    cert_pem: str
    key_pem: str = field(repr=False)

    def __repr__(self) -> str:
        return f"CertificateAuthority(sha256={_fingerprint(self.cert_pem)[:16]}...)"


@dataclass(frozen=True)
class ClusterPKI:
    """Everything a cluster's seeds and kubeconfig are rendered from. Its repr shows no
    secret: only the cluster name and the CA fingerprint."""

    cluster: str
    ca: CertificateAuthority
    front_proxy_ca: CertificateAuthority
    etcd_ca: CertificateAuthority
    service_account_pub_pem: str
    service_account_key_pem: str = field(repr=False)
    admin_token: str = field(repr=False)
    bootstrap_token: str = field(repr=False)
    # When the bootstrap token stops working; None for a token from before werft set
    # expiries (kubeadm then applies its default TTL from ``kubeadm init``).
    bootstrap_token_expires: datetime | None = None
    # k3s's server token (servers join with it; it keys k3s's datastore encryption).
    server_token: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return f"ClusterPKI(cluster={self.cluster!r}, ca_sha256={_fingerprint(self.ca.cert_pem)})"

    __str__ = __repr__


def ensure_cluster_pki(
    cluster: ResolvedCluster,
    store: SecretStore,
    *,
    token_ttl: timedelta | None = None,
    now: datetime | None = None,
) -> ClusterPKI:
    """Load the cluster's PKI from ``store``, generating whatever is missing.

    With ``token_ttl`` (what rendering seeds passes: the fleet's TTL), a bootstrap token
    past half its life -- or without a recorded expiry -- is replaced by a fresh one
    valid for ``token_ttl`` from ``now``; without it (reading the PKI for a kubeconfig),
    the stored token is kept as it is.

    Idempotent and crash-safe: each key is written before its certificate, a missing
    certificate is made from the stored key, and a pair with mismatching halves is
    generated anew, so an interrupted first run never leaves a state the next run
    cannot finish.

    Safe for any number of workers on one store: what is missing is created with
    ``SecretStore.put_if_absent``, so the first writer wins and every other worker
    adopts its CA, keys and tokens -- across machines sharing the store too, which a
    lock file could not promise. Only replacing something (a repair, a token renewal)
    takes the cluster lock.
    """
    name = cluster.name
    ca = _ensure_ca(store, name, "ca", "kubernetes")
    front_proxy = _ensure_ca(store, name, "front-proxy-ca", "front-proxy-ca")
    etcd = _ensure_ca(store, name, "etcd-ca", "etcd-ca")
    sa_pub, sa_key = _ensure_pair(store, name, "sa.pub", "sa.key", _service_account_pub)
    admin = _ensure_token(store, name, "admin-token", _new_admin_token, ADMIN_TOKEN_PATTERN)
    # Before the bootstrap token may be renewed: a k3s cluster provisioned before the
    # two were separate joined its servers with the bootstrap token, and keeps it.
    server = _ensure_token(
        store,
        name,
        "server-token",
        lambda: _stored_token(store, name, "bootstrap-token") or _new_admin_token(),
        SERVER_TOKEN_PATTERN,
    )
    bootstrap, expires = _ensure_bootstrap_token(store, name, token_ttl, now or datetime.now(UTC))
    return ClusterPKI(
        cluster=name,
        ca=ca,
        front_proxy_ca=front_proxy,
        etcd_ca=etcd,
        service_account_pub_pem=sa_pub,
        service_account_key_pem=sa_key,
        admin_token=admin,
        bootstrap_token=bootstrap,
        bootstrap_token_expires=expires,
        server_token=server,
    )


def token_ttl(inventory: Inventory) -> timedelta:
    """The fleet's bootstrap token TTL (``spec.defaults.bootstrapTokenTTLHours``)."""
    return timedelta(hours=inventory.fleet.spec.defaults.bootstrap_token_ttl_hours)


def bootstrap_token_secret(pki: ClusterPKI) -> dict[str, Any]:
    """The bootstrap token as the Secret ``kubeadm token create`` makes
    (``kube-system/bootstrap-token-<id>``), for werft to server-side apply once the API
    answers: ``kubeadm init`` creates it on a new kubeadm cluster, but k3s creates none
    (its agents join with it), and a machine re-installed after a renewal joins with a
    token the cluster has not seen yet. The API server deletes it at ``expiration``."""
    token_id, token_secret = pki.bootstrap_token.split(".", 1)
    data = {
        "description": f"werft: joins the nodes of {pki.cluster}",
        "token-id": token_id,
        "token-secret": token_secret,
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": BOOTSTRAP_GROUP,
    }
    if pki.bootstrap_token_expires is not None:
        data["expiration"] = rfc3339(pki.bootstrap_token_expires)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": data,
    }


def rfc3339(instant: datetime) -> str:
    """``2026-01-02T03:04:05Z``: what kubeadm's ``expires`` and the Secret's
    ``expiration`` read."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ca_cert_hash(pki: ClusterPKI) -> str:
    """kubeadm's ``--discovery-token-ca-cert-hash``: sha256 of the CA's SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(pki.ca.cert_pem.encode())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


# --- generation ------------------------------------------------------------------------


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    # SEC1 "EC PRIVATE KEY", the form kubeadm itself writes.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def _new_key_pem() -> str:
    return _key_pem(_new_key())


def _load_key(key_pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an EC key")
    return key


def _ca_cert(key_pem: str, common_name: str) -> str:
    """A self-signed CA certificate for the stored key (ValueError if it is unreadable)."""
    key = _load_key(key_pem)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _service_account_pub(key_pem: str) -> str:
    pub = (
        _load_key(key_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pub.decode()


def _new_admin_token() -> str:
    return secrets.token_urlsafe(32)


def _new_bootstrap_token() -> str:
    # kubeadm's format: "<id>.<secret>", lower-case letters and digits only.
    alphabet = string.ascii_lowercase + string.digits

    def pick(length: int) -> str:
        return "".join(secrets.choice(alphabet) for _ in range(length))

    return f"{pick(6)}.{pick(16)}"


# --- load or create --------------------------------------------------------------------


def _ensure_ca(
    store: SecretStore, cluster: str, item: str, common_name: str
) -> CertificateAuthority:
    cert, key = _ensure_pair(
        store, cluster, f"{item}.crt", f"{item}.key", lambda pem: _ca_cert(pem, common_name)
    )
    return CertificateAuthority(cert_pem=cert, key_pem=key)


def _ensure_pair(
    store: SecretStore,
    cluster: str,
    public_item: str,
    key_item: str,
    public_of: Callable[[str], str],
) -> tuple[str, str]:
    """The stored (public half, key) pair, creating what is missing first-writer-wins:
    the key, then the public half made from whichever key won. A worker that lost the
    key race makes its certificate from the winner's key and then adopts whichever
    certificate won, so every worker returns the same pair."""
    public_name, key_name = secret_name(cluster, public_item), secret_name(cluster, key_item)
    key = store.get(key_name)
    if key is None:
        key = _create(store, cluster, key_item, _new_key_pem())
    public = store.get(public_name)
    if public is None:
        try:
            public = _create(store, cluster, public_item, public_of(key))
        except ValueError:  # an unreadable key: replaced below
            public = ""
    if _halves_match(public, key):
        return public, key
    return _replace_pair(store, cluster, public_item, key_item, public_of)


def _create(store: SecretStore, cluster: str, item: str, value: str) -> str:
    """``value`` stored under the cluster's ``item`` unless another worker was first; the
    stored one either way. Says so when this worker's value won (never the value)."""
    stored = store.put_if_absent(secret_name(cluster, item), value)
    if stored == value:
        log.info("cluster %s: generated %s", cluster, item)
    return stored


def _replace_pair(
    store: SecretStore,
    cluster: str,
    public_item: str,
    key_item: str,
    public_of: Callable[[str], str],
) -> tuple[str, str]:
    """A new pair over one whose halves do not match (a hand-edited file, or a crash of a
    version that generated pairs differently). Under the cluster lock, and checked again
    inside it, so workers on one machine replace it once."""
    public_name, key_name = secret_name(cluster, public_item), secret_name(cluster, key_item)
    with _cluster_lock(store, cluster):
        public, key = store.get(public_name), store.get(key_name)
        if public is not None and key is not None and _halves_match(public, key):
            return public, key  # another worker replaced it meanwhile
        log.warning(
            "cluster %s: %s/%s do not match, generating a new pair", cluster, public_item, key_item
        )
        key = _new_key_pem()
        public = public_of(key)
        # Key first: a crash in between leaves a key without its public half, which the
        # next call completes from the key -- never a certificate without its key.
        store.put(key_name, key)
        store.put(public_name, public)
    return public, key


def _ensure_token(
    store: SecretStore,
    cluster: str,
    item: str,
    generate: Callable[[], str],
    pattern: re.Pattern[str],
) -> str:
    name = secret_name(cluster, item)
    value = store.get(name)
    if value is None:
        value = _create(store, cluster, item, generate())  # another worker's, if it was first
    value = value.strip()
    if not pattern.fullmatch(value):
        # Never echo the value: it is a credential even when malformed.
        raise PermanentError(
            f"secret {name!r} does not have the expected shape; delete it to let werft "
            "generate a new one (nodes already joined keep working)"
        )
    return value


def _stored_token(store: SecretStore, cluster: str, item: str) -> str | None:
    value = store.get(secret_name(cluster, item))
    return value.strip() if value and value.strip() else None


def _ensure_bootstrap_token(
    store: SecretStore, cluster: str, ttl: timedelta | None, now: datetime
) -> tuple[str, datetime | None]:
    """(token, expiry): the stored one, or -- when missing, or asked with a TTL and past
    half its life or without an expiry -- a new one valid for the TTL from ``now``."""
    name = secret_name(cluster, "bootstrap-token")
    expires_name = secret_name(cluster, "bootstrap-token.expires")
    token = _stored_token(store, cluster, "bootstrap-token")
    if token is None:
        # Created first-writer-wins, the expiry before the token: a worker that sees the
        # token always sees its expiry too (and does not take it for one to renew).
        fresh = rfc3339(now + (ttl or DEFAULT_BOOTSTRAP_TOKEN_TTL))
        store.put_if_absent(expires_name, fresh)
        token = _create(store, cluster, "bootstrap-token", _new_bootstrap_token()).strip()
    expires = _parse_instant(store.get(expires_name))
    if _keep(expires, ttl, now):
        if not BOOTSTRAP_TOKEN_PATTERN.fullmatch(token):
            raise PermanentError(
                f"secret {name!r} does not have the expected shape; delete it to let "
                "werft generate a new one (nodes already joined keep working)"
            )
        return token, expires
    with _cluster_lock(store, cluster):
        return _renew_bootstrap_token(store, cluster, ttl, now)


def _keep(expires: datetime | None, ttl: timedelta | None, now: datetime) -> bool:
    return ttl is None or (expires is not None and expires - now > ttl / 2)


def _renew_bootstrap_token(
    store: SecretStore, cluster: str, ttl: timedelta | None, now: datetime
) -> tuple[str, datetime | None]:
    """Replace the bootstrap token (under the cluster lock), unless a worker on this
    machine renewed it while this one waited for the lock. Workers on two machines may
    both renew it: the last write wins, and the cluster accepts both tokens until they
    expire (each worker applies the token it rendered), so no node is stranded."""
    name = secret_name(cluster, "bootstrap-token")
    expires_name = secret_name(cluster, "bootstrap-token.expires")
    token = _stored_token(store, cluster, "bootstrap-token")
    expires = _parse_instant(store.get(expires_name))
    if token is not None and _keep(expires, ttl, now):
        return token, expires
    token = _new_bootstrap_token()
    expires = (now + (ttl or DEFAULT_BOOTSTRAP_TOKEN_TTL)).replace(microsecond=0)
    # Token first: a crash in between leaves the new token with the old expiry, which the
    # next call renews again -- never the old token with a new expiry.
    store.put(name, token)
    store.put(expires_name, rfc3339(expires))
    log.info("cluster %s: generated bootstrap-token (expires %s)", cluster, rfc3339(expires))
    return token, expires


def _parse_instant(text: str | None) -> datetime | None:
    if not text or not text.strip():
        return None
    try:
        instant = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None  # unreadable: treated as unknown, so a TTL renews the token
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def _halves_match(public_pem: str, key_pem: str) -> bool:
    """Whether a certificate (or public key) PEM belongs to a private key PEM."""
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        if "CERTIFICATE" in public_pem:
            public = x509.load_pem_x509_certificate(public_pem.encode()).public_key()
        else:
            public = serialization.load_pem_public_key(public_pem.encode())
    except ValueError:
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return key.public_key().public_bytes(der, spki) == public.public_bytes(der, spki)


def _fingerprint(cert_pem: str) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return cert.fingerprint(hashes.SHA256()).hex()


# --- locking ---------------------------------------------------------------------------

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextmanager
def _cluster_lock(store: SecretStore, cluster: str) -> Iterator[None]:
    """Serialise PKI creation for one cluster across threads and processes, so two
    concurrent first runs cannot interleave their writes into a mismatched pair."""
    key = f"{store.root}:{cluster}"
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(key, threading.Lock())
    lock_dir = store.root / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with thread_lock, open(lock_dir / f"{cluster}.pki.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
