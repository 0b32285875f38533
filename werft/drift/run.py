"""``werft drift`` without Prefect: check the selected clusters in this process and report.

Read-only: the remediation policy is the scheduled flow's to act on (flows/drift.py); the
command is the auditor's view. It saves the report where ``werft drift accept`` finds it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from werft.drift.check import DEFAULT_DEADLINE_S, check_clusters
from werft.drift.policy import decide
from werft.drift.report import DriftReport
from werft.drift.state import DriftState
from werft.inventory.resolved import Inventory, ResolvedCluster
from werft.locks import ClusterLocks
from werft.stages.context import StageContext, StageTimeouts


async def check_fleet(
    inventory: Inventory,
    clusters: Sequence[ResolvedCluster],
    *,
    home: Path,
    source: str,
    concurrency: int = 32,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> DriftReport:
    start = time.monotonic()
    busy = ClusterLocks(home, holder="werft-drift-cli").busy(c.name for c in clusters)
    timeouts = StageTimeouts(http=min(10.0, deadline_s))
    ctx = StageContext.for_inventory(inventory, werft_home=home, timeouts=timeouts)
    try:
        reports = await check_clusters(clusters, ctx, concurrency=concurrency,
                                       deadline_s=deadline_s, busy=busy)
    finally:
        await ctx.aclose()
    report = DriftReport.of(reports, source)
    state = DriftState(home)
    # Label each group with its policy (what the scheduled run would do); act on none.
    decide(inventory, {c.cluster: c for c in reports}, report.groups, state.first_seen(),
           report.checked_at)
    report.duration_s = round(time.monotonic() - start, 3)
    state.save_report(report)
    return report
