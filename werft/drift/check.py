"""The drift check of one cluster, and of many: read-only, O(objects) reads, no write.

Per cluster: one observe per machine (provider), one LIST of Nodes, one LIST per add-on
kind, one dry-run apply per add-on object. A cluster that cannot be asked is reported as
what it is -- Unreachable (nothing answered), Unauthorized (401/403), Unknown (anything
else) -- never as drifted, never as in shape. Every cluster has its own deadline so a
site that hangs costs its own time only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Sequence

from werft.drift.addons import addon_findings
from werft.drift.findings import ClusterReport, Finding, Outcome
from werft.drift.infra import machine_findings, node_findings
from werft.errors import PermanentError, TransientError, WerftError
from werft.inventory.resolved import ResolvedCluster
from werft.render.addons import render_addon_objects
from werft.retry import request_deadline
from werft.stages.context import StageContext
from werft.stages.reach import is_unreachable

log = logging.getLogger("werft.drift")

DEFAULT_DEADLINE_S = 30.0


async def check_cluster(
    cluster: ResolvedCluster, ctx: StageContext, *, deadline_s: float = DEFAULT_DEADLINE_S
) -> ClusterReport:
    report = ClusterReport(cluster=cluster.name, site=cluster.site, tier=str(cluster.tier),
                           region=cluster.region, outcome=Outcome.IN_SHAPE)
    kubeconfig = ctx.stored_kubeconfig(cluster)
    if kubeconfig is None:
        report.outcome, report.reason = Outcome.NOT_PROVISIONED, "werft holds no kubeconfig"
        return report
    try:
        # Request retries (providers' and the API's) stop at the cluster's deadline too.
        with request_deadline(time.monotonic() + deadline_s):
            async with asyncio.timeout(deadline_s):
                found = await _findings(cluster, ctx, kubeconfig)
        report.findings, report.objects, report.reason = found
    except TimeoutError:
        report.outcome = Outcome.UNREACHABLE
        report.reason = f"no complete answer within {deadline_s:g}s"
    except WerftError as exc:
        report.outcome, report.reason = classify(exc), str(exc)[:300]
    except Exception as exc:  # a bug must not hide the rest of the fleet's report
        log.exception("cluster %s: drift check failed unexpectedly", cluster.name)
        report.outcome, report.reason = Outcome.UNKNOWN, f"{type(exc).__name__}: {exc}"[:300]
    else:
        report.outcome = Outcome.DRIFTED if report.findings else Outcome.IN_SHAPE
    return report


def classify(exc: BaseException) -> Outcome:
    if isinstance(exc, TransientError) and is_unreachable(exc):
        return Outcome.UNREACHABLE
    if isinstance(exc, PermanentError) and "credentials refused" in str(exc):
        return Outcome.UNAUTHORIZED
    if isinstance(exc, PermanentError) and any(c in str(exc) for c in (": 401", ": 403")):
        return Outcome.UNAUTHORIZED
    return Outcome.UNKNOWN


async def _findings(
    cluster: ResolvedCluster, ctx: StageContext, kubeconfig: str
) -> tuple[list[Finding], int, str]:
    states = await asyncio.gather(
        *(
            ctx.with_provider(m, lambda p, m=m: p.observe(m, image_url=cluster.os_image_url))
            for m in cluster.machines
        )
    )
    findings: list[Finding] = []
    for state in states:
        findings += machine_findings(cluster, ctx.artifacts_url, state)
    rendered = render_addon_objects(cluster, ctx.inventory)
    sets = {addon.name: name for name in cluster.addon_sets
            for addon in ctx.inventory.addon_sets[name].spec.addons}
    try:
        async with ctx.kube(cluster, kubeconfig) as kube:
            findings += node_findings(cluster, await kube.list("v1", "Node"))
            findings += await addon_findings(kube, rendered, sets)
    except WerftError as exc:
        if not findings:
            raise
        # A machine that is off explains an API that is down (a one-node edge site): the
        # machine is the drift to report; the API's state follows from it.
        return findings, 0, f"API not checked: {str(exc)[:200]}"
    return findings, len(rendered), ""


async def check_clusters(
    clusters: Sequence[ResolvedCluster],
    ctx: StageContext,
    *,
    concurrency: int = 32,
    deadline_s: float = DEFAULT_DEADLINE_S,
    busy: Collection[str] = (),
) -> list[ClusterReport]:
    """``check_cluster`` over many, bounded; clusters in ``busy`` (a provisioning run holds
    them) are reported Busy without a request."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(cluster: ResolvedCluster) -> ClusterReport:
        if cluster.name in busy:
            return ClusterReport(cluster=cluster.name, site=cluster.site, tier=str(cluster.tier),
                                 region=cluster.region, outcome=Outcome.BUSY,
                                 reason="a provisioning run holds it")
        async with gate:
            return await check_cluster(cluster, ctx, deadline_s=deadline_s)

    return list(await asyncio.gather(*(one(c) for c in clusters)))
