"""Stage 4, Verified: an independent, read-only check of everything the stages promised.

observe  /readyz, /livez, /version, the Nodes, every add-on object; then a smoke request
         over a second HTTP stack (httpx) with the admin token and the cluster CA
act      nothing
wait     nothing: verify reports what is, now
confirm  status True only if every check passes; ``checks`` lists each one
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any

import httpx
import yaml

from werft.conditions import Condition, ConditionType
from werft.errors import TransientError, WerftError
from werft.inventory.resolved import ResolvedCluster
from werft.kube import KubeClient
from werft.render.addons import render_addons
from werft.render.kubeconfig import kubeconfig_for
from werft.stages.checks import bare_version, check_addon, check_nodes
from werft.stages.context import StageContext
from werft.stages.result import (
    UNREACHABLE,
    Done,
    Progress,
    StageFailed,
    default_classify,
    run_stage,
)

STAGE = ConditionType.VERIFIED

VERIFIED = "Verified"
VERIFICATION_FAILED = "VerificationFailed"
API_UNAVAILABLE = "APIUnavailable"


class _Checks:
    """Collects ``pass: ...`` / ``fail: ...`` lines into the condition's ``checks``."""

    def __init__(self, progress: Progress) -> None:
        self.lines = progress.checks
        self.failed: list[str] = []

    def record(self, ok: bool, text: str) -> bool:
        self.lines.append(("pass: " if ok else "fail: ") + text)
        if not ok:
            self.failed.append(text)
        return ok


async def verify_cluster(cluster: ResolvedCluster, ctx: StageContext) -> Condition:
    async def body(progress: Progress) -> Done:
        checks = _Checks(progress)
        kubeconfig = await asyncio.to_thread(kubeconfig_for, cluster, ctx.secrets)
        manifests = await asyncio.to_thread(render_addons, cluster, ctx.inventory)
        async with ctx.kube(cluster, kubeconfig) as kube:
            if not checks.record(await kube.readyz(), "API /readyz"):
                raise StageFailed(
                    API_UNAVAILABLE,
                    f"cluster {cluster.name}: API {cluster.api_endpoint} is not ready",
                    transient=True,
                )
            checks.record(await kube.livez(), "API /livez")
            await _version(kube, cluster, checks)
            await _nodes(kube, cluster, checks)
            await _addons(kube, manifests, checks)
        await _smoke(cluster, kubeconfig, ctx, checks)
        total = len(checks.lines)
        if checks.failed:
            return Done(
                VERIFICATION_FAILED,
                f"{len(checks.failed)}/{total} check(s) failed: " + "; ".join(checks.failed[:3]),
                status="False",
            )
        return Done(VERIFIED, f"{total} check(s) passed")

    return await run_stage(STAGE, cluster, ctx, body, classify)


async def _version(kube: KubeClient, cluster: ResolvedCluster, checks: _Checks) -> None:
    version = await kube.version()
    want = cluster.kubernetes_version
    checks.record(bare_version(version) == want, f"API version {version or '?'} (want v{want})")


async def _nodes(kube: KubeClient, cluster: ResolvedCluster, checks: _Checks) -> None:
    nodes = check_nodes(cluster, await kube.list("v1", "Node"))
    want = nodes.expected
    checks.record(not nodes.missing, f"nodes registered {nodes.registered}/{want}")
    checks.record(not nodes.not_ready, f"nodes Ready {len(nodes.ready)}/{want}")
    checks.record(
        not nodes.wrong_version,
        f"kubelet v{cluster.kubernetes_version} on {nodes.at_version}/{want}",
    )


async def _addons(kube: KubeClient, manifests: list[dict[str, Any]], checks: _Checks) -> None:
    lives = await asyncio.gather(*(kube.get_live(obj) for obj in manifests))
    for obj, live in zip(manifests, lives, strict=True):
        check = check_addon(obj, live)
        if not checks.record(check.present, f"{check.name} present"):
            continue
        drift = f" ({', '.join(check.drift[:3])})" if check.drift else ""
        checks.record(not check.drift, f"{check.name} not drifted{drift}")
        checks.record(check.healthy, f"{check.name} healthy ({check.health})")


async def _smoke(
    cluster: ResolvedCluster, kubeconfig: str, ctx: StageContext, checks: _Checks
) -> None:
    """GET /version over httpx: a second client stack, as a person with the kubeconfig
    would see the cluster (bearer token, the cluster CA when https)."""
    server, token, verify = _credentials(kubeconfig)
    try:
        async with httpx.AsyncClient(verify=verify, timeout=ctx.timeouts.http) as client:
            response = await client.get(
                f"{server.rstrip('/')}/version", headers={"Authorization": f"Bearer {token}"}
            )
        version = response.json().get("gitVersion", "") if response.status_code == 200 else ""
        ok = bare_version(version) == cluster.kubernetes_version
        checks.record(ok, f"smoke GET /version over httpx: {response.status_code} {version}")
    except (httpx.HTTPError, ValueError) as exc:
        checks.record(False, f"smoke GET /version over httpx: {type(exc).__name__}")


def _credentials(kubeconfig: str) -> tuple[str, str, ssl.SSLContext | bool]:
    config = yaml.safe_load(kubeconfig)
    contexts = {c["name"]: c["context"] for c in config["contexts"]}
    current = contexts[config["current-context"]]
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == current["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == current["user"])
    server = cluster["server"]
    verify: ssl.SSLContext | bool = True
    if server.startswith("https") and cluster.get("certificate-authority-data"):
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        verify = ssl.create_default_context(cadata=ca)
    return server, user.get("token", ""), verify


def classify(exc: WerftError) -> str:
    if isinstance(exc, TransientError):
        return UNREACHABLE if "connection refused" in str(exc) else API_UNAVAILABLE
    return default_classify(
        exc, transient_reason=API_UNAVAILABLE, permanent_reason=VERIFICATION_FAILED
    )
