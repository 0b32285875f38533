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
