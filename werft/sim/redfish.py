"""A Redfish BMC per machine, at ``/bmc/<machine>/redfish/v1`` (DMTF Redfish, the subset a
provisioning tool uses; shapes follow the DMTF mockups and sushy-tools).

Resource tree (every ``@odata.id`` is absolute and includes the ``/bmc/<machine>`` prefix;
clients find everything by following links from the service root):

    /redfish/v1/                                   ServiceRoot (no auth, as the spec asks)
      Systems -> Systems/<id>                      ComputerSystem: PowerState, Boot, Reset
      Managers -> Managers/1                       Manager (ManagerType BMC)
        VirtualMedia -> VirtualMedia/CD1, CD2      two virtual CD drives (MediaTypes CD, DVD)

VirtualMedia layout: the collection hangs under the Manager (as on HPE iLO, Supermicro,
Lenovo XCC and Dell iDRAC before 6.x); the ComputerSystem also links to the same collection
through its ``VirtualMedia`` property (as newer iDRACs do), so a driver that looks in
either place finds it. There are two CD-capable drives, like Dell iDRAC 9 (slots 1 and 2)
or Lenovo XCC: put the installer ISO in CD1 and the NoCloud seed ISO in CD2 (the machine
tells them apart by content, so the order does not matter to the simulator).

Behaviour worth knowing (real BMCs do the same; sushy-tools is laxer):
- InsertMedia downloads the image; failing to fetch it fails the action (400).
- InsertMedia into a drive that holds media is refused (409); eject first.
- A ``Once`` boot override is consumed by the next boot (back to Disabled / None).
- Empty drives report ``"Image": null`` (sushy-tools reports ``""``).
- ``$expand=.`` / ``.($levels=1)`` inlines the VirtualMedia collection's members, as the
  service root's ``ProtocolFeaturesSupported.ExpandQuery`` says (``expand_query``; False
  makes a BMC without it). Any ``$`` query parameter it does not support is 501, the
  standard's answer (DSP0266), where sushy-tools ignores them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import posixpath
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import Response

from werft.sim.http import BadBody, json_object, json_response
from werft.sim.lifecycle import Fleet
from werft.sim.machines import BOOT_ENABLED, BOOT_TARGETS, SimMachine
from werft.sim.media import MediaFetchError, classify, fetch

RESET_TYPES = ("On", "ForceOff", "GracefulShutdown", "ForceRestart")
# The $expand values served (one level: a collection with its members inline).
_EXPANDS = frozenset({".", ".($levels=1)"})
_EXPAND_FEATURES = {
    "ExpandQuery": {"ExpandAll": False, "Levels": True, "MaxLevels": 1, "Links": False,
                    "NoLinks": True},
}
BOOT_MODES = ("UEFI", "Legacy")
MANAGER_ID = "1"  # the literal "1" in _route patterns (a bare name would capture)
_UUID_NS = uuid.UUID("6f1c2f4e-6a57-4bd8-9d4a-7e3b5f0c2a10")
# ComputerSystem.BootProgress.LastState (v1_13) for each lifecycle phase: a client can
# tell a machine still in POST (a Once override not yet consumed) from one that booted.
_BOOT_PROGRESS = {
    "off": "None",
    "post": "PrimaryProcessorInitializationStarted",
    "installing": "OSBootStarted",
    "stuck": "OSBootStarted",
    "idle": "SystemHardwareInitializationComplete",
    "running": "OSRunning",
}
_INSERT_FIELDS = frozenset(
    {"Image", "Inserted", "WriteProtected", "TransferProtocolType", "TransferMethod",
     "UserName", "Password"}
)


def redfish_error(
    status: int,
    message: str,
    message_id: str = "Base.1.8.GeneralError",
    headers: dict[str, str] | None = None,
) -> Response:
    body = {
        "error": {
            "code": "Base.1.8.GeneralError",
            "message": message,
            "@Message.ExtendedInfo": [
                {
                    "@odata.type": "#Message.v1_1_1.Message",
                    "MessageId": message_id,
                    "Message": message,
                    "Severity": "Critical",
                    "MessageSeverity": "Critical",
                    "Resolution": "Correct the request and resubmit it.",
                }
            ],
        }
    }
    return json_response(body, status, headers)


def unauthorized(machine: str) -> Response:
    return redfish_error(
        401,
        "The request requires valid credentials.",
        "Base.1.8.NoValidSession",
        {"WWW-Authenticate": f'Basic realm="werft-sim BMC {machine}"'},
    )


def not_found(path: str) -> Response:
    return redfish_error(
        404, f"The resource at the URI {path} was not found.", "Base.1.8.ResourceMissingAtURI"
    )


def _method_not_allowed(allowed: str) -> Response:
    return redfish_error(
        405, "The HTTP method is not allowed for this resource.",
        "Base.1.8.OperationNotAllowed", {"Allow": allowed},
    )


def _no_content() -> Response:
    return Response(status_code=204)


class RedfishService:
    def __init__(
        self,
        fleet: Fleet,
        http_client: Callable[[], httpx.AsyncClient],
        *,
        allow_remote_media: bool = False,
        expand_query: bool = True,
    ) -> None:
        self.fleet = fleet
        self._client = http_client
        self.allow_remote_media = allow_remote_media
        self.expand_query = expand_query
        self._uuids: dict[str, str] = {}
        self._basic: dict[str, str] = {}  # the expected Authorization header, per machine

    async def handle(self, request: Request, name: str, rest: str) -> Response:
        """``rest`` is the path after ``/bmc/<name>``, e.g. ``/redfish/v1/Systems/1``."""
        machine = self.fleet.bmcs.get(name)
        if machine is None:
            return not_found(request.url.path)
        parts = [p for p in rest.split("/") if p]
        if parts[:1] != ["redfish"]:
            return not_found(request.url.path)
        prefix = f"/bmc/{name}/redfish"
        if len(parts) == 1:
            return json_response({"v1": prefix + "/v1/"})
        if parts[1] != "v1":
            return not_found(request.url.path)
        base = prefix + "/v1"
        parts = parts[2:]
        if not parts:
            if request.method not in ("GET", "HEAD"):
                return _method_not_allowed("GET")
            return json_response(self._service_root(machine, base))
        if not self._authorized(request, machine):
            return unauthorized(name)
        self.fleet.observe(machine)
        handler = self._route(machine, parts)
        if handler is None:
            return not_found(request.url.path)
        methods, fn = handler
        if request.method not in methods:
            return _method_not_allowed(", ".join(sorted(methods)))
        unsupported = [
            key
            for key, value in request.query_params.items()
            if key.startswith("$")
            and not (key == "$expand" and self.expand_query and value in _EXPANDS)
        ]
        if unsupported:
            return redfish_error(
                501, f"query parameter {unsupported[0]} is not supported",
                "Base.1.8.QueryNotSupported",
            )
        try:
            return await fn(request, machine, base)
        except BadBody as exc:
            return redfish_error(400, str(exc), "Base.1.8.MalformedJSON")

    # --- routing ------------------------------------------------------------------------

    def _route(
        self, machine: SimMachine, parts: list[str]
    ) -> tuple[frozenset[str], Callable[[Request, SimMachine, str], Awaitable[Response]]] | None:
        get = frozenset({"GET", "HEAD"})
        post = frozenset({"POST"})
        sid = machine.spec.system_id
        match parts:
            case ["Systems"]:
                return get, self._systems
            case ["Systems", s] if s == sid:
                return frozenset({"GET", "HEAD", "PATCH"}), self._system
            case ["Systems", s, "Actions", "ComputerSystem.Reset"] if s == sid:
                return post, self._reset
            case ["Managers"]:
                return get, self._managers
            case ["Managers", "1"]:
                return get, self._manager
            case ["Managers", "1", "VirtualMedia"]:
                return get, self._vmedia_collection
            case ["Managers", "1", "VirtualMedia", dev] if machine.media_slot(dev):
                return get, functools.partial(self._vmedia, device=dev)
            case ["Managers", "1", "VirtualMedia", dev, "Actions", action] if (
                machine.media_slot(dev)
                and action in ("VirtualMedia.InsertMedia", "VirtualMedia.EjectMedia")
            ):
                fn = self._insert if action.endswith("InsertMedia") else self._eject
                return post, functools.partial(fn, device=dev)
        return None

    def _uuid(self, kind: str, machine: SimMachine) -> str:
        key = f"{kind}/{machine.name}"
        value = self._uuids.get(key)
        if value is None:
            value = self._uuids[key] = str(uuid.uuid5(_UUID_NS, key))
        return value

    def _authorized(self, request: Request, machine: SimMachine) -> bool:
        expected = machine.spec.credentials
        if expected is None:
            return True
        header = request.headers.get("authorization", "")
        token = self._basic.get(machine.name)
        if token is None:
            token = self._basic[machine.name] = (
                "Basic " + base64.b64encode(f"{expected[0]}:{expected[1]}".encode()).decode()
            )
        if hmac.compare_digest(header.encode(), token.encode()):
            return True  # the common case, without decoding
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and (
            hmac.compare_digest(user.encode(), expected[0].encode())
            & hmac.compare_digest(password.encode(), expected[1].encode())
        )

    # --- resources ----------------------------------------------------------------------

    def _service_root(self, machine: SimMachine, base: str) -> dict[str, Any]:
        return {
            "@odata.type": "#ServiceRoot.v1_11_0.ServiceRoot",
            "@odata.id": base + "/",
            "Id": "RootService",
            "Name": f"werft-sim BMC {machine.name}",
            "RedfishVersion": "1.11.0",
            "UUID": self._uuid("service", machine),
            "Vendor": "werft-sim",
            "Product": "werft simulated BMC",
            "Systems": {"@odata.id": base + "/Systems"},
            "Managers": {"@odata.id": base + "/Managers"},
            "Links": {},
        } | ({"ProtocolFeaturesSupported": _EXPAND_FEATURES} if self.expand_query else {})

    async def _systems(self, request: Request, machine: SimMachine, base: str) -> Response:
        member = f"{base}/Systems/{machine.spec.system_id}"
        return json_response({
            "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
            "@odata.id": base + "/Systems",
            "Name": "Computer System Collection",
            "Members@odata.count": 1,
            "Members": [{"@odata.id": member}],
        })

    async def _system(self, request: Request, machine: SimMachine, base: str) -> Response:
        if request.method == "PATCH":
            if_match = request.headers.get("if-match")
            if if_match is not None and if_match not in ("*", _etag(machine)):
                return redfish_error(
                    412, "The ETag in If-Match does not match the resource's current ETag.",
                    "Base.1.8.PreconditionFailed",
                )
            problem = _patch_boot(machine, await json_object(request))
            if problem is not None:
                return problem
            return _no_content()
        sid = machine.spec.system_id
        path = f"{base}/Systems/{sid}"
        return json_response({
            "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
            "@odata.id": path,
            "Id": sid,
            "Name": machine.name,
            "SystemType": "Physical",
            "Manufacturer": "werft",
            "Model": "Simulated Server",
            "SerialNumber": machine.name.upper(),
            "UUID": self._uuid("system", machine),
            "PowerState": "On" if machine.powered else "Off",
            "Status": {"State": "Enabled", "Health": "OK"},
            "BootProgress": {"LastState": _BOOT_PROGRESS[machine.phase()]},
            # v1_13: real BMCs report when the system was last reset (a client can tell
            # that a reset it sent was applied, even when the answer got lost).
            "LastResetTime": _iso(machine.last_reset_wall),
            "Boot": {
                "BootSourceOverrideEnabled": machine.boot_enabled,
                "BootSourceOverrideEnabled@Redfish.AllowableValues": list(BOOT_ENABLED),
                "BootSourceOverrideTarget": machine.boot_target,
                "BootSourceOverrideTarget@Redfish.AllowableValues": list(BOOT_TARGETS),
                "BootSourceOverrideMode": "UEFI",
            },
            "VirtualMedia": {"@odata.id": f"{base}/Managers/{MANAGER_ID}/VirtualMedia"},
            "Links": {"ManagedBy": [{"@odata.id": f"{base}/Managers/{MANAGER_ID}"}]},
            "Actions": {
                "#ComputerSystem.Reset": {
                    "target": path + "/Actions/ComputerSystem.Reset",
                    "ResetType@Redfish.AllowableValues": list(RESET_TYPES),
                }
            },
        }, headers={"ETag": _etag(machine)})

    async def _reset(self, request: Request, machine: SimMachine, base: str) -> Response:
        body = await json_object(request)
        reset_type = body.get("ResetType")
        if reset_type is None:
            return redfish_error(
                400, "The action ComputerSystem.Reset requires the parameter ResetType.",
                "Base.1.8.ActionParameterMissing",
            )
        if reset_type not in RESET_TYPES:
            return redfish_error(
                400, f"The value {reset_type!r} for the parameter ResetType is not in the list "
                f"of acceptable values {list(RESET_TYPES)}.",
                "Base.1.8.ActionParameterValueNotInList",
            )
        now = self.fleet.clock.now()
        machine.last_reset_wall = time.time()
        if reset_type == "On":
            machine.power_on(now)
        elif reset_type in ("ForceOff", "GracefulShutdown"):
            machine.power_off(now)
        else:  # ForceRestart: a power cycle; from Off it simply powers on
            machine.restart(now)
        self.fleet.observe(machine)
        return _no_content()

    async def _managers(self, request: Request, machine: SimMachine, base: str) -> Response:
        return json_response({
            "@odata.type": "#ManagerCollection.ManagerCollection",
            "@odata.id": base + "/Managers",
            "Name": "Manager Collection",
            "Members@odata.count": 1,
            "Members": [{"@odata.id": f"{base}/Managers/{MANAGER_ID}"}],
        })

    async def _manager(self, request: Request, machine: SimMachine, base: str) -> Response:
        path = f"{base}/Managers/{MANAGER_ID}"
        return json_response({
            "@odata.type": "#Manager.v1_10_0.Manager",
            "@odata.id": path,
            "Id": MANAGER_ID,
            "Name": "Manager",
            "ManagerType": "BMC",
            "UUID": self._uuid("manager", machine),
            "FirmwareVersion": "werft-sim 1.0",
            "Status": {"State": "Enabled", "Health": "OK"},
            "VirtualMedia": {"@odata.id": path + "/VirtualMedia"},
            "Links": {
                "ManagerForServers": [
                    {"@odata.id": f"{base}/Systems/{machine.spec.system_id}"}
                ]
            },
        })

    async def _vmedia_collection(
        self, request: Request, machine: SimMachine, base: str
    ) -> Response:
        path = f"{base}/Managers/{MANAGER_ID}/VirtualMedia"
        inline = "$expand" in request.query_params  # checked against _EXPANDS in handle
        return json_response({
            "@odata.type": "#VirtualMediaCollection.VirtualMediaCollection",
            "@odata.id": path,
            "Name": "Virtual Media Services",
            "Members@odata.count": len(machine.media),
            "Members": [
                self._device(machine, base, slot.device)
                if inline
                else {"@odata.id": f"{path}/{slot.device}"}
                for slot in machine.media
            ],
        })

    async def _vmedia(
        self, request: Request, machine: SimMachine, base: str, *, device: str
    ) -> Response:
        return json_response(self._device(machine, base, device))

    def _device(self, machine: SimMachine, base: str, device: str) -> dict[str, Any]:
        slot = machine.media_slot(device)
        assert slot is not None
        path = f"{base}/Managers/{MANAGER_ID}/VirtualMedia/{device}"
        image = slot.image or None
        return {
            "@odata.type": "#VirtualMedia.v1_6_0.VirtualMedia",
            "@odata.id": path,
            "Id": device,
            "Name": f"Virtual CD {device[-1]}",
            "MediaTypes": ["CD", "DVD"],
            "Image": image,
            "ImageName": posixpath.basename(urlsplit(image).path) if image else None,
            "Inserted": slot.inserted,
            "WriteProtected": slot.write_protected,
            "ConnectedVia": "URI" if image else "NotConnected",
            "TransferProtocolType": urlsplit(image).scheme.upper() if image else None,
            "Actions": {
                "#VirtualMedia.InsertMedia": {"target": path + "/Actions/VirtualMedia.InsertMedia"},
                "#VirtualMedia.EjectMedia": {"target": path + "/Actions/VirtualMedia.EjectMedia"},
            },
        }

    async def _insert(
        self, request: Request, machine: SimMachine, base: str, *, device: str
    ) -> Response:
        slot = machine.media_slot(device)
        assert slot is not None
        body = await json_object(request)
        unknown = sorted(set(body) - _INSERT_FIELDS)
        if unknown:
            return redfish_error(
                400, f"The action VirtualMedia.InsertMedia does not take {', '.join(unknown)}.",
                "Base.1.8.ActionParameterUnknown",
            )
        image = body.get("Image")
        if not isinstance(image, str) or not image:
            return redfish_error(
                400, "The action VirtualMedia.InsertMedia requires the parameter Image.",
                "Base.1.8.ActionParameterMissing",
            )
        for flag in ("Inserted", "WriteProtected"):
            if flag in body and not isinstance(body[flag], bool):
                return redfish_error(
                    400, f"The parameter {flag} must be a boolean.",
                    "Base.1.8.ActionParameterValueTypeError",
                )
        if slot.image:
            return redfish_error(
                409, f"Virtual media {device} already holds {slot.image}; eject it first.",
                "Base.1.8.ResourceInUse",
            )
        try:
            data = await fetch(self._client(), image, allow_remote=self.allow_remote_media)
        except MediaFetchError as exc:
            return redfish_error(400, str(exc), "Base.1.8.ActionParameterValueError")
        if slot.image:  # somebody else inserted while we were downloading
            return redfish_error(
                409, f"Virtual media {device} already holds {slot.image}; eject it first.",
                "Base.1.8.ResourceInUse",
            )
        slot.image = image
        slot.inserted = bool(body.get("Inserted", True))
        slot.write_protected = bool(body.get("WriteProtected", True))
        slot.content = classify(data)
        clock = self.fleet.clock
        slot.ready_at = clock.now() + clock.scaled(clock.delays.media_fetch)
        return _no_content()

    async def _eject(
        self, request: Request, machine: SimMachine, base: str, *, device: str
    ) -> Response:
        slot = machine.media_slot(device)
        assert slot is not None
        await json_object(request, allow_empty=True)
        slot.eject()
        return _no_content()


def _iso(wall: float | None) -> str:
    """A Redfish DateTime; never reset: the epoch a BMC without a record reports."""
    if wall is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def _etag(machine: SimMachine) -> str:
    state = f"{machine.powered}/{machine.cycle}/{machine.boot_enabled}/{machine.boot_target}"
    return 'W/"' + format(zlib.crc32(state.encode()), "08x") + '"'


def _patch_boot(machine: SimMachine, body: dict[str, Any]) -> Response | None:
    unknown = sorted(set(body) - {"Boot"})
    if unknown:
        return redfish_error(
            400, f"The property {unknown[0]} is not a writable property of this resource.",
            "Base.1.8.PropertyNotWritable",
        )
    boot = body.get("Boot")
    if not isinstance(boot, dict) or not boot:
        return redfish_error(
            400, "The request body must set Boot properties.", "Base.1.8.PropertyMissing"
        )
    allowed = {
        "BootSourceOverrideEnabled": BOOT_ENABLED,
        "BootSourceOverrideTarget": BOOT_TARGETS,
        "BootSourceOverrideMode": BOOT_MODES,
    }
    for key, value in boot.items():
        if key not in allowed:
            return redfish_error(
                400, f"The property Boot/{key} is unknown or not writable.",
                "Base.1.8.PropertyUnknown",
            )
        if value not in allowed[key]:
            return redfish_error(
                400, f"The value {value!r} for the property {key} is not in the list of "
                f"acceptable values {list(allowed[key])}.",
                "Base.1.8.PropertyValueNotInList",
            )
    if "BootSourceOverrideEnabled" in boot:
        machine.boot_enabled = boot["BootSourceOverrideEnabled"]
    if "BootSourceOverrideTarget" in boot:
        machine.boot_target = boot["BootSourceOverrideTarget"]
    return None
