"""The inventory schema: Kubernetes-style documents that describe the desired fleet.

Every document is ``apiVersion: werft.dev/v1alpha1``, ``kind``, ``metadata``, ``spec``.
Field names in YAML are camelCase (as in Kubernetes); Python attributes are snake_case.
These models check the shape of one document; checks across documents (references,
uniqueness, overlapping CIDRs) live in ``werft.inventory.validate``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

API_VERSION = "werft.dev/v1alpha1"

# DNS-1123 label, as Kubernetes names are: lower case, digits, '-', at most 63.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
MAC_PATTERN = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
VERSION_PATTERN = r"^v?\d+\.\d+\.\d+$"
# A credentialsRef names a secret; it never holds one.
SECRET_REF_PATTERN = r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]


# Kubernetes spells acronyms in capitals (bootMACAddress, podCIDR, memoryMiB); plain
# camelCase would give bootMacAddress. The Kubernetes spelling is the canonical one (used in
# messages and when dumping); the plain camelCase spelling is still accepted on input.
_ACRONYMS = {"mac": "MAC", "cidr": "CIDR", "mib": "MiB", "gib": "GiB"}


def to_kube_camel(name: str) -> str:
    """``boot_mac_address`` -> ``bootMACAddress``, ``pod_cidr`` -> ``podCIDR``."""
    first, *rest = name.split("_")
    return first + "".join(_ACRONYMS.get(part, part.capitalize()) for part in rest)


def _validation_alias(name: str) -> str | AliasChoices:
    kube, camel = to_kube_camel(name), to_camel(name)
    return kube if kube == camel else AliasChoices(kube, camel)


class Spec(BaseModel):
    """Base for every spec: camelCase in YAML, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_kube_camel, validation_alias=_validation_alias),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class Tier(StrEnum):
    CORE = "core"
    NEAR_EDGE = "near-edge"
    EDGE = "edge"


class Distribution(StrEnum):
    KUBEADM = "kubeadm"
    K3S = "k3s"


class Role(StrEnum):
    CONTROL_PLANE = "control-plane"
    WORKER = "worker"


class Metadata(Spec):
    name: Name
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# --- Fleet -------------------------------------------------------------------------------


class TierPolicy(Spec):
    """How one tier rolls out. ``max_failures`` is a count ("3") or a share ("5%")."""

    batch_size: int = Field(1, ge=1, le=1000)
    max_concurrency: int = Field(4, ge=1, le=10000)
    canary_size: int = Field(0, ge=0)
    max_failures: int | str = 0
    # Edge sites that do not answer are deferred to the next run instead of failing it.
    defer_unreachable: bool = False

    @field_validator("max_failures")
    @classmethod
    def _budget_shape(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 0:
                raise ValueError("must be >= 0")
            return value
        if not re.fullmatch(r"\d{1,3}%", value) or int(value[:-1]) > 100:
            raise ValueError("must be a count like 3 or a share like '5%'")
        return value

    def failure_budget(self, clusters: int) -> int:
        """How many of ``clusters`` may fail before the wave halts the rollout."""
        if isinstance(self.max_failures, int):
            return self.max_failures
        return int(clusters * int(self.max_failures[:-1]) / 100)


class Rollout(Spec):
    order: list[Tier] = Field(default_factory=lambda: [Tier.CORE, Tier.NEAR_EDGE, Tier.EDGE])
    tiers: dict[Tier, TierPolicy] = Field(default_factory=dict)

    def policy(self, tier: Tier) -> TierPolicy:
        return self.tiers.get(tier, TierPolicy())


class FleetDefaults(Spec):
    kubernetes_version: Annotated[str, Field(pattern=VERSION_PATTERN)] | None = None
    distribution: Distribution = Distribution.KUBEADM
    addon_sets: list[Name] = Field(default_factory=list)
    # The API endpoint of clusters that do not set network.controlPlaneEndpoint (edge CSV
    # rows): "{cluster}" and "{site}" are replaced, e.g. "https://{cluster}.edge.example:6443".
    api_endpoint_template: str | None = None


class Artifacts(Spec):
    """Where machines fetch boot artifacts (OS images, NoCloud seeds)."""

    base_url: str
    # Local folder werft publishes seeds into; served at base_url (the simulator serves it).
    publish_dir: str = ".werft/artifacts"


class FleetSpec(Spec):
    kubernetes_versions: list[Annotated[str, Field(pattern=VERSION_PATTERN)]] = Field(min_length=1)
    defaults: FleetDefaults = Field(default_factory=FleetDefaults)
    artifacts: Artifacts
    rollout: Rollout = Field(default_factory=Rollout)


# --- Site --------------------------------------------------------------------------------


class Location(Spec):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    address: str = ""


class SiteSpec(Spec):
    tier: Tier
    region: Name
    location: Location | None = None
    owners: list[str] = Field(default_factory=list)


# --- Cluster -----------------------------------------------------------------------------


class BMC(Spec):
    """A machine's BMC. ``address`` follows Metal3: ``redfish+http://host:port/redfish/v1/Systems/<id>``
    (``redfish://`` means https). The system id is the last path segment; the service root is
    everything up to and including ``/redfish/v1``."""

    address: str
    credentials_ref: Annotated[str, Field(pattern=SECRET_REF_PATTERN)]
    disable_certificate_verification: bool = False
    ca_bundle: str | None = None


class VMSpec(Spec):
    """A VM on the site's hypervisor, for the libvirt provider."""

    host: str  # libvirt URI, e.g. qemu+ssh://hv1.fra1/system or test:///default
    cpus: int = Field(2, ge=1, le=256)
    memory_mib: int = Field(4096, ge=256)
    disk_gib: int = Field(40, ge=1)
    network: str = "default"


class Machine(Spec):
    name: Name
    role: Role
    bmc: BMC | None = None
    boot_mac_address: Annotated[str, Field(pattern=MAC_PATTERN)] | None = None
    vm: VMSpec | None = None

    @model_validator(mode="after")
    def _one_provider(self) -> Machine:
        if (self.bmc is None) == (self.vm is None):
            raise ValueError("a machine needs exactly one of 'bmc' (bare metal) or 'vm'")
        if self.bmc is not None and self.boot_mac_address is None:
            raise ValueError("a bare-metal machine needs 'bootMACAddress'")
        return self

    @property
    def provider(self) -> Literal["redfish", "libvirt"]:
        return "redfish" if self.bmc is not None else "libvirt"


class Network(Spec):
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    # The machines' own subnet at the site; must not overlap other clusters' at the site.
    node_cidr: str | None = None
    # The API endpoint the cluster will answer on, e.g. https://10.20.0.10:6443.
    control_plane_endpoint: str | None = None


class ReplicaSpec(Spec):
    replicas: int = Field(ge=0, le=1000)


class ClusterShape(Spec):
    """The fields a Profile may set and a Cluster may override."""

    kubernetes_version: Annotated[str, Field(pattern=VERSION_PATTERN)] | None = None
    distribution: Distribution | None = None
    control_plane: ReplicaSpec | None = None
    workers: ReplicaSpec | None = None
    network: Network | None = None
    addon_sets: list[Name] | None = None
    # URL of the installer ISO: absolute, or relative to the fleet's artifacts.baseUrl.
    os_image: str | None = None
    vm: VMSpec | None = None  # default VM spec for machines the profile expands


class ProfileSpec(ClusterShape):
    description: str = ""


class ClusterSpec(ClusterShape):
    site: Name
    profile: Name | None = None
    owners: list[str] = Field(default_factory=list)
    machines: list[Machine] = Field(default_factory=list)


# --- AddonSet ----------------------------------------------------------------------------


class Addon(Spec):
    name: Name
    version: str
    # Manifest templates (jinja2), relative to the AddonSet document's folder.
    manifests: list[str] = Field(min_length=1)
    values: dict[str, object] = Field(default_factory=dict)
    # Names of add-ons (in any of the cluster's sets) that must be applied first.
    depends_on: list[Name] = Field(default_factory=list)


class AddonSetSpec(Spec):
    version: str
    addons: list[Addon] = Field(min_length=1)


# --- documents ---------------------------------------------------------------------------


class Document(Spec):
    api_version: Literal["werft.dev/v1alpha1"] = Field(alias="apiVersion")
    metadata: Metadata


class Fleet(Document):
    kind: Literal["Fleet"]
    spec: FleetSpec


class Site(Document):
    kind: Literal["Site"]
    spec: SiteSpec


class Profile(Document):
    kind: Literal["Profile"]
    spec: ProfileSpec


class Cluster(Document):
    kind: Literal["Cluster"]
    spec: ClusterSpec


class AddonSet(Document):
    kind: Literal["AddonSet"]
    spec: AddonSetSpec


KINDS: dict[str, type[Document]] = {
    "Fleet": Fleet,
    "Site": Site,
    "Profile": Profile,
    "Cluster": Cluster,
    "AddonSet": AddonSet,
}
