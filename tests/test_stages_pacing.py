"""How often the bootstrap stage asks while a machine installs (minutes on real hardware).

Against the simulator at a time scale where the install spans about eighty poll
intervals: /readyz is asked less often as the wait goes on, and the site's BMC only every
few poll intervals while it answers -- not both on every poll, which cost a real fleet a
BMC request per machine every five seconds for the whole install.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.simfixtures import reserve_port, running_sim, write_edge_fleet
from werft.conditions import ConditionType
from werft.inventory.load import load_inventory
from werft.stages import StageContext, StageTimeouts, run_stage_batch
from werft.stages.bootstrap import SITE_PROBE_POLLS

POLL = 0.02
# POST + install + API up = 330 simulated s: 1.65 s here, about 80 poll intervals.
TIME_SCALE = 200.0


async def test_an_install_is_watched_with_fewer_requests_as_it_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WERFT_HOME", str(tmp_path / ".werft"))
    sock = reserve_port()
    root = write_edge_fleet(tmp_path, 1, sock.getsockname()[1])
    inventory = load_inventory(root)
    cluster = next(iter(inventory.clusters.values()))
    timeouts = StageTimeouts(
        infrastructure=20.0, bootstrap=20.0, addons=20.0, verify=20.0, poll_interval=POLL
    )
    with running_sim(root, sock=sock, time_scale=TIME_SCALE,
                     artifacts_dir=tmp_path / ".werft/artifacts", default_credentials=None) as sim:
        ctx = StageContext.for_inventory(inventory, timeouts=timeouts)
        try:
            stage = ConditionType.INFRASTRUCTURE_READY
            assert (await run_stage_batch(stage, [cluster], ctx, 1))[0].ok
            sim.reset_stats()
            start = time.monotonic()
            [bootstrapped] = await run_stage_batch(ConditionType.BOOTSTRAPPED, [cluster], ctx, 1)
            polls = (time.monotonic() - start) / POLL  # poll intervals the wait took
            counts = sim.stats()["requestsByTarget"]
        finally:
            await ctx.aclose()

    assert bootstrapped.ok, bootstrapped.message
    assert polls > 40  # the install did span many poll intervals
    api = sum(counts["clusters"].values())  # /readyz, plus the token and the Node list
    bmc = sum(counts["bmc"].values())  # site probes, plus the release (a read, two ejects)
    # Every poll used to ask both: ~`polls` of each.
    assert api < polls / 2, (api, polls)
    assert bmc < polls / SITE_PROBE_POLLS + 6, (bmc, polls)
