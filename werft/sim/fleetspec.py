"""From a werft inventory to the plain data the simulator is built from.

Every bare-metal machine gets a BMC at ``/bmc/<machine>``; every VM whose ``vm.host`` starts
with ``sim+http`` is a domain of the simulated hypervisor; every cluster gets a Kubernetes
API at ``/clusters/<cluster>``. BMC credentials come from each machine's credentialsRef
(``werft.secrets.resolve``: environment, then the secret store); refs that resolve to
nothing take ``default_credentials`` if given, else building fails naming every such ref.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from werft.errors import PermanentError, SecretNotFound
from werft.inventory.resolved import Inventory
from werft.secrets import SecretStore, resolve
from werft.sim.machines import SimMachineSpec


class CredentialsMissing(PermanentError):
    """Some BMC credentialsRefs resolve to nothing and no default was given."""

    def __init__(self, refs: list[str]) -> None:
        self.refs = refs
        super().__init__(
            "cannot resolve the BMC credentials "
            + ", ".join(repr(r) for r in refs)
            + ": set them (werft secret set REF, or WERFT_SECRET_<REF>) or pass "
            "--default-credentials USER:PASS"
        )


def parse_credentials(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise ValueError("credentials must have the form USER:PASS")
    return user, password


def system_id_of(address: str) -> str:
    """The Redfish system id: the last path segment of a Metal3-style BMC address."""
    path = urlsplit(address).path.rstrip("/")
    last = path.rsplit("/", 1)[-1] if path else ""
    return last if last and last != "v1" else "1"


def specs_from_inventory(
    inventory: Inventory,
    *,
    default_credentials: tuple[str, str] | None = None,
    store: SecretStore | None = None,
) -> tuple[list[SimMachineSpec], dict[str, str]]:
    """The machines and the clusters (name -> site) the simulator should serve."""
    resolved: dict[str, tuple[str, str] | None] = {}
    missing: list[str] = []
    machines: list[SimMachineSpec] = []
    clusters: dict[str, str] = {}
    for cluster in sorted(inventory.clusters.values(), key=lambda c: c.name):
        clusters[cluster.name] = cluster.site
        for machine in cluster.machines:
            if machine.bmc is not None:
                ref = machine.bmc.credentials_ref
                if ref not in resolved:
                    resolved[ref] = _credentials(ref, store)
                    if resolved[ref] is None and default_credentials is None:
                        missing.append(ref)
                machines.append(
                    SimMachineSpec(
                        name=machine.name,
                        kind="bmc",
                        cluster=cluster.name,
                        site=cluster.site,
                        role=str(machine.role),
                        system_id=system_id_of(machine.bmc.address),
                        credentials=resolved[ref] or default_credentials,
                        mac=machine.boot_mac_address,
                    )
                )
            elif machine.vm is not None and machine.vm.host.startswith("sim+http"):
                machines.append(
                    SimMachineSpec(
                        name=machine.name,
                        kind="vm",
                        cluster=cluster.name,
                        site=cluster.site,
                        role=str(machine.role),
                        mac=machine.boot_mac_address,
                    )
                )
    if missing:
        raise CredentialsMissing(sorted(missing))
    return machines, clusters


def _credentials(ref: str, store: SecretStore | None) -> tuple[str, str] | None:
    try:
        value = resolve(ref, store)
    except SecretNotFound:
        return None
    try:
        return parse_credentials(value)
    except ValueError:
        return None
