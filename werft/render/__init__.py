"""Rendering: cluster PKI and kubeconfig, cloud-init and NoCloud seeds, add-on manifests.

Everything here is pure or idempotent: the same inventory and secrets give the same
bytes, so re-running a stage never changes what a machine or a cluster receives.
"""

from werft.render.addons import render_addons
from werft.render.cloudinit import render_meta_data, render_network_config, render_user_data
from werft.render.kubeconfig import kubeconfig_for, render_kubeconfig
from werft.render.pki import ClusterPKI, ca_cert_hash, ensure_cluster_pki
from werft.render.seed import build_seed_iso, publish_seed, read_seed

__all__ = [
    "ClusterPKI",
    "build_seed_iso",
    "ca_cert_hash",
    "ensure_cluster_pki",
    "kubeconfig_for",
    "publish_seed",
    "read_seed",
    "render_addons",
    "render_kubeconfig",
    "render_meta_data",
    "render_network_config",
    "render_user_data",
]
