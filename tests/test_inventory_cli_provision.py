"""`werft provision` says what is wrong before anything runs, with the README's exit codes.

Each bad invocation goes through the real CLI (typer's CliRunner, and once the installed
console script in a subprocess): the problem is printed, the exit code is the documented
one, and `werft validate` agrees on both.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import git
import pytest
from click.testing import Result
from rich.console import Console
from typer.testing import CliRunner

from tests.inventoryfixtures import SmallFleet
from werft.cli import app
from werft.exitcodes import ExitCode
from werft.tables import plain_table

runner = CliRunner()
# If a bad invocation ever reached Prefect, it would fail on this address, not exit 2.
NO_PREFECT = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}


@pytest.fixture
def fleet(tmp_path: Path) -> SmallFleet:
    return SmallFleet(tmp_path / "inv")


def provision(*args: str) -> Result:
    return runner.invoke(app, ["provision", *args], env=NO_PREFECT)


def one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    return errors[0]


# --- the inventory ------------------------------------------------------------------------


def test_missing_folder_is_a_usage_error_for_validate_and_provision(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    for command in (["validate", missing], ["provision", missing]):
        result = runner.invoke(app, command, env=NO_PREFECT)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert f"werft: inventory folder {missing} does not exist" in result.stderr


def test_a_file_instead_of_a_folder_is_named_as_such(fleet: SmallFleet) -> None:
    a_file = str(fleet.root / "fleet.yaml")
    for command in (["validate", a_file], ["provision", a_file]):
        result = runner.invoke(app, command, env=NO_PREFECT)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert f"{a_file} is a file, not a folder" in result.stderr


def test_an_invalid_inventory_prints_what_validate_prints_and_exits_1(fleet: SmallFleet) -> None:
    fleet.edit("sites/fra1.yaml", '"02:00:00:00:01:02"', '"52:54:00:zz:00:01"')
    fleet.edit("edge-sites.csv", "48.8566", "91")
    validated = runner.invoke(app, ["validate", str(fleet.root)])
    provisioned = provision(str(fleet.root))
    assert validated.exit_code == provisioned.exit_code == ExitCode.NOT_FINE
    problems = validated.stdout.splitlines()
    assert len(problems) == 2
    assert provisioned.stdout.splitlines() == problems
    assert "(fix: six hex pairs" in problems[1]  # file order: the CSV first
    assert "2 error(s)" in provisioned.stderr and "nothing touched" in provisioned.stderr


def test_a_bad_git_ref_is_a_usage_error_for_validate_and_provision(tmp_path: Path) -> None:
    repo = git.Repo.init(tmp_path / "repo")
    SmallFleet(tmp_path / "repo" / "inventory")
    repo.git.add(A=True)
    actor = git.Actor("t", "t@werft.invalid")
    repo.index.commit("fleet", author=actor, committer=actor)
    args = ["inventory", "--git-ref", "no-such-ref", "--repo", str(tmp_path / "repo")]
    for command in ("validate", "provision"):
        result = runner.invoke(app, [command, *args], env=NO_PREFECT)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert "revision 'no-such-ref' not found" in result.stderr


# --- the selection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster", "fra1-aa"], "no cluster 'fra1-aa' in the inventory; did you mean 'fra1-a'?"),
        (["-c", "zzzzzz"], "no cluster 'zzzzzz' in the inventory; `werft inventory show --all`"),
        (["--site", "fra2"], "no site 'fra2' in the inventory; did you mean 'fra1'?"),
        (["--label", "noequals"], "--label 'noequals' is not KEY=VALUE"),
        (["--label", "=prod"], "--label '=prod' is not KEY=VALUE"),
        (["--label", "env=staging"], "no cluster in the inventory matches --label env=staging"),
        (["--tier", "near-edge"], "no cluster in the inventory matches --tier near-edge"),
        (["--site", "fra1", "--tier", "edge"], "matches --site fra1 --tier edge"),
    ],
)
def test_a_selection_that_names_nothing_is_a_usage_error(
    fleet: SmallFleet, args: list[str], message: str
) -> None:
    result = provision(str(fleet.root), *args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.stderr
    assert result.stdout == ""


def test_nothing_matched_lists_the_labels_in_use(fleet: SmallFleet) -> None:
    result = provision(str(fleet.root), "-l", "env=staging")
    assert "labels in use: env=prod" in result.stderr


def test_every_unknown_name_is_reported(fleet: SmallFleet) -> None:
    result = provision(str(fleet.root), "-c", "nope-1", "-c", "nope-2", "-s", "nope-3")
    assert result.exit_code == ExitCode.USAGE
    for name in ("cluster 'nope-1'", "cluster 'nope-2'", "site 'nope-3'"):
        assert f"werft: no {name} in the inventory" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tier", "bogus"], "'bogus' is not one of 'core', 'near-edge', 'edge'"),
        (["--tier", "edg"], "did you mean 'edge'?"),
        (["--time-scale", "0"], "--time-scale"),
        (["--output", "yaml"], "'yaml' is not one of 'text', 'json'"),
        (["--no-such-option"], "No such option: --no-such-option"),
    ],
)
def test_option_errors_are_one_line_not_a_model_dump(
    fleet: SmallFleet, args: list[str], message: str
) -> None:
    result = provision(str(fleet.root), *args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in one_error_line(result.output)
    assert "validation error" not in result.output and "pydantic" not in result.output


def test_json_output_with_via_api_is_refused_with_the_alternative(fleet: SmallFleet) -> None:
    result = provision(str(fleet.root), "--via-api", "-o", "json")
    assert result.exit_code == ExitCode.USAGE
    assert "werft-fleet artifact" in result.stderr


def test_the_console_script_exits_2_before_prefect_starts(fleet: SmallFleet) -> None:
    env = {**os.environ, **NO_PREFECT}
    done = subprocess.run(
        [sys.executable, "-m", "werft.cli", "provision", str(fleet.root), "-c", "fra1-aa"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr
    assert "did you mean 'fra1-a'?" in done.stderr
    assert done.stdout == ""


# --- tables without a terminal -------------------------------------------------------------


def test_plain_table_keeps_every_cell_whole_and_aligned() -> None:
    long_reason = "APIUnavailable: " + "x" * 150
    text = plain_table(
        "clusters",
        ["cluster", "outcome", "reason"],
        [["edge-00042-with-a-long-name", "Failed", long_reason], ["a", "Verified", ""]],
    )
    lines = text.splitlines()
    assert lines[0] == "clusters:"
    assert lines[2].split() == ["edge-00042-with-a-long-name", "Failed", *long_reason.split()]
    # columns line up: the outcome starts at the same offset in every row
    assert lines[1].index("outcome") == lines[2].index("Failed") == lines[3].index("Verified")


def test_fleet_table_off_a_terminal_is_plain_rows_not_folded_columns() -> None:
    from flows.commands import print_result

    rows = [
        {
            "cluster": f"edge-{n:05d}-long-cluster-name",
            "site": f"edge-{n:05d}",
            "tier": "edge",
            "InfrastructureReady": "True",
            "Bootstrapped": "False",
            "AddonsReady": "Unknown",
            "Verified": "Unknown",
            "outcome": "Failed",
            "duration_s": 12.5,
            "attempts": "1,3,-,-",
            "reason": "BootstrapTimeout: API https://edge.example:6443 not ready after 600s",
        }
        for n in range(3)
    ]
    out = io.StringIO()
    print_result(Console(file=out, width=80, force_terminal=False), rows, full=True)
    lines = out.getvalue().splitlines()
    assert lines[1].split()[:4] == ["cluster", "site", "tier", "Infra"]
    for n, line in enumerate(lines[2:5]):
        cells = line.split()
        assert cells[:8] == [
            f"edge-{n:05d}-long-cluster-name", f"edge-{n:05d}", "edge", "True", "False", "-", "-",
            "Failed",
        ]
        assert line.endswith("not ready after 600s")


def test_fleet_table_on_a_terminal_is_drawn_with_rich() -> None:
    from flows.commands import print_result

    rows = [{"cluster": "c1", "tier": "core", "Verified": "True", "outcome": "Verified"}]
    out = io.StringIO()
    print_result(Console(file=out, width=120, force_terminal=True), rows, full=True)
    assert "┃" in out.getvalue() or "│" in out.getvalue()


def test_inventory_show_json_is_for_machines(fleet: SmallFleet) -> None:
    import json

    result = runner.invoke(app, ["inventory", "show", str(fleet.root), "-o", "json", "--all"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {c["cluster"] for c in data["clusters"]} == {
        "fra1-a", "fra1-b", "edge-001", "edge-002", "edge-003",
    }
    assert data["clusters_total"] == 5 and data["machines_total"] == 7


# --- a good invocation reaches the flow ---------------------------------------------------------


def test_a_valid_selection_is_handed_to_the_flow_as_given(
    fleet: SmallFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import commands

    seen: dict[str, Any] = {}

    def fake_provision(request: object, **options: object) -> int:
        seen["request"], seen["options"] = request, options
        return ExitCode.OK

    monkeypatch.setattr(commands, "provision", fake_provision)
    result = provision(
        str(fleet.root), "-t", "core", "-l", "env=prod", "-c", "fra1-a", "-o", "json"
    )
    assert result.exit_code == ExitCode.OK, result.output
    request = seen["request"]
    assert request.selector.clusters == ["fra1-a"]
    assert [str(t) for t in request.selector.tiers] == ["core"]
    assert request.selector.labels == {"env": "prod"}
    assert seen["options"]["output"] == "json"


def test_provision_json_has_one_row_per_cluster_and_the_problems() -> None:
    from flows.commands import _summary
    from flows.models import ClusterRecord, FleetResult

    result = FleetResult(
        source="inv",
        selector="the whole fleet",
        succeeded=False,
        reason="wave edge-wave-3 halted",
        problems=["inv/x.yaml:3: kind: bad (fix: ...)"],
        clusters=[
            ClusterRecord(cluster="a", site="s", tier="edge", outcome="Verified"),
            ClusterRecord(cluster="b", site="s", tier="edge", outcome="Failed", reason="Boom"),
        ],
    )
    summary = _summary(result, None, rows=True)
    assert [row["cluster"] for row in summary["clusters"]] == ["a", "b"]
    assert summary["clusters"][1]["reason"] == "Boom"
    assert summary["problems"] == result.problems
    assert summary["counts"] == {"Verified": 1, "Failed": 1}
