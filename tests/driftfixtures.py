"""Helpers for the drift flow tests: a provisioned edge fleet in a real Git repository, the
same manual edit on many clusters, a drift policy written into fleet.yaml (restored after),
and runs of the real drift-check flow."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import git
import httpx
import pytest
import yaml
from prefect.states import State

from flows.drift import DriftRequest, DriftResult, drift_check
from tests.flowfixtures import Fleet, fleet, outcomes, provision
from tests.simfixtures import wait_for
from werft.render.addons import render_addons

FLANNEL_CM = {"apiVersion": "v1", "resource": "configmaps", "namespace": "kube-flannel",
              "name": "kube-flannel-cfg"}


@contextlib.contextmanager
def provisioned_edge_fleet(
    factory: pytest.TempPathFactory, edge: int
) -> Iterator[tuple[Fleet, git.Repo]]:
    workdir = factory.mktemp("drift")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setenv("WERFT_HOME", str(workdir / ".werft"))
        with fleet(workdir, core=0, near=0, edge=edge) as f:
            repo = git.Repo.init(f.root)
            with repo.config_writer() as config:
                config.set_value("user", "name", "werft tests")
                config.set_value("user", "email", "tests@werft.invalid")
            repo.git.add(A=True)
            repo.index.commit("the fleet")
            state, result = provision(f.request())
            assert state.is_completed(), (state.message, outcomes(result))
            yield f, repo


def run_drift(f: Fleet, **fields: Any) -> tuple[State[Any], DriftResult]:
    request = DriftRequest(**({"inventory": str(f.root), "time_scale": 1000.0} | fields))
    state = asyncio.run(drift_check(request, return_state=True))  # type: ignore[call-overload]
    result = state.result(raise_on_failure=False)
    if not isinstance(result, DriftResult):
        result = state.data
    assert isinstance(result, DriftResult), (state, result)
    return state, result


def flannel_backend(f: Fleet, cluster: str, backend: str) -> None:
    """``kubectl edit`` of flannel's net-conf.json on one cluster: the backend changed in
    the text werft applied, the rest as it was."""
    [config] = [o for o in render_addons(f.inventory.clusters[cluster], f.inventory)
                if o["kind"] == "ConfigMap" and o["metadata"]["name"] == FLANNEL_CM["name"]]
    text = config["data"]["net-conf.json"]
    assert '"vxlan"' in text
    f.sim.drift(kind="change-object", cluster=cluster, **FLANNEL_CM,
                patch={"data": {"net-conf.json": text.replace('"vxlan"', json.dumps(backend))}})


@contextlib.contextmanager
def drift_policy(root: Path, policy: dict[str, Any]) -> Iterator[None]:
    """fleet.yaml with ``spec.drift`` set as a person would; the original back after."""
    path = root / "fleet.yaml"
    before = path.read_text()
    docs = list(yaml.safe_load_all(before))
    for doc in docs:
        if doc and doc.get("kind") == "Fleet":
            doc["spec"]["drift"] = policy
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(before)


def events_of_run(flow_run_id: str, name: str, *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The events ``name`` the flow run emitted, as the Prefect server stored them (polled:
    the server persists events asynchronously)."""
    from prefect.settings import PREFECT_API_URL

    api = str(PREFECT_API_URL.value())
    body = {"filter": {"event": {"name": [name]},
                       "related": {"id": [f"prefect.flow-run.{flow_run_id}"]}},
            "limit": 50}
    found: list[dict[str, Any]] = []

    def stored() -> bool:
        response = httpx.post(f"{api}/events/filter", json=body, timeout=10)
        response.raise_for_status()
        found[:] = response.json().get("events") or []
        return bool(found)

    wait_for(stored, timeout=timeout, interval=0.2, what=f"{name} events of {flow_run_id}")
    return found
