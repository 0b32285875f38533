"""What the last drift check saw, kept where every worker sees it (``WERFT_HOME/drift``).

Not a third copy of the desired or the observed state: only what a check cannot learn from
the fleet itself -- since when a finding group has been seen (a deleted object carries no
timestamp), which groups the previous run reported (so ``werft.drift.cleared`` can be
emitted when one disappears), and the last report (what ``werft drift accept ID`` reads).
Written atomically (a temporary file renamed over the old one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from werft.drift.report import DriftReport
from werft.drift.triage import FindingGroup
from werft.files import write_atomically

STATE = "state.json"
REPORT = "report.json"


@dataclass
class Seen:
    first_seen: datetime
    clusters: list[str]
    headline: str


@dataclass
class Changes:
    detected: list[FindingGroup]  # every group of this check
    new: list[str]  # ids not in the previous check
    cleared: dict[str, Seen]  # groups of the previous check that are gone


class DriftState:
    def __init__(self, home: Path) -> None:
        self.folder = home / "drift"

    def seen(self) -> dict[str, Seen]:
        raw = _load(self.folder / STATE)
        out = {}
        for gid, item in (raw.get("groups") or {}).items():
            try:
                out[gid] = Seen(datetime.fromisoformat(item["first_seen"]),
                                [str(c) for c in item["clusters"]], str(item["headline"]))
            except (KeyError, TypeError, ValueError):
                continue
        return out

    def first_seen(self) -> dict[str, datetime]:
        return {gid: s.first_seen for gid, s in self.seen().items()}

    def update(self, report: DriftReport) -> Changes:
        """Record this check's groups; what is new and what cleared since the last one.

        A group is "cleared" only when every cluster it was on was checked this time and
        did not show it; otherwise (a cluster unreachable, or not in this check's
        selection) it is carried over."""
        before = self.seen()
        now = report.checked_at
        checked = {c.cluster for c in report.clusters if c.outcome.checked}
        groups = {g.id: g for g in report.groups}
        after: dict[str, Seen] = {}
        for gid, group in groups.items():
            first = before[gid].first_seen if gid in before else now
            after[gid] = Seen(first, list(group.clusters), group.headline())
        cleared = {}
        for gid, seen in before.items():
            if gid in after:
                continue
            if not checked.issuperset(seen.clusters):
                after[gid] = seen  # not seen, but not seen gone either (unchecked, unselected)
            else:
                cleared[gid] = seen
        self._write(STATE, {"groups": {
            gid: {"first_seen": s.first_seen.isoformat(), "clusters": s.clusters,
                  "headline": s.headline} for gid, s in after.items()}})
        self._write(REPORT, report.model_dump(mode="json"))
        return Changes(list(groups.values()), [g for g in groups if g not in before], cleared)

    def last_report(self) -> DriftReport | None:
        raw = _load(self.folder / REPORT)
        return DriftReport.model_validate(raw) if raw else None

    def save_report(self, report: DriftReport) -> None:
        self._write(REPORT, report.model_dump(mode="json"))

    def _write(self, name: str, data: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / name, json.dumps(data))


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
