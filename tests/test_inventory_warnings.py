"""Warnings: credentials over plain HTTP are reported, never block loading, unless --strict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.inventoryfixtures import SmallFleet, assert_problem
from werft.cli import app
from werft.errors import InventoryError, Problem, Severity
from werft.exitcodes import ExitCode
from werft.inventory import load_inventory, validate_inventory
from werft.inventory.load import check_inventory
from werft.inventory.plaintext import is_loopback

SITE = "sites/fra1.yaml"
CSV = "edge-sites.csv"
LOOPBACK_BMC = "redfish+http://127.0.0.1:8686/bmc/fra1-a-w0/redfish/v1/Systems/1"
REMOTE_BMC = "redfish+http://10.1.2.3/bmc/fra1-a-w0/redfish/v1/Systems/1"
runner = CliRunner()


@pytest.fixture
def fleet(tmp_path: Path) -> SmallFleet:
    return SmallFleet(tmp_path / "inv")


def warnings_of(fleet: SmallFleet) -> list[Problem]:
    return check_inventory(fleet.root).warnings


def test_loopback_is_exempt_so_the_sample_fleet_is_clean(fleet: SmallFleet) -> None:
    # every BMC and API endpoint of the fixture is http on 127.0.0.1 (the simulator)
    assert check_inventory(fleet.root).problems == []
    assert check_inventory(Path("inventory"), strict=True).problems == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True),
     ("10.1.2.3", False), ("bmc.example", False), (None, False)],
)
def test_loopback_hosts(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_redfish_http_bmc_off_this_machine_is_a_warning_that_does_not_block(
    fleet: SmallFleet,
) -> None:
    fleet.edit(SITE, LOOPBACK_BMC, REMOTE_BMC)
    [warning] = warnings_of(fleet)
    assert warning.severity is Severity.WARNING
    assert_problem(
        warning,
        file=fleet.file(SITE),
        line=fleet.line(SITE, "10.1.2.3"),
        field="spec.machines[1].bmc.address",
        message="BMC credentials would be sent over plain HTTP (redfish+http://) to 10.1.2.3",
        fix="use redfish://",
    )
    assert validate_inventory(fleet.root) == []
    inventory = load_inventory(fleet.root)
    assert inventory.warnings == [warning]
    with pytest.raises(InventoryError) as raised:
        load_inventory(fleet.root, strict=True)
    assert [(p.field, p.severity) for p in raised.value.problems] == [
        ("spec.machines[1].bmc.address", Severity.ERROR)
    ]


def test_https_bmcs_are_fine_anywhere(fleet: SmallFleet) -> None:
    fleet.edit(SITE, LOOPBACK_BMC, REMOTE_BMC.replace("redfish+http://", "redfish://"))
    assert warnings_of(fleet) == []


def test_http_api_endpoints_warn_where_they_are_written(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "https://10.20.0.10:6443", "http://10.20.0.10:6443")
    fleet.edit("fleet.yaml", "http://127.0.0.1:8686/clusters/{cluster}",
               "http://k8s.example/clusters/{cluster}")
    found = {(p.file, p.field): p for p in warnings_of(fleet)}
    assert set(found) == {
        (fleet.file(SITE), "spec.network.controlPlaneEndpoint"),
        (fleet.file("fleet.yaml"), "spec.defaults.apiEndpointTemplate"),
    }
    assert "admin token of cluster 'fra1-b'" in found[fleet.file(SITE), "spec.network."
                                                     "controlPlaneEndpoint"].message


def test_edge_rows_warn_once_per_file_with_the_count(fleet: SmallFleet) -> None:
    for site in ("edge-001", "edge-002"):
        fleet.edit(CSV, f"redfish+http://127.0.0.1:8686/bmc/{site}-n0",
                   f"redfish+http://10.0.0.{site[-1]}/bmc/{site}-n0")
    [warning] = warnings_of(fleet)
    assert (warning.file, warning.line, warning.field) == (fleet.file(CSV), 2, "bmc_address")
    assert warning.message.endswith("to 10.0.0.1 (and 1 more row(s) of this file)")


def test_validate_prints_warnings_exits_0_and_strict_exits_1(fleet: SmallFleet) -> None:
    fleet.edit(SITE, LOOPBACK_BMC, REMOTE_BMC)
    relaxed = runner.invoke(app, ["validate", str(fleet.root)])
    assert relaxed.exit_code == ExitCode.OK, relaxed.output
    line = fleet.line(SITE, "10.1.2.3")
    assert (f"{fleet.file(SITE)}:{line}: warning: spec.machines[1].bmc.address: "
            "BMC credentials would be sent") in relaxed.stdout
    assert ": valid" in relaxed.stdout
    strict = runner.invoke(app, ["validate", "--strict", str(fleet.root)])
    assert strict.exit_code == ExitCode.NOT_FINE
    assert f"{fleet.file(SITE)}:{line}: spec.machines[1].bmc.address: BMC" in strict.stdout
    as_json = runner.invoke(app, ["validate", "-o", "json", str(fleet.root)])
    assert as_json.exit_code == ExitCode.OK
    assert [p["severity"] for p in json.loads(as_json.stdout)] == ["warning"]


def test_provision_shows_warnings_on_stderr_and_goes_on(fleet: SmallFleet) -> None:
    fleet.edit(SITE, LOOPBACK_BMC, REMOTE_BMC)
    # a selection that matches nothing stops it right after the inventory is loaded
    result = runner.invoke(app, ["provision", str(fleet.root), "-l", "env=none"])
    assert result.exit_code == ExitCode.USAGE
    assert "warning: spec.machines[1].bmc.address" in result.stderr
    assert "no cluster in the inventory matches" in result.stderr
