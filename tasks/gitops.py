"""Changes by pull request as Prefect tasks: fetch, plan, tell the forge; thin wrappers over
werft.gitops with the usual retry policy (only transient failures: the network, a 5xx)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.policy import retry_options
from werft.gitops.change import ChangePlan, plan_change
from werft.gitops.forge import ForgeClient, ForgeTarget
from werft.gitops.report import MARKER
from werft.gitops.revisions import fetch


@task(name="fetch", task_run_name="fetch[{repo}]", cache_policy=NO_CACHE, **retry_options())
async def fetch_refs(repo: str, refspecs: list[str]) -> bool:
    """Bring the revisions from the forge into the local mirror (no-op without a remote)."""
    return await asyncio.to_thread(fetch, Path(repo), refspecs)


@task(name="approvers", task_run_name="approvers[{target.repository}#{target.number}]",
      cache_policy=NO_CACHE, **retry_options())
async def read_approvers(target: ForgeTarget) -> list[str]:
    def read() -> list[str]:
        with ForgeClient(target) as client:
            return client.approvers()

    return await asyncio.to_thread(read)


@task(name="plan-change", task_run_name="plan[{base}..{head}]", cache_policy=NO_CACHE)
async def plan(
    repo: str, inventory: str, base: str, head: str, author: str | None, approvers: list[str]
) -> ChangePlan:
    # Not retried: planning reads local Git objects; a failure is not transient.
    return await asyncio.to_thread(
        plan_change, repo, base, head, inventory=inventory, author=author,
        approvers=tuple(approvers),
    )


@task(name="notify-forge", task_run_name="notify[{target.repository}#{target.number}]",
      cache_policy=NO_CACHE, **retry_options())
async def notify(target: ForgeTarget, body: str, state: str, description: str) -> str:
    """The plan as werft's comment (updated in place) and the head commit's status."""

    def post() -> str:
        with ForgeClient(target) as client:
            url = client.comment(body, MARKER)
            client.status(state, description)
            return url

    return await asyncio.to_thread(post)


@task(name="status", task_run_name="status[{target.repository}#{target.number}: {state}]",
      cache_policy=NO_CACHE, **retry_options())
async def set_status(target: ForgeTarget, state: str, description: str) -> None:
    """The head commit's ``werft/plan`` status alone (``pending`` while planning)."""

    def post() -> None:
        with ForgeClient(target) as client:
            client.status(state, description)

    await asyncio.to_thread(post)
