"""The simulator's Redfish BMCs: resources by links, auth, errors, actions, media download."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.simfixtures import (
    DEFAULT_CREDENTIALS,
    SimHandle,
    follow,
    free_port,
    provision_bmc,
    publish_seed,
    redfish_paths,
    running_sim,
    seed_iso,
    small_fleet,
    user_data,
)

ROOT = "/bmc/c0-cp1/redfish/v1/"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def sim(artifacts: Path) -> Iterator[SimHandle]:
    machines, sites = small_fleet(2)
    with running_sim(
        machines=machines,
        clusters=sites,
        artifacts_dir=artifacts,
        time_scale=1000,
    ) as handle:
        yield handle


@pytest.fixture
def bmc(sim: SimHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, auth=DEFAULT_CREDENTIALS, trust_env=False) as client:
        yield client


def _eject_all(client: httpx.Client, machine: str) -> None:
    for path in redfish_paths(client, f"/bmc/{machine}/redfish/v1/")["media"]:
        client.post(path + "/Actions/VirtualMedia.EjectMedia", json={})


def test_service_root_links_everything_with_the_bmc_prefix(bmc: httpx.Client) -> None:
    root = follow(bmc, ROOT)
    assert root["RedfishVersion"].startswith("1.")
    assert root["UUID"]
    assert root["@odata.id"].startswith("/bmc/c0-cp1/redfish/v1")
    assert root["Systems"]["@odata.id"] == "/bmc/c0-cp1/redfish/v1/Systems"
    assert root["Managers"]["@odata.id"] == "/bmc/c0-cp1/redfish/v1/Managers"
    paths = redfish_paths(bmc, ROOT)
    assert paths["system"] == "/bmc/c0-cp1/redfish/v1/Systems/1"
    assert paths["manager"] == "/bmc/c0-cp1/redfish/v1/Managers/1"
    assert paths["media"] == [
        "/bmc/c0-cp1/redfish/v1/Managers/1/VirtualMedia/CD1",
        "/bmc/c0-cp1/redfish/v1/Managers/1/VirtualMedia/CD2",
    ]
    # The System links the same VirtualMedia collection (newer BMCs hang it there).
    system = follow(bmc, paths["system"])
    assert system["VirtualMedia"]["@odata.id"] == "/bmc/c0-cp1/redfish/v1/Managers/1/VirtualMedia"
    assert follow(bmc, "/bmc/c0-cp1/redfish")["v1"] == "/bmc/c0-cp1/redfish/v1/"


def test_every_odata_id_resolves_to_itself(bmc: httpx.Client) -> None:
    seen: set[str] = set()
    todo = [ROOT]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        doc = follow(bmc, path)
        assert doc["@odata.id"].rstrip("/") == path.rstrip("/")
        assert "@odata.type" in doc

        for link in _links(doc, doc):
            assert link.startswith("/bmc/c0-cp1/redfish/v1")
            todo.append(link)
    assert len(seen) == 8  # root, Systems, 1, Managers, 1, VirtualMedia, CD1, CD2


def _links(node: object, top: object) -> Iterator[str]:
    """Every @odata.id inside ``node`` except the document's own."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "@odata.id" and node is not top:
                yield value
            else:
                yield from _links(value, top)
    elif isinstance(node, list):
        for item in node:
            yield from _links(item, top)


def test_system_shape(bmc: httpx.Client) -> None:
    system = follow(bmc, "/bmc/c0-cp1/redfish/v1/Systems/1")
    assert system["PowerState"] in ("On", "Off")
    boot = system["Boot"]
    assert set(boot["BootSourceOverrideEnabled@Redfish.AllowableValues"]) == {
        "Disabled",
        "Once",
        "Continuous",
    }
    assert {"None", "Pxe", "Cd", "Hdd"} <= set(
        boot["BootSourceOverrideTarget@Redfish.AllowableValues"]
    )
    reset = system["Actions"]["#ComputerSystem.Reset"]
    assert reset["target"] == "/bmc/c0-cp1/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
    assert set(reset["ResetType@Redfish.AllowableValues"]) >= {
        "On",
        "ForceOff",
        "GracefulShutdown",
        "ForceRestart",
    }


def test_service_root_needs_no_credentials_but_everything_else_does(sim: SimHandle) -> None:
    with httpx.Client(base_url=sim.url, trust_env=False) as anonymous:
        assert anonymous.get(ROOT).status_code == 200
        response = anonymous.get("/bmc/c0-cp1/redfish/v1/Systems")
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic")
        error = response.json()["error"]
        assert error["code"] == "Base.1.8.GeneralError"
        assert error["message"]
        assert error["@Message.ExtendedInfo"][0]["MessageId"].startswith("Base.1.8.")
        wrong = anonymous.get("/bmc/c0-cp1/redfish/v1/Systems/1", auth=("admin", "nope"))
        assert wrong.status_code == 401
        garbage = anonymous.get(
            "/bmc/c0-cp1/redfish/v1/Systems/1", headers={"Authorization": "Basic !!!"}
        )
        assert garbage.status_code == 401


def test_unknown_resources_are_404_with_a_redfish_error(bmc: httpx.Client) -> None:
    for path in (
        "/bmc/c0-cp1/redfish/v1/Systems/2",
        "/bmc/c0-cp1/redfish/v1/Managers/1/VirtualMedia/Floppy",
        "/bmc/c0-cp1/redfish/v1/Chassis",
        "/bmc/no-such-machine/redfish/v1/",
    ):
        response = bmc.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "Base.1.8.GeneralError"


def test_expand_inlines_the_media_collection_and_other_dollar_queries_are_501(
    bmc: httpx.Client,
) -> None:
    """What the service root promises (ExpandQuery, one level) it serves; a ``$`` query it
    does not support is 501, as DSP0266 asks (sushy-tools ignores them)."""
    features = follow(bmc, ROOT)["ProtocolFeaturesSupported"]["ExpandQuery"]
    assert features["Levels"] and features["MaxLevels"] == 1
    collection = ROOT + "Managers/1/VirtualMedia"
    linked = bmc.get(collection).json()["Members"]
    inline = bmc.get(collection, params={"$expand": ".($levels=1)"}).json()["Members"]
    assert [m["@odata.id"] for m in inline] == [m["@odata.id"] for m in linked]
    assert [m for m in inline] == [bmc.get(m["@odata.id"]).json() for m in linked]
    for query in ({"$filter": "Inserted eq true"}, {"$expand": "*($levels=3)"}):
        refused = bmc.get(collection, params=query)
        assert refused.status_code == 501
        assert refused.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"].endswith(
            "QueryNotSupported"
        )


def test_wrong_method_is_405(bmc: httpx.Client) -> None:
    response = bmc.delete("/bmc/c0-cp1/redfish/v1/Systems/1")
    assert response.status_code == 405
    assert "PATCH" in response.headers["allow"]


def test_reset_powers_on_and_off(bmc: httpx.Client) -> None:
    system = "/bmc/c0-w1/redfish/v1/Systems/1"
    reset = system + "/Actions/ComputerSystem.Reset"
    assert bmc.post(reset, json={"ResetType": "On"}).status_code == 204
    assert follow(bmc, system)["PowerState"] == "On"
    assert bmc.post(reset, json={"ResetType": "On"}).status_code == 204  # idempotent
    assert bmc.post(reset, json={"ResetType": "ForceOff"}).status_code == 204
    assert follow(bmc, system)["PowerState"] == "Off"
    assert bmc.post(reset, json={"ResetType": "ForceRestart"}).status_code == 204
    assert follow(bmc, system)["PowerState"] == "On"
    assert bmc.post(reset, json={"ResetType": "GracefulShutdown"}).status_code == 204
    assert follow(bmc, system)["PowerState"] == "Off"


def test_bad_reset_arguments_are_400(bmc: httpx.Client) -> None:
    reset = "/bmc/c0-w1/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
    missing = bmc.post(reset, json={})
    assert missing.status_code == 400
    assert missing.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"] == (
        "Base.1.8.ActionParameterMissing"
    )
    wrong = bmc.post(reset, json={"ResetType": "Explode"})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"] == (
        "Base.1.8.ActionParameterValueNotInList"
    )
    assert bmc.post(reset, content=b"{not json").status_code == 400


def test_patch_boot_override_and_validation(bmc: httpx.Client) -> None:
    system = "/bmc/c0-w1/redfish/v1/Systems/1"
    response = bmc.patch(
        system,
        json={
            "Boot": {"BootSourceOverrideEnabled": "Continuous", "BootSourceOverrideTarget": "Pxe"}
        },
    )
    assert response.status_code == 204
    boot = follow(bmc, system)["Boot"]
    assert (boot["BootSourceOverrideEnabled"], boot["BootSourceOverrideTarget"]) == (
        "Continuous",
        "Pxe",
    )
    bad = bmc.patch(system, json={"Boot": {"BootSourceOverrideTarget": "Floppy"}})
    assert bad.status_code == 400
    assert bad.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"] == (
        "Base.1.8.PropertyValueNotInList"
    )
    assert bmc.patch(system, json={"Boot": {"Colour": "red"}}).status_code == 400
    assert bmc.patch(system, json={"PowerState": "On"}).status_code == 400
    boot = follow(bmc, system)["Boot"]
    assert boot["BootSourceOverrideTarget"] == "Pxe"  # nothing changed by the bad patches
    bmc.patch(
        system,
        json={
            "Boot": {"BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideTarget": "None"}
        },
    )


def test_patch_honours_if_match(bmc: httpx.Client) -> None:
    system = "/bmc/c0-w1/redfish/v1/Systems/1"
    etag = bmc.get(system).headers["etag"]
    stale = bmc.patch(
        system,
        json={"Boot": {"BootSourceOverrideTarget": "Hdd"}},
        headers={"If-Match": 'W/"00000000"'},
    )
    assert stale.status_code == 412
    fresh = bmc.patch(
        system, json={"Boot": {"BootSourceOverrideTarget": "Hdd"}}, headers={"If-Match": etag}
    )
    assert fresh.status_code == 204
    assert bmc.get(system).headers["etag"] != etag


def test_insert_downloads_the_image_and_eject_clears(sim: SimHandle, bmc: httpx.Client) -> None:
    _eject_all(bmc, "c1-cp1")
    cd1 = "/bmc/c1-cp1/redfish/v1/Managers/1/VirtualMedia/CD1"
    empty = follow(bmc, cd1)
    assert empty["Inserted"] is False and empty["Image"] is None
    assert empty["ConnectedVia"] == "NotConnected"
    assert "CD" in empty["MediaTypes"]
    image = sim.url + "/images/ubuntu-24.04-server.iso"
    before = sim.stats()["requests"]
    insert = empty["Actions"]["#VirtualMedia.InsertMedia"]["target"]
    assert (
        bmc.post(
            insert, json={"Image": image, "Inserted": True, "WriteProtected": True}
        ).status_code
        == 204
    )
    assert sim.stats()["requests"] >= before + 2  # the action and the BMC's own download
    full = follow(bmc, cd1)
    assert (full["Image"], full["Inserted"], full["WriteProtected"]) == (image, True, True)
    assert full["ConnectedVia"] == "URI"
    assert full["ImageName"] == "ubuntu-24.04-server.iso"
    assert sim.machine("c1-cp1")["media"][0]["content"] == "installer"
    # Real BMCs refuse a second image in an occupied drive: eject first.
    again = bmc.post(insert, json={"Image": image})
    assert again.status_code == 409
    eject = full["Actions"]["#VirtualMedia.EjectMedia"]["target"]
    assert bmc.post(eject, json={}).status_code == 204
    assert follow(bmc, cd1)["Inserted"] is False
    assert bmc.post(eject, json={}).status_code == 204  # ejecting nothing is fine


def test_insert_fails_when_the_image_cannot_be_fetched(sim: SimHandle, bmc: httpx.Client) -> None:
    _eject_all(bmc, "c1-w1")
    insert = "/bmc/c1-w1/redfish/v1/Managers/1/VirtualMedia/CD2/Actions/VirtualMedia.InsertMedia"
    missing = bmc.post(insert, json={"Image": sim.url + "/artifacts/seeds/nope.iso"})
    assert missing.status_code == 400
    assert "could not fetch image" in missing.json()["error"]["message"]
    refused = bmc.post(insert, json={"Image": f"http://127.0.0.1:{free_port()}/x.iso"})
    assert refused.status_code == 400
    assert "could not fetch image" in refused.json()["error"]["message"]
    remote = bmc.post(insert, json={"Image": "http://198.51.100.7/x.iso"})
    assert remote.status_code == 400
    assert bmc.post(insert, json={}).status_code == 400
    assert (
        bmc.post(insert, json={"Image": sim.url + "/images/a.iso", "Bogus": 1}).status_code == 400
    )
    assert follow(bmc, "/bmc/c1-w1/redfish/v1/Managers/1/VirtualMedia/CD2")["Inserted"] is False


def test_seed_media_is_parsed_when_inserted(
    sim: SimHandle, bmc: httpx.Client, artifacts: Path
) -> None:
    _eject_all(bmc, "c1-w1")
    data = seed_iso(user_data(cluster="c1", role="worker", node_name="c1-w1"))
    url = sim.url + publish_seed(artifacts, "c1", "c1-w1", data)
    insert = "/bmc/c1-w1/redfish/v1/Managers/1/VirtualMedia/CD2/Actions/VirtualMedia.InsertMedia"
    assert bmc.post(insert, json={"Image": url}).status_code == 204
    assert sim.machine("c1-w1")["media"][1]["content"] == "seed"


def test_images_are_deterministic_and_artifacts_read_only(sim: SimHandle, artifacts: Path) -> None:
    with httpx.Client(base_url=sim.url, trust_env=False) as client:
        one = client.get("/images/ubuntu.iso")
        assert one.status_code == 200 and len(one.content) > 1000
        assert client.get("/images/ubuntu.iso").content == one.content
        assert client.get("/images/other.iso").content != one.content
        (artifacts / "hello.txt").write_text("hi")
        assert client.get("/artifacts/hello.txt").text == "hi"
        assert client.get("/artifacts/../../etc/passwd").status_code == 404
        assert client.get("/artifacts/%2e%2e/%2e%2e/etc/passwd").status_code == 404
        assert client.put("/artifacts/hello.txt", content=b"x").status_code == 405
        assert client.get("/healthz").text == "ok"


def test_last_reset_time_and_install_counts_follow_the_machine(
    sim: SimHandle, bmc: httpx.Client, artifacts: Path
) -> None:
    # What a client can tell from a real BMC (LastResetTime), and what tests count
    # duplicate installs with (installer boots started, installs finished).
    name, root = "c1-w1", "/bmc/c1-w1/redfish/v1/"
    _eject_all(bmc, name)  # other tests inserted media here; none of them reset it
    system = redfish_paths(bmc, root)["system"]
    assert follow(bmc, system)["LastResetTime"] == "0001-01-01T00:00:00Z"  # never reset
    assert (sim.machine(name)["installsStarted"], sim.machine(name)["installs"]) == (0, 0)
    before = time.time()
    seed = sim.url + publish_seed(
        artifacts, "c1", name, seed_iso(user_data(cluster="c1", role="worker", node_name=name))
    )

    provision_bmc(bmc, root, f"{sim.url}/images/os.iso", seed)

    reset_at = datetime.fromisoformat(follow(bmc, system)["LastResetTime"].replace("Z", "+00:00"))
    assert reset_at.timestamp() >= before - 0.01
    sim.wait_phase(name, "running")
    assert (sim.machine(name)["installsStarted"], sim.machine(name)["installs"]) == (1, 1)
    # The Once override was consumed: a restart boots the disk, no second install.
    reset = follow(bmc, system)["Actions"]["#ComputerSystem.Reset"]["target"]
    assert bmc.post(reset, json={"ResetType": "ForceRestart"}).status_code == 204
    later = datetime.fromisoformat(follow(bmc, system)["LastResetTime"].replace("Z", "+00:00"))
    assert later > reset_at
    sim.wait_phase(name, "running")
    assert (sim.machine(name)["installsStarted"], sim.machine(name)["installs"]) == (1, 1)


def test_a_fault_rule_with_a_count_fires_that_often(sim: SimHandle, bmc: httpx.Client) -> None:
    system = "/bmc/c1-cp1/redfish/v1/Systems/1"
    rule = sim.add_fault(kind="error", status=503, path=system, methods=["GET"], count=1)
    try:
        assert [bmc.get(system).status_code for _ in range(3)] == [503, 200, 200]
        listed = {r["id"]: r for r in sim.faults()["rules"]}[rule["id"]]
        assert (listed["count"], listed["hits"]) == (1, 1)
    finally:
        sim.remove_fault(rule["id"])
    bad = sim.admin.post("/_sim/faults", json={"kind": "error", "count": 0})
    assert bad.status_code == 400
