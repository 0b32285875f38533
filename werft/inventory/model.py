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

# Length limits on every string, so a hostile value (a megabyte in one field) is a Problem
# with its file and line, never something the fleet is built from.
DNS_NAME_MAX = 63  # a DNS-1123 label
URL_MAX = 2048  # what browsers, proxies and BMC web servers accept
TEXT_MAX = 1024  # free text: descriptions, owners, labels, paths
VALUE_TEXT_MAX = 65536  # a string inside an add-on's values (a CA bundle, a config snippet)

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=DNS_NAME_MAX)]
Url = Annotated[str, Field(max_length=URL_MAX)]
Text = Annotated[str, Field(max_length=TEXT_MAX)]
Version = Annotated[str, Field(pattern=VERSION_PATTERN, max_length=DNS_NAME_MAX)]
SecretRef = Annotated[str, Field(pattern=SECRET_REF_PATTERN, max_length=DNS_NAME_MAX)]


# Kubernetes spells acronyms in capitals (bootMACAddress, podCIDR, memoryMiB); plain
# camelCase would give bootMacAddress. The Kubernetes spelling is the canonical one (used in
# messages and when dumping); the plain camelCase spelling is still accepted on input.
_ACRONYMS = {"mac": "MAC", "cidr": "CIDR", "mib": "MiB", "gib": "GiB", "ttl": "TTL"}


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
    labels: dict[Text, Text] = Field(default_factory=dict)
    annotations: dict[Text, Text] = Field(default_factory=dict)


# --- Fleet -------------------------------------------------------------------------------


class Dispatch(StrEnum):
    """Where a tier's batches run: in the fleet run's own process, or handed to the
    ``provision-batch`` deployment on a Prefect work pool (workers on other machines)."""

    IN_PROCESS = "inProcess"
    POOL = "pool"


class TierPolicy(Spec):
    """How one tier rolls out. ``max_failures`` is a count ("3") or a share ("5%")."""

    batch_size: int = Field(1, ge=1, le=1000)
    max_concurrency: int = Field(4, ge=1, le=10000)
    canary_size: int = Field(0, ge=0)
    max_failures: int | str = 0
    # Edge sites that do not answer are deferred to the next run instead of failing it.
    defer_unreachable: bool = False
    # Seconds a site must stay unreachable (refused, timed out; not 5xx), probe after
    # probe, before a stage calls it Unreachable; a blip shorter than this is retried.
    defer_after: float = Field(15.0, ge=0, le=3600)
    # A tier's own choice (edge to a pool, core in-process), overridable per run.
    dispatch: Dispatch = Dispatch.IN_PROCESS

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
    kubernetes_version: Version | None = None
    distribution: Distribution = Distribution.KUBEADM
    addon_sets: list[Name] = Field(default_factory=list)
    # The API endpoint of clusters that do not set network.controlPlaneEndpoint (edge CSV
    # rows): "{cluster}" and "{site}" are replaced, e.g. "https://{cluster}.edge.example:6443".
    api_endpoint_template: Url | None = None
    # How long a node may join with a seed's bootstrap token (kubeadm's default, 24 h);
    # werft renders a fresh one for machines it installs after half of that.
    bootstrap_token_ttl_hours: int = Field(24, ge=1, le=8760)


class Artifacts(Spec):
    """Where machines fetch boot artifacts (OS images, NoCloud seeds)."""

    base_url: Url
    # Local folder werft publishes seeds into; served at base_url (the simulator serves it).
    publish_dir: Text = ".werft/artifacts"


class Remediation(StrEnum):
    REPORT = "report"  # drift is reported; nothing changes
    REMEDIATE = "remediate"  # the provisioning stages bring the clusters back


_DURATION = re.compile(r"^(\d{1,6})(s|m|h|d)$")
_DURATION_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DriftPolicy(Spec):
    """What a drift check does with the drift it finds (werft/drift/policy.py)."""

    remediation: Remediation = Remediation.REPORT
    # Remediate only drift that has persisted this long ("30m", "2h", "1d").
    after: Annotated[str, Field(max_length=16)] | None = None

    @field_validator("after")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not _DURATION.match(value):
            raise ValueError("must be a duration like 90s, 30m, 2h or 1d")
        return value

    @model_validator(mode="after")
    def _after_needs_remediate(self) -> DriftPolicy:
        if self.after is not None and self.remediation is not Remediation.REMEDIATE:
            raise ValueError("'after' only applies to remediation: remediate")
        return self

    @property
    def after_seconds(self) -> float:
        match = _DURATION.match(self.after or "0s")
        return float(int(match[1]) * _DURATION_S[match[2]]) if match else 0.0


class FleetDrift(DriftPolicy):
    """The fleet's default drift policy, and one per tier that overrides it."""

    tiers: dict[Tier, DriftPolicy] = Field(default_factory=dict)


class FleetSpec(Spec):
    kubernetes_versions: list[Version] = Field(min_length=1)
    defaults: FleetDefaults = Field(default_factory=FleetDefaults)
    artifacts: Artifacts
    rollout: Rollout = Field(default_factory=Rollout)
    drift: FleetDrift = Field(default_factory=FleetDrift)


# --- Site --------------------------------------------------------------------------------


class Location(Spec):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    address: Text = ""


class SiteSpec(Spec):
    tier: Tier
    region: Name
    location: Location | None = None
    owners: list[Text] = Field(default_factory=list)


# --- Cluster -----------------------------------------------------------------------------


class BMC(Spec):
    """A machine's BMC. ``address`` follows Metal3: ``redfish+http://host:port/redfish/v1/Systems/<id>``
    (``redfish://`` means https). The system id is the last path segment; the service root is
    everything up to and including ``/redfish/v1``."""

    address: Url
    credentials_ref: SecretRef
    disable_certificate_verification: bool = False
    ca_bundle: Text | None = None


class VMSpec(Spec):
    """A VM on the site's hypervisor, for the libvirt provider."""

    host: Url  # libvirt URI, e.g. qemu+ssh://hv1.fra1/system or test:///default
    cpus: int = Field(2, ge=1, le=256)
    memory_mib: int = Field(4096, ge=256)
    disk_gib: int = Field(40, ge=1)
    network: Text = "default"


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
    pod_cidr: Text = "10.244.0.0/16"
    service_cidr: Text = "10.96.0.0/12"
    # The machines' own subnet at the site; must not overlap other clusters' at the site.
    node_cidr: Text | None = None
    # The API endpoint the cluster will answer on, e.g. https://10.20.0.10:6443.
    control_plane_endpoint: Url | None = None


class ReplicaSpec(Spec):
    replicas: int = Field(ge=0, le=1000)


class ClusterShape(Spec):
    """The fields a Profile may set and a Cluster may override."""

    kubernetes_version: Version | None = None
    distribution: Distribution | None = None
    control_plane: ReplicaSpec | None = None
    workers: ReplicaSpec | None = None
    network: Network | None = None
    addon_sets: list[Name] | None = None
    # URL of the installer ISO: absolute, or relative to the fleet's artifacts.baseUrl.
    os_image: Url | None = None
    vm: VMSpec | None = None  # default VM spec for machines the profile expands


class ProfileSpec(ClusterShape):
    description: Text = ""


class ClusterSpec(ClusterShape):
    site: Name
    profile: Name | None = None
    owners: list[Text] = Field(default_factory=list)
    machines: list[Machine] = Field(default_factory=list)


# --- AddonSet ----------------------------------------------------------------------------


class Addon(Spec):
    name: Name
    version: Text
    # Manifest templates (jinja2), relative to the AddonSet document's folder.
    manifests: list[Text] = Field(min_length=1)
    values: dict[Text, object] = Field(default_factory=dict)
    # Names of add-ons (in any of the cluster's sets) that must be applied first.
    depends_on: list[Name] = Field(default_factory=list)

    @field_validator("values")
    @classmethod
    def _values_bounded(cls, values: dict[str, object]) -> dict[str, object]:
        too_long = _first_long_string(values, VALUE_TEXT_MAX)
        if too_long is not None:
            where, length = too_long
            raise ValueError(
                f"{where or 'a value'} is {length:,} characters long; at most "
                f"{VALUE_TEXT_MAX:,} in add-on values (put large content in a manifest file)"
            )
        return values


def _first_long_string(value: object, limit: int, where: str = "") -> tuple[str, int] | None:
    """(path, length) of the first string in a nested value longer than ``limit``."""
    pending: list[tuple[str, object]] = [(where, value)]
    while pending:  # iterative: nesting depth is the YAML's, not bounded by Python's stack
        path, item = pending.pop()
        if isinstance(item, str) and len(item) > limit:
            return path, len(item)
        if isinstance(item, dict):
            pending += [(f"{path}.{k}" if path else str(k), v) for k, v in item.items()]
        elif isinstance(item, list):
            pending += [(f"{path}[{i}]", v) for i, v in enumerate(item)]
    return None


class AddonSetSpec(Spec):
    version: Text
    addons: list[Addon] = Field(min_length=1)
    # Take fields of these add-ons' objects over from other field managers (server-side
    # apply's force). Off: a field someone else owns is a conflict that names them.
    force_conflicts: bool = False
    # Overrides the Fleet's (and the tier's) drift policy for these add-ons' objects.
    drift: DriftPolicy | None = None


# --- Policy ------------------------------------------------------------------------------

# A CEL expression (werft.gitops.policy evaluates them); long enough for real rules, bounded
# like every other string.
CelText = Annotated[str, Field(min_length=1, max_length=4096)]
Operation = Literal["CREATE", "UPDATE", "DELETE"]


class PolicyMatch(Spec):
    """Which changed objects a rule looks at; an empty list matches every value."""

    kinds: list[Literal["Fleet", "Site", "Profile", "Cluster", "AddonSet", "Policy"]] = Field(
        default_factory=list
    )
    operations: list[Operation] = Field(default_factory=list)


class PolicyRule(Spec):
    """One rule: for every matching changed object where ``when`` holds, ``expression``
    must be true, or the change is denied with ``message`` and who could approve it."""

    name: Name
    match: PolicyMatch = Field(default_factory=PolicyMatch)
    when: CelText | None = None
    expression: CelText
    message: Text = ""
    # Teams or people who could approve a denied change (named in the denial).
    approvers: list[Text] = Field(default_factory=list)


class PolicySpec(Spec):
    description: Text = ""
    # Team -> members (forge logins); merged across Policy documents.
    teams: dict[Name, list[Text]] = Field(default_factory=dict)
    rules: list[PolicyRule] = Field(default_factory=list)


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


class Policy(Document):
    kind: Literal["Policy"]
    spec: PolicySpec


KINDS: dict[str, type[Document]] = {
    "Fleet": Fleet,
    "Site": Site,
    "Profile": Profile,
    "Cluster": Cluster,
    "AddonSet": AddonSet,
    "Policy": Policy,
}
