"""A change plan for people: markdown for a pull-request comment, tables for a terminal.

Forges cap a comment's size (GitHub: 65,536 characters), and a change to an AddonSet used
by 10,000 sites must still read in one screen: long sections fold into ``<details>``, a
diff shared by many clusters is shown once with their count, and the comment stops adding
diffs before the cap (the JSON output and the Prefect artifact have them all).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console

from werft.gitops.change import ChangePlan
from werft.gitops.impact import Action, ClusterImpact
from werft.tables import print_table

COMMENT_MAX = 60_000  # characters, under GitHub's 65,536 with room for the forge's framing
FOLD_OVER = 15  # rows or diff lines past which a section is folded
CLUSTER_ROWS = 50  # rows of the cluster table in a comment; the rest are counted
MARKER = "<!-- werft-plan -->"  # finds werft's own comment to update it, not add another

_ICON = {"success": "✅", "denied": "⛔", "failure": "❌"}


def markdown(plan: ChangePlan, *, limit: int = COMMENT_MAX) -> str:
    """The plan as a pull-request comment (GitHub and GitLab flavoured markdown)."""
    parts = [MARKER, _title(plan)]
    if not plan.valid:
        parts.append(_problems(plan))
        return _fit(parts, [], limit)
    parts.append(_policy(plan))
    parts.append(_radius(plan))
    parts.append(_clusters(plan))
    parts.append(_waves(plan))
    parts.append(_objects(plan))
    return _fit(parts, _diffs(plan), limit)


def _title(plan: ChangePlan) -> str:
    rev = plan.revisions
    who = f" by @{plan.request.author}" if plan.request.author else ""
    approvers = (
        f", approved by {', '.join('@' + a for a in plan.request.approvers)}"
        if plan.request.approvers
        else ""
    )
    return (
        f"### {_ICON[plan.state]} werft plan: {plan.headline()}\n\n"
        f"`{rev.base_short}` (merge base of `{rev.base}`) → `{rev.head_short}` "
        f"(`{rev.head}`){who}{approvers}"
    )


def _problems(plan: ChangePlan) -> str:
    lines = [f"- `{p}`" for p in plan.problems]
    return _section(
        f"The head revision is not a valid inventory ({len(plan.problems)} problem(s))",
        "\n".join(lines),
        fold=len(lines) > FOLD_OVER,
    )


def _policy(plan: ChangePlan) -> str:
    verdicts = plan.verdicts
    if verdicts.allowed:
        return (
            f"**Policy:** allowed ({verdicts.rules} rule(s) in force, "
            f"{verdicts.checked} check(s) passed)"
        )
    lines = []
    for denial in verdicts.denials:
        who = f" — could approve: {', '.join(denial.could_approve)}" if denial.could_approve else ""
        lines.append(f"- ⛔ **{denial.rule}** denies `{denial.object}`: {denial.message}{who}")
    return f"**Policy: denied** ({len(verdicts.denials)} denial(s))\n\n" + "\n".join(lines)


def _radius(plan: ChangePlan) -> str:
    radius = plan.radius
    if not radius.clusters:
        return "**Blast radius:** no cluster is touched"
    rows = [
        f"| {tier} | {n:,} | {radius.tier_totals.get(tier, 0):,} | {radius.share(tier):.1%} |"
        for tier, n in sorted(radius.by_tier.items())
    ]
    regions = ", ".join(f"{r} {n:,}" for r, n in radius.by_region.items())
    return (
        f"**Blast radius:** {radius.clusters:,} cluster(s) at {len(radius.by_site):,} site(s)"
        f" in {len(radius.by_region)} region(s)\n\n"
        "| tier | clusters | of | share |\n|---|---:|---:|---:|\n" + "\n".join(rows) +
        f"\n\nby region: {regions}"
    )


def _clusters(plan: ChangePlan) -> str:
    impacts = [i for i in plan.impacts if i.action is not Action.NONE] or plan.impacts
    if not impacts:
        return ""
    rows = [_cluster_row(i) for i in _flagged_first(impacts)[:CLUSTER_ROWS]]
    more = len(impacts) - len(rows)
    table = "| cluster | tier | site | action | stages | why |\n|---|---|---|---|---|---|\n"
    table += "\n".join(rows)
    if more > 0:
        table += f"\n\n… and {more:,} more cluster(s) (JSON output: `werft plan -o json`)"
    return _section(f"Clusters ({len(impacts):,})", table, fold=len(impacts) > FOLD_OVER)


def _flagged_first(impacts: Sequence[ClusterImpact]) -> list[ClusterImpact]:
    # Decommissions and refusals are what a reviewer must not miss in a long table.
    return sorted(impacts, key=lambda i: (not (i.destructive or i.refused), i.name))


def _cluster_row(impact: ClusterImpact) -> str:
    action = str(impact.action)
    if impact.destructive:
        action = "⚠️ **decommission** (destructive)"
    elif impact.refused:
        action = "⛔ **upgrade** (refused: not supported yet)"
    stages = " → ".join(str(s) for s in impact.stages) or "—"
    return (
        f"| {impact.name} | {impact.tier} | {impact.site} | {action} | {stages} | "
        f"{'; '.join(impact.reasons)} |"
    )


def _waves(plan: ChangePlan) -> str:
    if not plan.waves:
        return "**Rollout:** nothing to provision on merge"
    rows = []
    for wave in plan.waves:
        canary = len(wave.canary.clusters) if wave.canary else 0
        rows.append(
            f"| {wave.name} | {len(wave.clusters):,} | {len(wave.batches):,} | {canary} | "
            f"{wave.failure_budget} |"
        )
    return (
        "**Rollout on merge:**\n\n| wave | clusters | batches | canary | failure budget |\n"
        "|---|---:|---:|---:|---:|\n" + "\n".join(rows)
    )


def _objects(plan: ChangePlan) -> str:
    lines = []
    for change in plan.changes:
        fields = f": {', '.join(change.fields[:8])}" if change.fields else ""
        more = f" (+{len(change.fields) - 8})" if len(change.fields) > 8 else ""
        lines.append(f"- {change.operation} `{change.key}`{fields}{more}")
    if not lines:
        return "**Changed objects:** none"
    return _section(f"Changed objects ({len(lines):,})", "\n".join(lines),
                    fold=len(lines) > FOLD_OVER)


def _diffs(plan: ChangePlan) -> list[str]:
    sections = []
    for item in plan.manifests.diffs:
        count = len(item.clusters)
        sample = ", ".join(item.clusters[:5]) + (", …" if count > 5 else "")
        title = f"{item.change} `{item.object}` ({item.addon}) on {count:,} cluster(s): {sample}"
        body = f"```diff\n{item.diff.rstrip()}\n```"
        sections.append(_section(title, body, fold=item.diff.count("\n") > FOLD_OVER))
    return sections


def _section(title: str, body: str, *, fold: bool) -> str:
    if fold:
        return f"<details><summary>{title}</summary>\n\n{body}\n\n</details>"
    return f"**{title}**\n\n{body}"


def _fit(parts: list[str], diffs: list[str], limit: int) -> str:
    text = "\n\n".join(p for p in parts if p)
    if diffs:
        text += "\n\n**Rendered manifest diffs**"
    for index, diff in enumerate(diffs):
        if len(text) + len(diff) + 200 > limit:
            left = len(diffs) - index
            text += f"\n\n… {left} more diff(s) not shown here (`werft plan -o json` has them)"
            break
        text += "\n\n" + diff
    return text[:limit]


# --- terminal ------------------------------------------------------------------------------


def print_plan(console: Console, plan: ChangePlan, *, full: bool = False) -> None:
    """The plan as tables (rich on a terminal, aligned text in a pipe)."""
    console.print(plan.headline(), markup=False, highlight=False, soft_wrap=True)
    rev = plan.revisions
    console.print(f"base {rev.base_short} ({rev.base}) -> head {rev.head_short} ({rev.head})",
                  markup=False, highlight=False)
    if not plan.valid:
        for problem in plan.problems:
            console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        return
    if plan.changes:
        print_table(console, "changed objects", ["operation", "object", "fields"],
                    [[c.operation, c.key, ", ".join(c.fields[:4])] for c in plan.changes])
    impacts = _flagged_first([i for i in plan.impacts if i.action is not Action.NONE])
    shown = impacts if full else impacts[:CLUSTER_ROWS]
    if shown:
        print_table(
            console,
            f"clusters ({len(impacts)})" + ("" if len(shown) == len(impacts) else
                                           f", first {len(shown)} (--full for all)"),
            ["cluster", "tier", "site", "action", "stages", "why"],
            [[i.name, i.tier, i.site, i.action, ", ".join(i.stages) or "-",
              i.refused or "; ".join(i.reasons)] for i in shown],
        )
    radius = plan.radius
    if radius.clusters:
        print_table(
            console, "blast radius", ["tier", "clusters", "of", "share"],
            [[t, n, radius.tier_totals.get(t, 0), f"{radius.share(t):.1%}"]
             for t, n in sorted(radius.by_tier.items())],
            numeric=[False, True, True, True],
        )
    if plan.waves:
        print_table(
            console, "rollout on merge", ["wave", "clusters", "batches", "failure budget"],
            [[w.name, len(w.clusters), len(w.batches), w.failure_budget] for w in plan.waves],
            numeric=[False, True, True, True],
        )
    for item in plan.manifests.diffs:
        console.print(f"--- {item.change} {item.object} ({item.addon}) on "
                      f"{len(item.clusters)} cluster(s)", markup=False, highlight=False)
        console.print(item.diff.rstrip(), markup=False, highlight=False, soft_wrap=True)
    if plan.verdicts.allowed:
        console.print(f"policy: allowed ({plan.verdicts.rules} rule(s), "
                      f"{plan.verdicts.checked} check(s) passed)", markup=False)
    for denial in plan.verdicts.denials:
        console.print(str(denial), markup=False, highlight=False, soft_wrap=True)
