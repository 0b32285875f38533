"""Choosing a provider for a machine, and sharing providers across a batch.

The inventory decides: a machine with a ``bmc`` is bare metal (Redfish); a ``vm`` whose
host is ``sim+http(s)://`` lives on the simulator's hypervisor API; any other ``vm.host``
is a libvirt URI.

A provider instance owns one connection pool (an ``httpx.AsyncClient`` or a libvirt
connection) for one endpoint, so a batch should share instances: ``ProviderPool`` keeps
one per (kind, endpoint[, TLS settings]) and closes them all at the end::

    async with ProviderPool(secrets) as pool:
        for machine in cluster.machines:          # concurrently, in practice
            async with pool.using(machine) as provider:
                await provider.ensure(machine, image_url, seed_url)

A run keeps its pool for hours, and a real fleet has an origin per BMC: 10,000 edge
sites would be 10,000 clients, each with an idle keep-alive socket (a file descriptor,
on both ends, until the pool's next request to it). So the pool keeps at most
``idle_limit`` providers nobody is using, the most recently used, and closes the rest;
one in use is never closed. ``get`` is for a caller that holds its providers until the
pool closes (a test, a one-off command): those are never closed early.

Redfish providers are keyed by origin and TLS settings, not by credentials: credentials
are sent per request, so every BMC behind one origin (the simulator serves all of them
under one) shares one pool of connections.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

from werft.errors import PermanentError
from werft.inventory.model import Machine
from werft.providers._http import HttpOptions
from werft.providers.base import Provider
from werft.providers.libvirt import LibvirtProvider
from werft.providers.records import MachineRecords
from werft.providers.redfish import RedfishProvider, parse_bmc_address
from werft.providers.simulated import SimulatedProvider, sim_origin
from werft.secrets import SecretStore

ProviderKey = tuple[str, ...]
SIM_SCHEMES = ("sim+http://", "sim+https://")
# Providers kept open while idle: a batch's BMCs between one stage and the next.
IDLE_PROVIDERS = 128


def provider_key(machine: Machine) -> ProviderKey:
    """Which provider instance can serve ``machine``: (kind, endpoint, settings...)."""
    if machine.bmc is not None:
        bmc = machine.bmc
        verify = "insecure" if bmc.disable_certificate_verification else "verify"
        origin = parse_bmc_address(bmc.address).origin
        return ("redfish", origin, verify, bmc.ca_bundle or "")
    if machine.vm is None:  # the model guarantees one of bmc / vm; a hand-built one may not
        raise PermanentError(f"machine {machine.name} has neither a bmc nor a vm")
    if machine.vm.host.startswith(SIM_SCHEMES):
        return ("simulated", sim_origin(machine.vm.host))
    return ("libvirt", machine.vm.host)


def _create(
    key: ProviderKey,
    secrets: SecretStore,
    options: HttpOptions | None,
    records: MachineRecords | None = None,
) -> Provider:
    kind = key[0]
    if records is None:
        records = MachineRecords(secrets, settle=(options or HttpOptions()).reset_settle)
    if kind == "redfish":
        _, origin, verify, ca_bundle = key
        return RedfishProvider(
            origin,
            secrets=secrets,
            verify_tls=verify == "verify",
            ca_bundle=ca_bundle or None,
            options=options,
            records=records,
        )
    if kind == "simulated":
        return SimulatedProvider(key[1], options=options, records=records)
    return LibvirtProvider(key[1], records=records, retry=(options or HttpOptions()).retry)


def provider_for(
    machine: Machine, *, secrets: SecretStore, options: HttpOptions | None = None
) -> Provider:
    """A new provider for ``machine``; the caller closes it (``await p.aclose()``).

    For more than one machine, prefer a ``ProviderPool``.
    """
    return _create(provider_key(machine), secrets, options)


@dataclass
class _Held:
    provider: Provider
    users: int = 0
    pinned: bool = False  # handed out by ``get``: closed only with the pool


class ProviderPool:
    """One provider per endpoint, shared by the machines behind it; closes them all.

    Every provider shares ``records`` (``werft.providers.records``): what werft did to each
    machine, kept in the secret store so every run and every worker sees it.
    """

    def __init__(
        self,
        secrets: SecretStore,
        *,
        options: HttpOptions | None = None,
        idle_limit: int = IDLE_PROVIDERS,
    ) -> None:
        self._secrets = secrets
        self._options = options
        self.idle_limit = idle_limit
        self.records = MachineRecords(secrets, settle=(options or HttpOptions()).reset_settle)
        self._held: OrderedDict[ProviderKey, _Held] = OrderedDict()  # least recent first

    @contextlib.asynccontextmanager
    async def using(self, machine: Machine) -> AsyncIterator[Provider]:
        """The provider for ``machine``, held for the block; idle ones beyond the limit are
        closed when it ends."""
        key = provider_key(machine)
        held = self._hold(key, machine)
        held.users += 1
        try:
            yield held.provider
        finally:
            held.users -= 1
            if key in self._held:  # recency is the last use, not the first
                self._held.move_to_end(key)
            await self._close_surplus()

    def get(self, machine: Machine) -> Provider:
        """The provider for ``machine``, held until the pool closes."""
        held = self._hold(provider_key(machine), machine)
        held.pinned = True
        return held.provider

    def __len__(self) -> int:
        return len(self._held)

    async def aclose(self) -> None:
        held, self._held = list(self._held.values()), OrderedDict()
        for item in held:
            await item.provider.aclose()

    async def __aenter__(self) -> ProviderPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _hold(self, key: ProviderKey, machine: Machine) -> _Held:
        held = self._held.get(key)
        if held is None:
            try:
                provider = _create(key, self._secrets, self._options, self.records)
            except PermanentError as exc:  # e.g. an unreadable caBundle: name the machine
                raise PermanentError(f"machine {machine.name}: {exc}", reason=exc.reason) from None
            held = self._held[key] = _Held(provider)
        self._held.move_to_end(key)
        return held

    async def _close_surplus(self) -> None:
        idle = [key for key, held in self._held.items() if not held.users and not held.pinned]
        # Taken out before the first await: nobody can pick one up while it closes.
        excess = max(0, len(idle) - self.idle_limit)
        surplus = [self._held.pop(key).provider for key in idle[:excess]]
        for provider in surplus:
            await provider.aclose()
