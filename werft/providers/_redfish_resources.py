"""Redfish resources as declarative classes, the way sushy reads them.

Only the fields werft uses are declared; everything else a BMC sends is ignored, so a
vendor's extra properties never break parsing. Links are kept as ``@odata.id`` paths
and followed by the driver, never built from hard-coded paths.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from werft.errors import PermanentError


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class Link(_Model):
    odata_id: str = Field(alias="@odata.id")


class Resource(_Model):
    # Optional: a few BMCs omit it on some resources; the reader fills in the path read.
    odata_id: str = Field("", alias="@odata.id")
    id: str | None = Field(None, alias="Id")
    actions: dict[str, Any] = Field(default_factory=dict, alias="Actions")

    def action_target(self, name: str) -> str | None:
        """The ``target`` of ``#<name>`` in Actions (e.g. "ComputerSystem.Reset")."""
        action = self.actions.get(f"#{name}")
        target = action.get("target") if isinstance(action, dict) else None
        return target if isinstance(target, str) and target else None

    def allowable(self, name: str, parameter: str) -> list[str] | None:
        """``<parameter>@Redfish.AllowableValues`` of an action, None when not advertised."""
        action = self.actions.get(f"#{name}")
        values = (
            action.get(f"{parameter}@Redfish.AllowableValues") if isinstance(action, dict) else None
        )
        return [str(v) for v in values] if isinstance(values, list) else None


class Collection(Resource):
    members: list[Link] = Field(default_factory=list, alias="Members")


class ServiceRoot(Resource):
    systems: Link | None = Field(None, alias="Systems")
    managers: Link | None = Field(None, alias="Managers")


class Boot(_Model):
    target: str | None = Field(None, alias="BootSourceOverrideTarget")
    enabled: str | None = Field(None, alias="BootSourceOverrideEnabled")
    allowed_targets: list[str] | None = Field(
        None, alias="BootSourceOverrideTarget@Redfish.AllowableValues"
    )
    allowed_enabled: list[str] | None = Field(
        None, alias="BootSourceOverrideEnabled@Redfish.AllowableValues"
    )

    def override(self) -> str | None:
        """The override in effect as "<target>/<enabled>" (e.g. "Cd/Once"), or None."""
        if not self.target or self.target == "None" or self.enabled in (None, "Disabled"):
            return None
        return f"{self.target}/{self.enabled}"

    @property
    def to_cd(self) -> bool:
        """An override to the CD is in effect (Once or Continuous)."""
        return self.target == "Cd" and self.override() is not None


# BootProgress.LastState values (ComputerSystem v1_13) that mean the firmware is still
# initialising the hardware (or sits in setup): the boot, and with it a pending Once
# override, is yet to come. Not "SystemHardwareInitializationComplete": a machine that
# found nothing to boot stays there, and a Once set after that waits for the next boot.
_POST_STATES = frozenset(
    {
        "PrimaryProcessorInitializationStarted",
        "BusInitializationStarted",
        "MemoryInitializationStarted",
        "SecondaryProcessorInitializationStarted",
        "PCIResourceConfigStarted",
        "SetupEntered",
    }
)


class BootProgress(_Model):
    last_state: str | None = Field(None, alias="LastState")


class SystemLinks(_Model):
    managed_by: list[Link] = Field(default_factory=list, alias="ManagedBy")


class System(Resource):
    power_state: str | None = Field(None, alias="PowerState")
    boot: Boot = Field(default_factory=Boot, alias="Boot")
    virtual_media: Link | None = Field(None, alias="VirtualMedia")
    links: SystemLinks = Field(default_factory=SystemLinks, alias="Links")
    boot_progress: BootProgress | None = Field(None, alias="BootProgress")
    # ComputerSystem v1_13: when the system was last reset (ISO 8601), where reported.
    last_reset_time: str | None = Field(None, alias="LastResetTime")

    @property
    def powered_on(self) -> bool:
        return self.power_state in ("On", "PoweringOn")

    @property
    def last_reset_at(self) -> float | None:
        """``LastResetTime`` as a POSIX timestamp; None when absent or unparseable (BMCs
        without a clock report "0001-01-01T00:00:00Z")."""
        if not self.last_reset_time:
            return None
        try:
            when = datetime.fromisoformat(self.last_reset_time.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None or when.year < 2000:
            return None
        return when.timestamp()

    @property
    def in_post(self) -> bool:
        """The BMC says the machine is still in POST (only BMCs that report BootProgress)."""
        return self.boot_progress is not None and self.boot_progress.last_state in _POST_STATES


class ManagerLinks(_Model):
    manager_for_servers: list[Link] = Field(default_factory=list, alias="ManagerForServers")


class Manager(Resource):
    virtual_media: Link | None = Field(None, alias="VirtualMedia")
    links: ManagerLinks = Field(default_factory=ManagerLinks, alias="Links")


class VirtualMedia(Resource):
    media_types: list[str] = Field(default_factory=list, alias="MediaTypes")
    image: str | None = Field(None, alias="Image")
    inserted: bool | None = Field(None, alias="Inserted")

    @property
    def current(self) -> str | None:
        """The image URL the device holds, None when empty."""
        # BMCs report an empty device as Image null, "" or (sushy-tools) "None".
        if not self.image or self.image == "None" or self.inserted is False:
            return None
        return self.image

    @property
    def attached(self) -> bool:
        """Whether anything is attached, even media a BMC reports as not Inserted."""
        return bool(self.image and self.image != "None") or bool(self.inserted)

    def accepts(self, *types: str) -> bool:
        return any(t in self.media_types for t in types)


R = TypeVar("R", bound=Resource)


def parse(model: type[R], body: dict[str, Any], path: str, where: str) -> R:
    """Validate a BMC's document; a malformed one is permanent (retrying reads the same)."""
    try:
        resource = model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise PermanentError(
            f"{where}: {path} is not a valid {model.__name__} ({loc}: {first['msg']})"
        ) from None
    return resource if resource.odata_id else resource.model_copy(update={"odata_id": path})
