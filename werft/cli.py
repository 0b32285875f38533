"""The `werft` command line. Commands are thin: parse, call the module that does the work,
print, exit. Exit codes: 0 success, 1 the thing checked is not fine (invalid inventory,
cluster not Verified), 2 usage error.
"""

from __future__ import annotations

import typer

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


# --- simulator (werft.sim) -------------------------------------------------------------
# Commands: `werft sim serve`, `werft sim kubeconfig`.


# --- secrets (werft.secrets) -----------------------------------------------------------
# Commands: `werft secret set`.


# --- provisioning (flows/) -------------------------------------------------------------
# Commands: `werft provision`, `werft serve`.


if __name__ == "__main__":
    main()
