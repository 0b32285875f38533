"""The fleet as tables: what `werft inventory show` and `werft validate` print.

Tables are pandas DataFrames (easy to test, to export, to summarise) rendered with rich.
A fleet of 100,000 edge sites is summarised per tier and region; the per-cluster and
per-machine tables show the first rows (core first) unless asked for more.
"""

from __future__ import annotations

import pandas as pd
from rich.console import Console

from werft.inventory.load import Validation
from werft.inventory.model import Tier
from werft.inventory.resolved import Inventory
from werft.tables import print_table

TIER_ORDER = {Tier.CORE: 0, Tier.NEAR_EDGE: 1, Tier.EDGE: 2}


def summary_line(result: Validation, seconds: float) -> str:
    """``inventory: valid -- sites: 3 core, 12 near-edge, 300 edge; 320 clusters, ...``"""
    tiers = ", ".join(f"{n} {tier}" for tier, n in result.sites.items())
    return (
        f"{result.origin}: valid -- sites: {tiers}; {result.clusters} clusters, "
        f"{result.machines} machines ({seconds:.2f} s)"
    )


def sites_by_region(inventory: Inventory) -> pd.DataFrame:
    """Sites, clusters and machines per tier and region."""
    sites = pd.DataFrame(
        [(s.spec.tier.value, s.spec.region) for s in inventory.sites.values()],
        columns=["tier", "region"],
    )
    clusters = pd.DataFrame(
        [(c.tier.value, c.region, len(c.machines)) for c in inventory.clusters.values()],
        columns=["tier", "region", "machines"],
    )
    table = (
        sites.groupby(["tier", "region"])
        .size()
        .rename("sites")
        .to_frame()
        .join(
            clusters.groupby(["tier", "region"]).agg(
                clusters=("machines", "size"), machines=("machines", "sum")
            ),
            how="outer",
        )
        .fillna(0)
        .astype(int)
        .reset_index()
    )
    order = {t.value: i for t, i in TIER_ORDER.items()}
    return table.sort_values(
        ["tier", "region"], key=lambda s: s.map(order) if s.name == "tier" else s
    ).reset_index(drop=True)


def clusters_frame(inventory: Inventory, limit: int | None = None) -> tuple[pd.DataFrame, int]:
    """The first ``limit`` clusters (core, then near-edge, then edge) and how many exist."""
    ordered = sorted(inventory.clusters.values(), key=lambda c: (TIER_ORDER[c.tier], c.name))
    shown = ordered if limit is None else ordered[:limit]
    frame = pd.DataFrame(
        [
            {
                "cluster": c.name,
                "tier": c.tier.value,
                "site": c.site,
                "profile": c.profile or "",
                "dist": c.distribution.value,
                "k8s": c.kubernetes_version,
                "cp": c.control_plane_replicas,
                "workers": c.worker_replicas,
                "add-on sets": ",".join(c.addon_sets),
                "api endpoint": c.api_endpoint,
            }
            for c in shown
        ],
    )
    return frame, len(ordered)


def machines_frame(inventory: Inventory, limit: int | None = None) -> tuple[pd.DataFrame, int]:
    ordered = sorted(inventory.clusters.values(), key=lambda c: (TIER_ORDER[c.tier], c.name))
    total = sum(len(c.machines) for c in ordered)
    rows = []
    for cluster in ordered:
        for machine in cluster.machines:
            if limit is not None and len(rows) >= limit:
                break
            rows.append(
                {
                    "machine": machine.name,
                    "role": machine.role.value,
                    "boot MAC": machine.boot_mac_address or "",
                    "provider": machine.provider,
                    "BMC / hypervisor": machine.bmc.address if machine.bmc else machine.vm.host,  # type: ignore[union-attr]
                }
            )
        if limit is not None and len(rows) >= limit:
            break
    return pd.DataFrame(rows), total


def render(inventory: Inventory, console: Console, *, limit: int | None = 25) -> None:
    """Print the three tables; ``limit`` caps the cluster and machine tables (None: all)."""
    _print(console, "Sites by tier and region", sites_by_region(inventory))
    frame, total = clusters_frame(inventory, limit)
    _print(console, "Clusters", frame, total)
    frame, total = machines_frame(inventory, limit)
    _print(console, "Machines", frame, total)


def as_json(inventory: Inventory, *, limit: int | None = 25) -> dict[str, object]:
    """The same tables for machines (`werft inventory show --output json`)."""
    clusters, cluster_total = clusters_frame(inventory, limit)
    machines, machine_total = machines_frame(inventory, limit)
    return {
        "sites": sites_by_region(inventory).to_dict(orient="records"),
        "clusters": clusters.to_dict(orient="records"),
        "clusters_total": cluster_total,
        "machines": machines.to_dict(orient="records"),
        "machines_total": machine_total,
    }


def _print(console: Console, title: str, frame: pd.DataFrame, total: int | None = None) -> None:
    caption = None
    if total is not None and total > len(frame):
        caption = f"{len(frame)} of {total} shown (--limit N or --all for more)"
    print_table(
        console,
        title,
        [str(c) for c in frame.columns],
        [list(row) for row in frame.itertuples(index=False)],
        caption=caption,
        numeric=[pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns],
    )
