"""The four stages against the real simulator: from bare hardware to Verified, re-runs that
touch nothing, drift that only the drifted object is re-applied for, and machines that
lost power coming back from their disks instead of being re-imaged."""

from __future__ import annotations

from tests.stagefixtures import BARE_METAL, EDGE, VMS, StageFleet, run_all, stage_fleet_fixture  # noqa: F401
from werft.conditions import STAGE_ORDER, ConditionType
from werft.inventory.load import load_inventory
from werft.inventory.model import Machine
from werft.inventory.resolved import ResolvedCluster
from werft.render.addons import render_addons
from werft.stages import (
    STAGES,
    ensure_addons,
    ensure_bootstrapped,
    ensure_infrastructure,
    observe_cluster,
    run_stage_batch,
    verify_cluster,
)

NOTHING = dict.fromkeys(STAGE_ORDER, False)
EVERYTHING = dict.fromkeys(STAGE_ORDER, True)
INFRA = ConditionType.INFRASTRUCTURE_READY
# No boot override in effect (a BMC may keep the target of a disabled one).
NO_OVERRIDE = {"BootSourceOverrideEnabled": "Disabled"}
ALREADY_DONE = ["AlreadyProvisioned", "Bootstrapped", "AddonsAlreadyReady", "Verified"]


async def test_bare_metal_and_vm_clusters_go_from_nothing_to_verified(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    clusters = [f.cluster(BARE_METAL), f.cluster(VMS)]
    assert [await observe_cluster(c, f.ctx) for c in clusters] == [NOTHING, NOTHING]

    expected = {
        ConditionType.INFRASTRUCTURE_READY: "Provisioned",
        ConditionType.BOOTSTRAPPED: "Bootstrapped",
        ConditionType.ADDONS_READY: "AddonsApplied",
        ConditionType.VERIFIED: "Verified",
    }
    for stage in STAGE_ORDER:
        conditions = await run_stage_batch(stage, clusters, f.ctx, max_concurrency=2)
        for cluster, condition in zip(clusters, conditions, strict=True):
            assert condition.type == stage
            assert (condition.status, condition.reason) == ("True", expected[stage]), (
                cluster.name,
                condition.message,
            )
            assert condition.transient is False
            assert condition.duration_s > 0
            # Infrastructure and add-ons change things; bootstrap only creates the join
            # token's Secret and ejects werft's media (two devices per bare-metal machine,
            # one PUT per VM); verify watches.
            if stage in (ConditionType.INFRASTRUCTURE_READY, ConditionType.ADDONS_READY):
                assert condition.mutations > 0
            elif stage == ConditionType.BOOTSTRAPPED:
                per_machine = 2 if cluster.machines[0].bmc is not None else 1
                assert condition.mutations == 1 + per_machine * len(cluster.machines)
            else:
                assert condition.mutations == 0
        # What the planner sees after each stage: a satisfied prefix that reaches at least
        # this stage (the nodes may have bootstrapped themselves already; Verified asks no
        # more than healthy add-ons on a healthy cluster, so it comes with AddonsReady).
        observed = await observe_cluster(clusters[0], f.ctx)
        satisfied = [s for s in STAGE_ORDER if observed[s]]
        assert satisfied == list(STAGE_ORDER[: len(satisfied)])
        assert stage in satisfied
        if stage == ConditionType.ADDONS_READY:
            assert satisfied == list(STAGE_ORDER)

    verified = conditions
    bm_checks = verified[0].checks
    assert all(line.startswith("pass: ") for line in bm_checks)
    assert "pass: nodes Ready 2/2" in bm_checks
    assert "pass: kubelet v1.31.4 on 2/2" in bm_checks
    assert "pass: Deployment kube-system/metrics-server healthy (1/1 available)" in bm_checks
    assert "pass: API version v1.31.4 (want v1.31.4; GET /version over httpx: 200)" in bm_checks
    assert "pass: nodes Ready 3/3" in verified[1].checks
    # The machines really are installed and running the cluster's nodes.
    for machine in f.cluster(BARE_METAL).machines:
        assert f.sim.machine(machine.name)["powerState"] == "On"
    assert f.sim.cluster(BARE_METAL)["apiUp"] is True
    assert [await observe_cluster(c, f.ctx) for c in clusters] == [EVERYTHING, EVERYTHING]


async def test_rerun_of_ready_cluster_makes_no_mutating_calls(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    # Bare metal (BMC) and VMs (hypervisor): every kind of endpoint werft mutates.
    clusters = [f.cluster(EDGE), f.cluster(VMS)]
    for cluster in clusters:
        assert [c.reason for c in await run_all(cluster, f.ctx)][-1] == "Verified"
    assert f.mutations() > 0
    f.sim.reset_stats()

    for cluster in clusters:
        again = await run_all(cluster, f.ctx)
        assert [c.reason for c in again] == [
            "AlreadyProvisioned",
            "Bootstrapped",
            "AddonsAlreadyReady",
            "Verified",
        ]
        assert [c.mutations for c in again] == [0, 0, 0, 0]
    stats = f.sim.stats()
    assert stats["mutations"] == {"bmc": {}, "hypervisor": {}, "clusters": {}}
    assert stats["requests"] > 0  # it did look


async def test_observe_is_one_cheap_read_only_pass(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    cluster = f.cluster(BARE_METAL)
    await run_all(cluster, f.ctx)
    f.sim.reset_stats()

    assert await observe_cluster(cluster, f.ctx) == EVERYTHING

    stats = f.sim.stats()
    assert f.mutations() == 0
    # Presence and health: one LIST per kind, not one GET per object. Drift: the server's
    # word on each object (a dry-run apply, which changes nothing).
    objects = len(render_addons(cluster, f.inventory))
    api_requests = stats["requestsByTarget"]["clusters"][BARE_METAL]
    assert api_requests <= objects + 15, (api_requests, objects)


async def test_deleted_addon_object_is_detected_and_only_it_is_reapplied(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    await run_all(cluster, f.ctx)
    f.sim.drift(
        kind="delete-object",
        cluster=EDGE,
        apiVersion="v1",
        resource="configmaps",
        namespace="kube-flannel",
        name="kube-flannel-cfg",
    )

    observed = await observe_cluster(cluster, f.ctx)
    assert observed[ConditionType.BOOTSTRAPPED] and not observed[ConditionType.ADDONS_READY]
    checked = await verify_cluster(cluster, f.ctx)
    assert (checked.status, checked.reason) == ("False", "VerificationFailed")
    assert "fail: ConfigMap kube-flannel/kube-flannel-cfg present" in checked.checks

    f.sim.reset_stats()
    healed = await ensure_addons(cluster, f.ctx)

    assert (healed.status, healed.reason, healed.mutations) == ("True", "AddonsApplied", 1)
    assert f.mutations(EDGE) == 1
    assert (await verify_cluster(cluster, f.ctx)).reason == "Verified"


async def test_verify_trusts_only_what_nobody_wrote_since_the_addon_stage_applied_it(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    objects = len(render_addons(cluster, f.inventory))
    for stage in STAGE_ORDER[:-1]:
        assert (await STAGES[stage](cluster, f.ctx)).ok, stage

    # Verify in the run that applied the add-ons asks the server for no dry run of an
    # object whose resourceVersion is still the one the apply answered with ...
    f.sim.reset_stats()
    assert (await verify_cluster(cluster, f.ctx)).reason == "Verified"
    trusting = f.sim.stats()["requestsByTarget"]["clusters"][EDGE]
    f.sim.reset_stats()
    assert (await verify_cluster(cluster, f.with_timeouts())).reason == "Verified"
    independent = f.sim.stats()["requestsByTarget"]["clusters"][EDGE]
    assert independent - trusting == objects  # one dry-run apply per object

    # ... and one that someone wrote in between is compared through the server again.
    await ensure_addons(cluster, f.ctx)
    f.sim.drift(
        kind="change-object",
        cluster=EDGE,
        apiVersion="v1",
        resource="configmaps",
        namespace="kube-flannel",
        name="kube-flannel-cfg",
        patch={"data": {"cni-conf.json": "{}"}},
    )
    checked = await verify_cluster(cluster, f.ctx)
    assert (checked.status, checked.reason) == ("False", "VerificationFailed")
    assert (
        "fail: ConfigMap kube-flannel/kube-flannel-cfg not drifted (.data.cni-conf.json)"
        in checked.checks
    ), [c for c in checked.checks if c.startswith("fail")]


async def test_field_another_manager_changed_is_a_conflict_until_the_addonset_forces(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    await run_all(cluster, f.ctx)
    f.sim.drift(  # as `kubectl edit` would: an update by another field manager
        kind="change-object",
        cluster=EDGE,
        apiVersion="apps/v1",
        resource="deployments",
        namespace="flux-system",
        name="kustomize-controller",
        patch={"spec": {"template": {"spec": {"serviceAccountName": "default"}}}},
    )
    checked = await verify_cluster(cluster, f.ctx)
    assert (
        "fail: Deployment flux-system/kustomize-controller not drifted "
        "(.spec.template.spec.serviceAccountName)"
    ) in checked.checks

    f.sim.reset_stats()
    refused = await ensure_addons(cluster, f.ctx)

    # Never a silent takeover, never retried as if it were transient.
    assert (refused.status, refused.reason, refused.transient) == ("False", "ApplyConflict", False)
    assert refused.mutations == 0 and f.mutations(EDGE) == 0
    for words in (
        "Deployment flux-system/kustomize-controller",
        ".spec.template.spec.serviceAccountName",
        "kubectl-edit",
        "forceConflicts: true",
        "kustomize-controller.yaml.j2",
    ):
        assert words in refused.message, (words, refused.message)

    addonset = f.root / "addons" / "gitops" / "addonset.yaml"
    addonset.write_text(addonset.read_text() + "  forceConflicts: true\n")
    forcing = f.with_inventory(load_inventory(f.root))
    taken = await ensure_addons(cluster, forcing)

    assert (taken.status, taken.reason, taken.mutations) == ("True", "AddonsApplied", 1)
    assert (await verify_cluster(cluster, forcing)).reason == "Verified"


async def test_machine_that_lost_power_is_powered_back_on_from_disk_not_reinstalled(
    stage_fleet: StageFleet,
) -> None:
    # A single-node site lost power: its API went down with its only machine, so the
    # cluster cannot say whether the machine was installed. The machine can: werft's seed
    # is in, and the one-time override to the installer was consumed by its first boot.
    f = stage_fleet
    cluster = f.cluster(EDGE)
    assert [c.reason for c in await run_all(cluster, f.ctx)][-1] == "Verified"
    node = cluster.machines[0].name
    before = f.sim.machine(node)
    f.sim.drift(kind="power-off", machine=node)
    assert (await observe_cluster(cluster, f.ctx))[INFRA] is False
    f.sim.reset_stats()

    condition = await ensure_infrastructure(cluster, f.ctx)

    assert (condition.status, condition.reason) == ("True", "Provisioned"), condition.message
    assert f"powered back on from disk: {node}" in condition.message
    # Exactly the power-on: no media change, no boot override to the installer.
    assert condition.mutations == 1
    assert f.sim.stats()["mutations"] == {"bmc": {node: 1}, "hypervisor": {}, "clusters": {}}
    assert "installing" not in f.phases_until(node, "running")
    after = f.sim.machine(node)
    assert after["powerState"] == "On" and NO_OVERRIDE.items() <= after["boot"].items()
    assert (after["media"], after["installed"]) == (before["media"], before["installed"])
    again = await run_all(cluster, f.ctx)
    assert [c.reason for c in again][-1] == "Verified", again[-1].message
    assert [c.mutations for c in again] == [0, 0, 0, 0]


async def test_worker_whose_node_is_registered_is_powered_on_even_with_a_cd_override_left(
    stage_fleet: StageFleet,
) -> None:
    # A BMC that keeps its boot override (Continuous), and werft never got to release the
    # machine. The machine alone would look "set up for the installer"; the cluster, whose
    # API still answers, knows the worker's Node: it was installed.
    f = stage_fleet
    cluster = f.cluster(BARE_METAL)
    assert [c.reason for c in await run_all(cluster, f.ctx)][-1] == "Verified"
    worker = _worker(cluster)
    f.set_boot_override(worker, "Cd", "Continuous")
    f.sim.drift(kind="power-off", machine=worker.name)
    media = f.sim.machine(worker.name)["media"]
    f.sim.reset_stats()

    condition = await ensure_infrastructure(cluster, f.ctx)

    assert (condition.status, condition.reason) == ("True", "Provisioned"), condition.message
    assert condition.mutations == 2  # clear the Cd override, power on: nothing else
    assert f.sim.stats()["mutations"]["bmc"] == {worker.name: 2}
    assert "installing" not in f.phases_until(worker.name, "running")
    after = f.sim.machine(worker.name)
    assert NO_OVERRIDE.items() <= after["boot"].items() and after["media"] == media
    bootstrapped = await ensure_bootstrapped(cluster, f.ctx)
    assert (bootstrapped.reason, bootstrapped.mutations) == ("Bootstrapped", 0)
    # As the pipeline does: the add-on stage waits for the node to be Ready again (it was
    # powered off), and only then does verify look.
    assert (await ensure_addons(cluster, f.ctx)).ok
    verified = await verify_cluster(cluster, f.ctx)
    assert verified.reason == "Verified", verified.message


async def test_machine_the_cluster_has_no_node_for_is_reinstalled(stage_fleet: StageFleet) -> None:
    # The API answers and no Node is registered for the machine (here: removed from the
    # cluster; as after an install cut short by the power loss): installing it is what
    # makes it join.
    f = stage_fleet
    cluster = f.cluster(BARE_METAL)
    assert [c.reason for c in await run_all(cluster, f.ctx)][-1] == "Verified"
    worker = _worker(cluster).name
    f.sim.drift(kind="power-off", machine=worker)
    f.sim.drift(
        kind="delete-object", cluster=BARE_METAL, apiVersion="v1", resource="nodes", name=worker
    )
    f.sim.reset_stats()

    condition = await ensure_infrastructure(cluster, f.ctx)

    assert (condition.status, condition.reason) == ("True", "Provisioned"), condition.message
    assert "powered back on from disk" not in condition.message
    # Released, its media were ejected: insert both again, the override to the
    # installer, and power on.
    assert condition.mutations == 4
    assert f.sim.stats()["mutations"]["bmc"] == {worker: 4}
    # The add-on stage waits for what the worker's loss took down (its CNI pod, the
    # workloads it ran) to come back on it; verify alone would race them.
    stages = (ensure_bootstrapped, ensure_addons, verify_cluster)
    again = [await stage(cluster, f.ctx) for stage in stages]
    assert [c.reason for c in again] == ["Bootstrapped", "AddonsAlreadyReady", "Verified"], (
        again[-1].message
    )
    assert f.sim.machine(worker)["node"]["name"] == worker


async def test_bootstrap_releases_machines_so_a_reboot_boots_the_disk(
    stage_fleet: StageFleet,
) -> None:
    f = stage_fleet
    cluster = f.cluster(EDGE)
    assert [c.reason for c in await run_all(cluster, f.ctx)][-1] == "Verified"
    machine = cluster.machines[0]
    # As a BMC that turns every override into Continuous leaves an installed machine.
    f.set_boot_override(machine, "Cd", "Continuous")
    observed = await observe_cluster(cluster, f.ctx)
    assert observed[INFRA] and not observed[ConditionType.BOOTSTRAPPED]
    f.sim.reset_stats()

    released = await ensure_bootstrapped(cluster, f.ctx)

    assert (released.status, released.reason, released.mutations) == ("True", "Bootstrapped", 1)
    assert f.sim.stats()["mutations"]["bmc"] == {machine.name: 1}
    assert NO_OVERRIDE.items() <= f.sim.machine(machine.name)["boot"].items()
    assert await observe_cluster(cluster, f.ctx) == EVERYTHING
    again = await run_all(cluster, f.ctx)
    assert ([c.reason for c in again], [c.mutations for c in again]) == (ALREADY_DONE, [0] * 4)


def _worker(cluster: ResolvedCluster) -> Machine:
    return next(m for m in cluster.machines if m.role == "worker")
