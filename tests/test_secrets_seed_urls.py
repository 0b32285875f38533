"""Seeds carry a cluster's CA keys: served only at their unguessable URL, over HTTPS when
the fleet asks for it, with no listings, and gone once the machine has bootstrapped."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.renderfixtures import make_cluster
from tests.simfixtures import DEFAULT_CREDENTIALS, SimHandle, running_sim, small_fleet
from tests.stagefixtures import BARE_METAL, StageFleet, stage_fleet_fixture  # noqa: F401
from werft.render.pki import ensure_cluster_pki
from werft.render.seed import publish_seed, read_seed, retire_seed
from werft.secrets import SecretStore
from werft.stages.bootstrap import ensure_bootstrapped
from werft.stages.infrastructure import ensure_infrastructure

INSERT = "/bmc/{m}/redfish/v1/Managers/1/VirtualMedia/CD2/Actions/VirtualMedia.InsertMedia"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def sim(artifacts: Path) -> Iterator[SimHandle]:
    machines, sites = small_fleet(1)
    with running_sim(machines=machines, clusters=sites, artifacts_dir=artifacts, tls=True) as h:
        yield h


def _published(artifacts: Path, tmp_path: Path, base: str) -> tuple[str, str]:
    """(URL, the part of it after the artifacts base) of a freshly published seed."""
    cluster = make_cluster(control_planes=1, workers=0)
    store = SecretStore(tmp_path / "secrets")
    pki = ensure_cluster_pki(cluster, store)
    url = publish_seed(cluster, cluster.machines[0], pki, artifacts, base + "/artifacts")
    return url, url.removeprefix(base)


def _https(sim: SimHandle) -> httpx.Client:
    assert sim.tls_url is not None and sim.app.tls is not None
    trust = ssl.create_default_context(cadata=sim.app.tls.ca_pem.decode())
    return httpx.Client(base_url=sim.tls_url, verify=trust, trust_env=False)


def test_seed_is_served_at_its_token_url_and_nowhere_else(
    sim: SimHandle, artifacts: Path, tmp_path: Path
) -> None:
    _, path = _published(artifacts, tmp_path, sim.url)
    token = path.split("/")[3]
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with httpx.Client(base_url=sim.url, trust_env=False) as client:
        seed = client.get(path)
        assert seed.status_code == 200
        assert "ca.key" in read_seed(seed.content)["user-data"]
        assert client.get(path.replace(token, wrong)).status_code == 404
        # no listing anywhere on the way to it, nor the path without the token
        parents = path.split("/")
        for depth in range(2, len(parents)):
            listing = "/".join(parents[:depth]) + "/"
            assert client.get(listing).status_code == 404, listing
        tail = path.split(f"/s/{token}")[1]
        assert client.get("/artifacts" + tail).status_code == 404


def test_seed_is_served_over_https_and_a_bmc_fetches_it_from_there(
    sim: SimHandle, artifacts: Path, tmp_path: Path
) -> None:
    assert sim.tls_url is not None
    url, path = _published(artifacts, tmp_path, sim.tls_url)
    assert url.startswith("https://")
    with _https(sim) as client:
        assert client.get(path).status_code == 200
        assert client.get(path.rsplit("/", 1)[0] + "/").status_code == 404
    machine = sorted(sim.app.fleet.bmcs)[0]
    with httpx.Client(base_url=sim.url, auth=DEFAULT_CREDENTIALS, trust_env=False) as bmc:
        inserted = bmc.post(INSERT.format(m=machine), json={"Image": url})
        assert inserted.status_code == 204, inserted.text
    assert sim.machine(machine)["media"][1]["content"] == "seed"


def test_a_retired_seed_is_gone(sim: SimHandle, artifacts: Path, tmp_path: Path) -> None:
    cluster = make_cluster(control_planes=1, workers=0)
    store = SecretStore(tmp_path / "secrets")
    pki = ensure_cluster_pki(cluster, store)
    base = sim.url + "/artifacts"
    machine = cluster.machines[0]
    url = publish_seed(cluster, machine, pki, artifacts, base, store=store)
    ctx = SimpleNamespace(secrets=store, artifacts_dir=artifacts, artifacts_url=base)
    with httpx.Client(trust_env=False) as client:
        assert client.get(url).status_code == 200
        assert retire_seed(cluster, machine, ctx) == 1
        assert client.get(url).status_code == 404
        assert publish_seed(cluster, machine, pki, artifacts, base, store=store) == url
        assert client.get(url).status_code == 404  # a re-run does not bring it back


async def test_after_bootstrapped_the_seed_url_is_gone(stage_fleet: StageFleet) -> None:
    f = stage_fleet
    cluster = f.cluster(BARE_METAL)
    names = [m.name for m in cluster.machines]

    assert (await ensure_infrastructure(cluster, f.ctx)).ok
    seeds = {
        name: next(m["image"] for m in f.sim.machine(name)["media"] if m["content"] == "seed")
        for name in names
    }
    async with httpx.AsyncClient(trust_env=False) as client:
        for url in seeds.values():
            assert "/s/" in url and (await client.head(url)).status_code == 200
        assert (await ensure_bootstrapped(cluster, f.ctx)).ok
        for url in seeds.values():
            assert (await client.head(url)).status_code == 404
    assert not list(f.ctx.artifacts_dir.rglob("*.iso"))  # nothing left with the keys
    for name in names:  # and no BMC still offers it
        assert all(m["image"] != seeds[name] for m in f.sim.machine(name)["media"])
