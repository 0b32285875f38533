"""What a simulated machine learns from its NoCloud seed, read as a booting machine would.

The seed is a ``cidata`` ISO 9660 image (volume label ``CIDATA``) holding ``user-data``,
``meta-data`` and ``network-config``. ``user-data`` is a ``#cloud-config`` document whose
``write_files`` carry ``/etc/werft/node.yaml`` (cluster, role, nodeName,
kubernetesVersion, distribution), on control planes ``/etc/werft/pki/tokens.csv`` (the
kube-apiserver token file holding the admin token) and, for kubeadm, the config
``kubeadm init/join --config`` reads, whose ``nodeRegistration.taints`` the Node gets.

Everything here works on bytes; nothing touches the network or the disk.
"""

from __future__ import annotations

import base64
import binascii
import csv
import gzip
import io
from dataclasses import dataclass, field

import pycdlib
import yaml
from pycdlib.pycdlibexception import PyCdlibException

from werft.yamlsafe import SafeLoader, safe_load

NODE_FILE = "/etc/werft/node.yaml"
TOKENS_FILE = "/etc/werft/pki/tokens.csv"
KUBEADM_CONFIG = "/etc/kubernetes/kubeadm.yaml"
KUBEADM_KINDS = ("InitConfiguration", "JoinConfiguration")
ROLES = ("control-plane", "worker")
DISTRIBUTIONS = ("kubeadm", "k3s")
SEED_LABEL = "CIDATA"
# ISO 9660 starts its volume descriptors at sector 16; "CD001" marks one.
_ISO_MAGIC_OFFSET = 16 * 2048 + 1


@dataclass(frozen=True, slots=True)
class NodeSeed:
    """The node identity a seed gives a machine. The token never shows in repr()."""

    cluster: str
    role: str
    node_name: str
    kubernetes_version: str  # without a leading "v": "1.31.1"
    distribution: str
    token: str | None = field(default=None, repr=False)
    # kubeadm's nodeRegistration.taints as (key, value, effect); None when unset, which
    # kubeadm takes as "the control-plane taint on a control plane, none on a worker".
    taints: tuple[tuple[str, str, str], ...] | None = None

    def public(self) -> dict[str, object]:
        """Everything but the token, in the camelCase of node.yaml."""
        return {
            "cluster": self.cluster,
            "role": self.role,
            "nodeName": self.node_name,
            "kubernetesVersion": self.kubernetes_version,
            "distribution": self.distribution,
            "hasAdminToken": self.token is not None,
        }


@dataclass(frozen=True, slots=True)
class SeedError:
    """A seed the machine could not use; installing from it leaves the machine stuck."""

    reason: str


def is_iso9660(data: bytes) -> bool:
    return data[_ISO_MAGIC_OFFSET : _ISO_MAGIC_OFFSET + 5] == b"CD001"


def volume_label(data: bytes) -> str | None:
    """The primary volume descriptor's volume identifier, or None if ``data`` is no ISO."""
    if not is_iso9660(data):
        return None
    # Primary volume descriptor: type 1 at sector 16, volume identifier at bytes 40..72.
    start = 16 * 2048
    if data[start] != 1:
        return None
    return data[start + 40 : start + 72].decode("ascii", "replace").strip()


def is_seed_image(data: bytes) -> bool:
    label = volume_label(data)
    return label is not None and label.upper() == SEED_LABEL


def parse_seed(data: bytes) -> NodeSeed | SeedError:
    """Read ``user-data`` from a cidata ISO and extract the werft node identity."""
    try:
        user_data = read_iso_file(data, "user-data")
    except (PyCdlibException, ValueError, OSError) as exc:
        return SeedError(f"cannot read the seed ISO: {exc}")
    if user_data is None:
        return SeedError("the seed ISO has no user-data file")
    return parse_user_data(user_data)


def read_iso_file(data: bytes, name: str) -> bytes | None:
    """A root-directory file of the ISO, found by Rock Ridge, Joliet or ISO 9660 name."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        out = io.BytesIO()
        if iso.has_rock_ridge():
            try:
                iso.get_file_from_iso_fp(out, rr_path="/" + name)
                return out.getvalue()
            except PyCdlibException:
                pass
        if iso.has_joliet():
            try:
                iso.get_file_from_iso_fp(out, joliet_path="/" + name)
                return out.getvalue()
            except PyCdlibException:
                pass
        wanted = _iso_key(name)
        for child in iso.list_children(iso_path="/"):
            if child is None or child.is_dot() or child.is_dotdot() or child.is_dir():
                continue
            ident = child.file_identifier().decode("ascii", "replace")
            key = _iso_key(ident)
            if key and wanted.startswith(key) and len(key) >= min(len(wanted), 6):
                iso.get_file_from_iso_fp(out, iso_path="/" + ident)
                return out.getvalue()
        return None
    finally:
        iso.close()


def _iso_key(name: str) -> str:
    """ISO 9660 level-1 names are upper case 8.3 with ';1': compare letters and digits only."""
    name = name.split(";", 1)[0]
    return "".join(ch for ch in name.lower() if ch.isalnum())


def parse_user_data(user_data: bytes) -> NodeSeed | SeedError:
    try:
        text = user_data.decode("utf-8")
    except UnicodeDecodeError:
        return SeedError("user-data is not UTF-8 text")
    if not text.startswith("#cloud-config"):
        return SeedError("user-data is not a #cloud-config document")
    try:
        config = safe_load(text)
    except yaml.YAMLError as exc:
        return SeedError(f"user-data is not valid YAML: {_first_line(exc)}")
    if not isinstance(config, dict):
        return SeedError("user-data is not a YAML mapping")
    files = config.get("write_files") or []
    if not isinstance(files, list):
        return SeedError("write_files is not a list")
    contents: dict[str, bytes] = {}
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            return SeedError("a write_files entry has no path")
        if entry["path"] in (NODE_FILE, TOKENS_FILE, KUBEADM_CONFIG):
            decoded = _decode(entry.get("content", ""), entry.get("encoding"))
            if isinstance(decoded, SeedError):
                return SeedError(f"{entry['path']}: {decoded.reason}")
            contents[entry["path"]] = decoded
    if NODE_FILE not in contents:
        return SeedError(f"write_files has no {NODE_FILE}")
    node = _parse_node(contents[NODE_FILE])
    if isinstance(node, SeedError):
        return node
    token = None
    if TOKENS_FILE in contents:
        token = _parse_token(contents[TOKENS_FILE])
        if isinstance(token, SeedError):
            return token
    taints = None
    if KUBEADM_CONFIG in contents:
        taints = _parse_kubeadm_taints(contents[KUBEADM_CONFIG])
        if isinstance(taints, SeedError):
            return taints
    return NodeSeed(token=token, taints=taints, **node)


def _parse_kubeadm_taints(raw: bytes) -> tuple[tuple[str, str, str], ...] | SeedError | None:
    """The Init/JoinConfiguration's ``nodeRegistration.taints``, as kubeadm reads it."""
    try:
        docs = list(yaml.load_all(raw.decode("utf-8"), Loader=SafeLoader))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        return SeedError(f"{KUBEADM_CONFIG} is not valid YAML: {_first_line(exc)}")
    registration = next(
        (
            d.get("nodeRegistration") or {}
            for d in docs
            if isinstance(d, dict) and d.get("kind") in KUBEADM_KINDS
        ),
        {},
    )
    taints = registration.get("taints")
    if taints is None:
        return None
    if not isinstance(taints, list) or not all(isinstance(t, dict) for t in taints):
        return SeedError(f"{KUBEADM_CONFIG}: nodeRegistration.taints is not a list of taints")
    return tuple(
        (str(t.get("key", "")), str(t.get("value", "")), str(t.get("effect", ""))) for t in taints
    )


def _decode(content: object, encoding: object) -> bytes | SeedError:
    if not isinstance(content, str):
        return SeedError("content is not a string")
    enc = str(encoding or "text").lower()
    try:
        if enc in ("text", "plain"):
            return content.encode()
        if enc in ("b64", "base64"):
            return base64.b64decode(content, validate=False)
        if enc in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
            return gzip.decompress(base64.b64decode(content))
    except (binascii.Error, OSError, EOFError) as exc:
        return SeedError(f"cannot decode {enc} content: {exc}")
    return SeedError(f"unsupported encoding {enc!r}")


def _parse_node(raw: bytes) -> dict[str, str] | SeedError:
    try:
        doc = safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        return SeedError(f"{NODE_FILE} is not valid YAML: {_first_line(exc)}")
    if not isinstance(doc, dict):
        return SeedError(f"{NODE_FILE} is not a mapping")
    missing = [
        k
        for k in ("cluster", "role", "nodeName", "kubernetesVersion", "distribution")
        if not doc.get(k)
    ]
    if missing:
        return SeedError(f"{NODE_FILE} lacks {', '.join(missing)}")
    if doc["role"] not in ROLES:
        return SeedError(f"{NODE_FILE}: unknown role {doc['role']!r}")
    if doc["distribution"] not in DISTRIBUTIONS:
        return SeedError(f"{NODE_FILE}: unknown distribution {doc['distribution']!r}")
    return {
        "cluster": str(doc["cluster"]),
        "role": str(doc["role"]),
        "node_name": str(doc["nodeName"]),
        "kubernetes_version": str(doc["kubernetesVersion"]).removeprefix("v"),
        "distribution": str(doc["distribution"]),
    }


def _parse_token(raw: bytes) -> str | SeedError:
    try:
        rows = [r for r in csv.reader(io.StringIO(raw.decode("utf-8"))) if r and r[0].strip()]
    except (UnicodeDecodeError, csv.Error):
        return SeedError(f"{TOKENS_FILE} is not a CSV token file")
    if not rows:
        return SeedError(f"{TOKENS_FILE} holds no token")
    return rows[0][0].strip()


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
