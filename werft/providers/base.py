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
    # The seed werft recorded when it released this machine (its Node had registered:
    # ``werft.providers.records``), whatever the machine holds now -- ``release`` ejects
    # the media. werft's evidence that the machine was installed; None without one.
    joined_seed: str | None = None
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

    def joined_with(self, seed_url: str) -> bool:
        """werft saw this machine join the cluster of ``seed_url`` (any seed of its own for
        that cluster) and released it: it holds an installed OS."""
        return self.joined_seed is not None and is_seed_of(self.joined_seed, seed_url, self.name)

    def released(self, seed_url: str) -> bool:
        """Running the OS werft installed: powered on, and werft saw it join and released
        it. Its media may be ejected: that is the desired state once the node has joined.
        (An override to the CD set since is the bootstrap stage's to clear again.)"""
        return self.powered_on and self.joined_with(seed_url)

    def provisioned(self, image_url: str, seed_url: str) -> bool:
        """What the infrastructure stage wants: booting the install media, or released."""
        return self.boots(image_url, seed_url) or self.released(seed_url)


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

    async def observe_power(self, machine: Machine) -> MachineState:
        """Read-only, and cheaper than ``observe`` where media are separate resources
        (Redfish): the machine's power, and whether its endpoint answers at all. For polls
        and reach probes, so it may leave out what they do not use: Redfish reads neither
        the media (``media`` is empty) nor werft's records (``joined_seed`` is None)."""
        ...

    async def ensure(self, machine: Machine, image_url: str, seed_url: str) -> int:
        """Make the machine boot ``image_url`` with the NoCloud seed ``seed_url``.

        Returns the number of mutating calls made: 0 when the machine already runs with
        both inserted (or runs with an older werft seed of its own: see
        ``MachineState.seed_outdated``). A machine that runs with both inserted but has
        not booted them yet (``MachineState.boot_pending``: werft stopped before the
        restart) is restarted.

        A machine that is off is (re)installed: never call this for a machine that was
        installed already and only lost power -- that is ``power_on``. A machine werft
        released after it joined (``MachineState.released``) is left alone.

        Re-entrant at every step: whatever an earlier call (killed, or failed at one
        request) left done -- media inserted, override set, reset sent -- is not done
        again, and no reset follows within the settle time of the last one werft sent
        the machine (``werft.providers.records``).
        """
        ...

    async def release(self, machine: Machine) -> int:
        """After the node has joined its cluster: record that it joined (the seed it was
        installed from: ``MachineState.joined_seed``, werft's evidence that the machine is
        installed), make it boot its disk from now on, so a reboot does not reinstall it
        (Redfish: clear a Cd boot override, which BMCs that ignore Once keep for good;
        libvirt: boot order hd first), and eject werft's media (the seed carries the
        cluster's keys; ejected is the desired state from then on).

        Returns the number of mutating calls made: 0 when there is nothing to change.
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


def seed_of_machine(media: list[str], machine: str) -> str | None:
    """The werft seed for ``machine`` among ``media`` (any cluster, any hash), if any."""
    for url in media:
        found = _SEED_TAIL.search(url)
        if found and re.fullmatch(re.escape(machine) + r"-[0-9a-f]{12}\.iso", found["file"]):
            return url
    return None


def assess(state: MachineState, image_url: str, seed_url: str) -> tuple[MachineState, bool]:
    """(``state`` with the outdated flags set, whether ensure must leave the machine alone).

    A powered-on machine carrying a werft seed of its own, or released by werft after it
    joined (media ejected), was installed by werft: ensure leaves it alone and only
    reports what differs from the desired media.
    """
    if not state.powered_on:
        return state, False
    if state.released(seed_url):
        return state, True
    if not any(is_seed_of(u, seed_url, state.name) for u in state.media):
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
        state = await provider.observe_power(machine)
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
