"""werft.plan: what each cluster needs, waves, batches, canaries and failure budgets."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from werft.conditions import STAGE_ORDER, Condition, ConditionType
from werft.inventory.model import Fleet, Machine, Network, Rollout, Site, Tier, TierPolicy
from werft.inventory.resolved import Inventory, ResolvedCluster
from werft.plan import (
    Batch,
    Outcome,
    Ramp,
    Selector,
    TierOverride,
    WaveTally,
    needed_stages,
    outcome,
    override_rollout,
    plan_fleet,
    ramp_bound,
    task_runs,
    waves,
)

INFRA, BOOT, ADDONS, VERIFIED = STAGE_ORDER
ALL_TRUE = dict.fromkeys(STAGE_ORDER, True)


def cluster(name: str, tier: Tier, site: str | None = None, **labels: str) -> ResolvedCluster:
    machine = Machine.model_validate(
        {"name": f"{name}-m0", "role": "control-plane", "vm": {"host": "sim+http://127.0.0.1:1"}}
    )
    return ResolvedCluster(
        name=name,
        site=site or name,
        tier=tier,
        region="eu",
        kubernetes_version="1.31.1",
        distribution="kubeadm",
        control_plane_replicas=1,
        worker_replicas=0,
        network=Network(),
        addon_sets=(),
        os_image_url="http://127.0.0.1:1/images/x.iso",
        api_endpoint=f"http://127.0.0.1:1/clusters/{name}",
        machines=(machine,),
        labels=labels,
    )


def fleet_clusters(core: int = 3, near: int = 4, edge: int = 50) -> list[ResolvedCluster]:
    return (
        [cluster(f"core-{i:02d}", Tier.CORE) for i in range(core)]
        + [cluster(f"near-{i:02d}", Tier.NEAR_EDGE) for i in range(near)]
        + [cluster(f"edge-{i:04d}", Tier.EDGE) for i in range(edge)]
    )


ROLLOUT = Rollout.model_validate(
    {
        "tiers": {
            "core": {"batchSize": 1, "maxConcurrency": 2},
            "near-edge": {"batchSize": 1, "maxConcurrency": 4, "maxFailures": 1},
            "edge": {
                "batchSize": 10,
                "maxConcurrency": 30,
                "canarySize": 3,
                "maxFailures": "10%",
                "deferUnreachable": True,
            },
        }
    }
)


# --- the plan ---------------------------------------------------------------------------


def test_needed_stages_start_at_first_unsatisfied_stage_and_include_the_rest() -> None:
    assert needed_stages({}) == STAGE_ORDER
    assert needed_stages({INFRA: True}) == (BOOT, ADDONS, VERIFIED)
    assert needed_stages({INFRA: True, BOOT: True, ADDONS: True}) == (VERIFIED,)
    # A lost machine under a running cluster means everything again, not just infrastructure.
    assert needed_stages({INFRA: False, BOOT: True, ADDONS: True, VERIFIED: True}) == STAGE_ORDER
    assert needed_stages(ALL_TRUE) == ()


def test_plan_of_a_fleet_in_shape_has_no_work_and_no_waves() -> None:
    clusters = fleet_clusters()
    plan = plan_fleet(clusters, {c.name: ALL_TRUE for c in clusters})
    assert len(plan) == len(clusters)
    assert plan.work == []
    assert waves(plan, ROLLOUT) == []
    assert task_runs(plan, waves(plan, ROLLOUT)) == 0


def test_unobserved_cluster_needs_every_stage_and_keeps_the_note() -> None:
    plan = plan_fleet([cluster("e1", Tier.EDGE)], {}, {"e1": "Unreachable: refused"})
    assert plan["e1"].needed == STAGE_ORDER
    assert plan["e1"].note == "Unreachable: refused"
    assert plan.rows()[0]["needs"] == "InfrastructureReady, Bootstrapped, AddonsReady, Verified"


def test_stage_counts_count_clusters_per_stage() -> None:
    clusters = [cluster(n, Tier.EDGE) for n in ("a", "b", "c")]
    plan = plan_fleet(clusters, {"a": ALL_TRUE, "b": {INFRA: True, BOOT: True}})
    assert plan.stage_counts() == {INFRA: 1, BOOT: 1, ADDONS: 2, VERIFIED: 2}


# --- waves and batches ---------------------------------------------------------------------


def test_waves_follow_the_tier_order_and_are_numbered_by_it() -> None:
    plan = plan_fleet(fleet_clusters(), {})
    result = waves(plan, ROLLOUT)
    assert [w.name for w in result] == ["core-wave-1", "near-edge-wave-2", "edge-wave-3"]
    reordered = ROLLOUT.model_copy(update={"order": [Tier.EDGE, Tier.CORE, Tier.NEAR_EDGE]})
    assert [w.tier for w in waves(plan, reordered)] == [Tier.EDGE, Tier.CORE, Tier.NEAR_EDGE]


def test_wave_names_are_stable_when_earlier_tiers_have_no_work() -> None:
    clusters = fleet_clusters()
    observed = {c.name: ALL_TRUE for c in clusters if c.tier != Tier.EDGE}
    assert [w.name for w in waves(plan_fleet(clusters, observed), ROLLOUT)] == ["edge-wave-3"]


def test_edge_wave_has_a_canary_then_batches_of_batch_size() -> None:
    edge = next(w for w in waves(plan_fleet(fleet_clusters(edge=50), {}), ROLLOUT) if w.number == 3)
    assert edge.canary is not None
    assert edge.canary.path == "edge-wave-3/canary"
    assert edge.canary.clusters == ("edge-0000", "edge-0001", "edge-0002")
    assert [len(b.clusters) for b in edge.rest] == [10, 10, 10, 10, 7]
    assert [b.name for b in edge.rest] == [f"batch-{i:02d}" for i in range(1, 6)]
    # every cluster exactly once, in name order
    assert list(edge.clusters) == [f"edge-{i:04d}" for i in range(50)]


def test_batch_numbers_widen_past_99_batches() -> None:
    rollout = override_rollout(ROLLOUT, {Tier.EDGE: TierOverride(batch_size=1, canary_size=0)})
    edge = waves(plan_fleet(fleet_clusters(0, 0, 120), {}), rollout)[0]
    assert edge.batches[0].name == "batch-001"
    assert edge.batches[-1].name == "batch-120"


def test_single_cluster_batches_are_labelled_by_the_cluster() -> None:
    core = waves(plan_fleet(fleet_clusters(), {}), ROLLOUT)[0]
    assert [b.label for b in core.batches] == ["core-00", "core-01", "core-02"]
    edge = waves(plan_fleet(fleet_clusters(), {}), ROLLOUT)[2]
    assert edge.rest[4].label == "edge-wave-3/batch-05"


def test_no_canary_when_the_wave_is_not_larger_than_the_canary() -> None:
    edge = waves(plan_fleet(fleet_clusters(0, 0, 3), {}), ROLLOUT)[0]
    assert edge.canary is None
    assert [b.clusters for b in edge.batches] == [("edge-0000", "edge-0001", "edge-0002")]


def test_concurrency_in_flight_never_exceeds_max_concurrency() -> None:
    for batch_size, max_concurrency in [(1, 2), (10, 30), (25, 10), (7, 50), (100, 100)]:
        policy = TierPolicy(batch_size=batch_size, max_concurrency=max_concurrency)
        rollout = Rollout(tiers={Tier.EDGE: policy})
        wave = waves(plan_fleet(fleet_clusters(0, 0, 40), {}), rollout)[0]
        in_flight = wave.batches_in_flight * wave.clusters_per_batch_in_flight
        assert 1 <= in_flight <= max_concurrency


def test_task_runs_count_one_per_needed_stage_per_batch_not_per_cluster() -> None:
    clusters = fleet_clusters(core=2, near=0, edge=100)
    observed = {"edge-0050": {INFRA: True, BOOT: True, ADDONS: True}}  # needs verify only
    plan = plan_fleet(clusters, observed)
    wave_list = waves(plan, ROLLOUT)
    # core: 2 batches x 4 stages; edge: canary + 10 batches (97 clusters), 4 stages each
    assert task_runs(plan, wave_list) == 2 * 4 + (1 + 10) * 4
    assert task_runs(plan, wave_list) < len(clusters)


def test_failure_budget_is_a_count_or_a_share_of_the_wave() -> None:
    result = waves(plan_fleet(fleet_clusters(core=3, near=4, edge=55), {}), ROLLOUT)
    assert [w.failure_budget for w in result] == [0, 1, 5]


# --- selection and overrides -----------------------------------------------------------------


def small_inventory() -> Inventory:
    fleet = Fleet.model_validate(
        {
            "apiVersion": "werft.dev/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "f"},
            "spec": {"kubernetesVersions": ["1.31.1"], "artifacts": {"baseUrl": "http://x"}},
        }
    )
    members = [
        cluster("fra1-a", Tier.CORE, "fra1", env="prod"),
        cluster("fra1-b", Tier.CORE, "fra1", env="dev"),
        cluster("edge-1", Tier.EDGE, "edge-1", env="prod"),
    ]
    sites = {
        name: Site.model_validate(
            {
                "apiVersion": "werft.dev/v1alpha1",
                "kind": "Site",
                "metadata": {"name": name},
                "spec": {"tier": tier, "region": "eu"},
            }
        )
        for name, tier in (("fra1", "core"), ("edge-1", "edge"))
    }
    return Inventory("mem", fleet, sites, {}, {}, {c.name: c for c in members})


def test_selector_filters_by_cluster_site_tier_and_label() -> None:
    inv = small_inventory()
    names = lambda sel: [c.name for c in sel.select(inv)]  # noqa: E731
    assert names(Selector()) == ["edge-1", "fra1-a", "fra1-b"]
    assert names(Selector(clusters=["fra1-b"])) == ["fra1-b"]
    assert names(Selector(sites=["fra1"])) == ["fra1-a", "fra1-b"]
    assert names(Selector(tiers=[Tier.EDGE])) == ["edge-1"]
    assert names(Selector(labels={"env": "prod"})) == ["edge-1", "fra1-a"]
    assert names(Selector(sites=["fra1"], labels={"env": "prod"})) == ["fra1-a"]


def test_selector_reports_names_the_inventory_does_not_have() -> None:
    inv = small_inventory()
    assert Selector(clusters=["fra1-a", "fra9-x"], sites=["nowhere"]).unknown_names(inv) == [
        "cluster 'fra9-x'",
        "site 'nowhere'",
    ]
    assert Selector(tiers=[Tier.CORE]).describe() == "tiers=core"


def test_override_changes_only_the_given_fields_and_is_validated() -> None:
    changed = override_rollout(ROLLOUT, {Tier.EDGE: TierOverride(batch_size=5)})
    edge = changed.policy(Tier.EDGE)
    assert (edge.batch_size, edge.canary_size, edge.max_failures) == (5, 3, "10%")
    assert changed.policy(Tier.CORE) == ROLLOUT.policy(Tier.CORE)
    with pytest.raises(ValidationError):
        override_rollout(ROLLOUT, {Tier.EDGE: TierOverride(max_failures="lots")})


# --- outcomes and the budget -------------------------------------------------------------------


def cond(
    stage: ConditionType, ok: bool, reason: str = "Done", transient: bool = False
) -> Condition:
    return Condition(
        type=stage, status="True" if ok else "False", reason=reason, transient=transient
    )


def test_outcome_defers_unreachable_only_where_the_tier_says_so() -> None:
    unreachable = [cond(INFRA, False, "Unreachable", transient=True)]
    edge, core = ROLLOUT.policy(Tier.EDGE), ROLLOUT.policy(Tier.CORE)
    assert outcome(unreachable, edge) is Outcome.DEFERRED
    assert outcome(unreachable, core) is Outcome.FAILED
    assert outcome([cond(INFRA, False, "BMCUnauthorized")], edge) is Outcome.FAILED
    assert outcome([cond(INFRA, True), cond(VERIFIED, True)], edge) is Outcome.VERIFIED
    assert outcome([], edge) is Outcome.NOT_STARTED


def test_tally_exceeds_the_budget_only_past_it_and_ignores_deferred() -> None:
    edge = waves(plan_fleet(fleet_clusters(0, 0, 20), {}), ROLLOUT)[0]  # budget 10% of 20 = 2
    tally = WaveTally(edge)
    for result in (Outcome.FAILED, Outcome.FAILED, Outcome.DEFERRED, Outcome.DEFERRED):
        tally.add(result)
    assert not tally.exceeded
    tally.add(Outcome.FAILED)
    assert tally.exceeded
    assert "edge-wave-3: 3 of 20 clusters failed" in tally.halt_reason()
    assert tally.progress == pytest.approx(25.0)


# --- Ramp: the batches of a wave that run side by side start one after another ---------------


def _ramp_batches(n: int) -> list[Batch]:
    return [Batch("edge-wave-3", f"batch-{i:02d}", (f"edge-{i:05d}",)) for i in range(1, n + 1)]


def test_a_batch_starts_once_the_one_before_it_is_past_its_first_stage() -> None:
    first, second, third = _ramp_batches(3)
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
    first, second = _ramp_batches(2)

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
    first, second = _ramp_batches(2)

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
