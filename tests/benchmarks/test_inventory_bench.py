"""Inventory validation and loading at scale (make bench).

Goal (issue 2): validate a fleet of 10,000 edge sites in under 1 s and of 100,000 in under
10 s on a 2-core machine. For each size this measures, in the same run:

- baseline: ``pandas.read_csv`` of the same edge CSV with default options -- the floor
  for anything that reads the file with pandas;
- validate: ``check_inventory`` -- every rule, no per-row objects (what `werft validate`
  does);
- load: ``load_inventory`` -- validation plus building every Site and ResolvedCluster
  (what a provisioning run does).

Times are the best of 3 runs; peak memory is the tracemalloc peak of a separate run (so
tracing does not slow the timed runs). The table is printed (`pytest -s`); nothing here
fails on time, only on wrong results.
"""

from __future__ import annotations

import gc
import resource
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from werft.inventory.generate import write_fleet
from werft.inventory.load import check_inventory, load_inventory

SIZES = {10_000: 1.0, 100_000: 10.0}  # edge sites -> goal in seconds


def _best_of(runs: int, work: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(runs):
        gc.collect()  # start each run from the same heap, outside the timing
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
        del result
    return best


def _peak_mib(work: Callable[[], Any]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        result = work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak / 2**20


@pytest.mark.bench
def test_inventory_validate_and_load_at_scale(tmp_path: Path) -> None:
    rows = []
    for edge_sites, goal in SIZES.items():
        root = tmp_path / f"fleet-{edge_sites}"
        write_fleet(root, edge_sites=edge_sites, seed=1)
        csv = root / "edge-sites.csv"

        result = check_inventory(root)
        assert result.valid, result.problems[:5]
        assert result.sites["edge"] == edge_sites
        inventory = load_inventory(root)
        assert len(inventory.clusters) == result.clusters
        del inventory

        steps: list[tuple[str, Callable[[], Any]]] = [
            ("pandas.read_csv (baseline)", lambda csv=csv: pd.read_csv(csv)),
            ("validate (check_inventory)", lambda root=root: check_inventory(root)),
            ("load (load_inventory)", lambda root=root: load_inventory(root)),
        ]
        baseline = None
        for name, work in steps:
            seconds = _best_of(3, work)
            baseline = baseline or seconds
            rows.append(
                {
                    "edge sites": f"{edge_sites:,}",
                    "step": name,
                    "wall s": f"{seconds:.3f}",
                    "us/site": f"{seconds / edge_sites * 1e6:.1f}",
                    "x baseline": f"{seconds / baseline:.1f}",
                    "peak MiB": f"{_peak_mib(work):.0f}",
                    "goal": ""
                    if "baseline" in name
                    else f"< {goal:g} s: {'met' if seconds < goal else 'MISSED'}",
                }
            )
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\n\ninventory validation at scale (best of 3; peak = tracemalloc, separate run)")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"process max RSS over the whole benchmark: {max_rss:.0f} MiB")


# --- hostile input (issue 9) ---------------------------------------------------------------------
#
# Each case is the sample-sized fleet (300 edge sites) plus one hostile file or value. Time is
# check_inventory in this process (best of 3); memory is the max RSS of a separate
# `werft validate` process (what a user runs: interpreter, imports and all, C allocations of
# libyaml and pandas included). Both are shown against the clean fleet measured in the same
# run; the bound is absolute: under 1 s and 200 MiB per case.

HOSTILE_SECONDS, HOSTILE_MIB = 1.0, 200.0


def _laughs() -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def _edit_csv(root: Path, column: int, value: str) -> None:
    """Put ``value`` into ``column`` of the first data row of the edge CSV."""
    csv = root / "edge-sites.csv"
    lines = csv.read_text().splitlines()
    cells = lines[1].split(",")
    cells[column] = value
    lines[1] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")


def _oversized(path: Path, limit: int) -> None:
    line = "# " + "padding " * 12 + "\n"
    path.write_text(line * (limit // len(line) + 2))


def _hostile_cases() -> dict[str, Callable[[Path], object]]:
    """Name -> what turns a clean fleet folder into the hostile one."""
    from werft.inventory.limits import MAX_CSV_BYTES, MAX_YAML_BYTES

    megabyte = "x" * 2**20
    return {
        "billion laughs (478 bytes)": lambda root: (root / "bomb.yaml").write_text(_laughs()),
        "recursive anchor": lambda root: (root / "loop.yaml").write_text("a: &a [1, *a]\n"),
        "YAML nested 1,000 deep": lambda root: (root / "deep.yaml").write_text(
            "a: " + "[" * 1000 + "]" * 1000 + "\n"
        ),
        "YAML file past the limit": lambda root: _oversized(root / "big.yaml", MAX_YAML_BYTES),
        "1 MiB YAML string": lambda root: (root / "long.yaml").write_text(
            "apiVersion: werft.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: long\n"
            f"spec:\n  description: {megabyte}\n"
        ),
        "1 MiB CSV owner cell": lambda root: _edit_csv(root, 9, megabyte),
        "1 MiB CSV latitude cell": lambda root: _edit_csv(root, 2, "1." + "0" * 2**20),
        "CSV file past the limit": lambda root: _oversized(
            root / "more-sites.csv", MAX_CSV_BYTES
        ),
    }


# Runs `werft validate ROOT` and reports the peak RSS of that process alone. VmHWM is the
# high-water mark of the memory the process got at exec; the child's ru_maxrss would also
# count the pytest process it was forked from.
_PEAK_OF_VALIDATE = """
import atexit, sys
def report():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write(line)
atexit.register(report)
sys.argv = ["werft", "validate", sys.argv[1]]
from werft.cli import main
main()
"""


def _max_rss_mib(root: Path) -> float:
    """Peak RSS of `werft validate root` in its own process, in MiB."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _PEAK_OF_VALIDATE, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@pytest.mark.bench
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_hostile_inventories_validate_in_bounded_time_and_memory(tmp_path: Path) -> None:
    import shutil

    clean = tmp_path / "clean"
    write_fleet(clean, edge_sites=300, seed=1)
    assert check_inventory(clean).valid
    base_s = _best_of(3, lambda: check_inventory(clean))
    base_mib = _max_rss_mib(clean)
    rows = [
        {"case": "clean fleet (baseline)", "wall s": f"{base_s:.3f}", "x baseline": "1.0",
         "max RSS MiB": f"{base_mib:.0f}", "x RSS": "1.0", "bound": ""},
    ]
    missed = []
    for index, (name, spoil) in enumerate(_hostile_cases().items()):
        root = tmp_path / f"hostile-{index}"
        shutil.copytree(clean, root)
        spoil(root)
        result = check_inventory(root)
        assert not result.valid, name  # refused, with a problem naming the file
        seconds = _best_of(3, lambda root=root: check_inventory(root))
        mib = _max_rss_mib(root)
        met = seconds < HOSTILE_SECONDS and mib < HOSTILE_MIB
        if not met:
            missed.append(name)
        rows.append(
            {
                "case": name,
                "wall s": f"{seconds:.3f}",
                "x baseline": f"{seconds / base_s:.1f}",
                "max RSS MiB": f"{mib:.0f}",
                "x RSS": f"{mib / base_mib:.2f}",
                "bound": f"< {HOSTILE_SECONDS:g} s, < {HOSTILE_MIB:g} MiB: "
                + ("met" if met else "MISSED"),
            }
        )
        shutil.rmtree(root)
    print("\n\nhostile inventories (300 edge sites + one hostile file; time best of 3 in "
          "process, memory = peak RSS (VmHWM) of `werft validate`)")
    print(pd.DataFrame(rows).to_string(index=False))
    assert not missed, f"past the bound: {missed}"
