"""werft.ramp: the batches of a wave that run side by side start one after another."""

from __future__ import annotations

import asyncio
import time

from werft.plan import Batch
from werft.ramp import Ramp, ramp_bound


def _batches(n: int) -> list[Batch]:
    return [Batch("edge-wave-3", f"batch-{i:02d}", (f"edge-{i:05d}",)) for i in range(1, n + 1)]


def test_a_batch_starts_once_the_one_before_it_is_past_its_first_stage() -> None:
    first, second, third = _batches(3)
    events: list[str] = []

    async def batch(ramp: Ramp, b: Batch, first_stage_s: float) -> None:
        await ramp.turn(b)
        events.append(f"{b.name} starts")
        await asyncio.sleep(first_stage_s)
        events.append(f"{b.name} past its first stage")
        ramp.past_first_stage(b)

    async def main() -> None:
        ramp = Ramp([first, second, third], bound=30.0)
        # Gathered in reverse: the order comes from the ramp, not from who asks first.
        await asyncio.gather(batch(ramp, third, 0.01), batch(ramp, second, 0.05),
                             batch(ramp, first, 0.05))

    asyncio.run(main())
    assert events == [
        "batch-01 starts", "batch-01 past its first stage",
        "batch-02 starts", "batch-02 past its first stage",
        "batch-03 starts", "batch-03 past its first stage",
    ]


def test_a_batch_waits_for_a_slow_predecessor_no_longer_than_the_bound() -> None:
    first, second = _batches(2)

    async def main() -> float:
        ramp = Ramp([first, second], bound=0.2)
        await ramp.turn(first)  # never past its first stage (its BMCs do not answer)
        start = time.monotonic()
        await ramp.turn(second)
        return time.monotonic() - start

    waited = asyncio.run(main())
    assert 0.2 <= waited < 5.0


def test_a_batch_not_on_the_ramp_neither_waits_nor_is_waited_for() -> None:
    canary = Batch("edge-wave-3", "canary", ("edge-00000",), canary=True)
    first, second = _batches(2)

    async def main() -> None:
        ramp = Ramp([first, second], bound=30.0)
        await asyncio.wait_for(ramp.turn(canary), 1.0)
        ramp.past_first_stage(canary)
        await asyncio.wait_for(ramp.turn(first), 1.0)

    asyncio.run(main())


def test_the_bound_is_a_minute_of_real_time_and_never_under_a_second() -> None:
    assert ramp_bound(1.0) == 60.0
    assert ramp_bound(10.0) == 6.0
    assert ramp_bound(1000.0) == 1.0
