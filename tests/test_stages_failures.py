"""Bad input and failure: each ends its stage with a clear reason, and a re-run after the
cause is gone finishes the work (nothing is left half-done that a re-run cannot finish)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import httpx
import pytest
import yaml

from tests.flowfixtures import lift_after_first_hit
from tests.stagefixtures import EDGE, VMS, StageFleet, stage_fleet_fixture  # noqa: F401
from werft.conditions import ConditionType
from werft.inventory.resolved import ResolvedCluster
from werft.render.addons import render_addons
from werft.stages import (
    ensure_addons,
    ensure_bootstrapped,
    ensure_infrastructure,
    verify_cluster,
)
from werft.stages.reach import (
    Reachability,
    SiteUnreachable,
    is_unreachable,
    site_failure,
)
from werft.stages.result import run_stage


async def test_bmc_refusing_credentials_is_permanent_and_never_shows_the_password(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    ref = cluster.machines[0].bmc.credentials_ref
    right = f.ctx.secrets.get(ref)
    f.ctx.secrets.put(ref, "admin:not-the-password")

    refused = await ensure_infrastructure(cluster, f.ctx)

    assert (refused.status, refused.reason, refused.transient) == (
        "False",
        "BMCUnauthorized",
        False,
    )
    assert ref in refused.message and cluster.machines[0].name in refused.message
    assert "not-the-password" not in refused.model_dump_json()
    assert f.mutations(EDGE) == 0

    f.ctx.secrets.put(ref, right)
    assert (await ensure_infrastructure(cluster, f.ctx)).reason == "Provisioned"


async def test_system_that_is_not_there_is_permanent(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    typo = _with_bmc_address(cluster, lambda a: a.replace("/Systems/1", "/Systems/7"))

    missing = await ensure_infrastructure(typo, f.ctx)

    assert (missing.status, missing.reason, missing.transient) == (
        "False",
        "SystemNotFound",
        False,
    )
    assert "'7'" in missing.message
    # The inventory fixed, the same cluster provisions.
    assert (await ensure_infrastructure(cluster, f.ctx)).reason == "Provisioned"


async def test_media_that_cannot_be_fetched_is_reported_and_a_rerun_recovers(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    missing_image = f"{f.sim.url}/artifacts/images/does-not-exist.iso"
    broken = dataclasses.replace(cluster, os_image_url=missing_image)

    failed = await ensure_infrastructure(broken, f.ctx)

    assert (failed.status, failed.reason, failed.transient) == (
        "False",
        "MediaUnavailable",
        False,
    )
    assert "does-not-exist.iso" in failed.message and "404" in failed.message
    # The calls sent before (and with) the refused insert count, as the BMC counted them.
    assert failed.mutations == f.mutations(EDGE) > 0
    # Whatever the failed attempt inserted (the seed went in first), a re-run finishes.
    fixed = await ensure_infrastructure(cluster, f.ctx)
    assert (fixed.status, fixed.reason) == ("True", "Provisioned"), fixed.message
    media = f.sim.machine(cluster.machines[0].name)["media"]
    assert cluster.os_image_url in str(media)


async def test_vm_whose_media_cannot_be_fetched_is_media_unavailable(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(VMS)
    missing_image = f"{f.sim.url}/artifacts/images/does-not-exist.iso"
    broken = dataclasses.replace(cluster, os_image_url=missing_image)

    failed = await ensure_infrastructure(broken, f.ctx)

    # The hypervisor fetches a domain's media when it is defined, and refuses the PUT.
    assert (failed.status, failed.reason, failed.transient) == (
        "False",
        "MediaUnavailable",
        False,
    )
    assert "does-not-exist.iso" in failed.message and "404" in failed.message
    # Each machine's refused PUT was sent: counted, as the simulator counted them.
    assert failed.mutations == f.mutations(VMS) == len(cluster.machines)
    fixed = await ensure_infrastructure(cluster, f.ctx)
    assert (fixed.status, fixed.reason) == ("True", "Provisioned"), fixed.message


async def test_release_failure_carries_the_providers_reason(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    assert (await ensure_infrastructure(cluster, f.ctx)).ok
    machine = cluster.machines[0]
    # The cluster answers; its machine's BMC does not.
    fault = f.sim.add_fault(kind="offline", machine=machine.name)

    failed = await ensure_bootstrapped(cluster, f.ctx)

    assert (failed.status, failed.reason, failed.transient) == ("False", "Unreachable", True)
    assert "release failed" in failed.message and machine.name in failed.message
    f.sim.remove_fault(fault["id"])
    up = await ensure_bootstrapped(cluster, f.ctx)
    assert (up.status, up.reason) == ("True", "Bootstrapped"), up.message
    # The re-run did what the failed release could not; nothing is left for a third.
    again = await ensure_bootstrapped(cluster, f.ctx)
    assert (again.status, again.reason, again.mutations) == ("True", "Bootstrapped", 0)


async def test_cluster_api_that_never_comes_up_times_out_transiently(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    assert (await ensure_infrastructure(cluster, f.ctx)).ok
    # The API refuses connections; the machine's BMC answers (the site is there).
    fault = f.sim.add_fault(kind="offline", path=f"/clusters/{EDGE}*")
    ctx = f.with_timeouts(bootstrap=0.5)

    started = time.monotonic()
    down = await ensure_bootstrapped(cluster, ctx)

    assert (down.status, down.reason, down.transient) == ("False", "APIUnavailable", True)
    assert cluster.api_endpoint in down.message and "0.5s" in down.message
    # Its own deadline ended it, not the (longer) HTTP timeout.
    assert 0.5 <= time.monotonic() - started < ctx.timeouts.http
    assert down.mutations == 0

    f.sim.remove_fault(fault["id"])
    up = await ensure_bootstrapped(cluster, f.ctx)
    assert (up.status, up.reason) == ("True", "Bootstrapped"), up.message


async def test_addon_that_never_becomes_available_is_named_and_a_rerun_finishes(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    for stage in (ensure_infrastructure, ensure_bootstrapped):
        assert (await stage(cluster, f.ctx)).ok
    # Someone created the GitOps controller by hand with an image the nodes cannot pull
    # (the simulator's sim.werft.dev/unavailable annotation), before werft got to it.
    manifests = render_addons(cluster, f.inventory)
    namespace = next(o for o in manifests if o["metadata"]["name"] == "flux-system")
    controller = next(
        o
        for o in manifests
        if o["metadata"]["name"] == "kustomize-controller" and o["kind"] == "Deployment"
    )
    stuck = {
        **controller,
        "metadata": {
            **controller["metadata"],
            "annotations": {
                **controller["metadata"].get("annotations", {}),
                "sim.werft.dev/unavailable": "ImagePullBackOff",
            },
        },
    }
    # Without the resources: "0.5" CPU applied by two managers is a conflict on a real
    # server ("500m" is stored), which is another test's subject.
    for container in stuck["spec"]["template"]["spec"]["containers"]:
        container.pop("resources", None)
    _kubectl_apply(f, cluster, [namespace, stuck])

    ctx = f.with_timeouts(addons=0.5)
    failed = await ensure_addons(cluster, ctx)

    assert (failed.status, failed.reason, failed.transient) == (
        "False",
        "AddonNotAvailable",
        True,
    ), failed.message
    assert "Deployment flux-system/kustomize-controller not Available" in failed.message
    assert failed.mutations > 0  # everything else was applied
    checked = await verify_cluster(cluster, f.ctx)
    assert not checked.ok
    assert any(
        line.startswith("fail: Deployment flux-system/kustomize-controller healthy")
        for line in checked.checks
    )

    f.sim.drift(
        kind="change-object",
        cluster=EDGE,
        apiVersion="apps/v1",
        resource="deployments",
        namespace="flux-system",
        name="kustomize-controller",
        patch={"metadata": {"annotations": {"sim.werft.dev/unavailable": None}}},
    )
    f.sim.reset_stats()
    finished = await ensure_addons(cluster, f.ctx)
    assert (finished.status, finished.reason, finished.mutations) == (
        "True",
        "AddonsAlreadyReady",
        0,
    )
    assert f.mutations(EDGE) == 0
    assert (await verify_cluster(cluster, f.ctx)).reason == "Verified"


async def test_transient_server_errors_are_marked_transient(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    machine = cluster.machines[0].name
    fault = f.sim.add_fault(kind="error", status=500, machine=machine)

    bmc_error = await ensure_infrastructure(cluster, f.ctx)

    assert (bmc_error.status, bmc_error.reason, bmc_error.transient) == (
        "False",
        "ProviderError",
        True,
    )
    f.sim.remove_fault(fault["id"])
    for stage in (ensure_infrastructure, ensure_bootstrapped):
        assert (await stage(cluster, f.ctx)).ok

    fault = f.sim.add_fault(kind="error", status=503, cluster=EDGE, methods=["PATCH"])
    api_error = await ensure_addons(cluster, f.ctx)
    assert (api_error.status, api_error.reason, api_error.transient) == (
        "False",
        "ApplyFailed",
        True,
    )
    assert "503" in api_error.message
    f.sim.remove_fault(fault["id"])
    assert (await ensure_addons(cluster, f.ctx)).reason == "AddonsApplied"


async def test_unreachable_site_is_deferrable(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    fault = f.sim.add_fault(kind="offline", site=cluster.site)

    gone = await ensure_infrastructure(cluster, f.ctx)

    # "Unreachable" + transient is what the planner defers at edge sites.
    assert (gone.status, gone.reason, gone.transient) == ("False", "Unreachable", True)
    f.sim.remove_fault(fault["id"])
    assert (await ensure_infrastructure(cluster, f.ctx)).ok


async def test_a_bug_becomes_an_internal_error_without_secrets(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    await ensure_infrastructure(cluster, f.ctx)  # generates the cluster's tokens
    token = f.ctx.secrets.get(f"clusters/{EDGE}/admin-token")
    assert token

    async def buggy(progress: object) -> None:
        raise KeyError(f"no such field in {token}")

    condition = await run_stage(
        ConditionType.ADDONS_READY, cluster, f.ctx, buggy, lambda exc: "Never"
    )

    assert (condition.status, condition.reason, condition.transient) == (
        "False",
        "InternalError",
        False,
    )
    assert "KeyError" in condition.message
    assert token not in condition.model_dump_json()


# --- helpers -------------------------------------------------------------------------------


def _with_bmc_address(cluster: ResolvedCluster, change: object) -> ResolvedCluster:
    machines = tuple(
        m.model_copy(update={"bmc": m.bmc.model_copy(update={"address": change(m.bmc.address)})})
        for m in cluster.machines
    )
    return dataclasses.replace(cluster, machines=machines)


def _kubectl_apply(f: StageFleet, cluster: ResolvedCluster, objects: list[dict]) -> None:
    """What an operator's kubectl would do: server-side apply under its own field manager."""
    kubeconfig = yaml.safe_load(f.ctx.stored_kubeconfig(cluster) or "")
    token = kubeconfig["users"][0]["user"]["token"]
    with httpx.Client(base_url=cluster.api_endpoint, timeout=5.0, trust_env=False) as client:
        for obj in objects:
            meta = obj["metadata"]
            group = obj["apiVersion"]
            prefix = "/api/v1" if group == "v1" else f"/apis/{group}"
            plural = {"Namespace": "namespaces", "Deployment": "deployments"}[obj["kind"]]
            ns = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
            response = client.patch(
                f"{prefix}{ns}/{plural}/{meta['name']}",
                params={"fieldManager": "kubectl", "force": "true"},
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/apply-patch+yaml",
                },
                content=yaml.safe_dump(obj),
            )
            assert response.status_code in (200, 201), response.text


# --- verify judges by cause; unreachable is a judgement over time ---------------------------


async def _up_to_verify(f: StageFleet, cluster: ResolvedCluster) -> None:
    for stage in (ensure_infrastructure, ensure_bootstrapped, ensure_addons):
        condition = await stage(cluster, f.ctx)
        assert condition.ok, condition


async def test_one_503_on_livez_or_version_is_probed_again_and_verified(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    await _up_to_verify(f, cluster)
    for path in ("livez", "version"):  # /version: asked over httpx
        rule = f.sim.add_fault(kind="error", status=503, path=f"/clusters/{EDGE}/{path}")
        with lift_after_first_hit(f.sim, rule["id"]) as lifted:
            condition = await verify_cluster(cluster, f.ctx)
        assert (condition.reason, condition.status) == ("Verified", "True"), condition
        assert lifted and lifted[0] >= 1  # the fault did hit: the probe was asked again


async def test_a_probe_that_never_answers_ends_transient_not_verification_failed(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    await _up_to_verify(f, cluster)
    f.sim.add_fault(kind="error", status=503, path=f"/clusters/{EDGE}/livez")
    ctx = f.with_timeouts(verify=0.5)

    condition = await verify_cluster(cluster, ctx)

    assert (condition.status, condition.reason, condition.transient) == (
        "False",
        "APIUnavailable",
        True,
    )
    assert "/livez" in condition.message


async def test_a_site_that_goes_offline_in_verify_is_unreachable_long_before_the_deadline(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    await _up_to_verify(f, cluster)
    f.sim.add_fault(kind="offline", site=cluster.site)
    deadline = 60.0
    ctx = f.with_timeouts(verify=deadline)

    condition = await verify_cluster(cluster, ctx)

    assert (condition.status, condition.reason, condition.transient) == (
        "False",
        "Unreachable",
        True,
    )
    assert "probes in a row" in condition.message
    # Judged once the grace (a few poll intervals) has passed over probes that each ran
    # their request retries -- seconds -- not at the deadline.
    assert condition.duration_s < deadline / 4, condition.message


async def test_one_dropped_connection_is_not_unreachable(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    rule = f.sim.add_fault(kind="offline", site=cluster.site)
    with lift_after_first_hit(f.sim, rule["id"]) as lifted:
        infra = await ensure_infrastructure(cluster, f.ctx)
    assert infra.ok, infra
    assert lifted  # a connection was dropped, and the stage went on
    await _up_to_verify(f, cluster)
    rule = f.sim.add_fault(kind="offline", cluster=EDGE)
    with lift_after_first_hit(f.sim, rule["id"]) as lifted:
        verified = await verify_cluster(cluster, f.ctx)
    assert verified.reason == "Verified", verified
    assert lifted


@pytest.mark.parametrize(
    ("stage", "timeout", "deadline", "share"),
    [
        pytest.param(ensure_bootstrapped, "bootstrap", 30.0, 3, id="bootstrap"),
        pytest.param(ensure_addons, "addons", 60.0, 4, id="add-ons"),
    ],
)
async def test_a_site_that_goes_offline_mid_stage_is_unreachable_long_before_the_deadline(
    stage_fleet: StageFleet, stage: Any, timeout: str, deadline: float, share: int
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    for before in (ensure_infrastructure, ensure_bootstrapped):
        if before is stage:
            break
        assert (await before(cluster, f.ctx)).ok
    f.sim.add_fault(kind="offline", site=cluster.site)

    condition = await stage(cluster, f.with_timeouts(**{timeout: deadline}))

    assert (condition.reason, condition.transient) == ("Unreachable", True), condition
    assert condition.duration_s < deadline / share, condition.message


async def test_while_the_api_is_not_up_only_a_silent_bmc_makes_the_site_unreachable(
    stage_fleet: StageFleet,
) -> None:
    """What bootstrap's wait for the API shows ``progress.reach``: an API that refuses
    connections while its BMC answers is a machine still installing, not a lost site."""
    f = stage_fleet
    cluster = f.cluster(EDGE)
    assert (await ensure_infrastructure(cluster, f.ctx)).ok
    api_only = f.sim.add_fault(kind="offline", cluster=EDGE, path="/clusters/*")
    reach = Reachability(cluster.name, grace=0.0)
    assert await site_failure(cluster, f.ctx) is None
    f.sim.remove_fault(api_only["id"])
    f.sim.add_fault(kind="offline", site=cluster.site)
    failure = await site_failure(cluster, f.ctx)
    assert is_unreachable(failure), failure
    reach.saw(failure)
    with pytest.raises(SiteUnreachable):
        reach.saw(await site_failure(cluster, f.ctx))
