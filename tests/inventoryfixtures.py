"""A small valid fleet that inventory tests break one thing at a time.

``SmallFleet`` writes the files below into a folder; a test edits one of them, validates,
and asserts that the problem names the right file, line and field. Lines are found by
searching the written text, so the expectations survive edits to the templates.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from werft.errors import Problem
from werft.inventory import validate_inventory

FLEET = """\
apiVersion: werft.dev/v1alpha1
kind: Fleet
metadata:
  name: test-fleet
spec:
  kubernetesVersions: ["1.30.6", "1.31.4"]
  defaults:
    kubernetesVersion: "1.31.4"
    apiEndpointTemplate: "http://127.0.0.1:8686/clusters/{cluster}"
  artifacts:
    baseUrl: http://127.0.0.1:8686/artifacts
  rollout:
    tiers:
      edge:
        batchSize: 25
        maxFailures: "5%"
"""

PROFILES = """\
apiVersion: werft.dev/v1alpha1
kind: Profile
metadata:
  name: core-small
spec:
  controlPlane:
    replicas: 1
  workers:
    replicas: 1
  addonSets: [base]
  osImage: images/ubuntu.iso
---
apiVersion: werft.dev/v1alpha1
kind: Profile
metadata:
  name: edge-single-node
spec:
  distribution: k3s
  controlPlane:
    replicas: 1
  workers:
    replicas: 0
  addonSets: [base]
  osImage: http://127.0.0.1:8686/images/ubuntu.iso
  network:
    podCIDR: 10.42.0.0/16
    serviceCIDR: 10.43.0.0/16
"""

SITE = """\
apiVersion: werft.dev/v1alpha1
kind: Site
metadata:
  name: fra1
spec:
  tier: core
  region: eu-central
  location:
    latitude: 50.11
    longitude: 8.68
---
apiVersion: werft.dev/v1alpha1
kind: Cluster
metadata:
  name: fra1-a
  labels:
    env: prod
spec:
  site: fra1
  profile: core-small
  kubernetesVersion: v1.30.6
  network:
    nodeCIDR: 172.16.0.0/16
    podCIDR: 10.0.0.0/16
    serviceCIDR: 10.96.0.0/16
  machines:
    - name: fra1-a-cp0
      role: control-plane
      bmc:
        address: redfish+http://127.0.0.1:8686/bmc/fra1-a-cp0/redfish/v1/Systems/1
        credentialsRef: bmc-fra1
      bootMACAddress: "02:00:00:00:01:01"
    - name: fra1-a-w0
      role: worker
      bmc:
        address: redfish+http://127.0.0.1:8686/bmc/fra1-a-w0/redfish/v1/Systems/1
        credentialsRef: bmc-fra1
      bootMACAddress: "02:00:00:00:01:02"
---
apiVersion: werft.dev/v1alpha1
kind: Cluster
metadata:
  name: fra1-b
spec:
  site: fra1
  profile: core-small
  network:
    nodeCIDR: 172.17.0.0/16
    podCIDR: 10.1.0.0/16
    serviceCIDR: 10.97.0.0/16
    controlPlaneEndpoint: https://10.20.0.10:6443
  vm:
    host: sim+http://127.0.0.1:8686
    cpus: 4
  machines:
    - name: fra1-b-cp0
      role: control-plane
      vm:
        host: sim+http://127.0.0.1:8686
    - name: fra1-b-w0
      role: worker
      vm:
        host: test:///default
        memoryMiB: 2048
"""

ADDONS = """\
apiVersion: werft.dev/v1alpha1
kind: AddonSet
metadata:
  name: base
spec:
  version: "1.0.0"
  addons:
    - name: cni
      version: "1.0.0"
      manifests:
        - cni/cni.yaml.j2
    - name: dns
      version: "1.0.0"
      dependsOn: [cni]
      manifests:
        - dns.yaml
"""
CNI_TEMPLATE = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cni-{{ cluster.name }}\n"
# A plain Kubernetes manifest with a .yaml suffix: an AddonSet names it, so it is a template
# and not an inventory document.
DNS_MANIFEST = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: dns\n"

CSV_HEADER = (
    "site,region,latitude,longitude,profile,kubernetes_version,bmc_address,bmc_credentials,"
    "boot_mac,owner"
)
CSV_ROWS = [
    "edge-001,eu-west,48.8566,2.3522,edge-single-node,,"
    "redfish+http://127.0.0.1:8686/bmc/edge-001-n0/redfish/v1/Systems/1,bmc-edge-eu-west,"
    "02:00:00:00:02:01,edge-ops",
    "edge-002,eu-west,45.7640,4.8357,edge-single-node,1.30.6,"
    "redfish+http://127.0.0.1:8686/bmc/edge-002-n0/redfish/v1/Systems/1,bmc-edge-eu-west,"
    "02:00:00:00:02:02,edge-ops",
    "edge-003,eu-central,52.5200,13.4050,edge-single-node,v1.31.4,"
    "redfish+https://127.0.0.1:8686/bmc/edge-003-n0/redfish/v1/Systems/1,bmc-edge-eu-central,"
    "02:00:00:00:02:03,",
]

FILES = {
    "fleet.yaml": FLEET,
    "profiles.yaml": PROFILES,
    "sites/fra1.yaml": SITE,
    "addons/base.yaml": ADDONS,
    "addons/cni/cni.yaml.j2": CNI_TEMPLATE,
    "addons/dns.yaml": DNS_MANIFEST,
    "edge-sites.csv": "\n".join([CSV_HEADER, *CSV_ROWS]) + "\n",
}


class SmallFleet:
    """A valid fleet on disk plus helpers to break it and to find lines."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for rel, text in FILES.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")

    def file(self, rel: str) -> str:
        """How problems name ``rel``."""
        return f"{self.root.as_posix()}/{rel}"

    def text(self, rel: str) -> str:
        return (self.root / rel).read_text(encoding="utf-8")

    def edit(self, rel: str, old: str, new: str) -> None:
        text = self.text(rel)
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {rel}"
        (self.root / rel).write_text(text.replace(old, new), encoding="utf-8")

    def write(self, rel: str, text: str | bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")

    def line(self, rel: str, needle: str, nth: int = 1) -> int:
        """The 1-based line of the ``nth`` line of ``rel`` that contains ``needle``."""
        hits = [i for i, line in enumerate(self.text(rel).splitlines(), 1) if needle in line]
        assert len(hits) >= nth, f"{needle!r} not found {nth} time(s) in {rel}"
        return hits[nth - 1]

    def problems(self) -> list[Problem]:
        return validate_inventory(self.root)

    def only_problem(self) -> Problem:
        problems = self.problems()
        assert len(problems) == 1, "\n".join(str(p) for p in problems)
        return problems[0]


def assert_problem(
    problem: Problem, *, file: str, line: int | None, field: str, message: str, fix: str = ""
) -> None:
    """The problem is at exactly this place and says (at least) this."""
    assert (problem.file, problem.line, problem.field) == (file, line, field), str(problem)
    assert message in problem.message, str(problem)
    assert fix in problem.fix, str(problem)


@pytest.fixture
def fleet(tmp_path: Path) -> SmallFleet:
    return SmallFleet(tmp_path / "inv")
