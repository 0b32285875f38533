"""Survive a flaky fleet: with about 10% of BMC, hypervisor and Kubernetes API calls failing
transiently (tests/faults/flaky-10pct.yaml: 503s, 500s, slow 504s, dropped connections,
seeded), a provisioning run still ends with every cluster Verified, no machine installed
twice, and a summary that says what the flakiness cost (requests retried, by cause).

The CI test runs a representative subset, not the 320-cluster sample fleet: one core site
(bare metal with 5 machines, kubeadm, and a VM cluster on the simulated hypervisor), one
near-edge site and six edge sites (k3s, one machine each) -- every provider, distribution,
tier and wave shape (a canary, then batches) the sample fleet has, at 10 clusters, so it
runs in well under a minute (the flow takes about 20 s on a 2-core machine). The sample
fleet's shape itself (8 core, 12 near-edge, 300 edge clusters) is the ``fleet_scale`` variant;
how much longer a faulted run takes than a clean one is measured in
tests/benchmarks/test_fleet_bench.py, never asserted on wall-clock time here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.models import FleetResult
from tests.flowfixtures import Fleet, artifacts, fleet, outcomes, provision

FAULTS = Path(__file__).parent / "faults" / "flaky-10pct.yaml"
# Every tier may fail all its clusters: the run goes through the whole fleet, so a failure
# is counted and reported rather than hidden behind a halted rollout.
OPEN_BUDGETS = {tier: {"max_failures": "100%"} for tier in ("core", "near-edge", "edge")}


def converge(f: Fleet) -> tuple[Any, FleetResult, dict[str, Any]]:
    """One provisioning run of ``f`` under its faults; the state, result and figures."""
    state, result = provision(f.request(rollout=OPEN_BUDGETS, retry_backoff_s=0.2))
    rules = f.sim.faults()["rules"]
    figures = {
        "outcomes": result.counts(),
        "retries": result.retries,
        "faults injected": sum(r["hits"] for r in rules),
        "installs": f.installs(),
    }
    print(  # the figures a person wants from this test (pytest -s shows them)
        f"\n{len(result.clusters)} clusters under {FAULTS.name}: {result.counts()}; "
        f"{figures['faults injected']} faults injected; {result.retries_line()}; "
        f"{result.duration_s:.1f} s"
    )
    for c in result.clusters:
        if c.outcome != "Verified":
            print(f"  {c.cluster}: {c.outcome} {c.reason}: {c.message[:200]}")
    return state, result, figures


def assert_converged(f: Fleet, state: Any, result: FleetResult, figures: dict[str, Any]) -> None:
    assert figures["faults injected"] > 0  # the run really was under faults
    assert set(outcomes(result).values()) == {"Verified"}, figures["outcomes"]
    assert len(result.clusters) == len(f.inventory.clusters)
    duplicates = {m: n for m, n in figures["installs"].items() if n != 1}
    assert duplicates == {}, "machines not installed exactly once"
    assert state.is_completed(), state.message
    summary = artifacts(str(state.state_details.flow_run_id))["werft-summary"].data
    assert summary.splitlines()[0] == "# werft provisioning: Succeeded"
    assert "requests retried:" in summary


def test_a_fleet_with_10pct_transient_faults_converges_verified_without_reinstalls(
    workdir: Path,
) -> None:
    with fleet(workdir, core=1, near=1, edge=6, faults=FAULTS) as f:
        state, result, figures = converge(f)
        assert_converged(f, state, result, figures)
    assert sum(result.retries.values()) > 0  # the faults were outlived by retrying requests


@pytest.mark.fleet_scale
def test_the_sample_fleet_with_10pct_transient_faults_converges(workdir: Path) -> None:
    with fleet(workdir, core=3, near=12, edge=300, faults=FAULTS) as f:
        state, result, figures = converge(f)
        assert_converged(f, state, result, figures)
