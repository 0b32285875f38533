"""Bootstrap tokens expire: rendered with their expiry, renewed for machines installed
late in their life, and known to the cluster through the Secret kubeadm would create."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.renderfixtures import ARTIFACTS_URL, make_cluster
from werft.render.cloudinit import render_user_data
from werft.render.pki import (
    bootstrap_token_secret,
    ensure_cluster_pki,
    secret_name,
)
from werft.render.seed import build_seed_iso
from werft.secrets import SecretStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=24)


@pytest.fixture
def store(tmp_path: Path) -> SecretStore:
    return SecretStore(tmp_path / "secrets")


def _kubeadm_init(text: str) -> dict[str, Any]:
    config = yaml.safe_load(text)
    files = {f["path"]: f for f in config["write_files"]}
    return next(yaml.safe_load_all(files["/etc/kubernetes/kubeadm.yaml"]["content"]))


def test_kubeadm_init_renders_the_token_expiry_instead_of_a_ttl(store: SecretStore) -> None:
    for version, api in (("1.30.4", "v1beta3"), ("1.31.1", "v1beta4")):
        cluster = make_cluster(f"c-{api}", version=version)
        pki = ensure_cluster_pki(cluster, store, token_ttl=TTL, now=T0)
        init = _kubeadm_init(render_user_data(cluster, cluster.machines[0], pki))
        token = init["bootstrapTokens"][0]
        assert init["apiVersion"] == f"kubeadm.k8s.io/{api}"
        assert token["token"] == pki.bootstrap_token
        # ttl and expires are mutually exclusive; an absolute expiry keeps seeds stable
        assert "ttl" not in token
        assert token["expires"] == "2026-03-02T12:00:00Z"


def test_the_token_is_kept_until_half_its_life_then_renewed(store: SecretStore) -> None:
    cluster = make_cluster(workers=1)
    first = ensure_cluster_pki(cluster, store, token_ttl=TTL, now=T0)
    worker = cluster.machines[1]
    seed = build_seed_iso(cluster, worker, first, artifacts_url=ARTIFACTS_URL)

    again = ensure_cluster_pki(cluster, store, token_ttl=TTL, now=T0 + timedelta(hours=11))
    assert again == first  # a re-run renders the very same seed
    assert build_seed_iso(cluster, worker, again, artifacts_url=ARTIFACTS_URL) == seed

    later = ensure_cluster_pki(cluster, store, token_ttl=TTL, now=T0 + timedelta(hours=13))
    assert later.bootstrap_token != first.bootstrap_token  # a re-image gets a fresh one
    assert later.bootstrap_token_expires == T0 + timedelta(hours=37)
    assert later.ca == first.ca and later.admin_token == first.admin_token
    assert later.server_token == first.server_token  # k3s servers keep theirs for good
    assert build_seed_iso(cluster, worker, later, artifacts_url=ARTIFACTS_URL) != seed

    # Reading the PKI without a TTL (for a kubeconfig) never renews anything.
    far = ensure_cluster_pki(cluster, store, now=T0 + timedelta(days=30))
    assert far.bootstrap_token == later.bootstrap_token


def test_a_token_without_a_recorded_expiry_is_renewed_and_k3s_servers_keep_it(
    store: SecretStore,
) -> None:
    cluster = make_cluster(distribution="k3s")
    legacy = "abcdef.0123456789abcdef"  # from before werft set expiries (ttl 0s)
    store.put(secret_name(cluster.name, "bootstrap-token"), legacy)

    pki = ensure_cluster_pki(cluster, store, token_ttl=TTL, now=T0)

    assert pki.bootstrap_token != legacy
    assert pki.bootstrap_token_expires == T0 + TTL
    # its servers joined (and encrypted the datastore) with the old token: unchanged
    assert pki.server_token == legacy


def test_the_bootstrap_token_secret_is_the_one_kubeadm_token_create_makes(
    store: SecretStore,
) -> None:
    pki = ensure_cluster_pki(make_cluster(), store, token_ttl=TTL, now=T0)
    token_id, token_secret = pki.bootstrap_token.split(".")

    secret = bootstrap_token_secret(pki)

    assert secret["metadata"] == {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"}
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    data = secret["stringData"]
    assert (data["token-id"], data["token-secret"]) == (token_id, token_secret)
    assert data["expiration"] == "2026-03-02T12:00:00Z"
    assert data["usage-bootstrap-authentication"] == data["usage-bootstrap-signing"] == "true"
    assert data["auth-extra-groups"] == "system:bootstrappers:kubeadm:default-node-token"
