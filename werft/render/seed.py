"""NoCloud seed images: a small ``cidata`` ISO per machine, published where machines fetch
their boot artifacts.

The image is byte-deterministic for the same inputs (pinned clock, fixed file order), so
its content hash -- which is in its file name and URL -- changes only when what the
machine would receive changes. Re-rendering never moves the URL and never makes a BMC or
hypervisor re-insert media.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pycdlib

from werft.inventory.model import Machine
from werft.inventory.resolved import ResolvedCluster
from werft.render.cloudinit import render_meta_data, render_network_config, render_user_data
from werft.render.isoclock import pinned_clock
from werft.render.pki import ClusterPKI

VOLUME_ID = "CIDATA"  # what cloud-init's NoCloud datasource looks for (case-insensitive)
# (Rock Ridge / Joliet name, ISO 9660 level-3 name)
_SEED_NAMES = (
    ("user-data", "USER_DATA.;1"),
    ("meta-data", "META_DATA.;1"),
    ("network-config", "NETWORK_CONFIG.;1"),
)


def seed_documents(
    cluster: ResolvedCluster,
    machine: Machine,
    pki: ClusterPKI,
    *,
    artifacts_url: str | None = None,
) -> dict[str, str]:
    """The three NoCloud files by name, in the order they go into the image."""
    user_data = render_user_data(cluster, machine, pki, artifacts_url=artifacts_url)
    return {
        "user-data": user_data,
        "meta-data": render_meta_data(machine, user_data),
        "network-config": render_network_config(machine),
    }


def build_iso(files: dict[str, str]) -> bytes:
    """A ``CIDATA`` ISO 9660 image with Joliet and Rock Ridge names, deterministic."""
    known = dict(_SEED_NAMES)
    iso = pycdlib.PyCdlib()
    with pinned_clock():
        iso.new(
            interchange_level=3,
            vol_ident=VOLUME_ID,
            sys_ident="LINUX",
            app_ident_str="WERFT",
            joliet=3,
            rock_ridge="1.09",
        )
        for name, text in files.items():
            data = text.encode()
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                # ISO 9660 names allow only A-Z, 0-9 and "_"; the long names are in RR/Joliet.
                iso_path="/" + known.get(name, name.upper().replace("-", "_") + ".;1"),
                rr_name=name,
                joliet_path="/" + name,
            )
        out = io.BytesIO()
        iso.write_fp(out)  # the volume modification date is stamped here
        iso.close()
    return out.getvalue()


def build_seed_iso(
    cluster: ResolvedCluster,
    machine: Machine,
    pki: ClusterPKI,
    *,
    artifacts_url: str | None = None,
) -> bytes:
    """The machine's NoCloud seed image (user-data, meta-data, network-config)."""
    return build_iso(seed_documents(cluster, machine, pki, artifacts_url=artifacts_url))


def seed_relpath(cluster: ResolvedCluster, machine: Machine, iso: bytes) -> str:
    digest = hashlib.sha256(iso).hexdigest()[:12]
    return f"seeds/{cluster.name}/{machine.name}-{digest}.iso"


def publish_seed(
    cluster: ResolvedCluster,
    machine: Machine,
    pki: ClusterPKI,
    artifacts_dir: Path,
    base_url: str,
) -> str:
    """Write the seed to ``<artifacts_dir>/seeds/<cluster>/<machine>-<sha256[:12]>.iso``
    (unless it is already there) and return its URL under ``base_url``.

    ``base_url`` is the fleet's artifacts.baseUrl, which is also where k3s nodes fetch
    their binaries. The file is written atomically with mode 0600: it carries tokens and,
    for control planes, CA keys; the artifacts server reads it as the same user.
    """
    iso = build_seed_iso(cluster, machine, pki, artifacts_url=base_url)
    relpath = seed_relpath(cluster, machine, iso)
    target = Path(artifacts_dir) / relpath
    if not target.exists():
        _write_atomically(target, iso)
    return f"{base_url.rstrip('/')}/{relpath}"


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)  # readers see the whole image or none
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_seed(iso_bytes: bytes) -> dict[str, str]:
    """The files of a seed image by their Rock Ridge name (``user-data`` -> text)."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(iso_bytes))
    try:
        files: dict[str, str] = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dir():
                continue
            name = child.rock_ridge.name().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path="/" + name)
            files[name] = out.getvalue().decode()
        return files
    finally:
        iso.close()
