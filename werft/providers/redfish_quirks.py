"""Where real BMCs (and sushy-tools) part from the Redfish standard, in one named place.

The driver in ``redfish.py`` speaks the standard; each function here is one known
deviation, with who does it and what werft does about it.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from werft.providers._redfish_resources import Boot, VirtualMedia

log = logging.getLogger(__name__)

# Media types NoCloud can be read from when no second CD/DVD device exists: cloud-init
# finds its seed by the volume label (CIDATA) on any block device, so an ISO attached as
# a virtual USB stick works as well as a CD.
SEED_FALLBACK_MEDIA_TYPES = ("USBStick", "RemovableDisk")


def rebase(odata_id: str, prefix: str) -> str:
    """The request path for an ``@odata.id``.

    Standard: ``@odata.id`` is an absolute path on the BMC's origin. A BMC published
    behind a reverse proxy under a path prefix (``/bmc/m1/redfish/v1``) sometimes still
    returns unprefixed ids (``/redfish/v1/Systems/1``); werft puts the prefix back.
    A few BMCs return absolute URLs: only the path is kept (the origin is the BMC's).
    """
    path = urlsplit(odata_id).path if "://" in odata_id else odata_id
    if not path.startswith("/"):
        path = "/" + path
    if prefix and not path.startswith(prefix + "/"):
        path = prefix + path
    return path.rstrip("/") or "/"


def choose_devices(devices: list[VirtualMedia]) -> tuple[VirtualMedia, VirtualMedia] | str:
    """(installer device, seed device), or why none fit.

    Standard-ish: the first two devices whose MediaTypes include CD or DVD. Many BMCs
    (HPE iLO, sushy-tools by default) offer only one CD device next to a "Floppy"/USB
    device; then the seed goes on the first device that takes a USB stick or removable
    disk (see SEED_FALLBACK_MEDIA_TYPES). A Floppy-only device is never used: a seed
    ISO does not fit a floppy's geometry.
    """
    cds = [d for d in devices if d.accepts("CD", "DVD")]
    if not cds:
        kinds = ", ".join(f"{d.id}: {'/'.join(d.media_types) or '?'}" for d in devices)
        return f"no virtual media device takes a CD or DVD ({kinds or 'no devices'})"
    if len(cds) >= 2:
        return cds[0], cds[1]
    for device in devices:
        if device is not cds[0] and device.accepts(*SEED_FALLBACK_MEDIA_TYPES):
            log.debug("one CD device only: seed goes on %s (%s)", device.id, device.media_types)
            return cds[0], device
    return (
        f"only one CD/DVD virtual media device ({cds[0].id}) and no USB stick device for "
        "the NoCloud seed; werft needs two devices: installer image + seed"
    )


def override_enabled_to_request(boot: Boot) -> str:
    """Once, unless the BMC advertises that it cannot do Once (AllowableValues)."""
    if boot.allowed_enabled is not None and "Once" not in boot.allowed_enabled:
        return "Continuous"
    return "Once"


def override_took(boot: Boot, target: str) -> str | None:
    """How the BMC holds the override after werft asked for it: "Once", "Continuous",
    or None when it did not take.

    sushy-tools (and some Supermicro and older Dell firmware) accept
    ``BootSourceOverrideEnabled: Once`` with 204 and then report "Continuous": the
    override is there, it is just not one-time. werft accepts that (the machine boots the
    installer; the installed OS must put the disk first) and records it in the machine's
    details. A BMC that reports "Disabled" or another target did not take it.
    """
    if boot.target != target or boot.enabled not in ("Once", "Continuous"):
        return None
    return boot.enabled


# How werft clears a Cd override on a BMC that will not disable it.
# Standard: PATCH ``BootSourceOverrideEnabled: Disabled``. sushy-tools ignores
# BootSourceOverrideEnabled and answers a PATCH without a target 400 ("Missing the
# BootSourceOverrideTarget"); other BMCs that keep every override Continuous accept the
# PATCH and still report Cd. For them an override to the disk means "boot normally".
DISK_OVERRIDE = {"BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Continuous"}
