"""Infrastructure providers: one Protocol, three drivers, chosen by the inventory.

- ``redfish``   bare metal through its BMC (virtual media, boot override, power);
- ``simulated`` VMs on the simulator's hypervisor API (``vm.host: sim+http://...``);
- ``libvirt``   VMs on a libvirt hypervisor (``vm.host``: a libvirt URI; optional extra).

Stage code asks a ``ProviderPool`` for the provider of each machine and calls
``observe`` / ``ensure`` / ``wait_powered_on``, ``release`` once the node has joined
its cluster (so a reboot does not reinstall it), and ``power_on`` for an installed
machine that lost power (from its disk, never the installer). ``mutations_sent`` counts
the mutating calls per machine, those of failed operations included. Every failure
arrives as a ``TransientError`` or ``PermanentError`` with a ``reason`` (classified in
``werft.providers.errors``). Requests are retried at the request within the deadline a
stage sets with ``request_deadline``; what werft did to each machine (its resets, that it
joined) is kept in the secret store by ``MachineRecords``.
"""

from werft.providers._http import HttpOptions
from werft.providers.base import MachineState, Provider, ProviderKind, is_seed_of
from werft.providers.errors import Target, classify
from werft.providers.libvirt import LibvirtProvider
from werft.providers.pool import ProviderPool, provider_for, provider_key
from werft.providers.records import MachineRecords
from werft.providers.redfish import BmcAddress, RedfishProvider, parse_bmc_address
from werft.providers.simulated import SimulatedProvider
from werft.retry import request_deadline

__all__ = [
    "BmcAddress",
    "HttpOptions",
    "LibvirtProvider",
    "MachineRecords",
    "MachineState",
    "Provider",
    "ProviderKind",
    "ProviderPool",
    "RedfishProvider",
    "SimulatedProvider",
    "Target",
    "classify",
    "is_seed_of",
    "parse_bmc_address",
    "provider_for",
    "provider_key",
    "request_deadline",
]
