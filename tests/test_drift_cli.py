"""`werft drift` as a person runs it: a real process against the simulator. Plain rows when
not on a terminal, JSON with --output json, exit 0 in shape / 3 drift / 1 not checkable."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests.stagefixtures import EDGE, StageFleet, run_all, stage_fleet_fixture  # noqa: F401

WERFT = [sys.executable, "-m", "werft.cli"]


async def werft(f: StageFleet, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "WERFT_HOME": str(f.home), "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        *WERFT, *args, env=env, cwd=str(f.root.parent),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_drift_command_exits_0_3_1_and_prints_groups_then_clusters(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    await run_all(f.cluster(EDGE), f.ctx)
    only = ["drift", "-i", str(f.root), "-c", EDGE]

    code, out, err = await werft(f, *only)
    assert code == 0, (out, err)
    assert "0 finding group(s) on 0 of 1 cluster(s): 1 InShape" in out

    f.sim.drift(kind="change-object", cluster=EDGE, apiVersion="apps/v1",
                resource="deployments", namespace="flux-system", name="source-controller",
                patch={"spec": {"replicas": 0}})
    code, out, err = await werft(f, *only)
    assert code == 3, (out, err)
    lines = out.splitlines()
    groups_at = lines.index("Drift: 1 finding group(s), by reach:")
    clusters_at = lines.index("Clusters not in shape:")
    assert groups_at < clusters_at  # groups first, then the clusters
    row = lines[groups_at + 2]
    for words in ("Deployment flux-system/source-controller", ".spec.replicas", "kubectl-edit",
                  " 1 ", " 0 "):
        assert words in row, (words, row)
    assert "│" not in out  # not a terminal: plain rows, no box drawing

    code, out, _ = await werft(f, *only, "--output", "json")
    assert code == 3
    data = json.loads(out)
    [group] = data["groups"]
    assert (group["finding"]["field"], group["finding"]["desired"], group["finding"]["live"]) == (
        ".spec.replicas", "1", "0")
    assert group["clusters"] == [EDGE] and data["exit_code"] == 3

    # the whole fleet: the other clusters were never provisioned -- not in shape, not drift
    code, out, _ = await werft(f, "drift", "-i", str(f.root), "-o", "json")
    assert code == 3 and json.loads(out)["counts"]["NotProvisioned"] == 5


async def test_drift_command_says_unreachable_and_exits_1(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    await run_all(f.cluster(EDGE), f.ctx)
    f.sim.add_fault(kind="offline", site=f.cluster(EDGE).site)
    code, out, err = await werft(f, "drift", "-i", str(f.root), "-c", EDGE, "--deadline", "3")
    assert code == 1, (out, err)
    assert "Unreachable" in out and "Drifted" not in out


def test_accept_of_an_unknown_finding_is_an_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from werft.cli import app

    result = CliRunner().invoke(app, ["drift", "accept", "d-0000000000", "-i", str(tmp_path)],
                                env={"WERFT_HOME": str(tmp_path / "home")})
    assert result.exit_code == 1
    assert "no finding 'd-0000000000' in the last drift report" in result.output
