"""The admin kubeconfig werft holds for every cluster, from before the cluster exists."""

from __future__ import annotations

import base64

from werft.inventory.resolved import ResolvedCluster
from werft.render.pki import ClusterPKI, ensure_cluster_pki, secret_name
from werft.secrets import SecretStore
from werft.yamlsafe import safe_dump

ADMIN_USER = "werft-admin"


def render_kubeconfig(cluster: ResolvedCluster, pki: ClusterPKI) -> str:
    """The kubeconfig YAML: server = the cluster's API endpoint, the werft CA, a bearer
    token for ``werft-admin`` (a member of system:masters through tokens.csv)."""
    context = f"{ADMIN_USER}@{cluster.name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster.name,
                "cluster": {
                    "server": cluster.api_endpoint,
                    "certificate-authority-data": base64.b64encode(
                        pki.ca.cert_pem.encode()
                    ).decode(),
                },
            }
        ],
        "users": [{"name": ADMIN_USER, "user": {"token": pki.admin_token}}],
        "contexts": [{"name": context, "context": {"cluster": cluster.name, "user": ADMIN_USER}}],
        "current-context": context,
        "preferences": {},
    }
    return safe_dump(config, sort_keys=False)


def kubeconfig_for(
    cluster: ResolvedCluster, store: SecretStore, pki: ClusterPKI | None = None
) -> str:
    """The admin kubeconfig, generating the PKI on first use (unless given ``pki``, as
    ensured already) and keeping a copy in the store as ``clusters/<cluster>/kubeconfig``
    (rewritten only when it changes, e.g. when the inventory moves the API endpoint)."""
    text = render_kubeconfig(cluster, pki or ensure_cluster_pki(cluster, store))
    name = secret_name(cluster.name, "kubeconfig")
    if store.get(name) != text:
        store.put(name, text)
    return text
