"""Unreachable is a judgement over persistence: the pure rules of ``werft.stages.reach``,
on a clock the test moves (no sleeps, no wall clock)."""

from __future__ import annotations

import pytest

from werft.errors import PermanentError, TransientError
from werft.kube import WaitTimeout
from werft.stages.reach import (
    API,
    MACHINES,
    STRIKES,
    Reachability,
    SiteUnreachable,
    current_grace,
    endpoint_of,
    grace_for_batch,
    is_unreachable,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


REFUSED = TransientError("cluster c: GET /version: connection refused", cause="connection refused")
BUSY = TransientError("cluster c: GET /version: 503", cause="503")


def test_nothing_answering_is_unreachable_but_an_error_status_is_an_answer() -> None:
    assert is_unreachable(REFUSED)
    assert is_unreachable(TransientError("bmc m1: cannot connect", reason="Unreachable"))
    assert is_unreachable(TransientError("cluster c: GET /livez: timed out"))  # no cause yet
    assert not is_unreachable(BUSY)
    assert not is_unreachable(WaitTimeout("cluster c: Deployment x not Available after 5s"))
    assert not is_unreachable(PermanentError("cluster c: 401"))
    assert not is_unreachable(None)


def test_one_refused_connection_is_a_blip_when_the_next_probe_answers() -> None:
    clock = Clock()
    reach = Reachability("c", grace=10.0, clock=clock)
    reach.saw(REFUSED)
    clock.now += 60.0  # long after the grace: the answer in between still resets it
    reach.saw(None)
    reach.saw(REFUSED)
    assert reach.open and not reach.persistent


def test_error_statuses_never_add_up_to_unreachable() -> None:
    clock = Clock()
    reach = Reachability("c", grace=1.0, clock=clock)
    for _ in range(10):
        reach.saw(BUSY)
        clock.now += 1.0
    assert not reach.open and reach.unreachable_for() == 0.0


def test_unreachable_once_the_grace_has_passed_over_enough_probes() -> None:
    clock = Clock()
    reach = Reachability("c", grace=10.0, clock=clock)
    reach.saw(REFUSED)
    clock.now += 9.0
    reach.saw(REFUSED)  # two probes, but only 9 s: not yet
    assert reach.open
    clock.now += 1.0
    with pytest.raises(SiteUnreachable) as caught:
        reach.saw(REFUSED)
    assert caught.value.reason == "Unreachable"
    assert "connection refused" in str(caught.value)


def test_a_single_probe_is_never_enough_however_long_it_took() -> None:
    clock = Clock()
    reach = Reachability("c", grace=1.0, clock=clock)
    reach.saw(REFUSED)
    clock.now += 1000.0
    assert STRIKES > 1 and reach.open and not reach.persistent


def test_an_answering_api_does_not_vouch_for_a_silent_bmc() -> None:
    clock = Clock()
    reach = Reachability("c", grace=5.0, clock=clock)
    bmc_down = TransientError("bmc m1: cannot connect (refused)", reason="Unreachable")
    reach.saw(bmc_down)
    clock.now += 5.0
    reach.saw(None)  # the cluster API answered meanwhile
    with pytest.raises(SiteUnreachable):
        reach.saw(bmc_down)
    assert endpoint_of(bmc_down) == MACHINES and endpoint_of(REFUSED) == API


def test_the_batch_sets_the_grace_and_a_lone_stage_uses_poll_intervals() -> None:
    assert current_grace(poll_interval=0.5) == 1.5
    with grace_for_batch(42.0):
        assert current_grace(poll_interval=0.5) == 42.0
    assert current_grace(poll_interval=0.5) == 1.5


def test_a_5xx_whose_text_mentions_a_timeout_is_still_an_answer() -> None:
    assert not is_unreachable(
        TransientError("bmc m1: 504 injected timeout f3", reason="ProviderError")
    )
    assert not is_unreachable(TransientError("cluster c: GET /x: 504 timeout", cause="504"))
    assert is_unreachable(TransientError("cluster c: GET /x", cause="ConnectionResetError"))
