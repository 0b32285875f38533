"""Bare metal through Redfish: virtual media, a boot override and power, over httpx.

The driver starts at the service root and follows ``@odata.id`` links: Systems -> the
machine's system; its VirtualMedia (newer BMCs hang it off the System) or, failing
that, its manager's (``Links.ManagedBy``, then the Managers collection). Where BMCs part
from the standard, ``redfish_quirks`` says so.

ensure(), in order, each step only when needed -- so that werft stopped (crashed, killed,
a request failed) after any step, the next ensure picks up from where the machine stands:
  1. observe power, media and boot override;
  2. a powered-on machine with a werft seed of its own (or released after it joined) is
     left alone (reported), unless it holds the desired media with a Cd/Once override
     still pending: werft stopped after setting it up and before restarting it, so it is
     restarted now -- unless werft reset it within the settle time (it is in POST);
  3. eject stale media, insert the installer image and the seed (write-protected);
  4. boot override Cd (Once; Continuous where the BMC ignores Once);
  5. power on, or force a restart when it was running and the media just changed.

The VirtualMedia collection is asked for with its members inline (``$expand=.($levels=1)``,
DSP0266's query parameters): one read instead of one per device, on the slowest endpoints
of a fleet. A BMC that answers it with links only (sushy-tools ignores it) or refuses it
(400, 501: the standard answer to an unsupported ``$`` parameter) is asked plainly from
then on, by that provider.

Requests: reads and the boot-override PATCH are retried at the request (``Calls``);
InsertMedia, EjectMedia and Reset are never sent blindly twice: after a failure werft
reads the device or the system and sends again only when it did not take effect. Every
reset is recorded first (``werft.providers.records``), and none follows within the settle
time of the last one werft sent, whatever run or worker sent it.

release(), once the node has joined its cluster: record that it joined (the seed it was
installed from), clear a Cd override (a Continuous one would reinstall the machine at
every reboot), eject werft's media (the seed carries the cluster's keys).

power_on(), for an installed machine that lost power: clear a Cd override (so it boots
its disk), then power on; no media change. ensure() on such a machine would set the
override and re-image it.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import httpx

from werft.errors import PermanentError, SecretNotFound, TransientError
from werft.inventory.model import BMC, Machine
from werft.providers import redfish_quirks as quirks
from werft.providers._http import Calls, HttpOptions, act_observed, new_client, tls_verify
from werft.providers._redfish_resources import (
    Collection,
    Manager,
    R,
    ServiceRoot,
    System,
    VirtualMedia,
    parse,
)
from werft.providers.base import (
    MachineState,
    MutationLedger,
    ProviderKind,
    assess,
    poll_until_powered_on,
    seed_of_machine,
)
from werft.providers.errors import CREDENTIALS_MISSING, SYSTEM_NOT_FOUND, Target
from werft.providers.records import MachineRecords
from werft.secrets import SecretStore, basic_auth

log = logging.getLogger(__name__)

_SCHEMES = {
    "redfish": "https",
    "redfish+http": "http",
    "redfish+https": "https",
    # Metal3 spells the virtual-media boot method into the scheme; same protocol.
    "redfish-virtualmedia": "https",
    "redfish-virtualmedia+http": "http",
    "redfish-virtualmedia+https": "https",
}
_ROOT = "/redfish/v1"
EXPAND_MEMBERS = "$expand=.($levels=1)"
EXPAND_REFUSED = frozenset({400, 501})
# Keys only a whole VirtualMedia has: a member carrying one was inlined, not linked.
_DEVICE_KEYS = frozenset({"MediaTypes", "Image", "Inserted"})


@dataclass(frozen=True)
class BmcAddress:
    """A Metal3-style BMC address, taken apart."""

    scheme: str  # http | https
    netloc: str  # host[:port], never credentials
    root: str  # service root path: "<prefix>/redfish/v1"
    system_id: str

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @property
    def prefix(self) -> str:
        return self.root[: -len(_ROOT)]


def parse_bmc_address(address: str) -> BmcAddress:
    """``redfish+http://host:port/prefix/redfish/v1/Systems/<id>`` -> its parts.

    ``redfish://`` means https. Credentials in the address are refused (they belong in
    the secret named by credentialsRef) and never echoed back.
    """
    fix = "expected redfish[+http|+https]://host[:port][/prefix]/redfish/v1/Systems/<id>"
    parts = urlsplit(address)
    if parts.username is not None or parts.password is not None:
        raise PermanentError(
            "a BMC address must not contain credentials; put them in the secret named by "
            "credentialsRef"
        )
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise PermanentError(f"unsupported BMC address {address!r}: {fix}")
    head, sep, tail = parts.path.partition(_ROOT + "/")
    segments = tail.strip("/").split("/")
    if not sep or len(segments) != 2 or segments[0] != "Systems" or not segments[1]:
        raise PermanentError(f"BMC address {address!r} does not name a system: {fix}")
    return BmcAddress(scheme, parts.netloc, head + _ROOT, segments[1])


@dataclass(frozen=True)
class _Location:
    """Where a machine's resources are, found once by following links and then reused."""

    system: str
    collection: str  # the VirtualMedia collection
    media: tuple[str, ...]


class _Session:
    """One machine, one operation: reads resources by following links."""

    def __init__(self, calls: Calls, address: BmcAddress) -> None:
        self.calls = calls
        self.address = address

    def path(self, odata_id: str) -> str:
        return quirks.rebase(odata_id, self.address.prefix)

    async def read(self, model: type[R], odata_id: str, what: str) -> R:
        path = self.path(odata_id)
        body, _ = await self.calls.get_json(path, f"read {what}")
        return parse(model, body, path, f"{self.calls.target}: read {what}")

    async def discover(
        self, expand: bool
    ) -> tuple[_Location, tuple[System, str | None], list[VirtualMedia] | None]:
        """The machine's links, the system with its ETag as read on the way (so the first
        look needs no second read of it), and the devices when the collection came with
        them inline.

        The address names the system, so it is asked for first (a same-origin redirect,
        such as sushy-tools' from a name to a UUID, is followed); only a BMC that does not
        know it by that path is walked from the service root, which also says what the
        BMC does list."""
        root: ServiceRoot | None = None
        found = await self._system_at_address()
        if found is None:
            root = await self._root()
            if root.systems is None:
                raise PermanentError(f"{self.calls.target}: the service root links no Systems")
            found = await self._find_system(root.systems.odata_id)
        system, etag = found
        collection = self.path(await self._media_collection(root, system))
        members, devices = await self._media_members(collection, expand)
        location = _Location(
            system=self.path(system.odata_id),
            collection=collection,
            media=tuple(self.path(m.odata_id) for m in members.members),
        )
        return location, (system, etag), devices

    async def _root(self) -> ServiceRoot:
        return await self.read(ServiceRoot, self.address.root, "the service root")

    def _system(
        self, body: dict[str, Any], response: httpx.Response, path: str, action: str
    ) -> tuple[System, str | None]:
        """A System as read, with its ETag (kept: some BMCs refuse a PATCH without
        If-Match)."""
        where = f"{self.calls.target}: {action}"
        return parse(System, body, path, where), response.headers.get("ETag")

    async def _system_at_address(self) -> tuple[System, str | None] | None:
        wanted = self.address.system_id
        path = f"{self.address.root}/Systems/{wanted}"
        body, response = await self.calls.get_json_or_none(path, f"read system {wanted}")
        return None if body is None else self._system(body, response, path, f"read system {wanted}")

    async def _find_system(self, systems_id: str) -> tuple[System, str | None]:
        """The system, found in the Systems collection, and its ETag. For a BMC that did
        not answer the address's own path (``_system_at_address`` was asked first)."""
        wanted = self.address.system_id
        systems = await self.read(Collection, systems_id, "the Systems collection")
        for member in systems.members:
            if member.odata_id.rstrip("/").rsplit("/", 1)[-1] == wanted:
                path = self.path(member.odata_id)
                body, response = await self.calls.get_json(path, f"read system {wanted}")
                return self._system(body, response, path, f"read system {wanted}")
        listed = ", ".join(m.odata_id.rsplit("/", 1)[-1] for m in systems.members)
        raise PermanentError(
            f"{self.calls.target}: unknown system {wanted!r} "
            f"(the BMC lists: {listed or 'none'})",
            reason=SYSTEM_NOT_FOUND,
        )

    async def _media_collection(self, root: ServiceRoot | None, system: System) -> str:
        if system.virtual_media is not None:
            return system.virtual_media.odata_id
        managers = [link.odata_id for link in system.links.managed_by]
        if not managers and root is None:
            root = await self._root()
        if not managers and root.managers is not None:
            collection = await self.read(Collection, root.managers.odata_id, "the Managers")
            managers = [link.odata_id for link in collection.members]
        system_path = self.path(system.odata_id)
        fallback: str | None = None
        for odata_id in managers:
            manager = await self.read(Manager, odata_id, "the manager")
            if manager.virtual_media is None:
                continue
            served = {self.path(link.odata_id) for link in manager.links.manager_for_servers}
            if system_path in served or not served:
                return manager.virtual_media.odata_id
            fallback = fallback or manager.virtual_media.odata_id
        if fallback is not None:
            return fallback
        raise PermanentError(
            f"{self.calls.target}: the BMC offers no VirtualMedia for system "
            f"{self.address.system_id} (neither on the System nor on its Managers)"
        )

    async def system(self, location: _Location) -> tuple[System, str | None] | None:
        """The system and its ETag; None when it is not (any more) where it was."""
        body, response = await self.calls.get_json_or_none(location.system, "read the system")
        if body is None:
            return None
        return self._system(body, response, location.system, "read the system")

    async def media(self, location: _Location, expand: bool) -> list[VirtualMedia]:
        if expand:
            _, devices = await self._media_members(location.collection, expand)
            if devices is not None:
                return devices
        return [await self.read(VirtualMedia, path, "virtual media") for path in location.media]

    async def _media_members(
        self, collection: str, expand: bool
    ) -> tuple[Collection, list[VirtualMedia] | None]:
        """The collection, and with ``expand`` its devices when the BMC inlined them."""
        what = "read the VirtualMedia collection"
        where = f"{self.calls.target}: {what}"
        if expand:
            body, _ = await self.calls.get_json_or_none(
                f"{collection}?{EXPAND_MEMBERS}", what, missing_ok=False, refused=EXPAND_REFUSED
            )
            if body is not None:
                return parse(Collection, body, collection, where), self._inlined(body, where)
        body, _ = await self.calls.get_json(collection, what)
        return parse(Collection, body, collection, where), None

    def _inlined(self, body: dict[str, Any], where: str) -> list[VirtualMedia] | None:
        """The members as devices, if every one came whole (not just its ``@odata.id``)."""
        raw = body.get("Members")
        if not isinstance(raw, list) or not all(
            isinstance(m, dict) and _DEVICE_KEYS & m.keys() for m in raw
        ):
            return None
        return [parse(VirtualMedia, m, self.path(m.get("@odata.id", "")), where) for m in raw]


@dataclass(frozen=True)
class _View:
    """What one read of a machine found."""

    session: _Session
    location: _Location
    system: System
    etag: str | None
    devices: list[VirtualMedia]

    joined_seed: str | None = None

    def state(self, machine: Machine) -> MachineState:
        details = {
            "power_state": self.system.power_state or "unknown",
            "system": self.location.system,
        }
        if self.system.boot_progress is not None and self.system.boot_progress.last_state:
            details["boot_progress"] = self.system.boot_progress.last_state
        return MachineState(
            name=machine.name,
            provider="redfish",
            exists=True,
            powered_on=self.system.powered_on,
            media=[d.current for d in self.devices if d.current],
            boot_override=self.system.boot.override(),
            joined_seed=self.joined_seed,
            details=details,
        )


class _RecentViews:
    """The view ``observe`` just took of a machine, handed once to the ``ensure`` that
    follows it (the infrastructure stage observes every machine, then ensures those that
    need it): three reads fewer per machine. Only a view at most ``FRESH_S`` old is
    handed out, and only to ``ensure``, which decides from the same fields a fresh read
    would give it and fails safe on a machine that moved meanwhile (If-Match on the
    ETag; resets and media inserts are observed before they are repeated). ``release``
    always reads afresh: the boot it follows changes the machine by itself (a Cd/Once
    override is consumed)."""

    FRESH_S = 5.0

    def __init__(self) -> None:
        self._views: OrderedDict[str, tuple[float, _View]] = OrderedDict()

    def keep(self, machine: str, view: _View) -> None:
        now = time.monotonic()
        self._views.pop(machine, None)
        self._views[machine] = (now, view)
        while self._views and next(iter(self._views.values()))[0] < now - self.FRESH_S:
            self._views.popitem(last=False)  # oldest first: never more than FRESH_S worth

    def take(self, machine: str) -> _View | None:
        taken = self._views.pop(machine, None)
        if taken is None or taken[0] < time.monotonic() - self.FRESH_S:
            return None
        return taken[1]


# httpcore looks at every connection of a pool on every request. One pool for all the
# BMCs behind a gateway origin (the simulator serves every BMC under one) made that cost
# more CPU than the requests themselves, so a provider splits its connections by BMC into
# this many pools, made as needed, and the origin's connection limit with them.
CONNECTION_POOLS = 8


class RedfishProvider:
    """Redfish BMCs behind one origin (scheme://host:port) with one TLS setting.

    Credentials are per machine: resolved from its credentialsRef at each operation and
    sent per request, so machines with different credentials share the connection pool.
    A bare-metal machine always exists: a system the BMC does not have is a
    PermanentError (a wrong address in the inventory), never ``exists=False``.
    """

    kind: ProviderKind = "redfish"

    def __init__(
        self,
        origin: str,
        *,
        secrets: SecretStore,
        verify_tls: bool = True,
        ca_bundle: str | None = None,
        options: HttpOptions | None = None,
        records: MachineRecords | None = None,
    ) -> None:
        self.origin = origin
        self._secrets = secrets
        self._options = options or HttpOptions()
        self._records = records or MachineRecords(secrets, settle=self._options.reset_settle)
        self._verify = tls_verify(
            disable=not verify_tls, ca_bundle=ca_bundle, endpoint=f"BMC {origin}"
        )
        per_pool = max(1, self._options.max_connections // CONNECTION_POOLS)
        self._pool_options = replace(
            self._options, max_connections=per_pool, max_keepalive_connections=per_pool
        )
        self._clients: dict[int, httpx.AsyncClient] = {}
        self._locations: dict[str, _Location] = {}
        # Whether this BMC inlines a collection's members when asked: assumed until it
        # answers otherwise, then asked plainly for the provider's life.
        self._expands = True
        self._views = _RecentViews()
        self._ledger = MutationLedger()

    def __repr__(self) -> str:
        return f"RedfishProvider({self.origin!r})"

    # --- Provider -----------------------------------------------------------------------

    async def observe(
        self, machine: Machine, *, image_url: str | None = None, seed_url: str | None = None
    ) -> MachineState:
        view = await self._look(machine)
        self._views.keep(machine.name, view)
        state = view.state(machine)
        if image_url is not None and seed_url is not None:
            state, _ = assess(state, image_url, seed_url)
        return state

    async def observe_power(self, machine: Machine) -> MachineState:
        return (await self._look(machine, with_media=False)).state(machine)

    async def ensure(self, machine: Machine, image_url: str, seed_url: str) -> int:
        view = self._views.take(machine.name) or await self._look(machine)
        session, system = view.session, view.system
        chosen = quirks.choose_devices(view.devices)
        if isinstance(chosen, str):
            raise PermanentError(f"{session.calls.target}: {chosen}")
        installer, seed = chosen

        state = view.state(machine)
        _, hands_off = assess(state, image_url, seed_url)
        # Set up for the installer but never restarted into it (werft stopped in between).
        # Still in POST (where the BMC reports BootProgress), the boot is on its way.
        interrupted = (
            state.powered_on
            and state.boot_pending
            and {image_url, seed_url} <= set(state.media)
            and not system.in_post
        )
        if hands_off and not interrupted:
            return 0
        if system.power_state == "PoweringOff":
            raise TransientError(f"{session.calls.target}: the machine is powering off")

        # From here on the machine gets (re)installed: whatever it joined before is gone.
        self._records.forget_joined(machine.name)
        media_changed = await self._put_media(
            session, view.devices, {installer.odata_id: image_url, seed.odata_id: seed_url}
        )
        if media_changed or system.boot.override() not in ("Cd/Once", "Cd/Continuous"):
            await self._boot_from_cd(session, view.location, system, view.etag)
        if not system.powered_on:
            await self._reset(session, system, view.location, ("On", "ForceOn"))
        elif media_changed or interrupted:
            # It was running something else: restart it into the installer.
            restart = ("ForceRestart", "PowerCycle", "GracefulRestart")
            await self._reset(session, system, view.location, restart)
        return session.calls.mutations

    async def release(self, machine: Machine) -> int:
        view = await self._look(machine)  # never a kept view: booting consumed a Cd/Once
        session = view.session
        seed = seed_of_machine([d.current for d in view.devices if d.current], machine.name)
        if seed is not None:
            # First, so that a release cut short still leaves the evidence behind.
            self._records.record_joined(machine.name, seed)
        if view.system.boot.to_cd:
            await self._clear_cd_override(session, view.location, view.etag)
        for device in view.devices:
            if device.attached and device.accepts("CD", "DVD", *quirks.SEED_FALLBACK_MEDIA_TYPES):
                await self._media_action(session, device, "EjectMedia", {})
        return session.calls.mutations

    async def power_on(self, machine: Machine) -> int:
        view = await self._look(machine, with_media=False)
        session, system = view.session, view.system
        if system.powered_on:
            return 0
        if system.power_state == "PoweringOff":
            raise TransientError(f"{session.calls.target}: the machine is powering off")
        if system.boot.to_cd:
            # Left by an install on a BMC that keeps overrides (or never released): it
            # would boot the installer again.
            await self._clear_cd_override(session, view.location, view.etag)
        await self._reset(session, system, view.location, ("On", "ForceOn"))
        return session.calls.mutations

    async def power_off(self, machine: Machine) -> int:
        view = await self._look(machine, with_media=False)
        if view.system.power_state == "Off":
            return 0
        await self._reset(
            view.session, view.system, view.location, ("ForceOff", "GracefulShutdown")
        )
        return view.session.calls.mutations

    async def wait_powered_on(
        self, machine: Machine, *, timeout: float, poll_interval: float = 1.0
    ) -> MachineState:
        return await poll_until_powered_on(
            self, machine, timeout=timeout, poll_interval=poll_interval
        )

    def mutations_sent(self, machine: Machine) -> int:
        return self._ledger.get(machine.name)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def client_for(self, address: BmcAddress) -> httpx.AsyncClient:
        """The connection pool of the BMC at ``address`` (by its service root)."""
        shard = zlib.crc32(address.root.encode()) % CONNECTION_POOLS
        client = self._clients.get(shard)
        if client is None:
            client = new_client(self.origin, self._pool_options, verify=self._verify)
            self._clients[shard] = client
        return client

    # --- internals ----------------------------------------------------------------------

    async def _look(self, machine: Machine, *, with_media: bool = True) -> _View:
        """Read the machine's system (and media), discovering links on first use."""
        bmc = _bmc_of(machine)
        address = parse_bmc_address(bmc.address)
        if address.origin != self.origin:
            raise ValueError(f"{self!r} asked about {machine.name} at {address.origin}")
        target = Target(
            machine.name, address.netloc, "BMC", bmc.credentials_ref, ca_bundle=bmc.ca_bundle
        )
        try:
            auth = basic_auth(bmc.credentials_ref, self._secrets)
        except SecretNotFound as exc:
            raise SecretNotFound(f"{target}: {exc}", reason=CREDENTIALS_MISSING) from None
        calls = Calls(
            self.client_for(address),
            target,
            auth=auth,
            action_timeout=self._options.action_timeout,
            ledger=self._ledger,
            retry=self._options.retry,
        )
        session = _Session(calls, address)

        location = self._locations.get(bmc.address)
        found = await session.system(location) if location is not None else None
        devices: list[VirtualMedia] | None = None
        if location is None or found is None:
            # First use, or the BMC moved the system (firmware update, re-enumeration):
            # links do not change under a running BMC, so they are cached; state never is.
            location, found, devices = await session.discover(self._expands)
            self._expands = self._expands and devices is not None
            self._locations[bmc.address] = location
        system, etag = found
        if system.powered_on or self._reset_applied(machine.name, system):
            # A reset werft sent has taken effect: from now on, a machine found off again
            # was powered off since, and may be powered on at once.
            self._records.saw_power_on(machine.name)
        if not with_media:
            # A power poll or a reach probe: neither media nor what werft remembers of the
            # install matter, and a poll should not cost a store read it does not use.
            return _View(session, location, system, etag, [])
        if devices is None:
            devices = await session.media(location, self._expands)
        joined = self._records.joined(machine.name)
        return _View(
            session, location, system, etag, devices, joined.seed if joined else None
        )

    def _reset_applied(self, machine: str, system: System) -> bool:
        """The BMC's LastResetTime changed since werft recorded its last reset."""
        if system.last_reset_at is None:  # not reported, or a BMC without a clock
            return False
        record = self._records.last_reset(machine)
        return record is not None and record.applied_by_bmc(system.last_reset_time)

    async def _put_media(
        self, session: _Session, devices: list[VirtualMedia], wanted: dict[str, str]
    ) -> bool:
        """Eject what is stale, insert what is missing; whether anything changed."""
        changed = False
        for device in devices:
            want = wanted.get(device.odata_id)
            relevant = want is not None or device.accepts("CD", "DVD")
            if not relevant:
                continue  # leave floppies and USB sticks werft does not use alone
            if device.attached and device.current != want:
                await self._media_action(session, device, "EjectMedia", {})
                changed = True
            if want is not None and device.current != want:
                body = {"Image": want, "Inserted": True, "WriteProtected": True}
                await self._media_action(session, device, "InsertMedia", body)
                changed = True
        return changed

    async def _media_action(
        self, session: _Session, device: VirtualMedia, action: str, body: dict[str, Any]
    ) -> None:
        """InsertMedia / EjectMedia, which are not idempotent (a second insert is refused
        with 409 by most BMCs): after a failure, read the device and send again only if it
        does not show the change."""
        target = device.action_target(f"VirtualMedia.{action}") or (
            f"{device.odata_id}/Actions/VirtualMedia.{action}"
        )
        inserting = action == "InsertMedia"
        verb = "insert media into" if inserting else "eject media from"

        async def send() -> object:
            return await session.calls.request(
                "POST",
                session.path(target),
                f"{verb} {device.id or device.odata_id}",
                json=body,
                fetches_media=inserting,  # the BMC downloads the image now
            )

        async def took_effect() -> bool:
            now = await session.read(VirtualMedia, device.odata_id, "virtual media")
            return now.current == body.get("Image") if inserting else not now.attached

        await act_observed(send, took_effect, policy=self._options.retry)

    async def _boot_from_cd(
        self, session: _Session, location: _Location, system: System, etag: str | None
    ) -> None:
        if system.boot.allowed_targets is not None and "Cd" not in system.boot.allowed_targets:
            raise PermanentError(
                f"{session.calls.target}: the BMC offers no Cd boot override "
                f"(allowed: {', '.join(system.boot.allowed_targets)})"
            )
        enabled = quirks.override_enabled_to_request(system.boot)
        for attempt in (enabled, "Continuous"):
            headers = {"If-Match": etag} if etag else None
            try:
                await session.calls.request(
                    "PATCH",
                    location.system,
                    f"set the boot override to Cd/{attempt}",
                    json={
                        "Boot": {
                            "BootSourceOverrideTarget": "Cd",
                            "BootSourceOverrideEnabled": attempt,
                        }
                    },
                    headers=headers,
                )
            except TransientError:
                # Retried at the request already; an answer lost on the last try (or a
                # 412 after an applied try changed the ETag) may hide a success: look.
                again = await session.system(location)
                if again is None or quirks.override_took(again[0].boot, "Cd") is None:
                    raise
            found = await session.system(location)
            if found is None:
                raise PermanentError(
                    f"{session.calls.target}: the system vanished", reason=SYSTEM_NOT_FOUND
                )
            after, etag = found
            took = quirks.override_took(after.boot, "Cd")
            if took is not None:
                if took != attempt:
                    log.info(
                        "%s: asked for Cd/%s, BMC holds Cd/%s", session.calls.target, attempt, took
                    )
                return
            if attempt == "Continuous":
                break
            log.info(
                "%s: BMC ignored a Once boot override; trying Continuous", session.calls.target
            )
        raise PermanentError(
            f"{session.calls.target}: the BMC did not take a boot override to Cd "
            f"(it reports {after.boot.override() or 'none'})"
        )

    async def _clear_cd_override(
        self, session: _Session, location: _Location, etag: str | None
    ) -> None:
        """Disable the override; where the BMC will not, point it at the disk instead."""
        for boot in ({"BootSourceOverrideEnabled": "Disabled"}, quirks.DISK_OVERRIDE):
            fallback = boot is quirks.DISK_OVERRIDE
            try:
                response = await session.calls.request(
                    "PATCH",
                    location.system,
                    "clear the Cd boot override" + (" (override to Hdd)" if fallback else ""),
                    json={"Boot": boot},
                    headers={"If-Match": etag} if etag else None,
                    allow=frozenset() if fallback else frozenset({400}),
                )
            except TransientError:
                again = await session.system(location)  # as for _boot_from_cd
                if again is None or again[0].boot.to_cd:
                    raise
                return
            found = await session.system(location)
            if found is None:
                raise PermanentError(
                    f"{session.calls.target}: the system vanished", reason=SYSTEM_NOT_FOUND
                )
            after, etag = found
            if response.status_code < 400 and not after.boot.to_cd:
                return
            if not fallback:
                log.info(
                    "%s: the BMC did not disable the Cd boot override; overriding to Hdd",
                    session.calls.target,
                )
        raise PermanentError(
            f"{session.calls.target}: the BMC keeps a boot override to Cd "
            f"(it reports {after.boot.override()}); the machine would reinstall on reboot"
        )

    async def _reset(
        self, session: _Session, system: System, location: _Location, preferred: tuple[str, ...]
    ) -> None:
        """Send ComputerSystem.Reset -- at most once per settle time per machine.

        Recorded before it is sent (an answer that never came may hide an applied reset).
        An error answer means the BMC did not apply it: the record is undone, the system
        read again, and the reset sent again only if the machine still needs it. A lost
        answer (timeout, dropped connection) leaves the record: the machine may be on its
        way, and the next reset waits for the settle time.
        """
        machine = session.calls.target.machine
        powering = system.power_state == "PoweringOn"
        if not self._records.may_reset(machine, powered_on=system.powered_on, powering=powering):
            log.info(
                "%s: werft reset it less than %gs ago (power %s); not resetting it again",
                session.calls.target,
                self._records.settle,
                system.power_state,
            )
            return
        allowed = system.allowable("ComputerSystem.Reset", "ResetType")
        reset_type = next((t for t in preferred if allowed is None or t in allowed), None)
        if reset_type is None:
            raise PermanentError(
                f"{session.calls.target}: the BMC offers none of the reset types "
                f"{', '.join(preferred)} (allowed: {', '.join(allowed or [])})"
            )
        target = system.action_target("ComputerSystem.Reset") or (
            f"{location.system}/Actions/ComputerSystem.Reset"
        )
        powering_on = reset_type in ("On", "ForceOn")
        answered = True

        async def send() -> object:
            nonlocal answered
            previous = self._records.record_reset(
                machine, reset_type, bmc_before=system.last_reset_time
            )
            try:
                return await session.calls.request(
                    "POST",
                    session.path(target),
                    f"reset ({reset_type})",
                    json={"ResetType": reset_type},
                )
            except TransientError as exc:
                answered = _answered(exc)
                if answered:  # refused: not applied, so it keeps no later reset away
                    self._records.undo_reset(machine, previous)
                raise

        async def took_effect() -> bool:
            if not answered:
                return True  # unknown: never sent again; the record makes the next wait
            found = await session.system(location)
            return found is not None and powering_on and found[0].powered_on

        await act_observed(send, took_effect, policy=self._options.retry)


def _answered(exc: TransientError) -> bool:
    """The endpoint answered with an HTTP error status (so it did not act on it)."""
    return bool(exc.cause) and str(exc.cause).isdigit()


def _bmc_of(machine: Machine) -> BMC:
    if machine.bmc is None:
        raise PermanentError(f"machine {machine.name} has no BMC; it is not bare metal")
    return machine.bmc
