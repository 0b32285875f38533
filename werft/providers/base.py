"""What every infrastructure provider promises: observe a machine, make it boot an image,
once it has joined its cluster stop it from booting the installer again, and power an
installed machine back on from its disk.

A provider is level-triggered like every werft stage: ``ensure``, ``release``,
``power_on`` and ``power_off`` observe first and act only on the difference, and return
how many mutating calls they made, so a re-run on a machine that is already where it
should be makes none (the tests count them). ``mutations_sent`` counts the same per
machine, including the calls of an operation that then failed.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from werft.errors import TransientError
from werft.inventory.model import Machine
from werft.providers.errors import TIMEOUT

ProviderKind = Literal["redfish", "simulated", "libvirt"]

# werft publishes seeds as <baseUrl>/seeds/<cluster>/<machine>-<sha256[:12]>.iso
# (CONTRACTS.md). Only the tail is compared: moving the artifact host must not make
# every running machine look like a stranger and get re-imaged.
_SEED_TAIL = re.compile(r"/seeds/(?P<cluster>[^/]+)/(?P<file>[^/]+)$")


class MachineState(BaseModel):
    """A machine as its BMC or hypervisor reports it right now."""

    model_config = ConfigDict(frozen=True)

    name: str
    provider: ProviderKind
    exists: bool
    powered_on: bool
    # Image URLs currently inserted, installer device first (for libvirt: local paths
    # of file-backed CD-ROMs are reported as they are).
    media: list[str] = Field(default_factory=list)
    # "<target>/<enabled>" as Redfish says it, e.g. "Cd/Once"; None when no override.
    boot_override: str | None = None
    # The machine runs with a werft seed for itself whose content hash is not the one
    # werft would publish now. werft never re-images a running machine on its own:
    # re-imaging is an explicit operation, so this is reported, not acted on.
    seed_outdated: bool = False
    # Same, for the installer image (the profile's osImage changed since install).
    image_outdated: bool = False
    # Raw, non-secret details for tables and debugging: "power_state" as the endpoint
    # reports it (every provider), "system" (Redfish: the system's path), "boot"
    # (libvirt: the boot order).
    details: dict[str, str] = Field(default_factory=dict)

    @property
    def cd_override(self) -> bool:
        """The next boot starts from the CD (with werft's media in: the installer): a boot
        override to Cd, Once or Continuous (libvirt reports a boot order with the CD-ROM
        first as ``Cd/Continuous``). ``Provider.release`` clears it."""
        return (self.boot_override or "").startswith("Cd/")

    @property
    def boot_pending(self) -> bool:
        """A one-time boot override to the CD is still set. The machine consumes it when it
        next boots, so it has not booted since the override was set: werft stopped between
        setting it and restarting the machine, or the machine is still in POST."""
        return self.boot_override == "Cd/Once"

    def boots(self, image_url: str, seed_url: str) -> bool:
        """Powered on with exactly this image and seed inserted, and not still waiting to
        boot them (``boot_pending``)."""
        return (
            self.powered_on
            and image_url in self.media
            and seed_url in self.media
            and not self.boot_pending
        )


@runtime_checkable
class Provider(Protocol):
    """One kind of infrastructure endpoint (a BMC origin, a hypervisor).

    One instance serves many machines of a batch concurrently and keeps one connection
    pool; get instances from a :class:`werft.providers.ProviderPool`.
    """

    kind: ProviderKind

    async def observe(
        self, machine: Machine, *, image_url: str | None = None, seed_url: str | None = None
    ) -> MachineState:
        """Read-only: what the machine looks like now. Given the desired image and seed,
        ``seed_outdated``/``image_outdated`` say whether a running machine differs."""
        ...

    async def ensure(self, machine: Machine, image_url: str, seed_url: str) -> int:
        """Make the machine boot ``image_url`` with the NoCloud seed ``seed_url``.

        Returns the number of mutating calls made: 0 when the machine already runs with
        both inserted (or runs with an older werft seed of its own: see
        ``MachineState.seed_outdated``). A machine that runs with both inserted but has
        not booted them yet (``MachineState.boot_pending``: werft stopped before the
        restart) is restarted.

        A machine that is off is (re)installed: never call this for a machine that was
        installed already and only lost power -- that is ``power_on``.
        """
        ...

    async def release(self, machine: Machine) -> int:
        """After the node has joined its cluster: make the machine boot its disk from now
        on, so a reboot does not reinstall it (Redfish: clear a Cd boot override, which
        BMCs that ignore Once keep for good; libvirt: boot order hd first).

        The media stay inserted: the inserted seed is how werft recognises a machine it
        provisioned. Returns the number of mutating calls made: 0 when there is nothing to
        change.
        """
        ...

    async def power_on(self, machine: Machine) -> int:
        """Power an installed machine back on from its disk: never the installer.

        ``release`` first (a Cd override, or libvirt's CD-ROM-first boot order, would boot
        the installer and re-image the machine), then power on. The media are left as they
        are. Returns the mutating calls made: 0 when the machine is on already (whatever
        it boots: this does not restart anything). For a machine that lost power after
        its install; whether it was installed is the caller's judgement.
        """
        ...

    async def power_off(self, machine: Machine) -> int:
        """Hard power off; returns the mutating calls made (0 when already off)."""
        ...

    async def wait_powered_on(
        self, machine: Machine, *, timeout: float, poll_interval: float = 1.0
    ) -> MachineState:
        """Poll until the machine reports power on; TransientError after ``timeout`` s."""
        ...

    def mutations_sent(self, machine: Machine) -> int:
        """Mutating calls this instance has sent for ``machine`` so far, counted when sent:
        unlike the return values, this includes the calls of an operation that then
        failed (a request that timed out may still have been applied). Callers read it
        before and after an operation (in a ``finally``)."""
        ...

    async def aclose(self) -> None: ...


class MutationLedger:
    """Per machine, the mutating calls a provider instance has sent; what
    ``Provider.mutations_sent`` reads. Thread-safe (libvirt calls run in worker threads)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, machine: str, n: int = 1) -> None:
        with self._lock:
            self._counts[machine] = self._counts.get(machine, 0) + n

    def get(self, machine: str) -> int:
        with self._lock:
            return self._counts.get(machine, 0)


def is_seed_of(url: str, desired_seed_url: str, machine: str) -> bool:
    """Whether ``url`` is a werft seed for ``machine`` in the same cluster as the desired
    seed, whatever its content hash."""
    found, desired = _SEED_TAIL.search(url), _SEED_TAIL.search(desired_seed_url)
    if found is None or desired is None or found["cluster"] != desired["cluster"]:
        return False
    return re.fullmatch(re.escape(machine) + r"-[0-9a-f]{12}\.iso", found["file"]) is not None


def assess(state: MachineState, image_url: str, seed_url: str) -> tuple[MachineState, bool]:
    """(``state`` with the outdated flags set, whether ensure must leave the machine alone).

    A powered-on machine carrying a werft seed of its own was installed by werft: ensure
    leaves it alone and only reports what differs from the desired media.
    """
    if not state.powered_on or not any(is_seed_of(u, seed_url, state.name) for u in state.media):
        return state, False
    flags = {
        "seed_outdated": seed_url not in state.media,
        "image_outdated": image_url not in state.media,
    }
    return state.model_copy(update=flags), True


async def poll_until_powered_on(
    provider: Provider, machine: Machine, *, timeout: float, poll_interval: float
) -> MachineState:
    """The shared wait loop: observe until powered on, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        state = await provider.observe(machine)
        if state.powered_on:
            return state
        left = deadline - time.monotonic()
        if left <= 0:
            power = state.details.get("power_state", "off")
            raise TransientError(
                f"machine {machine.name} did not power on within {timeout:g}s "
                f"(power state {power})",
                reason=TIMEOUT,
            )
        await asyncio.sleep(min(poll_interval, left))
