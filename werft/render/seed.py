"""NoCloud seed images: a small ``cidata`` ISO per machine, published where machines fetch
their boot artifacts, for as long as the machine needs it.

The image is byte-deterministic for the same inputs (pinned clock, fixed file order), so
its content hash -- which is in its file name and URL -- changes only when what the
machine would receive changes. Re-rendering never moves the URL and never makes a BMC or
hypervisor re-insert media.

A control plane's seed carries the cluster's CA keys and tokens, so its URL is a
capability: ``<baseUrl>/s/<token>/seeds/<cluster>/<machine>-<sha256[:12]>.iso`` with a
192-bit token nobody can guess and the artifacts server lists no directory. The token is
derived (HMAC) from a key only the cluster's secret store holds, the machine and the
content hash: every worker and every re-run computes the same URL without coordination,
and a new seed gets a new token. Once the machine has bootstrapped, ``retire_seed``
deletes it, and a retired seed is never written again (a re-image renders a new one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import itertools
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pycdlib

from werft.files import write_atomically
from werft.inventory.model import Machine
from werft.inventory.resolved import ResolvedCluster
from werft.redact import register_secret
from werft.render.cloudinit import render_meta_data, render_network_config, render_user_data
from werft.render.isoclock import pinned_clock
from werft.render.pki import ClusterPKI, ensure_cluster_pki, secret_name
from werft.secrets import SecretStore

log = logging.getLogger(__name__)

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


def seed_token(pki: ClusterPKI, machine: str, digest: str, generation: int = 0) -> str:
    """The unguessable path segment of a seed's URL: 192 bits, URL-safe, the same for the
    same cluster, machine, content and generation on every worker (no shared state to
    race on). A generation above 0 is the same seed re-issued for a re-install."""
    # A key of its own for this purpose, derived from the CA key werft already keeps
    # secret: knowing seed URLs tells nothing about the CA key and vice versa.
    key = hashlib.sha256(b"werft seed url v1\0" + pki.ca.key_pem.encode()).digest()
    message = f"{pki.cluster}\0{machine}\0{digest}" + (f"\0{generation}" if generation else "")
    mac = hmac.new(key, message.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:24]).decode()


def seed_digest(iso: bytes) -> str:
    return hashlib.sha256(iso).hexdigest()[:12]


def seed_relpath(
    cluster: ResolvedCluster, machine: Machine, digest: str, pki: ClusterPKI, generation: int = 0
) -> str:
    """``s/<token>/seeds/<cluster>/<machine>-<sha256[:12]>.iso``: the tail is what
    ``werft.providers.is_seed_of`` recognises; the token makes the whole unguessable."""
    token = seed_token(pki, machine.name, digest, generation)
    register_secret(token)  # the URL is a credential: logs show it masked
    return f"s/{token}/seeds/{cluster.name}/{machine.name}-{digest}.iso"


def publish_seed(
    cluster: ResolvedCluster,
    machine: Machine,
    pki: ClusterPKI,
    artifacts_dir: Path,
    base_url: str,
    *,
    store: SecretStore | None = None,
    write: bool = True,
    iso: bytes | None = None,
) -> str:
    """Write the seed to ``<artifacts_dir>/<seed_relpath>`` (unless it is already there or
    was retired) and return its URL under ``base_url``. ``write=False`` only computes the
    URL (and records it): the infrastructure stage writes a seed when it is about to
    install a machine with it (``issue_seed``), so a re-run of a finished cluster never
    puts its keys back on the artifacts server.

    ``base_url`` is the fleet's artifacts.baseUrl, which is also where k3s nodes fetch
    their binaries. The file is written atomically with mode 0600 in folders of mode 0700:
    it carries tokens and, for control planes, CA keys; the artifacts server reads it as
    the same user. With ``store``, the seed is recorded under the cluster's secrets (what
    ``retire_seed`` deletes); a retired seed is not written again, its URL -- the one the
    machine booted -- is returned as it was (``issue_seed`` is for a re-install).
    ``iso``: the seed image, when the caller built it already (``build_seed_iso``).
    """
    iso = iso or build_seed_iso(cluster, machine, pki, artifacts_url=base_url)
    digest = seed_digest(iso)
    generation, state = 0, None
    if store is not None:
        generation, state = _latest(store, cluster, machine, digest)
    relpath = seed_relpath(cluster, machine, digest, pki, generation)
    if store is not None:
        if state is not None and state.startswith(_RETIRED):
            return _url(base_url, relpath)  # bootstrapped with it: never serve the keys again
        if state is None:
            store.put(_record_name(cluster, machine, digest, generation), _PUBLISHED + relpath)
    if write:
        _write(Path(artifacts_dir), relpath, iso)
    return _url(base_url, relpath)


class SeedContext(Protocol):
    """What ``issue_seed`` and ``retire_seed`` need of a stage context
    (``werft.stages.context.StageContext``)."""

    @property
    def secrets(self) -> SecretStore: ...

    @property
    def artifacts_dir(self) -> Path: ...

    @property
    def artifacts_url(self) -> str: ...


def issue_seed(
    cluster: ResolvedCluster,
    machine: Machine,
    ctx: SeedContext,
    pki: ClusterPKI | None = None,
    iso: bytes | None = None,
) -> str:
    """Publish the seed to install ``machine`` with and return its URL: the one
    ``publish_seed`` computed, written now if it is not there yet; when that seed was
    retired -- the machine bootstrapped with it once and is being installed again -- the
    same seed under a new URL (a new token: the old one may have been seen since, in a
    BMC's media list). ``pki``: the cluster's, as the caller ensured it already; ``iso``:
    the seed image built from it, if the caller has it (the dearest step of an install)."""
    pki = pki or ensure_cluster_pki(cluster, ctx.secrets)
    iso = iso or build_seed_iso(cluster, machine, pki, artifacts_url=ctx.artifacts_url)
    digest = seed_digest(iso)
    generation, state = _latest(ctx.secrets, cluster, machine, digest)
    if state is not None and state.startswith(_RETIRED):
        generation += 1
        state = None
        log.info("cluster %s: seed of %s re-issued for a re-install", cluster.name, machine.name)
    relpath = seed_relpath(cluster, machine, digest, pki, generation)
    if state is None:
        ctx.secrets.put(_record_name(cluster, machine, digest, generation), _PUBLISHED + relpath)
    _write(Path(ctx.artifacts_dir), relpath, iso)
    return _url(ctx.artifacts_url, relpath)


def retire_seed(cluster: ResolvedCluster, machine: Machine, ctx: SeedContext) -> int:
    """Delete every seed published for ``machine`` and mark each retired, so no re-run
    publishes it again; returns how many files were deleted (0 on a re-run).

    Call it once the machine's node has joined (Bootstrapped confirmed) and its media are
    ejected: from then on nothing fetches the seed, and it holds the cluster's keys.
    Besides the recorded seeds, when there is no record at all, the seed werft would
    publish now is retired too, so one published without a record (by a version that
    kept none) is found as well -- only then is the ISO built again for its digest: it is
    the dearest step of a release (a tenth of an edge rollout's CPU).
    """
    artifacts = Path(ctx.artifacts_dir)
    found = _records(ctx.secrets, cluster, machine)
    records: dict[str, str] = {}
    if not found:
        pki = ensure_cluster_pki(cluster, ctx.secrets)
        iso = build_seed_iso(cluster, machine, pki, artifacts_url=ctx.artifacts_url)
        digest = seed_digest(iso)
        records[_record_name(cluster, machine, digest, 0)] = seed_relpath(
            cluster, machine, digest, pki
        )
    for name, value in found:
        if value.startswith(_PUBLISHED):
            records[name] = value[len(_PUBLISHED) :]
        else:
            records.pop(name, None)  # retired already
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    deleted = 0
    for name, relpath in sorted(records.items()):
        ctx.secrets.put(name, f"{_RETIRED}{stamp} {relpath}")
        target = artifacts / relpath
        if target.exists():
            target.unlink()
            deleted += 1
        _prune_empty_dirs(target.parent, artifacts)
    return deleted


def retire_seeds(cluster: ResolvedCluster, ctx: SeedContext) -> int:
    """``retire_seed`` for every machine of the cluster (the bootstrap stage calls it once
    every machine has joined and been released); returns the files deleted."""
    return sum(retire_seed(cluster, machine, ctx) for machine in cluster.machines)


def seed_retired(cluster: ResolvedCluster, seed_url: str, store: SecretStore) -> bool:
    """Whether the seed at ``seed_url`` was retired (its machine bootstrapped with it)."""
    relpath = seed_url[seed_url.rindex("/s/") + 1 :] if "/s/" in seed_url else None
    file = (relpath or "").rsplit("/", 1)[-1].removesuffix(".iso")
    machine = file.rsplit("-", 1)[0]
    return any(
        value.startswith(_RETIRED) and value.endswith(f" {relpath}")
        for _, value in _records(store, cluster, machine)
        if relpath
    )


# Seed records: clusters/<cluster>/seeds/<machine>-<digest>[.g<generation>] ->
# "published <relpath>" or "retired <when> <relpath>". They name the token, so they live
# with the secrets.
_RECORDS = "seeds"
_PUBLISHED = "published "
_RETIRED = "retired "


def _record_name(cluster: ResolvedCluster, machine: Machine, digest: str, generation: int) -> str:
    suffix = f".g{generation}" if generation else ""
    return secret_name(cluster.name, f"{_RECORDS}/{machine.name}-{digest}{suffix}")


def _records(
    store: SecretStore, cluster: ResolvedCluster, machine: Machine | str
) -> list[tuple[str, str]]:
    """(name, value) of the machine's seed records."""
    name = machine if isinstance(machine, str) else machine.name
    prefix = secret_name(cluster.name, f"{_RECORDS}/")
    found = []
    for record in store.names(prefix):
        file = record[len(prefix) :].split(".", 1)[0]
        if file.rsplit("-", 1)[0] == name:
            found.append((record, store.get(record) or ""))
    return found


def _latest(
    store: SecretStore, cluster: ResolvedCluster, machine: Machine, digest: str
) -> tuple[int, str | None]:
    """(generation, record value) of the newest issue of this seed; (0, None) if none."""
    generation, state = 0, None
    for n in itertools.count():
        value = store.get(_record_name(cluster, machine, digest, n))
        if value is None:
            break
        generation, state = n, value
    return generation, state


def _url(base_url: str, relpath: str) -> str:
    return f"{base_url.rstrip('/')}/{relpath}"


def _write(artifacts_dir: Path, relpath: str, iso: bytes) -> None:
    target = artifacts_dir / relpath
    if not target.exists():
        _write_atomically(target, iso, artifacts_dir)


def _prune_empty_dirs(folder: Path, root: Path) -> None:
    """Remove the seed's now-empty folders up to (not including) ``root``: an empty token
    folder left behind would still tell that a seed existed."""
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (another seed), or gone already
            return
        folder = folder.parent


def _write_atomically(target: Path, data: bytes, root: Path) -> None:
    _make_private_dirs(target.parent, root)
    write_atomically(target, data)  # readers see the whole image or none


def _make_private_dirs(folder: Path, root: Path) -> None:
    """Create ``folder`` and its parents below ``root`` with mode 0700 (the token folders
    and below; ``root`` itself is the artifacts server's and keeps its mode)."""
    root.mkdir(parents=True, exist_ok=True)
    missing = []
    while folder != root and not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)


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
