"""The libvirt provider against libvirt's in-process test driver (``test:///default``).

The test driver keeps its state for the life of the process and ships a domain named
"test": every test here uses its own domain names and removes what it defined.
"""

from __future__ import annotations

import contextlib
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.providerfixtures import free_port, seed_url, vm_machine
from werft.errors import PermanentError, TransientError
from werft.inventory.model import Machine
from werft.providers.libvirt import DomainFacts, LibvirtProvider, render_domain_xml
from werft.providers.records import MachineRecords
from werft.retry import RetryPolicy
from werft.secrets import SecretStore

libvirt = pytest.importorskip(
    "libvirt", reason="libvirt-python is not installed (pip install 'werft[libvirt]')"
)

URI = "test:///default"
BASE = "http://127.0.0.1:8686"
IMAGE = f"{BASE}/images/ubuntu-24.04-server.iso"


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Domain names a test uses; whatever they define is removed afterwards."""
    used: list[str] = []
    yield used
    conn = libvirt.open(URI)
    try:
        pool = conn.storagePoolLookupByName("default-pool")
        for name in used:
            try:
                domain = conn.lookupByName(name)
            except libvirt.libvirtError:
                domain = None
            if domain is not None:
                if domain.isActive():
                    domain.destroy()
                domain.undefine()
            with contextlib.suppress(libvirt.libvirtError):
                pool.storageVolLookupByName(f"{name}.qcow2").delete(0)
    finally:
        conn.close()


def machine_named(names: list[str], role: str) -> Machine:
    name = f"werft-{role}-{uuid.uuid4().hex[:8]}"
    names.append(name)
    return vm_machine(name, URI)


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[LibvirtProvider]:
    # What werft did to each machine is remembered in the store (ProviderPool does this).
    hypervisor = LibvirtProvider(URI, records=MachineRecords(SecretStore(tmp_path / "secrets")))
    yield hypervisor
    await hypervisor.aclose()


def test_domain_xml_boots_cdrom_first_with_installer_and_seed() -> None:
    machine = vm_machine("cp-1", "qemu+ssh://hv1/system", mac="52:54:00:AB:CD:EF")
    assert machine.vm is not None
    xml = render_domain_xml(
        machine,
        machine.vm,
        image_url=IMAGE,
        seed_url="/var/lib/werft/seeds/c1/cp-1-0123456789ab.iso",
        disk_path="/var/lib/libvirt/images/cp-1.qcow2",
    )
    root = ET.fromstring(xml)
    assert root.get("type") == "kvm" and root.findtext("name") == "cp-1"
    assert [b.get("dev") for b in root.iterfind("os/boot")] == ["cdrom", "hd"]
    assert root.findtext("memory") == "2048" and root.findtext("vcpu") == "2"
    cdroms = root.findall("devices/disk[@device='cdrom']")
    assert cdroms[0].get("type") == "network"
    source = cdroms[0].find("source")
    assert source is not None
    assert (source.get("protocol"), source.get("name")) == (
        "http",
        "/images/ubuntu-24.04-server.iso",
    )
    assert cdroms[0].find("readonly") is not None
    assert cdroms[1].get("type") == "file"
    nic = root.find("devices/interface")
    assert nic is not None
    assert nic.find("source").get("network") == "default"  # type: ignore[union-attr]
    assert nic.find("mac").get("address") == "52:54:00:ab:cd:ef"  # type: ignore[union-attr]
    # What werft reads back is what it wrote.
    facts = DomainFacts.parse(xml)
    assert facts.media == [IMAGE, "/var/lib/werft/seeds/c1/cp-1-0123456789ab.iso"]
    assert (facts.cpus, facts.memory_mib, facts.boot) == (2, 2048, "cdrom,hd")


def test_xml_special_characters_in_urls_are_escaped() -> None:
    machine = vm_machine("cp-2", URI)
    assert machine.vm is not None
    xml = render_domain_xml(
        machine,
        machine.vm,
        image_url=f"{IMAGE}?a=1&b=2",
        seed_url=seed_url(BASE, "c1", "cp-2"),
        disk_path="/p",
    )
    assert DomainFacts.parse(xml).media[0] == f"{IMAGE}?a=1&b=2"


async def test_ensure_defines_and_starts_then_reruns_make_no_calls(
    provider: LibvirtProvider, names: list[str]
) -> None:
    machine = machine_named(names, "fresh")
    seed = seed_url(BASE, "c1", machine.name)
    assert not (await provider.observe(machine)).exists

    # Root volume, defineXML, create.
    assert await provider.ensure(machine, IMAGE, seed) == 3

    state = await provider.wait_powered_on(machine, timeout=5, poll_interval=0.05)
    assert state.exists and state.powered_on
    assert state.media == [IMAGE, seed]
    assert state.details["boot"] == "cdrom,hd"
    assert await provider.ensure(machine, IMAGE, seed) == 0

    # The test domain the driver ships is untouched.
    conn = libvirt.open(URI)
    try:
        assert conn.lookupByName("test").isActive()
    finally:
        conn.close()


async def test_defined_but_stopped_domain_is_only_started(
    provider: LibvirtProvider, names: list[str]
) -> None:
    machine = machine_named(names, "stopped")
    seed = seed_url(BASE, "c1", machine.name)
    await provider.ensure(machine, IMAGE, seed)
    assert await provider.power_off(machine) == 1
    assert await provider.power_off(machine) == 0
    assert not (await provider.observe(machine)).powered_on

    assert await provider.ensure(machine, IMAGE, seed) == 1  # create() only


async def test_release_puts_the_disk_first_and_ejects_the_cdroms(
    provider: LibvirtProvider, names: list[str]
) -> None:
    machine = machine_named(names, "release")
    seed = seed_url(BASE, "c1", machine.name)
    await provider.ensure(machine, IMAGE, seed)

    # defineXML (the test driver cannot eject a live CD-ROM; a qemu host also does that)
    assert await provider.release(machine) == 1

    conn = libvirt.open(URI)
    try:
        domain = conn.lookupByName(machine.name)
        xml = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # what the next boot uses
        assert domain.isActive()
    finally:
        conn.close()
    facts = DomainFacts.parse(xml)
    assert facts.boot == "hd,cdrom"
    assert facts.media == []  # the drives stay, empty: the seed carries the cluster's keys
    assert 'xmlns:werft="https://werft.dev/libvirt/1"' in xml
    # The next boot follows the persistent definition: no CD first any more; werft
    # remembers that the machine joined, from the seed it held.
    state = await provider.observe(machine)
    assert not state.cd_override and state.joined_seed == seed and state.released(seed)
    assert await provider.release(machine) == 0
    assert await provider.ensure(machine, IMAGE, seed) == 0


async def test_power_on_puts_the_disk_first_then_starts_the_domain(
    provider: LibvirtProvider, names: list[str]
) -> None:
    machine = machine_named(names, "poweron")
    seed = seed_url(BASE, "c1", machine.name)
    await provider.ensure(machine, IMAGE, seed)
    # CD-ROM first until released: what a Cd/Continuous override is on a BMC.
    assert (await provider.observe(machine)).boot_override == "Cd/Continuous"
    assert await provider.power_on(machine) == 0  # on already
    await provider.power_off(machine)  # the host lost power before werft released it
    sent = provider.mutations_sent(machine)

    assert await provider.power_on(machine) == 2  # defineXML (hd first), create

    state = await provider.observe(machine)
    assert state.powered_on and state.boot_override is None
    assert state.details["boot"] == "hd,cdrom" and state.media == [IMAGE, seed]
    assert provider.mutations_sent(machine) == sent + 2
    await provider.power_off(machine)
    assert await provider.power_on(machine) == 1  # released already: create only


async def test_power_on_of_a_domain_never_defined_is_system_not_found(
    provider: LibvirtProvider, names: list[str]
) -> None:
    machine = machine_named(names, "undefined")
    with pytest.raises(PermanentError, match="never defined") as caught:
        await provider.power_on(machine)
    assert caught.value.reason == "SystemNotFound"


async def test_running_domain_with_foreign_media_is_redefined_and_restarted(
    provider: LibvirtProvider, names: list[str]
) -> None:
    machine = machine_named(names, "foreign")
    other = f"{BASE}/images/some-other-os.iso"
    await provider.ensure(machine, other, "/var/lib/images/not-a-werft-seed.iso")
    seed = seed_url(BASE, "c1", machine.name)

    # destroy, defineXML, create (the root volume exists already).
    assert await provider.ensure(machine, IMAGE, seed) == 3
    state = await provider.observe(machine)
    assert state.powered_on and state.media == [IMAGE, seed]


async def test_running_domain_with_an_older_seed_of_its_own_is_left_alone(
    provider: LibvirtProvider, names: list[str]
) -> None:
    machine = machine_named(names, "installed")
    old = seed_url(BASE, "c1", machine.name, "aaaaaaaaaaaa")
    await provider.ensure(machine, IMAGE, old)
    new = seed_url(BASE, "c1", machine.name, "bbbbbbbbbbbb")

    assert await provider.ensure(machine, IMAGE, new) == 0
    state = await provider.observe(machine, image_url=IMAGE, seed_url=new)
    assert state.seed_outdated and not state.image_outdated
    assert state.media == [IMAGE, old]


async def test_unreachable_hypervisor_is_transient(names: list[str]) -> None:
    uri = f"qemu+tcp://127.0.0.1:{free_port()}/system"
    provider = LibvirtProvider(uri, retry=RetryPolicy(attempts=2, base=0.01))
    try:
        machine = vm_machine("far-away", uri)
        with pytest.raises(TransientError, match="far-away") as caught:
            await provider.observe(machine)  # tried twice (the policy), then reported
        assert "Connection refused" in str(caught.value)
        assert (caught.value.reason, caught.value.cause) == ("Unreachable", "connection refused")
    finally:
        await provider.aclose()


@pytest.mark.parametrize("stopped_after", ["root volume", "defineXML"])
async def test_ensure_killed_between_its_steps_goes_on_from_where_it_stopped(
    provider: LibvirtProvider, names: list[str], stopped_after: str
) -> None:
    # werft died between ensure's steps (create the root volume, define, start): the
    # state each leaves behind, made by hand; the next ensure does only what is left.
    machine = machine_named(names, "killed")
    assert machine.vm is not None
    seed = seed_url(BASE, "c1", machine.name)
    conn = libvirt.open(URI)
    try:
        pool = conn.storagePoolLookupByName("default-pool")
        volume = pool.createXML(
            f"<volume><name>{machine.name}.qcow2</name><capacity unit='GiB'>1</capacity>"
            "<target><format type='qcow2'/></target></volume>",
            0,
        )
        if stopped_after == "defineXML":
            conn.defineXML(
                render_domain_xml(
                    machine, machine.vm, image_url=IMAGE, seed_url=seed,
                    disk_path=volume.path(), domain_type="test",
                )
            )
    finally:
        conn.close()
    sent = provider.mutations_sent(machine)

    left = {"root volume": 2, "defineXML": 1}[stopped_after]  # (defineXML,) create
    assert await provider.ensure(machine, IMAGE, seed) == left

    state = await provider.observe(machine)
    assert state.powered_on and state.media == [IMAGE, seed] and state.cd_override
    assert provider.mutations_sent(machine) == sent + left
    assert await provider.ensure(machine, IMAGE, seed) == 0
