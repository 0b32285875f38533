"""The simulated hypervisor API, for VM machines whose ``vm.host`` is ``sim+http://...``.

    GET    /hypervisor/v1/domains/<machine>          200 domain | 404
    PUT    /hypervisor/v1/domains/<machine>          {"cpus","memoryMiB","diskGiB","mac",
                                                      "media": [os_image_url, seed_url]}
                                                     201 defined | 200 unchanged or updated |
                                                     409 running with different media
                                                     (media [] ejects them: allowed)
    POST   /hypervisor/v1/domains/<machine>/start    200 domain (running)
    POST   /hypervisor/v1/domains/<machine>/stop     200 domain (shutoff)
    DELETE /hypervisor/v1/domains/<machine>          204 (stops it and removes its disk)

A domain is ``{"name", "state": "running"|"shutoff", "cpus", "memoryMiB", "diskGiB",
"mac", "media": [url, ...]}``. Like libvirt with boot order (hd, cdrom), a domain boots its
CD-ROMs while its disk is empty, then its disk. The media are downloaded when they are
defined (PUT), so a missing seed fails the PUT with 400. Errors are ``{"error": message}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from werft.sim.http import BadBody, json_object, json_response
from werft.sim.lifecycle import Fleet
from werft.sim.machines import MediaSlot, SimMachine
from werft.sim.media import MediaFetchError, classify, fetch

_SIZES = {"cpus": (1, 256), "memoryMiB": (64, 16 * 1024 * 1024), "diskGiB": (1, 65536)}


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def domain_view(machine: SimMachine) -> dict[str, Any]:
    domain = machine.domain or {}
    return {
        "name": machine.name,
        "state": "running" if machine.powered else "shutoff",
        "cpus": domain.get("cpus"),
        "memoryMiB": domain.get("memoryMiB"),
        "diskGiB": domain.get("diskGiB"),
        "mac": domain.get("mac"),
        "media": [slot.image for slot in machine.media],
    }


class HypervisorService:
    def __init__(
        self,
        fleet: Fleet,
        http_client: Callable[[], httpx.AsyncClient],
        *,
        allow_remote_media: bool = False,
    ) -> None:
        self.fleet = fleet
        self._client = http_client
        self.allow_remote_media = allow_remote_media

    async def handle(self, request: Request, name: str, action: str | None) -> Response:
        machine = self.fleet.domains.get(name)
        if machine is not None:
            self.fleet.observe(machine)
        method = request.method
        try:
            if action is None:
                if method in ("GET", "HEAD"):
                    if machine is None or machine.domain is None:
                        return _error(404, f"domain {name!r} not found")
                    return json_response(domain_view(machine))
                if method == "PUT":
                    return await self._define(request, name, machine)
                if method == "DELETE":
                    if machine is None or machine.domain is None:
                        return _error(404, f"domain {name!r} not found")
                    self._undefine(machine)
                    return Response(status_code=204)
                return _error(405, f"method {method} not allowed on a domain")
            if action not in ("start", "stop"):
                return _error(404, f"unknown domain action {action!r}")
            if method != "POST":
                return _error(405, f"use POST for /{action}")
            if machine is None or machine.domain is None:
                return _error(404, f"domain {name!r} not found")
            now = self.fleet.clock.now()
            if action == "start":
                machine.power_on(now)
            else:
                machine.power_off(now)
            self.fleet.observe(machine)
            return json_response(domain_view(machine))
        except BadBody as exc:
            return _error(400, str(exc))

    async def _define(self, request: Request, name: str, machine: SimMachine | None) -> Response:
        body = await json_object(request)
        spec: dict[str, Any] = {}
        for key, (low, high) in _SIZES.items():
            value = body.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                return _error(400, f"{key} must be an integer between {low} and {high}")
            spec[key] = value
        mac = body.get("mac")
        if mac is not None and not isinstance(mac, str):
            return _error(400, "mac must be a string")
        spec["mac"] = mac
        media = body.get("media", [])
        if not isinstance(media, list) or not all(isinstance(u, str) and u for u in media):
            return _error(400, "media must be a list of image URLs")
        unknown = sorted(set(body) - {*_SIZES, "mac", "media"})
        if unknown:
            return _error(400, f"unknown field(s): {', '.join(unknown)}")

        created = machine is None or machine.domain is None
        current = [s.image for s in machine.media] if machine is not None else []
        if machine is not None and not created:
            # libvirt ejects a live CD-ROM, but inserting other media means a redefinition
            # the running domain would not see until it restarts: refused, as werft expects.
            if machine.powered and media != current and media:
                return _error(409, f"domain {name!r} is running with different media")
            if machine.domain == spec and media == current:
                return json_response(domain_view(machine), 200)
        slots = None
        if created or media != current:
            slots = []
            for i, url in enumerate(media):
                try:
                    data = await fetch(self._client(), url, allow_remote=self.allow_remote_media)
                except MediaFetchError as exc:
                    return _error(400, str(exc))
                slots.append(MediaSlot(f"cdrom{i}", url, True, True, classify(data)))
            clock = self.fleet.clock
            ready = clock.now() + clock.scaled(clock.delays.media_fetch)
            for slot in slots:
                slot.ready_at = ready
        if machine is None:
            machine = self.fleet.domains.get(name) or self.fleet.new_domain(name)
        machine.domain = spec
        if slots is not None:
            machine.media = slots
        return json_response(domain_view(machine), 201 if created else 200)

    def _undefine(self, machine: SimMachine) -> None:
        now = self.fleet.clock.now()
        machine.power_off(now)
        self.fleet.observe(machine)  # the node (if any) goes NotReady
        machine.domain = None
        machine.media = []
        machine.installed = None
