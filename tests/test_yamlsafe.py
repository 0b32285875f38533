"""werft's YAML through libyaml's emitter is byte for byte what PyYAML's own writes.

A seed's URL is a digest of its bytes, and a changed seed URL tells werft that a machine
is not provisioned with the seed it should have: if the emitter changed a single byte,
every machine of the fleet would be re-installed. These tests render the sample fleet's
seeds and kubeconfigs through both emitters, so a libyaml or PyYAML upgrade that makes
them part ways fails here and not on a fleet.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.renderfixtures import ARTIFACTS_URL, SAMPLE_INVENTORY
from werft import yamlsafe
from werft.inventory.load import load_inventory
from werft.inventory.resolved import ResolvedCluster
from werft.render import cloudinit
from werft.render.kubeconfig import render_kubeconfig
from werft.render.pki import ensure_cluster_pki
from werft.render.seed import seed_documents
from werft.secrets import SecretStore

pytestmark = pytest.mark.skipif(
    not hasattr(yaml, "CSafeDumper"), reason="PyYAML was built without libyaml"
)


class _PureBlockDumper(yaml.SafeDumper):
    """cloudinit's dumper on PyYAML's pure-Python emitter."""


_PureBlockDumper.yaml_representers = dict(cloudinit._BlockDumper.yaml_representers)


def _one_of_each_kind(clusters: list[ResolvedCluster]) -> list[ResolvedCluster]:
    """A cluster for every (tier, distribution, machine count) of the sample fleet."""
    kinds: dict[tuple[str, str, int], ResolvedCluster] = {}
    for cluster in clusters:
        kind = (str(cluster.tier), str(cluster.distribution), len(cluster.machines))
        kinds.setdefault(kind, cluster)
    return list(kinds.values())


def _rendered(clusters: list[ResolvedCluster], store: SecretStore) -> list[str]:
    texts = []
    for cluster in clusters:
        pki = ensure_cluster_pki(cluster, store)
        texts.append(render_kubeconfig(cluster, pki))
        for machine in cluster.machines:
            documents = seed_documents(cluster, machine, pki, artifacts_url=ARTIFACTS_URL)
            texts.extend(documents.values())
    return texts


def test_the_sample_fleets_seeds_are_the_same_bytes_through_either_emitter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert yamlsafe.SafeDumper is yaml.CSafeDumper
    assert issubclass(cloudinit._BlockDumper, yaml.CSafeDumper)
    clusters = _one_of_each_kind(list(load_inventory(SAMPLE_INVENTORY).clusters.values()))
    assert {str(c.distribution) for c in clusters} == {"kubeadm", "k3s"}
    assert any(len(c.machines) > 1 for c in clusters)
    store = SecretStore(tmp_path / "secrets")  # the same keys for both renderings

    fast = _rendered(clusters, store)
    monkeypatch.setattr(yamlsafe, "SafeDumper", yaml.SafeDumper)
    monkeypatch.setattr(cloudinit, "_BlockDumper", _PureBlockDumper)
    pure = _rendered(clusters, store)

    assert len(fast) == len(pure) > 3 * len(clusters)
    # Both of cloudinit's own representers were used: PEM blocks and one-line commands.
    assert any(": |" in text and "\n- [" in text for text in fast)
    for fast_text, pure_text in zip(fast, pure, strict=True):
        assert fast_text == pure_text

