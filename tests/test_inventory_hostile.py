"""Hostile inventories: alias bombs, oversized files, megabyte values.

Each is refused as a Problem with file, line, field and a fix, in bounded time and memory,
and no message echoes the hostile value.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import git
import pytest

from tests.inventoryfixtures import CSV_ROWS, SmallFleet, assert_problem
from werft.errors import Problem
from werft.inventory.limits import MAX_MANIFEST_BYTES, MAX_YAML_BYTES
from werft.inventory.load import check_inventory
from werft.inventory.model import DNS_NAME_MAX, TEXT_MAX, URL_MAX, VALUE_TEXT_MAX
from werft.inventory.yamldocs import ALIAS_EXPANSION_MAX

SITE = "sites/fra1.yaml"
CSV = "edge-sites.csv"
MEGABYTE_VALUE = "x" * 2**20


@pytest.fixture
def fleet(tmp_path: Path) -> SmallFleet:
    return SmallFleet(tmp_path / "inv")


def billion_laughs(levels: int = 9) -> str:
    """The classic: each anchor is nine aliases of the one before (9**9 leaves)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def not_echoed(problems: list[Problem]) -> None:
    """No message carries the hostile value (a few hundred characters at most)."""
    for problem in problems:
        assert len(str(problem)) < 600, str(problem)[:200]


def peak_mib(root: Path) -> tuple[list[Problem], float]:
    check_inventory(root)  # imports (pandas, ...) happen outside the measurement
    tracemalloc.start()
    try:
        problems = check_inventory(root).problems
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return problems, peak / 2**20


# --- YAML aliases -------------------------------------------------------------------------------


def test_billion_laughs_is_refused_at_the_value_that_explodes(fleet: SmallFleet) -> None:
    _, baseline = peak_mib(fleet.root)
    fleet.write("bomb.yaml", billion_laughs())
    assert len(fleet.text("bomb.yaml")) < 600
    problems, peak = peak_mib(fleet.root)
    bombs = [p for p in problems if p.file == fleet.file("bomb.yaml")]
    assert len(bombs) == 1, bombs
    # a4 is the first level past the bound: 1 + 9 * 7381 nodes
    sizes = [10]
    while sizes[-1] <= ALIAS_EXPANSION_MAX:
        sizes.append(1 + 9 * sizes[-1])
    first_past = len(sizes) - 1
    assert_problem(
        bombs[0],
        file=fleet.file("bomb.yaml"),
        line=fleet.line("bomb.yaml", f"&a{first_past} "),
        field="yaml",
        message="aliases (*name) expand the value at this line",
        fix="write the values out",
    )
    # 9**9 expanded nodes would be gigabytes; refused, the bomb costs about nothing extra
    assert peak < baseline + 2, f"{peak:.1f} MiB with the bomb, {baseline:.1f} without"


def test_a_recursive_anchor_is_refused(fleet: SmallFleet) -> None:
    fleet.write("loop.yaml", "kind: Site\nspec:\n  owners: &o [a, *o]\n")
    problem = fleet.only_problem()
    assert (problem.file, problem.field) == (fleet.file("loop.yaml"), "yaml")
    assert "recursive anchor" in problem.message
    assert problem.line == 3


def test_ordinary_anchors_and_aliases_still_work(fleet: SmallFleet) -> None:
    fleet.edit(
        SITE,
        "      bmc:\n        address: redfish+http://127.0.0.1:8686/bmc/fra1-a-cp0",
        "      bmc: &bmc0\n        address: redfish+http://127.0.0.1:8686/bmc/fra1-a-cp0",
    )
    fleet.edit(SITE, "  vm:\n    host: sim+http://127.0.0.1:8686\n    cpus: 4\n",
               "  vm: &vm\n    host: sim+http://127.0.0.1:8686\n    cpus: 4\n")
    fleet.edit(SITE, "      vm:\n        host: sim+http://127.0.0.1:8686\n", "      vm: *vm\n")
    assert fleet.problems() == []


# --- file sizes ---------------------------------------------------------------------------------


def test_a_yaml_file_past_the_limit_is_not_parsed_and_names_the_line(fleet: SmallFleet) -> None:
    line = "# " + "padding " * 12 + "\n"  # 99 bytes
    count = MAX_YAML_BYTES // len(line) + 10
    fleet.write("huge.yaml", line * count)
    problem = fleet.only_problem()
    crossed = MAX_YAML_BYTES // len(line) + 1
    assert_problem(
        problem,
        file=fleet.file("huge.yaml"),
        line=crossed,
        field="file",
        message=f"larger than {MAX_YAML_BYTES // 2**20} MiB",
        fix="split it into several files",
    )


def test_a_large_manifest_template_has_its_own_limit(fleet: SmallFleet) -> None:
    padding = "# " + "x" * 97 + "\n"
    big = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: dns\n"
    fleet.write("addons/dns.yaml", big + padding * (MAX_YAML_BYTES // len(padding) + 1))
    assert fleet.problems() == []  # a vendor's CRD bundle is allowed past the YAML limit
    fleet.write("addons/dns.yaml", big + padding * (MAX_MANIFEST_BYTES // len(padding) + 1))
    problem = fleet.only_problem()
    assert (problem.file, problem.field) == (fleet.file("addons/dns.yaml"), "file")
    assert "the limit for a manifest file" in problem.message


def test_a_csv_past_the_limit_is_refused(
    fleet: SmallFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("werft.inventory.validate.MAX_CSV_BYTES", 400)
    problem = fleet.only_problem()
    assert_problem(
        problem,
        file=fleet.file(CSV),
        line=3,  # header ~110 bytes and rows ~150: byte 400 is in the third line
        field="file",
        message="larger than 0 MiB, the limit for a csv file",
        fix="split the edge sites into several CSV files",
    )


def test_the_size_limit_holds_for_a_git_revision(tmp_path: Path) -> None:
    repo = git.Repo.init(tmp_path / "repo")
    small = SmallFleet(tmp_path / "repo" / "inventory")
    small.write("huge.yaml", "# pad\n" * (MAX_YAML_BYTES // 6 + 1))
    repo.git.add(A=True)
    actor = git.Actor("t", "t@werft.invalid")
    repo.index.commit("fleet", author=actor, committer=actor)
    result = check_inventory("inventory", git_ref="HEAD", repo=tmp_path / "repo")
    assert [(p.file, p.field) for p in result.problems] == [("HEAD:inventory/huge.yaml", "file")]


# --- string lengths in YAML --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "old", "field", "limit"),
    [
        ("profiles.yaml", "  name: core-small\n", "spec.description", TEXT_MAX),
        (SITE, "  region: eu-central\n", "spec.owners[0]", TEXT_MAX),
        (SITE, "    env: prod\n", "metadata.labels.env", TEXT_MAX),
        ("fleet.yaml", "    baseUrl: http://127.0.0.1:8686/artifacts\n", "spec.artifacts.baseUrl",
         URL_MAX),
    ],
)
def test_a_megabyte_in_a_yaml_string_is_refused_by_length(
    fleet: SmallFleet, rel: str, old: str, field: str, limit: int
) -> None:
    new = {
        "spec.description": f"{old}spec:\n  description: {MEGABYTE_VALUE}\n",
        "spec.owners[0]": f"{old}  owners: [{MEGABYTE_VALUE}]\n",
        "metadata.labels.env": f"    env: {MEGABYTE_VALUE}\n",
        "spec.artifacts.baseUrl": f"    baseUrl: http://x/{MEGABYTE_VALUE}\n",
    }[field]
    if field == "spec.description":  # the profile has a spec already: add to it
        fleet.edit(rel, "  name: core-small\nspec:\n", f"  name: core-small\nspec:\n"
                   f"  description: {MEGABYTE_VALUE}\n")
    else:
        fleet.edit(rel, old, new)
    problems = fleet.problems()
    not_echoed(problems)
    hits = [p for p in problems if p.field == field]
    assert len(hits) == 1, [str(p)[:200] for p in problems]
    assert_problem(
        hits[0],
        file=fleet.file(rel),
        line=fleet.line(rel, MEGABYTE_VALUE[:100]),
        field=field,
        message=f"characters long; at most {limit:,} are allowed",
        fix=f"shorten it to {limit:,} characters or fewer",
    )


def test_names_urls_and_refs_have_their_limits(fleet: SmallFleet) -> None:
    long_name = "a" * (DNS_NAME_MAX + 1)
    long_url = "redfish+http://127.0.0.1:8686/" + "p" * URL_MAX + "/redfish/v1/Systems/1"
    fleet.edit(SITE, "  name: fra1-a\n", f"  name: {long_name}\n")
    fleet.edit(SITE, "redfish+http://127.0.0.1:8686/bmc/fra1-a-w0/redfish/v1/Systems/1", long_url)
    problems = fleet.problems()
    not_echoed(problems)
    by_field = {p.field: p for p in problems}
    assert "at most 63" in by_field["metadata.name"].message
    assert "at most 2,048" in by_field["spec.machines[1].bmc.address"].message


def test_a_huge_label_key_is_named_by_its_start(fleet: SmallFleet) -> None:
    # YAML allows a plain key of at most 1024 characters; an explicit key (?) has no limit
    fleet.edit(SITE, "    env: prod\n", f"    ? {MEGABYTE_VALUE}\n    : prod\n")
    problems = fleet.problems()
    not_echoed(problems)
    assert any("a key is 1,048,576 characters long" in p.message for p in problems)


def test_addon_values_hold_long_but_not_unbounded_text(fleet: SmallFleet) -> None:
    fleet.edit("addons/base.yaml", "    - name: dns\n",
               f"      values:\n        ca: {'c' * 5000}\n    - name: dns\n")
    assert fleet.problems() == []  # a PEM bundle fits
    fleet.edit("addons/base.yaml", f"        ca: {'c' * 5000}\n",
               f"        ca: {'c' * (VALUE_TEXT_MAX + 1)}\n")
    problem = fleet.only_problem()
    assert problem.field == "spec.addons[0].values"
    assert f"ca is {VALUE_TEXT_MAX + 1:,} characters long" in problem.message
    not_echoed([problem])


# --- string lengths in the edge CSV ------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "old", "limit"),
    [
        ("owner", ",edge-ops", TEXT_MAX),
        ("latitude", ",48.8566,", 32),
        ("bmc_address", "/bmc/edge-001-n0/", URL_MAX),
    ],
)
def test_a_megabyte_in_a_csv_cell_is_refused_and_not_echoed(
    fleet: SmallFleet, column: str, old: str, limit: int
) -> None:
    row = CSV_ROWS[0]
    filler = "1" * 2**20 if column == "latitude" else MEGABYTE_VALUE
    new = {
        "owner": f",{filler}",
        "latitude": f",48.{filler},",
        "bmc_address": f"/bmc/edge-001-n0/{filler}/",
    }[column]
    fleet.edit(CSV, row, row.replace(old, new, 1))
    fleet.edit(CSV, "02:00:00:00:02:02", "02:00:00:00:02:zz")  # another row, another problem
    problems = fleet.problems()
    not_echoed(problems)
    assert [(p.line, p.field) for p in problems] == [(2, column), (3, "boot_mac")]
    assert f"at most {limit:,} are allowed" in problems[0].message


def test_hostile_csv_row_does_not_hide_the_fast_path_rows(fleet: SmallFleet) -> None:
    row = CSV_ROWS[2]
    fleet.edit(CSV, row, row + MEGABYTE_VALUE)  # the owner column of the last row
    problems = fleet.problems()
    assert [(p.line, p.field) for p in problems] == [(4, "owner")]


@pytest.mark.parametrize(("extra", "problems"), [(0, 0), (1, 1)])
def test_csv_length_limits_are_exact(fleet: SmallFleet, extra: int, problems: int) -> None:
    row = CSV_ROWS[0]
    fleet.edit(CSV, row, row.replace(",edge-ops", "," + "o" * (TEXT_MAX + extra)))
    assert len(fleet.problems()) == problems
