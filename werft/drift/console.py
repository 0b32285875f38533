"""The drift report on a terminal (rich tables), in a pipe (plain rows) or as JSON."""

from __future__ import annotations

import json

from rich.console import Console

from werft.drift.report import DriftReport
from werft.tables import print_table

GROUP_COLUMNS = ("id", "clusters", "object", "field", "desired", "live", "manager", "where",
                 "policy")
CLUSTER_COLUMNS = ("cluster", "tier", "outcome", "findings", "first")
OUTCOME_STYLE = {"InShape": "green", "Drifted": "yellow", "Unreachable": "red",
                 "Unauthorized": "red", "Unknown": "red", "Busy": "dim",
                 "NotProvisioned": "dim"}


def print_report(console: Console, report: DriftReport, *, output: str = "text",
                 limit: int = 50) -> None:
    if output == "json":
        console.print(json.dumps(report.as_json(), indent=2), markup=False, highlight=False,
                      soft_wrap=True)
        return
    groups = report.group_rows()
    if groups:
        shown = groups[:limit]
        print_table(console, f"Drift: {len(groups)} finding group(s), by reach", GROUP_COLUMNS,
                    [[row.get(c, "") for c in GROUP_COLUMNS] for row in shown],
                    numeric=[c == "clusters" for c in GROUP_COLUMNS],
                    caption=f"(first {limit} of {len(groups)})" if len(groups) > limit else None)
    clusters = report.cluster_rows()
    if clusters:
        shown = clusters[:limit]
        print_table(console, "Clusters not in shape", CLUSTER_COLUMNS,
                    [[row[c] for c in CLUSTER_COLUMNS] for row in shown],
                    style=lambda col, cell: OUTCOME_STYLE.get(cell) if col == "outcome" else None,
                    numeric=[c == "findings" for c in CLUSTER_COLUMNS],
                    caption=(f"(first {limit} of {len(clusters)})"
                             if len(clusters) > limit else None))
    console.print(report.headline(), markup=False, highlight=False, soft_wrap=True)
    if groups:
        console.print("accept one as the desired state: werft drift accept ID",
                      markup=False, highlight=False)
