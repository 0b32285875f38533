"""The `werft` command line. Commands are thin: parse, call the module that does the work,
print, exit. Exit codes (``werft.exitcodes.ExitCode``): 0 success, 1 the thing checked is not
fine (invalid inventory, cluster not Verified), 2 usage error.

Every inventory problem is printed the same way by every command (``file:line: field:
message (fix: ...)``), so `werft provision` says what `werft validate` would.
"""

from __future__ import annotations

import difflib
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from werft.exitcodes import ExitCode
from werft.inventory.model import Tier

if TYPE_CHECKING:
    from pydantic import ValidationError

    from werft.errors import Problem
    from werft.inventory.resolved import Inventory
    from werft.inventory.selection import Selection

# Plain click output (rich_markup_mode=None): a bad option is reported as one "Error: ..."
# line that `grep` and CI logs keep whole, instead of a rich box folded at 80 columns.
app = typer.Typer(
    name="werft",
    help="Provision and keep in shape a fleet of Kubernetes clusters from Git, with Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
inventory_app = typer.Typer(help="Inspect and generate fleet inventories.",
                            no_args_is_help=True, rich_markup_mode=None)
sim_app = typer.Typer(help="The fleet simulator: emulated BMCs and Kubernetes APIs.",
                      no_args_is_help=True, rich_markup_mode=None)
secret_app = typer.Typer(help="The local secret store (.werft/secrets).",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(inventory_app, name="inventory")
app.add_typer(sim_app, name="sim")
app.add_typer(secret_app, name="secret")
drift_app = typer.Typer(help="Drift: check the fleet against the inventory; accept findings.",
                        invoke_without_command=True, rich_markup_mode=None)
app.add_typer(drift_app, name="drift")


def main() -> None:
    app()


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"


def _choice(values: Iterable[str]) -> Callable[[str], str]:
    """A parser that accepts one of ``values`` and otherwise says so in one line (exit 2)."""
    allowed = [str(v) for v in values]

    def parse(value: str) -> str:
        if value not in allowed:
            close = difflib.get_close_matches(value, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            listing = ", ".join(repr(a) for a in allowed)
            raise typer.BadParameter(f"{value!r} is not one of {listing}{hint}")
        return value

    return parse


def _fail(message: str, code: ExitCode = ExitCode.USAGE) -> NoReturn:
    """One line on stderr, then exit (a usage error unless said otherwise)."""
    typer.echo(f"werft: {message}", err=True)
    raise typer.Exit(code)


# --- inventory (werft.inventory) -------------------------------------------------------
# Commands: `werft validate`, `werft inventory show`, `werft inventory generate`.
# Heavy imports (pandas) happen inside the commands so `werft --help` stays quick.

_PATH_ARG = typer.Argument(Path("inventory"), help="The inventory folder.")
_GIT_REF = typer.Option(None, "--git-ref", help="Read the folder at this Git revision "
                        "(blobs only: no checkout).")
_REPO = typer.Option(None, "--repo", help="The Git repository (default: the one holding PATH).")
_OUTPUT = typer.Option(Output.TEXT.value, "--output", "-o", parser=_choice(Output),
                       help="text for people, json for machines.")


def _check_repo_option(git_ref: str | None, repo: Path | None) -> None:
    if repo is not None and git_ref is None:
        _fail("--repo is only used with --git-ref (give --git-ref REF, or drop --repo)")


def _tally(problems: Sequence[Problem]) -> str:
    errors = sum(1 for p in problems if p.is_error)
    warnings = len(problems) - errors
    parts = [f"{errors} error(s)"] if errors else []
    parts += [f"{warnings} warning(s)"] if warnings else []
    return ", ".join(parts) or "no problems"


def _print_problems(problems: Sequence[Problem], *, err: bool = False) -> None:
    for problem in problems:
        typer.echo(str(problem), err=err)


def _load_or_exit(
    path: Path, git_ref: str | None, repo: Path | None, *, strict: bool = False
) -> Inventory:
    """The validated inventory, or print every problem as `werft validate` does and exit 1
    (2 when the folder or revision does not exist). Warnings go to stderr and do not stop."""
    from werft.errors import InventoryError
    from werft.inventory import InventoryNotFound, load_inventory

    _check_repo_option(git_ref, repo)
    try:
        inventory = load_inventory(path, git_ref=git_ref, repo=repo, strict=strict)
    except InventoryNotFound as exc:
        _fail(str(exc))
    except InventoryError as exc:
        _print_problems(exc.problems)
        _fail(f"{_tally(exc.problems)} in {path}; nothing touched "
              f"(`werft validate {path}` shows the same)", ExitCode.NOT_FINE)
    _print_problems(inventory.warnings, err=True)
    return inventory


@app.command("validate")
def validate_command(
    path: Path = _PATH_ARG,
    git_ref: str | None = _GIT_REF,
    repo: Path | None = _REPO,
    output: str = _OUTPUT,
    strict: bool = typer.Option(False, "--strict", help="Treat warnings as errors."),
) -> None:
    """Check the inventory and report every problem at once (exit 0 valid, 1 invalid).

    Warnings (e.g. credentials sent over plain http://) are printed but leave the inventory
    valid, unless --strict."""
    import json

    from werft.inventory import InventoryNotFound
    from werft.inventory.load import check_inventory
    from werft.inventory.show import summary_line

    _check_repo_option(git_ref, repo)
    started = time.perf_counter()
    try:
        result = check_inventory(path, git_ref=git_ref, repo=repo, strict=strict)
    except InventoryNotFound as exc:
        _fail(str(exc))
    seconds = time.perf_counter() - started
    if output == Output.JSON:
        # stdout is the list of problems (empty when clean); the summary goes to stderr
        typer.echo(json.dumps([p.as_dict() for p in result.problems], indent=2))
        if result.valid:
            summary = {
                "valid": True,
                "sites": result.sites,
                "clusters": result.clusters,
                "machines": result.machines,
            }
            typer.echo(json.dumps(summary), err=True)
    else:
        _print_problems(result.problems)
        if result.valid:
            typer.echo(summary_line(result, seconds))
    if result.problems:
        typer.echo(f"{_tally(result.problems)} in {result.origin}", err=True)
    if not result.valid:
        raise typer.Exit(ExitCode.NOT_FINE)


@inventory_app.command("show")
def inventory_show(
    path: Path = _PATH_ARG,
    git_ref: str | None = _GIT_REF,
    repo: Path | None = _REPO,
    limit: int = typer.Option(25, "--limit", min=0, help="Rows of the cluster and machine "
                              "tables."),
    show_all: bool = typer.Option(False, "--all", help="Every cluster and machine."),
    output: str = _OUTPUT,
) -> None:
    """The fleet as tables: sites per tier and region, clusters, machines."""
    import json

    from rich.console import Console

    from werft.inventory.show import as_json, render

    inventory = _load_or_exit(path, git_ref, repo)
    rows = None if show_all else limit
    if output == Output.JSON:
        typer.echo(json.dumps(as_json(inventory, limit=rows), indent=2))
    else:
        render(inventory, Console(), limit=rows)


@inventory_app.command("generate")
def inventory_generate(
    out: Path = typer.Argument(..., help="Folder to write the fleet into."),
    edge_sites: int = typer.Option(300, "--edge-sites", min=0),
    seed: int = typer.Option(1, "--seed"),
    core_sites: int = typer.Option(3, "--core-sites", min=0),
    near_edge_sites: int = typer.Option(12, "--near-edge-sites", min=0),
    endpoint: str = typer.Option("http://127.0.0.1:8686", "--endpoint",
                                 help="The simulator (BMCs, hypervisor, cluster APIs)."),
    addons_from: Path | None = typer.Option(None, "--addons-from",
                                            help="AddonSets to copy (default: inventory/addons)."),
) -> None:
    """Write a deterministic fleet (same seed, same bytes) for tests and scale work."""
    from werft.inventory.generate import write_fleet

    try:
        write_fleet(out, edge_sites=edge_sites, seed=seed, core_sites=core_sites,
                    near_edge_sites=near_edge_sites, endpoint=endpoint, addons_from=addons_from)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"werft: {exc}", err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    typer.echo(f"wrote {core_sites} core, {near_edge_sites} near-edge and {edge_sites} edge "
               f"sites to {out}")


# --- simulator (werft.sim) -------------------------------------------------------------
# Commands: `werft sim serve`, `werft sim kubeconfig`.


@sim_app.command("serve")
def sim_serve(
    inventory: Path = typer.Option(..., "--inventory", help="The inventory folder to simulate."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8686, "--port", min=0, max=65535),
    tls_port: int | None = typer.Option(
        None,
        "--tls-port",
        min=0,
        max=65535,
        help="HTTPS listener for kubectl, which sends tokens only over TLS "
        "(default: --port + 1; 0: none).",
    ),
    time_scale: float = typer.Option(
        1.0, "--time-scale", min=0.001, help="60 makes a 4-minute install take 4 seconds."
    ),
    faults: Path | None = typer.Option(None, "--faults", help="Fault rules (YAML or JSON)."),
    artifacts_dir: Path | None = typer.Option(None, "--artifacts-dir",
                                              help="Served read-only at /artifacts/."),
    default_credentials: str | None = typer.Option(
        None, "--default-credentials", metavar="USER:PASS",
        help="BMC credentials for credentialsRefs that resolve to nothing."),
) -> None:
    """Serve every machine's BMC and every cluster's Kubernetes API of an inventory."""
    from werft.errors import PermanentError
    from werft.sim.faults import FaultRuleError
    from werft.sim.fleetspec import parse_credentials
    from werft.sim.server import SimOptions, load_app, serve

    try:
        creds = parse_credentials(default_credentials) if default_credentials else None
    except ValueError as exc:
        typer.echo(f"werft: --default-credentials: {exc}", err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    _load_or_exit(inventory, None, None)  # validation problems print as for `werft validate`
    options = SimOptions(time_scale=time_scale, faults_file=faults,
                         artifacts_dir=artifacts_dir, default_credentials=creds)
    try:
        sim = load_app(inventory, options)
    except (PermanentError, FaultRuleError, OSError) as exc:
        typer.echo(f"werft: {exc}", err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    if tls_port is None:
        tls_port = port + 1 if 0 < port < 65535 else 0
    https = f", kubectl: https://{host}:{tls_port}" if tls_port else ""
    typer.echo(
        f"werft sim: {len(sim.fleet.bmcs)} BMCs, {len(sim.fleet.domains)} VMs, "
        f"{len(sim.fleet.registry)} clusters on http://{host}:{port}{https} "
        f"(time scale {time_scale:g})",
        err=True,
    )
    serve(sim, host=host, port=port, tls_port=tls_port or None)


@sim_app.command("kubeconfig")
def sim_kubeconfig(
    cluster: str = typer.Argument(..., help="The simulated cluster."),
    url: str = typer.Option("http://127.0.0.1:8686", "--url", help="The running simulator."),
) -> None:
    """Print an admin kubeconfig for a simulated cluster (kubectl --kubeconfig ...)."""
    import httpx

    from werft.sim.server import fetch_kubeconfig

    try:
        typer.echo(fetch_kubeconfig(url, cluster), nl=False)
    except LookupError as exc:
        typer.echo(f"werft: {exc}", err=True)
        raise typer.Exit(ExitCode.NOT_FINE) from None
    except httpx.HTTPError as exc:
        typer.echo(f"werft: cannot reach the simulator at {url}: {exc}", err=True)
        raise typer.Exit(ExitCode.NOT_FINE) from None


# --- secrets (werft.secrets) -----------------------------------------------------------
# Commands: `werft secret set`, `werft secret new-store-key`, `werft secret seal`.


@secret_app.command("set")
def secret_set(
    name: str = typer.Argument(..., help="The reference, e.g. bmc-fra1."),
    value: str | None = typer.Option(None, "--value", help="The value (default: read stdin, "
                                     "so it stays out of shell history)."),
) -> None:
    """Store a secret in the secret store (``$WERFT_HOME/secrets``, file mode 0600, or the
    SQL store of ``WERFT_STORE_URL``); the value is never printed."""
    from werft.secrets import SecretStore

    if value is None:
        if sys.stdin.isatty():
            value = typer.prompt(f"value for {name}", hide_input=True)
        else:
            value = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not value:
        typer.echo("werft: the secret value is empty", err=True)
        raise typer.Exit(ExitCode.USAGE)
    store = SecretStore()
    try:
        store.put(name, value)
    except ValueError as exc:
        typer.echo(f"werft: {exc}", err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    typer.echo(f"stored secret {name} in {store.where}")


@secret_app.command("new-store-key")
def secret_new_store_key() -> None:
    """Print a fresh key for WERFT_STORE_KEY (sealing the store's values at rest, see
    werft/sealing.py): keep it in your secret manager, give it to every worker."""
    from werft.sealing import new_store_key

    typer.echo(new_store_key())


@secret_app.command("seal")
def secret_seal() -> None:
    """Seal with the first key of WERFT_STORE_KEY every value of the secret store that is
    not: written before the key was set, or sealed with a key being rotated out (werft
    seals what it writes). Run it while no werft run uses the store."""
    from werft.errors import WerftError
    from werft.sealing import SealedBackend
    from werft.secrets import SecretStore

    try:
        store = SecretStore()
        if not isinstance(store.backend, SealedBackend):  # werft.statestore seals it always
            _fail(f"the secret store {store.where} has no sealing layer")
        sealed, already = store.backend.seal_all()
    except WerftError as exc:
        _fail(str(exc))
    typer.echo(f"sealed {sealed} value(s) in {store.where}; {already} were sealed with "
               "this key already")


# --- provisioning (flows/) -------------------------------------------------------------
# Commands: `werft provision`, `werft serve`.
# The Prefect shell lives in flows/ (werft/ never imports Prefect at module level): the
# commands import it when they run.


# The selection, the same for every command that works on part of the fleet.
_CLUSTER_OPT = typer.Option([], "--cluster", "-c", help="Only this cluster (repeatable).")
_SITE_OPT = typer.Option([], "--site", "-s", help="Only clusters of this site.")
_TIER_OPT = typer.Option([], "--tier", "-t", parser=_choice(Tier), help="Only this tier.")
_LABEL_OPT = typer.Option(
    [], "--label", "-l", metavar="KEY=VALUE", help="Only clusters with this label."
)


@app.command("provision")
def provision_command(
    path: Path = _PATH_ARG,
    git_ref: str | None = _GIT_REF,
    repo: Path | None = _REPO,
    cluster: list[str] = _CLUSTER_OPT,
    site: list[str] = _SITE_OPT,
    tier: list[str] = _TIER_OPT,
    label: list[str] = _LABEL_OPT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Observe and plan; change nothing."),
    via_api: bool = typer.Option(False, "--via-api", help="Create a run of the provision-fleet "
                                 "deployment through the Prefect REST API and follow it."),
    api_url: str | None = typer.Option(None, "--api-url", help="Prefect API (default: "
                                       "PREFECT_API_URL)."),
    timeout: float = typer.Option(3600, "--timeout", min=0, help="--via-api: seconds to wait."),
    time_scale: float = typer.Option(1.0, "--time-scale", min=0.001, help="The simulator's "
                                     "time scale: divides stage deadlines."),
    report: Path | None = typer.Option(None, "--report", help="Write a JSON summary here."),
    full: bool = typer.Option(False, "--full", help="Print every cluster's row."),
    output: str = _OUTPUT,
) -> None:
    """Provision the fleet (or the selection) in waves; exit 0 iff every cluster is Verified.

    The inventory and the selection are checked here first, before Prefect starts: every
    problem is printed as `werft validate` prints it (exit 1), an unknown name or a
    selection that matches nothing is a usage error (exit 2)."""
    import os

    from pydantic import ValidationError

    from werft.inventory.selection import Selection, SelectionError, parse_labels

    if via_api and output == Output.JSON:
        _fail("--output json needs a run in this process; with --via-api, read the run's "
              "werft-fleet artifact (GET /api/artifacts/filter)")
    try:
        selection = Selection(clusters=cluster, sites=site, tiers=[Tier(t) for t in tier],
                              labels=parse_labels(label))
    except SelectionError as exc:
        _fail(str(exc))
    _preflight(path, git_ref, repo, selection, remote=via_api)

    # Without PREFECT_API_URL Prefect starts an ephemeral server; on a busy machine it needs
    # more than its default 20 s (set before Prefect is imported: it reads settings then).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    from flows import commands
    from flows.models import ProvisionRequest

    try:
        request = ProvisionRequest.model_validate({
            "inventory": str(path), "repo": str(repo) if repo else None, "git_ref": git_ref,
            "selector": {"clusters": cluster, "sites": site, "tiers": tier,
                         "labels": selection.labels},
            "dry_run": dry_run, "time_scale": time_scale,
        })
    except ValidationError as exc:
        _fail("; ".join(option_errors(exc)))
    if via_api:
        code = commands.provision_via_api(request, api_url=api_url, timeout_s=timeout, full=full)
    else:
        code = commands.provision(request, report=report, full=full, output=output)
    raise typer.Exit(code)


def _preflight(
    path: Path, git_ref: str | None, repo: Path | None, selection: Selection, *, remote: bool
) -> None:
    """Check the inventory and the selection before any run exists.

    For --via-api the run reads the inventory where the worker runs; when this machine
    cannot see it, the check is left to the run."""
    from werft.inventory import InventoryNotFound
    from werft.inventory.selection import selection_problems
    from werft.inventory.tree import open_tree

    _check_repo_option(git_ref, repo)
    if remote:
        try:
            open_tree(path, git_ref=git_ref, repo=repo).close()
        except InventoryNotFound:
            return
    inventory = _load_or_exit(path, git_ref, repo)
    problems = selection_problems(inventory, selection)
    if problems:
        for problem in problems[:-1]:
            typer.echo(f"werft: {problem}", err=True)
        _fail(problems[-1])


def option_errors(exc: ValidationError) -> list[str]:
    """One short line per invalid option, without pydantic's model dump."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"{where}: {error['msg']}")
    return lines


# --- drift (werft/drift) ------------------------------------------------------------------

_INVENTORY_OPT = typer.Option(Path("inventory"), "--inventory", "-i", help="The inventory folder.")


@drift_app.callback()
def drift_command(
    ctx: typer.Context,
    inventory: Path = _INVENTORY_OPT,
    git_ref: str | None = _GIT_REF,
    repo: Path | None = _REPO,
    cluster: list[str] = _CLUSTER_OPT,
    site: list[str] = _SITE_OPT,
    tier: list[str] = _TIER_OPT,
    label: list[str] = _LABEL_OPT,
    concurrency: int = typer.Option(32, "--concurrency", min=1, help="Clusters at once."),
    deadline: float = typer.Option(30.0, "--deadline", min=0.1, help="Seconds per cluster."),
    limit: int = typer.Option(50, "--limit", min=1, help="Rows per table."),
    output: str = _OUTPUT,
) -> None:
    """Check the fleet (or the selection) against the inventory, read-only: finding groups
    by reach, then the clusters. Exit 0 in shape, 3 drift found, 1 clusters not checkable."""
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    from rich.console import Console

    from werft.drift.console import print_report
    from werft.drift.run import check_fleet
    from werft.inventory.selection import Selection, SelectionError, parse_labels
    from werft.secrets import werft_home

    try:
        selection = Selection(clusters=cluster, sites=site, tiers=[Tier(t) for t in tier],
                              labels=parse_labels(label))
    except SelectionError as exc:
        _fail(str(exc))
    from werft.inventory.selection import selection_problems

    loaded = _load_or_exit(inventory, git_ref, repo)
    problems = selection_problems(loaded, selection)
    if problems:
        _fail("; ".join(problems))
    chosen = loaded.select(clusters=cluster or None, sites=site or None,
                           tiers=[Tier(t) for t in tier] or None,
                           labels=selection.labels or None)
    source = f"{repo or '.'}@{git_ref}:{inventory}" if git_ref else str(inventory)
    report = asyncio.run(check_fleet(loaded, chosen, home=werft_home(), source=source,
                                     concurrency=concurrency, deadline_s=deadline))
    print_report(Console(), report, output=output, limit=limit)
    raise typer.Exit(report.exit_code())


@drift_app.command("accept")
def drift_accept(
    finding: str = typer.Argument(..., help="The finding group's id (d-...) from the report."),
    inventory: Path = _INVENTORY_OPT,
    patch: Path | None = typer.Option(None, "--patch", help="Write the change as a patch "
                                      "file (git apply) instead of a branch."),
    branch: str | None = typer.Option(None, "--branch", help="The Git branch to commit it on "
                                      "(default werft/drift-accept-ID)."),
) -> None:
    """Make the live state of a finding the desired one: the inventory change, validated,
    as a Git branch (for a pull request) or a patch file. Nothing is applied to clusters."""
    from werft.drift.accept import AcceptError, accept
    from werft.secrets import werft_home

    try:
        done = accept(finding, inventory, home=werft_home(), patch=patch, branch=branch)
    except AcceptError as exc:
        _fail(str(exc), ExitCode.NOT_FINE)
    typer.echo(done)


@app.command("serve")
def serve_command(
    limit: int | None = typer.Option(None, "--limit", help="Flow runs at once."),
    time_scale: float = typer.Option(1.0, "--time-scale", min=0.001, help="Default for "
                                     "runs against the simulator (its --time-scale)."),
) -> None:
    """Serve the deployments of deployments/prefect.yaml (UI, API, drift-check schedule)."""
    from flows import commands

    commands.serve(limit=limit, time_scale=time_scale)



@app.command("deploy")
def deploy_command(
    pool: str = typer.Option(..., "--pool", help="The Prefect work pool (it must exist)."),
    name: list[str] = typer.Option(
        [], "--name", help="Only these deployments (repeatable); default: all of them."
    ),
) -> None:
    """Register deployments/prefect.yaml's deployments with a work pool, for workers on
    other machines (`prefect worker start --pool POOL`); with provision-batch, also the
    automation that marks a batch run Crashed when its worker machine is lost."""
    from flows import commands

    try:
        lines = commands.deploy(pool, name or None)
    except commands.DeployError as exc:
        _fail(str(exc))
    for line in lines:
        typer.echo(line)


# --- changes by pull request (werft.gitops, werft.webhook) -------------------------------
# Commands: `werft plan`, `werft webhook serve`.


@app.command("plan")
def plan_command(
    base: str = typer.Option(..., "--base", help="The target branch or revision (e.g. main)."),
    head: str = typer.Option(..., "--head", help="The pull request's branch or revision."),
    repo: Path = typer.Option(Path("."), "--repo", help="The inventory's Git repository."),
    inventory: str = typer.Option("inventory", "--inventory", help="The inventory folder "
                                  "inside the repository."),
    author: str | None = typer.Option(None, "--author", help="Who asks (default: the head "
                                      "commit's author)."),
    approver: list[str] = typer.Option([], "--approver", help="Who approved (repeatable)."),
    output: str = typer.Option("text", "--output", "-o", parser=_choice(["text", "json",
                               "markdown"]), help="text (tables), json, or markdown (a PR "
                               "comment)."),
    full: bool = typer.Option(False, "--full", help="Every cluster's row."),
) -> None:
    """What merging HEAD into BASE would do: changed objects, per cluster the stages a merge
    runs, rendered manifest diffs, waves, blast radius and policy verdicts.

    Exit 0 allowed, 1 invalid head, 2 usage (unknown revision), 4 denied by policy."""
    import json

    from rich.console import Console

    from werft.gitops.change import plan_change
    from werft.gitops.report import markdown, print_plan
    from werft.inventory import InventoryNotFound

    try:
        plan = plan_change(repo, base, head, inventory=inventory, author=author,
                           approvers=tuple(approver))
    except InventoryNotFound as exc:
        _fail(str(exc))
    if output == "json":
        typer.echo(json.dumps(plan.as_dict(diffs=10_000), indent=2))
    elif output == "markdown":
        typer.echo(markdown(plan))
    else:
        print_plan(Console(), plan, full=full)
    raise typer.Exit(plan.exit_code)


# --- machines (werft.providers.records) --------------------------------------------------
# Commands: `werft machine forget`.

machine_app = typer.Typer(help="Machines: what werft remembers having done to them.",
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(machine_app, name="machine")


@machine_app.command("forget")
def machine_forget(
    name: str = typer.Argument(..., help="The machine, as the inventory names it."),
    inventory: Path = _INVENTORY_OPT,
    yes: bool = typer.Option(False, "--yes", help="Do not ask (required without a terminal)."),
) -> None:
    """Forget that werft installed a machine, once its disk was wiped or its hardware
    replaced (an RMA): the next run installs it afresh.

    werft remembers each machine it saw join its cluster, so that after a power cut it
    powers the machine back on from its disk instead of re-imaging a working node. A
    machine whose disk no longer holds that install would be powered on from an empty
    disk, run after run; this is how to tell werft so. Never needed after a power cut.
    """
    from werft.locks import ClusterLocks
    from werft.providers.records import MachineRecords
    from werft.secrets import SecretStore, werft_home

    loaded = _load_or_exit(inventory, None, None)
    cluster = next(
        (c for c in loaded.clusters.values() if any(m.name == name for m in c.machines)), None
    )
    if cluster is None:
        close = difflib.get_close_matches(
            name, [m.name for c in loaded.clusters.values() for m in c.machines], n=1
        )
        hint = f"; did you mean {close[0]!r}?" if close else ""
        _fail(f"{inventory} has no machine {name!r}{hint}")
    records = MachineRecords(SecretStore())
    joined = records.joined(name)
    if joined is None:
        typer.echo(f"werft holds no install of machine {name} (cluster {cluster.name}) to "
                   "forget: a run installs it if it is not provisioned")
        return
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(joined.at))
    typer.echo(f"machine {name} (cluster {cluster.name}) joined its cluster on {when}, "
               "installed from its seed; once forgotten, the next run re-installs it, "
               "overwriting its disk")
    if not yes:
        if not sys.stdin.isatty():
            _fail("add --yes to forget it (there is no terminal to ask)")
        typer.confirm("forget it?", abort=True)
    locks = ClusterLocks(werft_home(), holder="werft-machine-forget")
    with locks.holding([cluster.name]) as busy:
        if busy:
            holder = locks.holder_of(cluster.name)
            _fail(f"cluster {cluster.name} is being worked on ({holder}); nothing forgotten: "
                  "run this again once that run is done", ExitCode.NOT_FINE)
        records.forget_joined(name)
    typer.echo(f"forgot it; `werft provision {inventory} --cluster {cluster.name}` "
               f"installs {name} afresh")


webhook_app = typer.Typer(help="Receive forge webhooks: plan pull requests, reconcile merges.",
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(webhook_app, name="webhook")


@webhook_app.command("serve")
def webhook_serve(
    repo: Path = typer.Option(..., "--repo", help="The local clone or bare repository plans "
                              "and reconciles read."),
    inventory: str = typer.Option("inventory", "--inventory", help="Inventory folder inside "
                                  "the repository."),
    main_branch: str = typer.Option("main", "--main-branch", help="Pushes here reconcile."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8787, "--port", min=0, max=65535),
    github_secret_ref: str | None = typer.Option(None, "--github-secret-ref", help="Secret "
                                                 "reference of the GitHub webhook secret."),
    gitlab_token_ref: str | None = typer.Option(None, "--gitlab-token-ref", help="Secret "
                                                "reference of the GitLab webhook token."),
    forge_token_ref: str | None = typer.Option(None, "--forge-token-ref", help="Secret "
                                               "reference of the API token for comments."),
    github_api: str = typer.Option("https://api.github.com", "--github-api"),
    gitlab_api: str | None = typer.Option(None, "--gitlab-api", help="Default: from the "
                                          "project's URL in the event."),
    api_url: str | None = typer.Option(None, "--api-url", help="Prefect API (default: "
                                       "PREFECT_API_URL)."),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", min=1024),
) -> None:
    """Serve POST /hooks/github and /hooks/gitlab: a pull request starts a plan-change run,
    a push to the main branch a reconcile run (through the Prefect REST API)."""
    import os

    import uvicorn

    from flows.api import WebhookStarter
    from werft.webhook import WebhookSettings, create_app

    if not (github_secret_ref or gitlab_token_ref):
        _fail("give --github-secret-ref and/or --gitlab-token-ref: unsigned events are "
              "never accepted")
    prefect_api = api_url or os.environ.get("PREFECT_API_URL")
    if not prefect_api:
        _fail("--api-url or PREFECT_API_URL: the receiver starts runs through the Prefect API")
    settings = WebhookSettings(
        repo=str(repo.resolve()), inventory=inventory, main_branch=main_branch,
        github_secret_ref=github_secret_ref, gitlab_token_ref=gitlab_token_ref,
        github_api=github_api, gitlab_api=gitlab_api, forge_token_ref=forge_token_ref,
        max_body_bytes=max_body_bytes,
    )
    typer.echo(f"werft webhook: http://{host}:{port}/hooks/github, /hooks/gitlab -> "
               f"{prefect_api}", err=True)
    uvicorn.run(create_app(settings, WebhookStarter(prefect_api)), host=host, port=port,
                log_level="warning")

if __name__ == "__main__":
    main()
