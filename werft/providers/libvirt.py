"""VMs on a site's hypervisor through libvirt (``vm.host`` is a libvirt URI).

libvirt-python is an optional extra (``werft[libvirt]``) and is imported on first use.
Its calls block, so each runs in a worker thread (``asyncio.to_thread``); one connection
per provider instance serves every VM of that hypervisor.

The domain is rendered from the machine's VM spec with jinja2: a root disk from a
storage volume (created on first use), the installer image and the NoCloud seed as two
read-only CD-ROMs, boot order cdrom then hd, and a NIC on the spec's network with the
boot MAC. An http(s) URL becomes a network CD-ROM, which qemu reads directly (the
hypervisor must reach the URL); a path or file:// URL is a local file on the hypervisor.

``ensure`` has no crash window: it stops a running domain before redefining it, so a
domain holding the desired media either booted them or is shut off (and gets started).
``release`` (the node has joined) records that it joined, redefines the domain with boot
order hd first, so a reboot starts the installed OS instead of the installer, and ejects
the CD-ROMs' media (the drives stay, empty; a running domain's too).
Until then, the CD-ROM-first boot order is reported as a ``Cd/Continuous`` boot
override: that is what it amounts to. ``power_on`` (an installed machine lost power)
releases, then starts the domain.
"""

from __future__ import annotations

import asyncio
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import jinja2

from werft.errors import PermanentError, TransientError
from werft.inventory.model import Machine, VMSpec
from werft.providers.base import (
    MachineState,
    MutationLedger,
    ProviderKind,
    assess,
    poll_until_powered_on,
    seed_of_machine,
)
from werft.providers.errors import SYSTEM_NOT_FOUND, Target, classify_libvirt
from werft.providers.records import MachineRecords
from werft.retry import DEFAULT, RetryPolicy, current_deadline, retry_async

T = TypeVar("T")

# Pools tried for root volumes, in order: libvirt's usual default, then the name the
# test:///default driver ships. A VMSpec field for the pool would make this explicit.
STORAGE_POOLS = ("default", "default-pool")
_CDROM_TARGETS = ("sda", "sdb")
_METADATA_NS = "https://werft.dev/libvirt/1"
ET.register_namespace("werft", _METADATA_NS)  # keep the prefix when werft rewrites XML

_DOMAIN = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(
    """\
<domain type="{{ domain_type }}">
  <name>{{ name }}</name>
{% if uuid %}
  <uuid>{{ uuid }}</uuid>
{% endif %}
  <metadata>
    <werft:machine xmlns:werft="{{ metadata_ns }}">{{ name }}</werft:machine>
  </metadata>
  <memory unit="MiB">{{ memory_mib }}</memory>
  <vcpu>{{ cpus }}</vcpu>
  <os>
    <type>hvm</type>
    <boot dev="cdrom"/>
    <boot dev="hd"/>
  </os>
  <devices>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="{{ disk_path }}"/>
      <target dev="vda" bus="virtio"/>
    </disk>
{% for cd in cdroms %}
{% if cd.protocol %}
    <disk type="network" device="cdrom">
      <driver name="qemu" type="raw"/>
      <source protocol="{{ cd.protocol }}" name="{{ cd.name }}">
        <host name="{{ cd.host }}"{% if cd.port %} port="{{ cd.port }}"{% endif %}/>
      </source>
{% else %}
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw"/>
      <source file="{{ cd.name }}"/>
{% endif %}
      <target dev="{{ cd.target }}" bus="sata"/>
      <readonly/>
    </disk>
{% endfor %}
    <interface type="network">
      <source network="{{ network }}"/>
{% if mac %}
      <mac address="{{ mac }}"/>
{% endif %}
      <model type="virtio"/>
    </interface>
  </devices>
</domain>
"""
)


@dataclass(frozen=True)
class CdromSource:
    """One CD-ROM's source: a network (http/https) or a local file."""

    target: str
    name: str  # URL path (+ query) for network sources, the file path otherwise
    protocol: str | None = None
    host: str | None = None
    port: int | None = None

    @classmethod
    def from_url(cls, url: str, target: str) -> CdromSource:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            name = parts.path + (f"?{parts.query}" if parts.query else "")
            return cls(target, name, parts.scheme, parts.hostname, parts.port)
        if parts.scheme in ("", "file"):
            return cls(target, parts.path)
        raise PermanentError(f"libvirt cannot attach {url!r}: use http(s)://, file:// or a path")

    @property
    def url(self) -> str:
        if self.protocol is None:
            return self.name
        port = f":{self.port}" if self.port else ""
        return f"{self.protocol}://{self.host}{port}{self.name}"


def render_domain_xml(
    machine: Machine,
    vm: VMSpec,
    *,
    image_url: str,
    seed_url: str,
    disk_path: str,
    domain_type: str = "kvm",
    uuid: str | None = None,
) -> str:
    """The domain definition for ``machine`` (pure: no libvirt needed)."""
    cdroms = [
        CdromSource.from_url(url, target)
        for url, target in zip((image_url, seed_url), _CDROM_TARGETS, strict=True)
    ]
    return _DOMAIN.render(
        metadata_ns=_METADATA_NS,
        domain_type=domain_type,
        name=machine.name,
        uuid=uuid,
        memory_mib=vm.memory_mib,
        cpus=vm.cpus,
        disk_path=disk_path,
        cdroms=cdroms,
        network=vm.network,
        mac=machine.boot_mac_address.lower() if machine.boot_mac_address else None,
    )


@dataclass(frozen=True)
class DomainFacts:
    """What werft compares in a defined domain's XML."""

    uuid: str | None
    media: list[str]
    cpus: int | None
    memory_mib: int | None
    mac: str | None
    boot: str

    @classmethod
    def parse(cls, xml: str) -> DomainFacts:
        root = ET.fromstring(xml)
        media = []
        for disk in root.iterfind("devices/disk[@device='cdrom']"):
            source = disk.find("source")
            if source is None:
                continue  # an empty drive
            if disk.get("type") == "network":
                host = source.find("host")
                port = host.get("port") if host is not None else None
                media.append(
                    CdromSource(
                        "",
                        source.get("name", ""),
                        source.get("protocol"),
                        host.get("name") if host is not None else None,
                        int(port) if port else None,
                    ).url
                )
            elif source.get("file"):
                media.append(source.get("file", ""))
        memory = root.find("memory")
        mac = root.find("devices/interface/mac")
        vcpu = root.findtext("vcpu")
        return cls(
            uuid=root.findtext("uuid"),
            media=media,
            cpus=int(vcpu) if vcpu else None,
            memory_mib=_mib(memory) if memory is not None else None,
            mac=mac.get("address", "").lower() if mac is not None else None,
            boot=",".join(b.get("dev", "") for b in root.iterfind("os/boot")),
        )


def _mib(memory: ET.Element) -> int:
    factor = {"KiB": 1 / 1024, "k": 1 / 1024, "MiB": 1, "M": 1, "GiB": 1024, "G": 1024}
    return int(int(memory.text or 0) * factor.get(memory.get("unit", "KiB"), 1 / 1024))


def load_libvirt() -> Any:
    """The libvirt module, or a PermanentError saying how to get it."""
    try:
        import libvirt  # optional dependency: imported on first use
    except ImportError:
        raise PermanentError(
            "the libvirt provider needs libvirt-python: install werft[libvirt] "
            "(Debian: apt-get install libvirt-dev pkg-config gcc, then "
            "pip install 'werft[libvirt]')"
        ) from None
    # libvirt prints every error to stderr by default; werft reports them itself.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


class LibvirtProvider:
    """Every VM on one libvirt hypervisor (one URI), over one connection."""

    kind: ProviderKind = "libvirt"

    def __init__(
        self,
        uri: str,
        *,
        records: MachineRecords | None = None,
        retry: RetryPolicy = DEFAULT,
    ) -> None:
        self.uri = uri
        self._retry = retry
        self._lib = load_libvirt()
        self._conn: Any = None
        self._lock = threading.Lock()
        self._ledger = MutationLedger()
        self._records = records or MachineRecords(None)

    def __repr__(self) -> str:
        return f"LibvirtProvider({self.uri!r})"

    async def observe(
        self, machine: Machine, *, image_url: str | None = None, seed_url: str | None = None
    ) -> MachineState:
        state = await self._run(machine, "observe the domain", self._observe_sync, machine)
        if image_url is not None and seed_url is not None:
            state, _ = assess(state, image_url, seed_url)
        return state

    async def observe_power(self, machine: Machine) -> MachineState:
        return await self.observe(machine)  # one read either way: media come with it

    async def ensure(self, machine: Machine, image_url: str, seed_url: str) -> int:
        return await self._run(
            machine, "define and start the domain", self._ensure_sync, machine, image_url, seed_url
        )

    async def release(self, machine: Machine) -> int:
        return await self._run(machine, "boot the domain from disk", self._release_sync, machine)

    async def power_on(self, machine: Machine) -> int:
        return await self._run(machine, "start the domain from disk", self._power_on_sync, machine)

    async def power_off(self, machine: Machine) -> int:
        return await self._run(machine, "stop the domain", self._power_off_sync, machine)

    async def wait_powered_on(
        self, machine: Machine, *, timeout: float, poll_interval: float = 1.0
    ) -> MachineState:
        return await poll_until_powered_on(
            self, machine, timeout=timeout, poll_interval=poll_interval
        )

    def mutations_sent(self, machine: Machine) -> int:
        return self._ledger.get(machine.name)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(conn.close)

    # --- blocking internals, run in a worker thread ----------------------------------------

    async def _run(self, machine: Machine, action: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn`` on a worker thread, retried on transient failures within the stage's
        deadline. Safe because every operation observes the domain first and acts only on
        the difference (a start only for a domain that is not running): a retry after a
        lost answer finds the work done and does nothing."""
        vm = _vm_of(machine)
        if vm.host != self.uri:
            raise ValueError(f"{self!r} asked about {machine.name} on {vm.host}")

        async def attempt() -> T:
            try:
                return await asyncio.to_thread(fn, *args)
            except self._lib.libvirtError as exc:
                target = Target(machine.name, _endpoint(self.uri), "libvirt")
                error = classify_libvirt(exc, target, action, self._lib)
                if isinstance(error, TransientError):
                    self._conn = None  # a broken connection is not reused: reconnect
                raise error from None

        return await retry_async(attempt, policy=self._retry, deadline=current_deadline())

    def _connection(self) -> Any:
        with self._lock:
            if self._conn is None:
                self._conn = self._lib.open(self.uri)
            return self._conn

    def _lookup(self, name: str) -> Any | None:
        try:
            return self._connection().lookupByName(name)
        except self._lib.libvirtError as exc:
            if exc.get_error_code() == self._lib.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def _sent(self, machine: Machine) -> int:
        """Count one mutating call, before it is made (it may fail after taking effect)."""
        self._ledger.add(machine.name)
        return 1

    def _observe_sync(self, machine: Machine) -> MachineState:
        return self._state(machine, self._lookup(machine.name))

    def _state(self, machine: Machine, domain: Any | None) -> MachineState:
        if domain is None:
            return MachineState(
                name=machine.name, provider="libvirt", exists=False, powered_on=False
            )
        facts = DomainFacts.parse(domain.XMLDesc(0))
        active = bool(domain.isActive())
        # The next boot follows the persistent definition (a running domain's live XML
        # keeps the order it started with).
        persistent = (
            DomainFacts.parse(domain.XMLDesc(self._lib.VIR_DOMAIN_XML_INACTIVE))
            if active
            else facts
        )
        cd_first = persistent.boot.split(",", 1)[0] == "cdrom"
        joined = self._records.joined(machine.name)
        return MachineState(
            name=machine.name,
            provider="libvirt",
            exists=True,
            powered_on=active,
            media=facts.media,
            boot_override="Cd/Continuous" if cd_first else None,
            joined_seed=joined.seed if joined is not None else None,
            details={"power_state": "running" if active else "shutoff", "boot": facts.boot},
        )

    def _ensure_sync(self, machine: Machine, image_url: str, seed_url: str) -> int:
        domain = self._lookup(machine.name)
        _, hands_off = assess(self._state(machine, domain), image_url, seed_url)
        if hands_off:
            return 0
        self._records.forget_joined(machine.name)  # (re)installed from here on
        vm = _vm_of(machine)
        conn = self._connection()
        mutations = 0
        facts = DomainFacts.parse(domain.XMLDesc(0)) if domain is not None else None
        active = bool(domain.isActive()) if domain is not None else False

        wanted_mac = machine.boot_mac_address.lower() if machine.boot_mac_address else None
        differs = facts is None or (
            facts.media != [image_url, seed_url]
            or facts.cpus != vm.cpus
            or facts.memory_mib != vm.memory_mib
            or (wanted_mac is not None and facts.mac != wanted_mac)
        )
        if differs:
            if active:
                # Running something else: stop it, like a BMC restart into the installer.
                mutations += self._sent(machine)
                domain.destroy()
                active = False
            disk_path, created = self._root_volume(conn, machine, vm)
            mutations += created
            xml = render_domain_xml(
                machine,
                vm,
                image_url=image_url,
                seed_url=seed_url,
                disk_path=disk_path,
                domain_type=_domain_type(conn),
                uuid=facts.uuid if facts else None,  # redefine in place, same identity
            )
            mutations += self._sent(machine)
            domain = conn.defineXML(xml)
        if not active:
            mutations += self._sent(machine)
            domain.create()
        return mutations

    def _release_sync(self, machine: Machine, *, eject: bool = True) -> int:
        """Disk first (and, with ``eject``, record the join and eject the media)."""
        domain = self._lookup(machine.name)
        if domain is None:
            return 0
        # The persistent definition: what the next boot uses (a running domain's live XML
        # keeps the old order until it restarts).
        root = ET.fromstring(domain.XMLDesc(self._lib.VIR_DOMAIN_XML_INACTIVE))
        seed = seed_of_machine(DomainFacts.parse(domain.XMLDesc(0)).media, machine.name)
        if eject and seed is not None:
            self._records.record_joined(machine.name, seed)  # first: the evidence
        made = 0
        boots = root.findall("os/boot")
        devices = [b.get("dev", "") for b in boots]
        cdroms = list(root.iterfind("devices/disk[@device='cdrom']"))
        loaded = [d for d in cdroms if d.find("source") is not None] if eject else []
        if devices[:1] == ["cdrom"] or loaded:
            for boot, dev in zip(boots, ["hd", *(d for d in devices if d != "hd")], strict=False):
                boot.set("dev", dev)
            for disk in loaded:
                _empty_drive(disk)
            made += self._sent(machine)
            self._connection().defineXML(ET.tostring(root, encoding="unicode"))
        if eject and domain.isActive():
            made += self._eject_live(machine, domain)
        return made

    def _eject_live(self, machine: Machine, domain: Any) -> int:
        """Eject the running domain's CD-ROM media (``virsh change-media --eject``)."""
        made = 0
        live = ET.fromstring(domain.XMLDesc(0))
        for disk in live.iterfind("devices/disk[@device='cdrom']"):
            if disk.find("source") is None:
                continue
            _empty_drive(disk)
            try:
                domain.updateDeviceFlags(
                    ET.tostring(disk, encoding="unicode"), self._lib.VIR_DOMAIN_AFFECT_LIVE
                )
            except self._lib.libvirtError as exc:
                if exc.get_error_code() != self._lib.VIR_ERR_NO_SUPPORT:
                    raise
                # Drivers without live device updates (the test driver): the persistent
                # definition is empty already; the drive empties at the next restart.
                return made
            made += self._sent(machine)  # counted once applied: unsupported is no call
        return made

    def _power_on_sync(self, machine: Machine) -> int:
        domain = self._lookup(machine.name)
        if domain is None:
            raise PermanentError(
                f"machine {machine.name}: no domain to start on {_endpoint(self.uri)} "
                "(it was never defined)",
                reason=SYSTEM_NOT_FOUND,
            )
        if domain.isActive():
            return 0
        # hd first: the installed OS, not the installer; the media are left as they are.
        made = self._release_sync(machine, eject=False)
        made += self._sent(machine)
        self._connection().lookupByName(machine.name).create()
        return made

    def _power_off_sync(self, machine: Machine) -> int:
        domain = self._lookup(machine.name)
        if domain is None or not domain.isActive():
            return 0
        made = self._sent(machine)
        domain.destroy()
        return made

    def _root_volume(self, conn: Any, machine: Machine, vm: VMSpec) -> tuple[str, int]:
        """(path of the machine's root volume, 1 if it had to be created else 0)."""
        pool = None
        for name in STORAGE_POOLS:
            try:
                pool = conn.storagePoolLookupByName(name)
                break
            except self._lib.libvirtError:
                continue
        if pool is None:
            raise PermanentError(
                f"machine {machine.name}: no storage pool named {' or '.join(STORAGE_POOLS)} "
                f"on {_endpoint(self.uri)} for the root disk"
            )
        volume_name = f"{machine.name}.qcow2"
        try:
            return pool.storageVolLookupByName(volume_name).path(), 0
        except self._lib.libvirtError:
            pass
        self._sent(machine)
        volume = pool.createXML(
            f"<volume><name>{volume_name}</name>"
            f'<capacity unit="GiB">{vm.disk_gib}</capacity>'
            '<target><format type="qcow2"/></target></volume>',
            0,
        )
        return volume.path(), 1


def _empty_drive(disk: ET.Element) -> None:
    """A CD-ROM drive with its medium ejected: no source (a network drive becomes a file
    drive, which libvirt allows to be empty)."""
    source = disk.find("source")
    if source is not None:
        disk.remove(source)
    disk.set("type", "file")


def _domain_type(conn: Any) -> str:
    # The test driver only runs type="test" domains; on qemu hosts werft wants KVM.
    return "test" if conn.getType().lower() == "test" else "kvm"


def _endpoint(uri: str) -> str:
    """host[:port] of a remote URI, the URI itself for a local one (never userinfo)."""
    parts = urlsplit(uri)
    if not parts.hostname:
        return uri
    return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname


def _vm_of(machine: Machine) -> VMSpec:
    if machine.vm is None:
        raise PermanentError(f"machine {machine.name} has no vm spec; it is not a VM")
    return machine.vm
