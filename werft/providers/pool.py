"""Choosing a provider for a machine, and sharing providers across a batch.

The inventory decides: a machine with a ``bmc`` is bare metal (Redfish); a ``vm`` whose
host is ``sim+http(s)://`` lives on the simulator's hypervisor API; any other ``vm.host``
is a libvirt URI.

A provider instance owns one connection pool (an ``httpx.AsyncClient`` or a libvirt
connection) for one endpoint, so a batch should share instances: ``ProviderPool`` keeps
one per (kind, endpoint[, TLS settings]) and closes them all at the end::

    async with ProviderPool(secrets) as pool:
        for machine in cluster.machines:          # concurrently, in practice
            await pool.get(machine).ensure(machine, image_url, seed_url)

Redfish providers are keyed by origin and TLS settings, not by credentials: credentials
are sent per request, so every BMC behind one origin (the simulator serves all of them
under one) shares one pool of connections.
"""

from __future__ import annotations

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


class ProviderPool:
    """One provider per endpoint for the lifetime of a batch; closes them all.

    Every provider shares ``records`` (``werft.providers.records``): what werft did to each
    machine, kept in the secret store so every run and every worker sees it.
    """

    def __init__(self, secrets: SecretStore, *, options: HttpOptions | None = None) -> None:
        self._secrets = secrets
        self._options = options
        self.records = MachineRecords(secrets, settle=(options or HttpOptions()).reset_settle)
        self._providers: dict[ProviderKey, Provider] = {}

    def get(self, machine: Machine) -> Provider:
        key = provider_key(machine)
        provider = self._providers.get(key)
        if provider is None:
            try:
                provider = _create(key, self._secrets, self._options, self.records)
            except PermanentError as exc:  # e.g. an unreadable caBundle: name the machine
                raise PermanentError(f"machine {machine.name}: {exc}", reason=exc.reason) from None
            self._providers[key] = provider
        return provider

    def __len__(self) -> int:
        return len(self._providers)

    async def aclose(self) -> None:
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            await provider.aclose()

    async def __aenter__(self) -> ProviderPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
