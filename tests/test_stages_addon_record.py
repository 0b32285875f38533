"""The add-on record (werft/stages/addon_record.py): written before any add-on object, so
a cluster without one has nothing of werft's and the add-on stage need not list each kind;
a record that is lost costs one round of applies that change nothing, never a conflict."""

from __future__ import annotations

from tests.stagefixtures import EDGE, StageFleet, run_all, stage_fleet_fixture  # noqa: F401
from werft.render.addons import render_addon_objects
from werft.stages import ensure_addons, ensure_bootstrapped, ensure_infrastructure, verify_cluster
from werft.stages.addon_record import (
    RECORD_NAME,
    RECORD_NAMESPACE,
    group_kind,
    read_record,
    record_update,
    recorded_kinds,
)

DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}


def test_kinds_are_spelt_as_applyset_spells_them() -> None:
    assert group_kind(DEPLOYMENT) == "Deployment.apps"
    assert group_kind(NAMESPACE) == "Namespace"


def test_the_record_only_ever_grows_and_is_written_only_when_it_must() -> None:
    first = record_update(None, [NAMESPACE])
    assert first is not None and recorded_kinds(first) == {"Namespace"}
    assert record_update(first, [NAMESPACE]) is None  # covered: no write
    # An add-on that brings a new kind: the record names it (and keeps the old) first.
    grown = record_update(first, [DEPLOYMENT])
    assert grown is not None and recorded_kinds(grown) == {"Namespace", "Deployment.apps"}
    assert (grown["metadata"]["namespace"], grown["metadata"]["name"]) == (
        RECORD_NAMESPACE,
        RECORD_NAME,
    )
    assert "labels" not in grown["metadata"]  # not werft's managed label: never pruned


async def _record_kinds(f: StageFleet) -> frozenset[str]:
    cluster = f.cluster(EDGE)
    async with f.ctx.kube(cluster, f.ctx.kubeconfig(cluster)) as kube:
        return recorded_kinds(await read_record(kube))


async def test_a_fresh_cluster_is_not_listed_kind_by_kind(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    for stage in (ensure_infrastructure, ensure_bootstrapped):
        assert (await stage(cluster, f.ctx)).ok
    # Spies (no delay) on the LISTs of two kinds the edge cluster's add-ons use.
    spies = [
        f.sim.add_fault(kind="slow", seconds=0, cluster=EDGE, path=f"/clusters/{EDGE}/{path}")
        for path in ("apis/apps/v1/deployments", "api/v1/namespaces")
    ]
    f.sim.reset_stats()

    condition = await ensure_addons(cluster, f.ctx)

    rendered = render_addon_objects(cluster, f.inventory)
    assert (condition.reason, condition.mutations) == ("AddonsApplied", len(rendered) + 1)
    hits = {rule["id"]: rule["hits"] for rule in f.sim.faults()["rules"]}
    assert [hits[spy["id"]] for spy in spies] == [0, 0]
    assert await _record_kinds(f) == {group_kind(item.obj) for item in rendered}
    assert (await verify_cluster(cluster, f.ctx)).reason == "Verified"


async def test_a_lost_record_costs_applies_that_change_nothing(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    assert [c.reason for c in await run_all(cluster, f.ctx)][-1] == "Verified"
    kinds = await _record_kinds(f)
    f.sim.drift(
        kind="delete-object",
        cluster=EDGE,
        apiVersion="v1",
        resource="configmaps",
        namespace=RECORD_NAMESPACE,
        name=RECORD_NAME,
    )

    # Every object is applied as if absent: server-side apply keeps them as they were
    # (no conflict with werft's own fields), and the record is back.
    healed = await ensure_addons(cluster, f.ctx)
    assert healed.reason == "AddonsApplied", healed.message
    assert await _record_kinds(f) == kinds
    again = await ensure_addons(cluster, f.ctx)
    assert (again.reason, again.mutations) == ("AddonsAlreadyReady", 0)
    assert (await verify_cluster(cluster, f.ctx)).reason == "Verified"
