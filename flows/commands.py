"""What `werft provision` and `werft serve` do (werft/cli.py parses and calls these)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from flows.models import FleetResult, ProvisionRequest
from werft.conditions import STAGE_ORDER
from werft.exitcodes import ExitCode
from werft.tables import print_table

FULL_TABLE_UP_TO = 40  # clusters; past that the table shows problems and a per-tier summary

STATUS_STYLE = {"True": "green", "False": "red", "Unknown": "dim"}
OUTCOME_STYLE = {"Verified": "green", "Failed": "red", "Deferred": "yellow", "NotStarted": "dim"}


def provision(
    request: ProvisionRequest,
    *,
    report: Path | None = None,
    full: bool = False,
    output: str = "text",
) -> int:
    """Run provision-fleet in this process; print the table (or JSON with ``output="json"``);
    exit code 0 iff all Verified."""
    from prefect.settings import PREFECT_UI_URL

    from flows.provision import provision_fleet

    state = asyncio.run(provision_fleet(request, return_state=True))  # type: ignore[call-overload]
    result = state.result(raise_on_failure=False)
    console = Console()
    if not isinstance(result, FleetResult):
        Console(stderr=True).print(f"[red]provisioning crashed: {state.message or result}[/]")
        return ExitCode.NOT_FINE
    ui = PREFECT_UI_URL.value()
    url = f"{ui}/runs/flow-run/{result.flow_run_id}" if ui and result.flow_run_id else None
    if report:
        write_report(report, result, url)
    if output == "json":
        # plain text, never styled or wrapped: this is for machines
        console.print(json.dumps(_summary(result, url, rows=True), indent=2), markup=False,
                      highlight=False, soft_wrap=True)
        return exit_code(result)
    # The flow checks the inventory again (it may have changed since the CLI did): the
    # problems are printed here as `werft validate` prints them, not only kept in Prefect.
    for problem in result.problems:
        console.print(problem, markup=False, highlight=False, soft_wrap=True)
    if result.dry_run and result.succeeded:
        print_plan(console, result)
    else:
        print_result(console, [c.row() for c in result.clusters], full=full)
    counts = {"planned": len(result.clusters)} if result.dry_run else result.counts()
    print_outcome(console, result.succeeded, result.reason, counts, url)
    console.print(result.retries_line(), soft_wrap=True)
    return exit_code(result)


def provision_via_api(
    request: ProvisionRequest, *, api_url: str | None, timeout_s: float, full: bool = False
) -> int:
    """Create a flow run of the provision-fleet deployment over REST and follow it.
    ``api_url`` defaults to Prefect's configured PREFECT_API_URL; exit 2 when neither is set."""
    from prefect.settings import PREFECT_API_URL

    from flows import api

    console = Console()
    api_url = api_url or PREFECT_API_URL.value()
    if not api_url:
        Console(stderr=True).print("[red]werft: --via-api needs PREFECT_API_URL or --api-url[/]")
        return ExitCode.USAGE
    parameters = {"request": request.model_dump(mode="json", exclude_defaults=True)}
    try:
        run = api.create_run(api_url, parameters)
        console.print(f"created flow run {run.name}: {api.ui_url(api_url, run.id)}")
        console.print("waiting for it to finish (served by `werft serve` or a worker) ...")
        run = api.follow(api_url, run.id, timeout_s)
        rows = api.fleet_table(api_url, run.id)
    except api.ApiError as exc:
        Console(stderr=True).print(f"[red]{exc}[/]")
        return ExitCode.NOT_FINE
    print_result(console, rows, full=full)
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row["outcome"])] = counts.get(str(row["outcome"]), 0) + 1
    ok = run.state_type == "COMPLETED"
    print_outcome(console, ok, run.message, counts, api.ui_url(api_url, run.id))
    all_verified = bool(rows) and all(row["outcome"] == "Verified" for row in rows)
    fine = ok and (request.dry_run or all_verified)
    return ExitCode.OK if fine else ExitCode.NOT_FINE


def exit_code(result: FleetResult) -> ExitCode:
    if not result.succeeded:
        return ExitCode.NOT_FINE
    return ExitCode.OK if result.dry_run or result.all_verified else ExitCode.NOT_FINE


def write_report(path: Path, result: FleetResult, url: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_summary(result, url, rows=False), indent=2))


def _summary(result: FleetResult, url: str | None, *, rows: bool) -> dict[str, Any]:
    """The run as JSON: the --report file, and with ``rows`` what --output json prints."""
    summary: dict[str, Any] = {
        "flow_run_id": result.flow_run_id,
        "url": url,
        "succeeded": result.succeeded,
        "reason": result.reason,
        "counts": result.counts(),
        "clusters": len(result.clusters),
        "task_runs": result.task_runs,
        "retries": result.retries,
        "duration_s": result.duration_s,
        "waves": [w.model_dump(mode="json") for w in result.waves],
    }
    if rows:
        summary["problems"] = result.problems
        summary["clusters"] = [c.row() for c in result.clusters]
    return summary


HEADERS = {
    "InfrastructureReady": "Infra",
    "Bootstrapped": "Boot",
    "AddonsReady": "Addons",
    "Verified": "Verified",
    "duration_s": "s",
}


def print_result(console: Console, rows: list[dict[str, Any]], *, full: bool) -> None:
    """The fleet table: every row for a small selection, else per tier + the problem rows."""
    if not rows:
        return
    shown = rows
    if not full and len(rows) > FULL_TABLE_UP_TO:
        print_tiers(console, rows)
        shown = [r for r in rows if r["outcome"] != "Verified"][:FULL_TABLE_UP_TO]
        if not shown:
            return
    columns = list(shown[0])
    print_table(
        console,
        "clusters" if shown is rows else "clusters that need attention",
        [HEADERS.get(column, column) for column in columns],
        [[_cell(column, row[column]) for column in columns] for row in shown],
        style=_style,
        numeric=[column == "duration_s" for column in columns],
    )


_STAGE_HEADERS = {HEADERS.get(str(stage), str(stage)) for stage in STAGE_ORDER}


def _cell(column: str, value: Any) -> str:
    text = str(value)
    return "-" if column in STAGE_ORDER and text == "Unknown" else text


def _style(header: str, cell: str) -> str | None:
    if header in _STAGE_HEADERS:
        return STATUS_STYLE["Unknown" if cell == "-" else cell]
    return OUTCOME_STYLE.get(cell) if header == "outcome" else None


def print_tiers(console: Console, rows: list[dict[str, Any]]) -> None:
    outcomes = list(OUTCOME_STYLE)
    tiers = dict.fromkeys(str(r["tier"]) for r in rows)
    counts = [
        [tier, *(sum(1 for r in rows if r["tier"] == tier and r["outcome"] == o) for o in outcomes)]
        for tier in tiers
    ]
    print_table(
        console,
        "fleet by tier",
        ["tier", *outcomes],
        counts,
        numeric=[False, *(True for _ in outcomes)],
    )


def print_plan(console: Console, result: FleetResult) -> None:
    """A dry run: the waves the rollout would run."""
    in_shape = sum(1 for c in result.clusters if c.reason == "AlreadyReady")
    console.print(
        f"plan: {len(result.clusters) - in_shape} of {len(result.clusters)} "
        f"cluster(s) need work, {result.task_runs} task run(s)"
    )
    print_table(
        console,
        "waves (dry run: nothing was changed)",
        ["wave", "clusters", "batches", "failure budget"],
        [[w.name, w.clusters, w.batches, w.failure_budget] for w in result.waves],
        numeric=[False, True, True, True],
    )


def print_outcome(
    console: Console, ok: bool, reason: str, counts: dict[str, int], url: str | None
) -> None:
    text = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no clusters"
    console.print(f"[{'green' if ok else 'red'}]{'done' if ok else 'FAILED'}[/]: {text}")
    if reason:
        console.print(f"[red]{reason}[/]", soft_wrap=True)
    if url:
        console.print(f"flow run: {url}", soft_wrap=True)


def serve(limit: int | None = None, time_scale: float = 1.0) -> None:
    from flows.deployments import serve_deployments

    serve_deployments(limit=limit, time_scale=time_scale)


class DeployError(Exception):
    """What ``deploy`` cannot do, said in one line with the fix."""


def deploy(pool: str, names: list[str] | None) -> list[str]:
    """Register deployments with ``pool``; a line per deployment registered."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.deployments import PREFECT_YAML, apply_to_work_pool, deployment_specs

    known = [spec["name"] for spec in deployment_specs(PREFECT_YAML)]
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise DeployError(
            f"no deployment named {', '.join(unknown)} in {PREFECT_YAML.name} "
            f"(it has: {', '.join(known)})"
        )

    async def run() -> list[str]:
        async with get_client() as client:
            try:
                await client.read_work_pool(pool)
            except ObjectNotFound:
                raise DeployError(
                    f"work pool {pool!r} does not exist on {client.api_url}: create it with "
                    f"`prefect work-pool create {pool} --type process`"
                ) from None
        ids = await apply_to_work_pool(pool, names=names)
        return [f"{n}: deployment {i} on work pool {pool}" for n, i in ids.items()]

    return asyncio.run(run())
