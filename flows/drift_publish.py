"""What a drift run leaves behind: artifacts a person reads, events automations react to.

Artifacts, under stable keys so the UI's Artifacts page shows the history run by run:
``werft-drift-summary`` (markdown: the headline and the groups), ``werft-drift-groups``
(one row per finding group, ranked) and ``werft-drift-clusters`` (the clusters that are
not in shape: drifted first, then those that could not be checked).

Events, one per finding group, resource ``werft.drift.<group id>`` (the id is stable
across runs, so an automation can follow one cause):

- ``werft.drift.detected`` every run the group is there, with its counts in the payload;
- ``werft.drift.cleared`` in the first run it is gone (every cluster it was on checked
  and clean).

Resource labels carry what automations match on: the object, the field, the policy and
whether a remediation is due (``werft.drift.due: "true"``).
"""

from __future__ import annotations

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.events import emit_event

from werft.drift.report import DriftReport
from werft.drift.state import Changes

MAX_ROWS = 5000
PAYLOAD_CLUSTERS = 50


async def publish(report: DriftReport) -> None:
    await acreate_markdown_artifact(report.markdown(), key="werft-drift-summary",
                                    description=report.headline())
    groups = report.group_rows()
    clusters = report.cluster_rows()
    # An empty table is a row saying so: the key's history then shows the clean runs too.
    await acreate_table_artifact(
        groups[:MAX_ROWS] or [{"id": "", "clusters": "0", "object": "no drift"}],
        key="werft-drift-groups", description=f"{len(groups)} finding group(s)",
    )
    await acreate_table_artifact(
        clusters[:MAX_ROWS] or [{"cluster": "", "outcome": "all in shape"}],
        key="werft-drift-clusters",
        description=f"{len(clusters)} of {len(report.clusters)} cluster(s) not in shape",
    )


def emit_events(changes: Changes) -> dict[str, int]:
    """Emit the run's events; how many of each."""
    for group in changes.detected:
        f = group.finding
        emit_event(
            event="werft.drift.detected",
            resource={
                "prefect.resource.id": f"werft.drift.{group.id}",
                "prefect.resource.name": group.headline()[:200],
                "werft.drift.object": f.object,
                "werft.drift.field": f.field or str(f.kind),
                "werft.drift.policy": group.policy,
                "werft.drift.due": "true" if group.due else "false",
                "werft.drift.new": "true" if group.id in changes.new else "false",
            },
            payload={
                "group": group.id,
                "headline": group.headline(),
                "clusters": group.count,
                "tiers": group.tiers,
                "regions": group.regions,
                "desired": f.desired,
                "live": f.live,
                "manager": f.manager,
                "since": group.since.isoformat() if group.since else None,
                "first_clusters": group.clusters[:PAYLOAD_CLUSTERS],
                "action": group.action,
            },
        )
    for gid, seen in changes.cleared.items():
        emit_event(
            event="werft.drift.cleared",
            resource={"prefect.resource.id": f"werft.drift.{gid}",
                      "prefect.resource.name": seen.headline[:200]},
            payload={"group": gid, "headline": seen.headline, "clusters": len(seen.clusters),
                     "first_seen": seen.first_seen.isoformat()},
        )
    return {"werft.drift.detected": len(changes.detected),
            "werft.drift.cleared": len(changes.cleared)}
