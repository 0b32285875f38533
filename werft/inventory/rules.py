"""The value rules of the inventory, stated once for YAML and CSV alike.

Each rule is a regular expression (so the CSV path can apply it to a whole column at once
with ``Series.str.fullmatch``) plus a function that explains, for one bad value, what is
wrong and how to fix it. YAML fields and CSV cells therefore get the same messages.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from werft.inventory.model import MAC_PATTERN, NAME_PATTERN, SECRET_REF_PATTERN, VERSION_PATTERN

# The model's patterns carry ^...$ anchors for pydantic; fullmatch wants them bare.
NAME_RE = NAME_PATTERN.strip("^$")
MAC_RE = MAC_PATTERN.strip("^$")
VERSION_RE = VERSION_PATTERN.strip("^$")
SECRET_REF_RE = SECRET_REF_PATTERN.strip("^$")

# Metal3-style Redfish address: scheme, host[:port], optional prefix path, then
# /redfish/v1/Systems/<id> with the system id as the last segment.
BMC_SCHEMES = ("redfish", "redfish+http", "redfish+https")
BMC_ADDRESS_RE = (
    r"redfish(?:\+https?)?://"
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r"(?::\d{1,5})?"
    r"(?:/[^\s?#@]*)?/redfish/v1/Systems/[^/\s?#@]+"
)
# "scheme://user:password@host" -- a credential written into a URL.
URL_PASSWORD_RE = r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]+:[^/@\s]*@.*"

FIX_NAME = (
    "use a DNS-1123 label: lower-case letters, digits and '-', starting and ending "
    "with a letter or digit, at most 63 characters, e.g. fra1-core-a"
)
FIX_MAC = "six hex pairs separated by ':', e.g. 52:54:00:12:34:56"
FIX_VERSION = "a Kubernetes release like 1.31.4 (a leading 'v' is allowed)"
FIX_SECRET_REF = (
    "name a secret, e.g. bmc-fra1 (lower-case letters, digits, '-', '_', '.'), and store "
    "its value with `werft secret set bmc-fra1`"
)
FIX_LITERAL_SECRET = (
    "remove the secret from the inventory; store it with `werft secret set NAME` (or "
    "WERFT_SECRET_NAME, or a Prefect Secret block) and refer to it with credentialsRef: NAME"
)
FIX_BMC_ADDRESS = (
    "a Redfish system URL like redfish+https://10.1.2.3/redfish/v1/Systems/1 "
    "(redfish:// means HTTPS; redfish+http:// plain HTTP)"
)
FIX_LATITUDE = "degrees north, a number from -90 to 90, e.g. 50.1109"
FIX_LONGITUDE = "degrees east, a number from -180 to 180, e.g. 8.6821"
FIX_CIDR = "an IPv4 or IPv6 network like 10.244.0.0/16 (host bits zero)"


# A value quoted back in a message is cut to this many characters: a hostile megabyte is
# reported by its length, not printed.
ECHO_MAX = 80


def shown(value: object) -> str:
    """``repr(value)`` for a message, cut to ``ECHO_MAX`` characters with the full length."""
    text = repr(value)
    if len(text) <= ECHO_MAX:
        return text
    return f"{text[: ECHO_MAX - 1]}... ({len(str(value)):,} characters)"


def too_long(what: str, length: int, limit: int) -> tuple[str, str]:
    """(message, fix) for a value over its length limit."""
    return (
        f"{what} is {length:,} characters long; at most {limit:,} are allowed",
        f"shorten it to {limit:,} characters or fewer",
    )


def normalise_version(version: str) -> str:
    """``v1.31.4`` -> ``1.31.4``: the form every stage compares and renders."""
    return version[1:] if version.startswith("v") else version


def is_name(value: str) -> bool:
    return re.fullmatch(NAME_RE, value) is not None


def is_mac(value: str) -> bool:
    return re.fullmatch(MAC_RE, value) is not None


def url_has_password(value: str) -> bool:
    return re.fullmatch(URL_PASSWORD_RE, value) is not None


def ref_looks_like_credentials(ref: str) -> bool:
    """``admin:secret`` in a credentialsRef is the credential itself, not a reference."""
    return ":" in ref


def bmc_address_problem(address: str) -> tuple[str, str] | None:
    """(what is wrong, fix) for a BMC address, or None when it is fine."""
    if re.fullmatch(BMC_ADDRESS_RE, address):
        return None
    if url_has_password(address):
        return (
            "BMC address has credentials written into it (user:password@)",
            FIX_LITERAL_SECRET,
        )
    scheme, sep, _ = address.partition("://")
    if not sep:
        return f"{address!r} is not a URL", FIX_BMC_ADDRESS
    if scheme not in BMC_SCHEMES:
        return f"scheme {scheme + '://'!r} is not a Redfish scheme", FIX_BMC_ADDRESS
    if not re.search(r"/redfish/v1/Systems/[^/\s?#@]+$", address):
        return (
            f"{address!r} does not name a system (no /redfish/v1/Systems/<id> at the end)",
            FIX_BMC_ADDRESS,
        )
    return f"{address!r} is not a valid BMC address", FIX_BMC_ADDRESS


def http_url_problem(value: str, *, what: str = "URL") -> tuple[str, str] | None:
    """(what is wrong, fix) for an absolute http(s) URL, or None."""
    if url_has_password(value):
        return f"{what} has credentials written into it", FIX_LITERAL_SECRET
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return (
            f"{value!r} is not an absolute http(s) URL",
            "write the full URL, e.g. http://127.0.0.1:8686/artifacts",
        )
    try:
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:
        return f"{value!r} has an invalid port", "use a port between 1 and 65535"
    return None


def uri_problem(value: str) -> tuple[str, str] | None:
    """(what is wrong, fix) for a libvirt / simulator URI such as ``qemu+ssh://hv1/system``."""
    if url_has_password(value):
        return "hypervisor URI has credentials written into it", FIX_LITERAL_SECRET
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://\S*", value):
        return (
            f"{value!r} is not a hypervisor URI",
            "a libvirt URI like qemu+ssh://hv1.fra1/system or test:///default, or "
            "sim+http://127.0.0.1:8686 for the simulator",
        )
    return None


def parse_cidr(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        return None
