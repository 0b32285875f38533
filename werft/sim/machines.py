"""One simulated machine: power, boot override, virtual media, and its boot/install lifecycle.

Nothing runs in the background. Every state change after an action (POST done -> boot the
override device -> install -> OS up) is computed from timestamps by ``evaluate(now)``
whenever someone looks, so 12,000 idle machines cost no CPU. Bare-metal machines (behind a
Redfish BMC) and VMs (behind the simulated hypervisor API) share this one model; only the
boot device choice differs (see ``_boot_target``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from werft.sim.clock import Clock
from werft.sim.seed import NodeSeed, SeedError

MachineKind = Literal["bmc", "vm"]

BOOT_ENABLED = ("Disabled", "Once", "Continuous")
BOOT_TARGETS = ("None", "Pxe", "Cd", "Hdd")
# Two virtual CD drives, as on Dell iDRAC 9 (slots 1 and 2) or Lenovo XCC: the installer
# ISO goes in one, the NoCloud seed ISO in the other. Both accept CD and DVD media.
BMC_MEDIA_DEVICES = ("CD1", "CD2")


@dataclass(frozen=True, slots=True)
class SimMachineSpec:
    """What the simulator needs to know about one machine of the inventory."""

    name: str
    kind: MachineKind = "bmc"
    cluster: str | None = None
    site: str | None = None
    role: str | None = None
    # BMC only: the Redfish system id (last segment of the BMC address) and HTTP basic
    # credentials (resolved from the machine's credentialsRef). Never printed.
    system_id: str = "1"
    credentials: tuple[str, str] | None = field(default=None, repr=False)
    mac: str | None = None


@dataclass(frozen=True, slots=True)
class InstallerImage:
    """An OS installer ISO (anything bootable that is not a NoCloud seed)."""

    size: int


Media = InstallerImage | NodeSeed | SeedError


@dataclass(slots=True)
class MediaSlot:
    device: str
    image: str = ""
    inserted: bool = False
    write_protected: bool = True
    content: Media | None = None
    # The BMC streams the image: it can boot from it only from this monotonic instant on
    # (delays.media_fetch after the insert). The action itself returns at once.
    ready_at: float = 0.0

    def eject(self) -> None:
        self.image, self.inserted, self.write_protected, self.content = "", False, True, None
        self.ready_at = 0.0


@dataclass(slots=True)
class Boot:
    """What the machine booted in the current power cycle."""

    at: float
    kind: Literal["installer", "disk", "idle"]
    seed: NodeSeed | SeedError | None = None
    finished: bool = False


@dataclass(slots=True, eq=False)
class SimMachine:
    spec: SimMachineSpec
    powered: bool = False
    power_on_at: float | None = None
    cycle: int = 0  # bumped at every power on / restart
    boot_enabled: str = "Disabled"
    boot_target: str = "None"
    media: list[MediaSlot] = field(default_factory=list)
    boot: Boot | None = None
    installed: NodeSeed | None = None  # persists on "disk" across power cycles
    installs: int = 0  # OS installs finished on this machine: more than one is a re-image
    os_up_at: float | None = None  # when the installed OS came up in this cycle
    stuck: str | None = None  # why the machine cannot go on (cloud-init unusable, ...)
    idle: str | None = None  # why it booted nothing useful (no OS, PXE, no media)
    # VMs: the domain definition (None = not defined); BMC machines always exist.
    domain: dict[str, object] | None = None
    # What the cluster has been told (see werft.sim.lifecycle).
    node_cluster: str | None = None
    node_name: str | None = None
    node_cycle: int = -1
    node_down: bool = False
    # Installer boots (each starts by wiping the disk), finished or not: with ``installs``
    # a machine provisioned once shows 1 and 1; a second reset mid-install shows here.
    installs_started: int = 0
    # Wall clock (time.time()) of the last reset action, for Redfish LastResetTime.
    last_reset_wall: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def new(cls, spec: SimMachineSpec) -> SimMachine:
        slots = [MediaSlot(d) for d in BMC_MEDIA_DEVICES] if spec.kind == "bmc" else []
        return cls(spec=spec, media=slots)

    # --- actions ------------------------------------------------------------------------

    def power_on(self, now: float) -> None:
        if self.powered:
            return
        self.powered = True
        self.power_on_at = now
        self.cycle += 1
        self.boot = None
        self.os_up_at = None
        self.stuck = self.idle = None

    def power_off(self, now: float) -> None:
        if not self.powered:
            return
        self.powered = False
        self.power_on_at = None
        self.boot = None
        self.os_up_at = None
        self.stuck = self.idle = None

    def blank(self) -> None:
        """New hardware in its place (off): nothing on the disk, in the drives or in the
        boot settings. What happened to the old one stays counted (``installs``...)."""
        assert not self.powered, "power the machine off first"
        self.installed = None
        for slot in self.media:
            slot.eject()
        self.boot_enabled, self.boot_target = "Disabled", "None"

    def restart(self, now: float) -> None:
        self.power_off(now)
        self.power_on(now)

    def media_slot(self, device: str) -> MediaSlot | None:
        for slot in self.media:
            if slot.device == device:
                return slot
        return None

    # --- lifecycle ----------------------------------------------------------------------

    def evaluate(self, now: float, clock: Clock) -> None:
        """Apply every transition whose time has come."""
        if not self.powered or self.power_on_at is None:
            return
        if self.boot is None:
            boot_at = self.power_on_at + clock.scaled(clock.delays.post)
            if now < boot_at:
                return
            self._boot(boot_at)
        boot = self.boot
        assert boot is not None
        if boot.kind == "installer" and not boot.finished:
            done = boot.at + clock.scaled(clock.delays.install)
            if now < done:
                return
            boot.finished = True
            if isinstance(boot.seed, NodeSeed):
                self.installed = boot.seed
                self.installs += 1
                self.os_up_at = done
            elif isinstance(boot.seed, SeedError):
                self.stuck = f"cloud-init could not use the seed: {boot.seed.reason}"
            else:
                self.stuck = "the installer waits for input: no NoCloud seed is inserted"

    def _boot_target(self) -> str:
        if self.spec.kind == "vm":
            # libvirt boot order hd, cdrom: an empty disk falls through to the CD.
            return "Hdd" if self.installed is not None else "Cd"
        target = self.boot_target if self.boot_enabled != "Disabled" else "Hdd"
        if self.boot_enabled == "Once":  # consumed by this boot, as on real hardware
            self.boot_enabled, self.boot_target = "Disabled", "None"
        return target if target != "None" else "Hdd"

    def _boot(self, at: float) -> None:
        target = self._boot_target()
        if target == "Cd":
            contents = [
                s.content
                for s in self.media
                if s.inserted and s.content is not None and s.ready_at <= at
            ]
            if any(isinstance(c, InstallerImage) for c in contents):
                seed = next((c for c in contents if not isinstance(c, InstallerImage)), None)
                self.boot = Boot(at, "installer", seed)  # type: ignore[arg-type]
                # The installer partitions the disk first: whatever was installed is gone.
                self.installed = None
                self.installs_started += 1
                return
            self.boot = Boot(at, "idle", finished=True)
            self.idle = "no bootable virtual media inserted"
        elif target == "Pxe":
            self.boot = Boot(at, "idle", finished=True)
            self.idle = "PXE boot: no DHCP/TFTP server answers on the simulated network"
        elif self.installed is not None:
            self.boot = Boot(at, "disk", finished=True)
            self.os_up_at = at
        else:
            self.boot = Boot(at, "idle", finished=True)
            self.idle = "no operating system on the disk"

    def phase(self) -> str:
        if not self.powered:
            return "off"
        if self.stuck:
            return "stuck"
        if self.boot is None:
            return "post"
        if self.boot.kind == "installer" and not self.boot.finished:
            return "installing"
        if self.os_up_at is not None:
            return "running"
        return "idle"

    def describe(self) -> dict[str, object]:
        """State for /_sim/machines/<name>: no credentials, no tokens."""
        return {
            "name": self.name,
            "kind": self.spec.kind,
            "cluster": self.spec.cluster,
            "site": self.spec.site,
            "defined": self.spec.kind == "bmc" or self.domain is not None,
            "powerState": "On" if self.powered else "Off",
            "phase": self.phase(),
            "reason": self.stuck or self.idle,
            "boot": {
                "BootSourceOverrideEnabled": self.boot_enabled,
                "BootSourceOverrideTarget": self.boot_target,
            },
            "media": [
                {"device": s.device, "image": s.image, "inserted": s.inserted,
                 "content": _content_kind(s.content)}
                for s in self.media
            ],
            "installed": self.installed.public() if self.installed else None,
            "installs": self.installs,
            "installsStarted": self.installs_started,
            "node": (
                {"cluster": self.node_cluster, "name": self.node_name, "notReady": self.node_down}
                if self.node_name
                else None
            ),
        }


def _content_kind(content: Media | None) -> str | None:
    if content is None:
        return None
    if isinstance(content, InstallerImage):
        return "installer"
    if isinstance(content, NodeSeed):
        return "seed"
    return "unusable-seed"
