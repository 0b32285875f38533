"""Boot media: what a BMC or the hypervisor downloads for InsertMedia / a domain's CD-ROMs.

Real BMCs (and sushy-tools) fetch the image URL when media is inserted; so does the
simulator, with async httpx (the images usually come from this same process, which is fine
under uvicorn's event loop). The downloaded bytes are classified right away and only the
result is kept (a parsed seed is a few hundred bytes; 12,000 seed ISOs would not be).
"""

from __future__ import annotations

import hashlib
import ipaddress
from urllib.parse import urlsplit

import httpx

from werft.sim.machines import InstallerImage, Media
from werft.sim.seed import SeedError, is_iso9660, is_seed_image, parse_seed

INSTALLER_MAGIC = b"WERFT-SIM-INSTALLER\n"
MAX_IMAGE_BYTES = 64 * 1024 * 1024
INSTALLER_SIZE = 16 * 1024


class MediaFetchError(Exception):
    """The image could not be downloaded; the message is safe to show to the client."""


def synthetic_installer(name: str) -> bytes:
    """The deterministic stand-in for an OS installer ISO served at /images/<name>."""
    header = INSTALLER_MAGIC + f"image: {name}\n".encode()
    block = hashlib.sha256(name.encode()).digest()
    body = (block * (INSTALLER_SIZE // len(block) + 1))[: INSTALLER_SIZE - len(header)]
    return header + body


def classify(data: bytes) -> Media:
    """An installer (the synthetic image or any ISO that is no seed), or a seed, parsed."""
    if data.startswith(INSTALLER_MAGIC):
        return InstallerImage(len(data))
    if is_seed_image(data):
        return parse_seed(data)
    if is_iso9660(data):
        return InstallerImage(len(data))
    return SeedError("the medium is not an ISO 9660 image (no cidata volume found)")


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def fetch(client: httpx.AsyncClient, url: str, *, allow_remote: bool = False) -> bytes:
    """Download ``url`` as a BMC would; MediaFetchError says why it failed."""
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise MediaFetchError(f"could not fetch image {url!r}: unsupported scheme {scheme!r}")
    if not allow_remote and not is_loopback_url(url):
        raise MediaFetchError(
            f"could not fetch image {url!r}: the simulator only fetches from loopback addresses"
        )
    try:
        async with client.stream("GET", url) as response:
            if response.status_code >= 400:
                raise MediaFetchError(
                    f"could not fetch image {url!r}: HTTP {response.status_code}"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_IMAGE_BYTES:
                    raise MediaFetchError(
                        f"could not fetch image {url!r}: larger than {MAX_IMAGE_BYTES} bytes"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise MediaFetchError(
            f"could not fetch image {url!r}: {type(exc).__name__}: {exc}"
        ) from None
