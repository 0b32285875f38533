"""Warnings for credentials that would cross the network in clear text.

werft sends a BMC's credentials (its ``credentialsRef``) with every Redfish request and a
cluster's admin token with every Kubernetes API request. Over ``redfish+http://`` or
``http://`` anyone on the path can read them. That is a warning, not an error: labs and
simulators run that way on purpose; ``werft validate --strict`` makes it an error.

Loopback addresses are exempt: traffic to 127.0.0.0/8, ::1 or localhost never leaves the
machine, so there is no path to read it from (the sample fleet talks to the simulator on
127.0.0.1). Anyone able to capture loopback traffic can already read werft's secret store.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

import numpy as np

from werft.errors import Problem, Severity
from werft.inventory.edge_csv import EdgeTable
from werft.inventory.resolve import ClusterFacts, Place, place
from werft.inventory.yamldocs import RawDoc

FIX_BMC = (
    "use redfish:// (HTTPS; caBundle for a private CA); `werft validate --strict` "
    "treats this as an error"
)
FIX_API = "serve the API over https://; `werft validate --strict` treats this as an error"
_LOOPBACK_RE = r"(?:127(?:\.\d{1,3}){3}|localhost|\[::1\])(?::\d+)?"


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def in_clear(url: str, scheme: str) -> bool:
    """``url`` uses the plain-text ``scheme`` to a host that is not this machine."""
    parts = urlsplit(url)
    return parts.scheme == scheme and not is_loopback(parts.hostname)


def plaintext_warnings(
    facts: Sequence[ClusterFacts],
    cluster_docs: Sequence[RawDoc],
    edges: Sequence[EdgeTable],
    fleet_doc: RawDoc | None,
    endpoint_template: str | None,
) -> list[Problem]:
    """A warning per BMC and API endpoint that would receive credentials over plain HTTP.

    ``facts`` pair with ``cluster_docs`` (both in Cluster document order). Edge CSV rows get
    one warning per file (the count and the first row), not one per row.
    """
    warnings: list[Problem] = []
    for fact, doc in zip(facts, cluster_docs, strict=True):
        for machine, path in fact.machines:
            if machine.bmc is not None and in_clear(machine.bmc.address, "redfish+http"):
                at = place(doc, (*path, "bmc", "address"))
                warnings.append(_warning(at, _bmc_message(machine.bmc.address), FIX_BMC))
        if fact.endpoint_at is not None and fact.endpoint and in_clear(fact.endpoint, "http"):
            message = f"the admin token of cluster {fact.name!r} would be sent over plain HTTP"
            warnings.append(_warning(fact.endpoint_at, message, FIX_API))
    if fleet_doc is not None and endpoint_template:
        sample = endpoint_template.replace("{cluster}", "c").replace("{site}", "s")
        if in_clear(sample, "http"):
            at = place(fleet_doc, ("spec", "defaults", "apiEndpointTemplate"))
            message = (
                "every cluster without its own controlPlaneEndpoint would receive its admin "
                "token over plain HTTP"
            )
            warnings.append(_warning(at, message, FIX_API))
    for table in edges:
        warnings += _edge_warnings(table)
    return warnings


def _edge_warnings(table: EdgeTable) -> list[Problem]:
    address = table.frame["bmc_address"]
    plain = address.str.startswith("redfish+http://").to_numpy()
    if not plain.any():
        return []
    host = address.str.slice(len("redfish+http://")).str.split("/", n=1).str[0]
    rows = np.flatnonzero(plain & ~host.str.fullmatch(_LOOPBACK_RE).to_numpy())
    if rows.size == 0:
        return []
    line = int(table.lines(rows[:1])[0])
    first = address.iat[int(rows[0])]
    message = _bmc_message(first)
    if rows.size > 1:
        message += f" (and {rows.size - 1:,} more row(s) of this file)"
    return [_warning(Place(table.file, line, "bmc_address"), message, FIX_BMC)]


def _bmc_message(address: str) -> str:
    host = urlsplit(address).netloc
    return f"BMC credentials would be sent over plain HTTP (redfish+http://) to {host}"


def _warning(at: Place, message: str, fix: str) -> Problem:
    return Problem(at.file, at.line, at.field, message, fix, Severity.WARNING)
