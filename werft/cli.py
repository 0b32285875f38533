"""The `werft` command line. Commands are thin: parse, call the module that does the work,
print, exit. Exit codes: 0 success, 1 the thing checked is not fine (invalid inventory,
cluster not Verified), 2 usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer

if TYPE_CHECKING:
    from werft.inventory.resolved import Inventory

app = typer.Typer(
    name="werft",
    help="Provision and keep in shape a fleet of Kubernetes clusters from Git, with Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
inventory_app = typer.Typer(help="Inspect and generate fleet inventories.", no_args_is_help=True)
sim_app = typer.Typer(help="The fleet simulator: emulated BMCs and Kubernetes APIs.",
                      no_args_is_help=True)
secret_app = typer.Typer(help="The local secret store (.werft/secrets).", no_args_is_help=True)
app.add_typer(inventory_app, name="inventory")
app.add_typer(sim_app, name="sim")
app.add_typer(secret_app, name="secret")


def main() -> None:
    app()


# --- inventory (werft.inventory) -------------------------------------------------------
# Commands: `werft validate`, `werft inventory show`, `werft inventory generate`.
# Heavy imports (pandas) happen inside the commands so `werft --help` stays quick.

_PATH_ARG = typer.Argument(Path("inventory"), help="The inventory folder.")
_GIT_REF = typer.Option(None, "--git-ref", help="Read the folder at this Git revision "
                        "(blobs only: no checkout).")
_REPO = typer.Option(None, "--repo", help="The Git repository (default: the one holding PATH).")


def _load_or_exit(path: Path, git_ref: str | None, repo: Path | None) -> Inventory:
    """The validated inventory, or print the problems and exit 1 (2 for usage errors)."""
    from werft.errors import InventoryError
    from werft.inventory import InventoryNotFound, load_inventory

    if repo is not None and git_ref is None:
        raise typer.BadParameter("--repo is only used with --git-ref", param_hint="--repo")
    try:
        return load_inventory(path, git_ref=git_ref, repo=repo)
    except InventoryNotFound as exc:
        typer.echo(f"werft: {exc}", err=True)
        raise typer.Exit(2) from None
    except InventoryError as exc:
        for problem in exc.problems:
            typer.echo(str(problem))
        typer.echo(f"{len(exc.problems)} problem(s) in {path}", err=True)
        raise typer.Exit(1) from None


@app.command("validate")
def validate_command(
    path: Path = _PATH_ARG,
    git_ref: str | None = _GIT_REF,
    repo: Path | None = _REPO,
    output: Literal["text", "json"] = typer.Option("text", "--output", "-o"),
) -> None:
    """Check the inventory and report every problem at once (exit 0 valid, 1 invalid)."""
    import json
    import time

    from werft.inventory import InventoryNotFound
    from werft.inventory.load import check_inventory
    from werft.inventory.show import summary_line

    if repo is not None and git_ref is None:
        raise typer.BadParameter("--repo is only used with --git-ref", param_hint="--repo")
    started = time.perf_counter()
    try:
        result = check_inventory(path, git_ref=git_ref, repo=repo)
    except InventoryNotFound as exc:
        typer.echo(f"werft: {exc}", err=True)
        raise typer.Exit(2) from None
    seconds = time.perf_counter() - started
    if output == "json":
        # stdout is the list of problems (empty when valid); the summary goes to stderr
        typer.echo(json.dumps([p.as_dict() for p in result.problems], indent=2))
        if result.valid:
            typer.echo(
                json.dumps(
                    {
                        "valid": True,
                        "sites": result.sites,
                        "clusters": result.clusters,
                        "machines": result.machines,
                    }
                ),
                err=True,
            )
    elif result.problems:
        for problem in result.problems:
            typer.echo(str(problem))
    else:
        typer.echo(summary_line(result, seconds))
    if result.problems:
        typer.echo(f"{len(result.problems)} problem(s) in {result.origin}", err=True)
        raise typer.Exit(1)


@inventory_app.command("show")
def inventory_show(
    path: Path = _PATH_ARG,
    git_ref: str | None = _GIT_REF,
    repo: Path | None = _REPO,
    limit: int = typer.Option(25, "--limit", min=0, help="Rows of the cluster and machine "
                              "tables."),
    show_all: bool = typer.Option(False, "--all", help="Every cluster and machine."),
) -> None:
    """The fleet as tables: sites per tier and region, clusters, machines."""
    from rich.console import Console

    from werft.inventory.show import render

    inventory = _load_or_exit(path, git_ref, repo)
    render(inventory, Console(), limit=None if show_all else limit)


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
        raise typer.Exit(2) from None
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
        raise typer.Exit(2) from None
    _load_or_exit(inventory, None, None)  # validation problems print as for `werft validate`
    options = SimOptions(time_scale=time_scale, faults_file=faults,
                         artifacts_dir=artifacts_dir, default_credentials=creds)
    try:
        sim = load_app(inventory, options)
    except (PermanentError, FaultRuleError, OSError) as exc:
        typer.echo(f"werft: {exc}", err=True)
        raise typer.Exit(2) from None
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
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        typer.echo(f"werft: cannot reach the simulator at {url}: {exc}", err=True)
        raise typer.Exit(1) from None


# --- secrets (werft.secrets) -----------------------------------------------------------
# Commands: `werft secret set`.


@secret_app.command("set")
def secret_set(
    name: str = typer.Argument(..., help="The reference, e.g. bmc-fra1."),
    value: str | None = typer.Option(None, "--value", help="The value (default: read stdin, "
                                     "so it stays out of shell history)."),
) -> None:
    """Store a secret in the local store (file mode 0600); the value is never printed."""
    import sys

    from werft.secrets import SecretStore

    if value is None:
        if sys.stdin.isatty():
            value = typer.prompt(f"value for {name}", hide_input=True)
        else:
            value = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not value:
        typer.echo("werft: the secret value is empty", err=True)
        raise typer.Exit(2)
    store = SecretStore()
    try:
        store.put(name, value)
    except ValueError as exc:
        typer.echo(f"werft: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"stored secret {name} in {store.root}")


# --- provisioning (flows/) -------------------------------------------------------------
# Commands: `werft provision`, `werft serve`.
# The Prefect shell lives in flows/ (werft/ never imports Prefect at module level): the
# commands import it when they run.


@app.command("provision")
def provision_command(
    path: Path = _PATH_ARG,
    git_ref: str | None = _GIT_REF,
    repo: Path | None = _REPO,
    cluster: list[str] = typer.Option([], "--cluster", "-c", help="Only this cluster "
                                      "(repeatable)."),
    site: list[str] = typer.Option([], "--site", "-s", help="Only clusters of this site."),
    tier: list[str] = typer.Option([], "--tier", "-t", help="Only this tier: core, "
                                   "near-edge, edge."),
    label: list[str] = typer.Option([], "--label", "-l", metavar="KEY=VALUE",
                                    help="Only clusters with this label."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Observe and plan; change nothing."),
    via_api: bool = typer.Option(False, "--via-api", help="Create a run of the provision-fleet "
                                 "deployment through the Prefect REST API and follow it."),
    api_url: str | None = typer.Option(None, "--api-url", help="Prefect API (default: "
                                       "PREFECT_API_URL)."),
    timeout: float = typer.Option(3600, "--timeout", help="--via-api: seconds to wait."),
    time_scale: float = typer.Option(1.0, "--time-scale", min=0.001, help="The simulator's "
                                     "time scale: divides stage deadlines."),
    report: Path | None = typer.Option(None, "--report", help="Write a JSON summary here."),
    full: bool = typer.Option(False, "--full", help="Print every cluster's row."),
) -> None:
    """Provision the fleet (or the selection) in waves; exit 0 iff every cluster is Verified."""
    import os

    from pydantic import ValidationError

    # Without PREFECT_API_URL Prefect starts an ephemeral server; on a busy machine it needs
    # more than its default 20 s (set before Prefect is imported: it reads settings then).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    from flows import commands
    from flows.models import ProvisionRequest

    labels = dict(item.partition("=")[::2] for item in label)
    try:
        request = ProvisionRequest.model_validate({
            "inventory": str(path), "repo": str(repo) if repo else None, "git_ref": git_ref,
            "selector": {"clusters": cluster, "sites": site, "tiers": tier, "labels": labels},
            "dry_run": dry_run, "time_scale": time_scale,
        })
    except ValidationError as exc:
        typer.echo(f"werft: {exc}", err=True)
        raise typer.Exit(2) from None
    if via_api:
        code = commands.provision_via_api(request, api_url=api_url, timeout_s=timeout, full=full)
    else:
        code = commands.provision(request, report=report, full=full)
    raise typer.Exit(code)


@app.command("serve")
def serve_command(
    limit: int | None = typer.Option(None, "--limit", help="Flow runs at once."),
    time_scale: float = typer.Option(1.0, "--time-scale", min=0.001, help="Default for "
                                     "runs against the simulator (its --time-scale)."),
) -> None:
    """Serve the deployments of deployments/prefect.yaml (UI, API, drift-check schedule)."""
    from flows import commands

    commands.serve(limit=limit, time_scale=time_scale)


if __name__ == "__main__":
    main()
