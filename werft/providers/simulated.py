"""VMs on the simulator's hypervisor API (``vm.host: sim+http://host:port``).

The API (CONTRACTS.md) is libvirt reduced to what werft needs: a domain is defined by a
PUT of its spec (cpus, memory, disk, MAC, media [installer image, seed]) and started by
a POST; a started domain with media then goes through the same lifecycle as a bare-metal
machine in the simulator.

It has no boot override to leave behind: a simulated domain boots its disk once the OS
is installed (as a libvirt domain with boot order hd, cdrom would), so ``release`` only
records that the machine joined and ejects its media (a PUT with no media, which the
API allows on a running domain, as libvirt ejects a live CD-ROM), and ``power_on`` only
starts the domain. Nor has ``ensure`` a crash window: the API refuses new media for a
running domain, so a domain holding the desired media either booted them or is shut off
(and gets started).

Requests: GET and PUT (a whole definition) are retried at the request; start and stop
are sent again only after a read shows they did not take effect.

The hypervisor downloads a domain's media when it is defined (PUT), so a refused PUT is
classified as MediaUnavailable (``fetches_media``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from werft.errors import PermanentError
from werft.inventory.model import Machine, VMSpec
from werft.providers._http import Calls, HttpOptions, act_observed, new_client
from werft.providers.base import (
    MachineState,
    MutationLedger,
    ProviderKind,
    assess,
    poll_until_powered_on,
    seed_of_machine,
)
from werft.providers.errors import SYSTEM_NOT_FOUND, Target
from werft.providers.records import MachineRecords

_SCHEMES = {"sim+http": "http", "sim+https": "https"}
API = "/hypervisor/v1"


def sim_origin(host: str) -> str:
    """``sim+http://127.0.0.1:8686`` -> ``http://127.0.0.1:8686``."""
    parts = urlsplit(host)
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None or not parts.hostname or parts.path.strip("/"):
        raise PermanentError(
            f"unsupported simulated hypervisor {host!r}: expected sim+http://host:port"
        )
    return f"{scheme}://{parts.netloc}"


def domain_spec(machine: Machine, vm: VMSpec, image_url: str, seed_url: str) -> dict[str, Any]:
    return {
        "cpus": vm.cpus,
        "memoryMiB": vm.memory_mib,
        "diskGiB": vm.disk_gib,
        "mac": machine.boot_mac_address,
        "media": [image_url, seed_url],
    }


class SimulatedProvider:
    """Every VM of one simulated hypervisor endpoint, over one connection pool."""

    kind: ProviderKind = "simulated"

    def __init__(
        self,
        origin: str,
        *,
        options: HttpOptions | None = None,
        records: MachineRecords | None = None,
    ) -> None:
        self.origin = origin
        self._options = options or HttpOptions()
        self._client = new_client(origin, self._options)
        self._ledger = MutationLedger()
        self._records = records or MachineRecords(None)

    def __repr__(self) -> str:
        return f"SimulatedProvider({self.origin!r})"

    async def observe(
        self, machine: Machine, *, image_url: str | None = None, seed_url: str | None = None
    ) -> MachineState:
        calls, path = self._calls(machine)
        domain = await self._get(calls, path)
        state = self._state(machine, domain, self._joined(machine))
        if image_url is not None and seed_url is not None:
            state, _ = assess(state, image_url, seed_url)
        return state

    async def observe_power(self, machine: Machine) -> MachineState:
        return await self.observe(machine)  # one read either way: media come with it

    async def ensure(self, machine: Machine, image_url: str, seed_url: str) -> int:
        calls, path = self._calls(machine)
        vm = _vm_of(machine)
        domain = await self._get(calls, path)
        state = self._state(machine, domain, self._joined(machine))
        _, hands_off = assess(state, image_url, seed_url)
        if hands_off:
            return 0

        self._records.forget_joined(machine.name)  # (re)installed from here on
        desired = domain_spec(machine, vm, image_url, seed_url)
        running = domain is not None and domain.get("state") == "running"
        differs = domain is None or any(domain.get(k) != v for k, v in desired.items())
        if running and differs:
            # Running something else (not a werft install of this machine): the API
            # refuses to change a running domain's media, so stop it first, as the
            # Redfish driver restarts a bare-metal machine into the installer.
            await self._power(calls, path, "stop")
            running = False
        if differs:
            await calls.request("PUT", path, "define the domain", json=desired, fetches_media=True)
        if not running:
            await self._power(calls, path, "start")
        return calls.mutations

    async def release(self, machine: Machine) -> int:
        calls, path = self._calls(machine)
        domain = await self._get(calls, path)
        media = [str(m) for m in (domain or {}).get("media") or [] if m]
        if domain is None or not media:
            return 0
        seed = seed_of_machine(media, machine.name)
        if seed is not None:
            self._records.record_joined(machine.name, seed)
        spec = {k: domain.get(k) for k in ("cpus", "memoryMiB", "diskGiB", "mac")}
        await calls.request("PUT", path, "eject the media", json={**spec, "media": []})
        return calls.mutations

    async def power_on(self, machine: Machine) -> int:
        calls, path = self._calls(machine)
        domain = await self._get(calls, path)
        if domain is None:
            raise PermanentError(
                f"{calls.target}: no domain to power on (it was never defined)",
                reason=SYSTEM_NOT_FOUND,
            )
        if domain.get("state") == "running":
            return 0
        await self._power(calls, path, "start")
        return calls.mutations

    async def power_off(self, machine: Machine) -> int:
        calls, path = self._calls(machine)
        domain = await self._get(calls, path)
        if domain is None or domain.get("state") != "running":
            return 0
        await self._power(calls, path, "stop")
        return calls.mutations

    async def wait_powered_on(
        self, machine: Machine, *, timeout: float, poll_interval: float = 1.0
    ) -> MachineState:
        return await poll_until_powered_on(
            self, machine, timeout=timeout, poll_interval=poll_interval
        )

    def mutations_sent(self, machine: Machine) -> int:
        return self._ledger.get(machine.name)

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- internals ----------------------------------------------------------------------

    def _calls(self, machine: Machine) -> tuple[Calls, str]:
        vm = _vm_of(machine)
        if sim_origin(vm.host) != self.origin:
            raise ValueError(f"{self!r} asked about {machine.name} on {vm.host}")
        target = Target(machine.name, urlsplit(self.origin).netloc, "hypervisor")
        calls = Calls(
            self._client,
            target,
            action_timeout=self._options.action_timeout,
            ledger=self._ledger,
            retry=self._options.retry,
        )
        return calls, f"{API}/domains/{quote(machine.name, safe='')}"

    async def _get(self, calls: Calls, path: str) -> dict[str, Any] | None:
        body, _ = await calls.get_json_or_none(path, "read the domain")
        return body

    async def _power(self, calls: Calls, path: str, action: str) -> None:
        """start / stop: sent again after a failure only if a read shows it did not
        happen (a second start of a domain that came up meanwhile is refused or, worse,
        restarts it on some hypervisors)."""
        wanted = "running" if action == "start" else "shutoff"

        async def send() -> object:
            return await calls.request("POST", f"{path}/{action}", f"{action} the domain")

        async def took_effect() -> bool:
            domain = await self._get(calls, path)
            return domain is not None and domain.get("state") == wanted

        await act_observed(send, took_effect, policy=self._options.retry)

    def _joined(self, machine: Machine) -> str | None:
        record = self._records.joined(machine.name)
        return record.seed if record is not None else None

    @staticmethod
    def _state(
        machine: Machine, domain: dict[str, Any] | None, joined_seed: str | None = None
    ) -> MachineState:
        if domain is None:
            return MachineState(
                name=machine.name, provider="simulated", exists=False, powered_on=False
            )
        state = str(domain.get("state", "unknown"))
        media = domain.get("media") or []
        return MachineState(
            name=machine.name,
            provider="simulated",
            exists=True,
            powered_on=state == "running",
            media=[str(m) for m in media if m],
            joined_seed=joined_seed,
            details={"power_state": state},
        )


def _vm_of(machine: Machine) -> VMSpec:
    if machine.vm is None:
        raise PermanentError(f"machine {machine.name} has no vm spec; it is not a VM")
    return machine.vm
