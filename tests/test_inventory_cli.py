"""`werft validate`, `werft inventory show|generate`, `werft secret set`: output and exit codes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner

from tests.inventoryfixtures import SmallFleet
from werft.cli import app

runner = CliRunner()


@pytest.fixture
def fleet(tmp_path: Path) -> SmallFleet:
    return SmallFleet(tmp_path / "inv")


def test_validate_valid_inventory_exits_0_with_a_summary(fleet: SmallFleet) -> None:
    result = runner.invoke(app, ["validate", str(fleet.root)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.stdout
    assert "sites: 1 core, 0 near-edge, 3 edge; 5 clusters, 7 machines" in result.stdout


def test_validate_invalid_inventory_exits_1_and_lists_every_problem(fleet: SmallFleet) -> None:
    fleet.edit("sites/fra1.yaml", '"02:00:00:00:01:02"', '"52:54:00:zz:00:01"')
    fleet.edit("edge-sites.csv", "48.8566", "91")
    result = runner.invoke(app, ["validate", str(fleet.root)])
    assert result.exit_code == 1
    line = fleet.line("sites/fra1.yaml", "zz")
    assert (
        f"{fleet.file('sites/fra1.yaml')}:{line}: spec.machines[1].bootMACAddress: "
        "'52:54:00:zz:00:01' is not a MAC address (fix: six hex pairs separated by ':', "
        "e.g. 52:54:00:12:34:56)"
    ) in result.stdout
    assert f"{fleet.file('edge-sites.csv')}:2: latitude: '91' is not a latitude" in result.stdout


def test_validate_json_output_is_a_list_of_problems(fleet: SmallFleet) -> None:
    fleet.edit("edge-sites.csv", "02:00:00:00:02:03", "02:00:00:00:02:01")
    result = runner.invoke(app, ["validate", str(fleet.root), "--output", "json"])
    assert result.exit_code == 1
    problems = json.loads(result.stdout)
    assert problems == [
        {
            "file": fleet.file("edge-sites.csv"),
            "line": 4,
            "field": "boot_mac",
            "message": f"boot MAC '02:00:00:00:02:01' is also used at "
            f"{fleet.file('edge-sites.csv')}:2",
            "fix": "every machine has its own NIC; fix the MAC of one of them",
            "severity": "error",
        }
    ]


def test_validate_json_output_of_a_valid_inventory_is_an_empty_list(fleet: SmallFleet) -> None:
    result = runner.invoke(app, ["validate", str(fleet.root), "-o", "json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "/nonexistent/inventory"],
        ["validate", "--output", "yaml"],
        ["validate", "--no-such-option"],
        ["inventory", "show", "/nonexistent/inventory"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output


def test_validate_a_git_revision(tmp_path: Path) -> None:
    repo = git.Repo.init(tmp_path / "repo")
    small = SmallFleet(tmp_path / "repo" / "inventory")
    repo.git.add(A=True)
    actor = git.Actor("t", "t@werft.invalid")
    repo.index.commit("fleet", author=actor, committer=actor)
    small.edit("fleet.yaml", "kind: Fleet", "kind: Fleat")  # uncommitted breakage
    work = str(tmp_path / "repo")
    assert runner.invoke(app, ["validate", "inventory", "--repo", work]).exit_code == 2
    at_head = runner.invoke(app, ["validate", "inventory", "--git-ref", "HEAD", "--repo", work])
    assert at_head.exit_code == 0, at_head.output
    assert "@HEAD: valid" in at_head.stdout
    on_disk = runner.invoke(app, ["validate", str(small.root)])
    assert on_disk.exit_code == 1
    missing = runner.invoke(app, ["validate", "inventory", "--git-ref", "nope", "--repo", work])
    assert missing.exit_code == 2


def test_show_prints_tables_and_summarises_big_fleets(fleet: SmallFleet) -> None:
    result = runner.invoke(
        app, ["inventory", "show", str(fleet.root), "--limit", "2"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "Sites by tier and region" in result.stdout
    assert "2 of 5 shown" in result.stdout  # clusters
    assert "2 of 7 shown" in result.stdout  # machines
    assert "fra1-a" in result.stdout and "edge-003" not in result.stdout
    everything = runner.invoke(
        app, ["inventory", "show", str(fleet.root), "--all"], env={"COLUMNS": "200"}
    )
    assert "edge-003-n0" in everything.stdout and "shown" not in everything.stdout


def test_show_of_an_invalid_inventory_exits_1(fleet: SmallFleet) -> None:
    fleet.edit("fleet.yaml", '1.31.4"]', '1.31.4"]\n  bogus: 1')
    result = runner.invoke(app, ["inventory", "show", str(fleet.root)])
    assert result.exit_code == 1
    assert "spec.bogus: unknown field 'bogus'" in result.stdout


def test_generate_writes_a_valid_fleet(tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    result = runner.invoke(
        app,
        [
            "inventory",
            "generate",
            str(out),
            "--edge-sites",
            "20",
            "--seed",
            "7",
            "--core-sites",
            "2",
            "--near-edge-sites",
            "3",
            "--endpoint",
            "http://127.0.0.1:9999",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "edge-sites.csv").read_text().count("\n") == 21
    validated = runner.invoke(app, ["validate", str(out)])
    assert validated.exit_code == 0, validated.output
    assert "2 core, 3 near-edge, 20 edge" in validated.stdout
    assert "127.0.0.1:9999/bmc/" in (out / "sites" / "fra1.yaml").read_text()


def test_generate_rejects_a_bad_endpoint(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["inventory", "generate", str(tmp_path / "f"), "--endpoint", "ftp://x"]
    )
    assert result.exit_code == 2


def test_secret_set_from_option_and_stdin_never_prints_the_value(tmp_path: Path) -> None:
    env = {"WERFT_HOME": str(tmp_path / "home")}
    result = runner.invoke(app, ["secret", "set", "bmc-fra1", "--value", "admin:hunter2"], env=env)
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    stored = tmp_path / "home" / "secrets" / "bmc-fra1"
    assert stored.read_text() == "admin:hunter2"
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600

    result = runner.invoke(app, ["secret", "set", "bmc-ams1"], input="root:calvin\n", env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "home" / "secrets" / "bmc-ams1").read_text() == "root:calvin"
    assert "calvin" not in result.output


def test_secret_set_rejects_bad_names_and_empty_values(tmp_path: Path) -> None:
    env = {"WERFT_HOME": str(tmp_path / "home")}
    assert runner.invoke(app, ["secret", "set", "../etc", "--value", "x"], env=env).exit_code == 2
    assert runner.invoke(app, ["secret", "set", "ok", "--value", ""], env=env).exit_code == 2
