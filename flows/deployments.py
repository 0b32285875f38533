"""`werft serve`: the deployments of deployments/prefect.yaml, served from this process.

prefect.yaml is the one place the deployments are defined (names, parameters,
schedules, concurrency); ``prefect deploy`` reads it for work pools, and this module
reads it for ``prefect.serve``, so both ways run the same deployments.

``apply_to_work_pool`` registers them with a work pool instead; for ``provision-batch``
it also sets the batch runs' heartbeat and makes sure the automation exists that marks
a batch run Crashed once its heartbeats stop (see flows/dispatch.py).
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import inspect
from collections.abc import Collection
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect import Flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

from flows.dispatch import (
    BATCH_DEPLOYMENT,
    HEARTBEAT_ENV,
    HEARTBEAT_S,
    ZOMBIE_AFTER_S,
    ensure_zombie_detection,
)

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
_BATCH_NAME = BATCH_DEPLOYMENT.partition("/")[2]  # "provision-batch"


def deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text())["deployments"])


def flow_of(entrypoint: str) -> Flow[Any, Any]:
    """``flows/provision.py:provision_fleet`` -> the flow object (imported as a module)."""
    file, _, name = entrypoint.partition(":")
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def _schedule_options(spec: dict[str, Any]) -> dict[str, Any]:
    intervals, crons = [], []
    for item in spec.get("schedules") or []:
        if "interval" in item:
            intervals.append(timedelta(seconds=float(item["interval"])))
        elif "cron" in item:
            crons.append(item["cron"])
    return {"interval": intervals or None, "cron": crons or None}


def _concurrency(spec: dict[str, Any]) -> ConcurrencyLimitConfig | None:
    limit = spec.get("concurrency_limit")
    if isinstance(limit, int):
        return ConcurrencyLimitConfig(limit=limit)
    return ConcurrencyLimitConfig(**limit) if limit else None


def _parameters(flow: Flow[Any, Any], spec: dict[str, Any], time_scale: float) -> dict[str, Any]:
    """The deployment's default parameters; against the simulator, with its time scale."""
    parameters = copy.deepcopy(spec.get("parameters") or {})
    if time_scale != 1.0:
        if "time_scale" in inspect.signature(flow.fn).parameters:
            parameters["time_scale"] = time_scale
        elif flow.name in ("provision-fleet", "reconcile"):
            parameters.setdefault("request", {})["time_scale"] = time_scale
    return parameters


async def runner_deployments(
    path: Path = PREFECT_YAML,
    time_scale: float = 1.0,
    *,
    names: Collection[str] | None = None,
    work_pool: str | None = None,
    working_dir: Path | None = None,
) -> list[RunnerDeployment]:
    """The deployments of ``path`` (those named in ``names``, or all); for ``work_pool``
    if given (to register with ``apply_to_work_pool``), else for ``serve``."""
    deployments = []
    for spec in deployment_specs(path):
        if names is not None and spec["name"] not in names:
            continue
        flow = flow_of(spec["entrypoint"])
        pool: dict[str, Any] = {}
        if work_pool:
            pool = {"work_pool_name": work_pool, "job_variables": _job_variables(spec, working_dir)}
        deployment = await flow.ato_deployment(
            name=spec["name"],
            description=spec.get("description"),
            tags=spec.get("tags"),
            parameters=_parameters(flow, spec, time_scale),
            concurrency_limit=_concurrency(spec),
            # "flows.provision.provision_fleet": importable from any working directory
            entrypoint_type=EntrypointType.MODULE_PATH,
            **pool,
            **_schedule_options(spec),
        )
        deployments.append(deployment)
    return deployments


def _job_variables(spec: dict[str, Any], working_dir: Path | None) -> dict[str, Any]:
    """The job variables of prefect.yaml's ``work_pool:`` for the deployment, and ours."""
    variables = copy.deepcopy((spec.get("work_pool") or {}).get("job_variables") or {})
    if working_dir:
        # Relative paths (the inventory, the fleet's publishDir) mean the same to a
        # worker's flow run as here; a process worker otherwise runs it in a temp dir.
        variables["working_dir"] = str(working_dir)
    if spec["name"] == _BATCH_NAME:
        # The heartbeats the zombie automation waits for (prefect.yaml says the same, for
        # `prefect deploy`; the constant is what counts here).
        variables.setdefault("env", {})[HEARTBEAT_ENV] = str(HEARTBEAT_S)
    return variables


def serve_deployments(
    path: Path = PREFECT_YAML, limit: int | None = None, time_scale: float = 1.0
) -> None:
    """Register the deployments (they appear in the UI) and run their flow runs until Ctrl-C."""
    deployments = asyncio.run(runner_deployments(path, time_scale))
    serve(*deployments, limit=limit)


async def apply_to_work_pool(
    work_pool: str,
    names: Collection[str] | None = None,
    path: Path = PREFECT_YAML,
    time_scale: float = 1.0,
    working_dir: Path | None = None,
    zombie_after_s: float = ZOMBIE_AFTER_S,
) -> dict[str, UUID]:
    """Register deployments of ``path`` with a work pool and return their ids by name; like
    ``prefect deploy`` but without a build or push step: the pool's process workers
    import the flows from the installed werft (module entry points) and run them in
    ``working_dir`` (default: the current directory, as ``prefect deploy`` records it).

    With ``provision-batch`` among them, also the automation that marks a batch run
    Crashed after ``zombie_after_s`` without a heartbeat (created once, kept in line with
    werft's definition), so that a lost worker machine never leaves a fleet run waiting
    and nobody has to remember to create it."""
    deployments = await runner_deployments(
        path, time_scale, names=names, work_pool=work_pool, working_dir=working_dir or Path.cwd()
    )
    ids = {deployment.name: await deployment.aapply() for deployment in deployments}
    if _BATCH_NAME in ids:
        await ensure_zombie_detection(zombie_after_s)
    return ids
