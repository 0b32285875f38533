"""Stage 4, Verified: an independent, read-only check of everything the stages promised.

observe  /version over a second HTTP stack (httpx, with the kubeconfig's token and CA, as
         a person would ask), then through the kubernetes client /readyz, /livez, the
         Nodes, every add-on object (a LIST per kind, and the server's dry run for any
         object not confirmed by this run's add-on stage in the version listed)
act      nothing
wait     only for answers: a probe that failed (5xx, a dropped connection, a timeout) is
         probed again, a poll interval later, within the stage's deadline
confirm  status True only if every check passes; ``checks`` lists each one

Verify judges each failure by its cause. A check that got its answer and the answer is
wrong (a version, a node, an add-on) is ``VerificationFailed``; a probe that never got an
answer by the deadline is transient (``APIUnavailable``), retried like any other stage;
a site that stops answering altogether is ``Unreachable`` once ``progress.reach`` says so.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from werft import tls
from werft.conditions import Condition, ConditionType
from werft.errors import PermanentError, TransientError, WerftError
from werft.inventory.resolved import ResolvedCluster
from werft.kube import KubeClient, Obj, current_cluster_and_user
from werft.render.addons import MANAGED_SELECTOR, RenderedObject
from werft.retry import retry_after_seconds, retry_async
from werft.stages.checks import bare_version, check_addon, check_nodes
from werft.stages.context import StageContext
from werft.stages.reach import is_unreachable
from werft.stages.result import (
    UNREACHABLE,
    Done,
    Progress,
    StageFailed,
    default_classify,
    run_stage,
)
from werft.yamlsafe import safe_load

T = TypeVar("T")

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
        progress.checks.clear()  # run again (run_stage): this run's checks only
        checks = _Checks(progress)
        kubeconfig = await asyncio.to_thread(ctx.kubeconfig, cluster)
        rendered = await asyncio.to_thread(ctx.addon_objects, cluster)
        probe = _Prober(cluster, ctx, progress)
        # /version first: it raises with the cause, so it also tells whether the site
        # answers at all, which the boolean health probes cannot.
        await _version(cluster, kubeconfig, ctx, checks, probe)
        async with ctx.kube(cluster, kubeconfig) as kube:
            for path, health in (("/readyz", kube.readyz), ("/livez", kube.livez)):
                if not await probe.healthy(health, kube):
                    raise StageFailed(
                        API_UNAVAILABLE,
                        f"cluster {cluster.name}: API {cluster.api_endpoint} {path} not ok "
                        f"after {progress.deadline.seconds:g}s",
                        transient=True,
                    )
                checks.record(True, f"API {path}")
            await _nodes(kube, cluster, checks, probe)
            await _addons(kube, cluster, rendered, ctx, checks, probe)
        total = len(checks.lines)
        if checks.failed:
            return Done(
                VERIFICATION_FAILED,
                f"{len(checks.failed)}/{total} check(s) failed: " + "; ".join(checks.failed[:3]),
                status="False",
            )
        return Done(VERIFIED, f"{total} check(s) passed")

    return await run_stage(STAGE, cluster, ctx, body, classify)


class _Prober:
    """Asks again until it gets an answer: a probe that fails transiently is probed again
    a poll interval later while the stage's deadline allows; every outcome is shown to
    ``progress.reach``, which raises ``SiteUnreachable`` when nothing has answered for the
    tier's grace period. At the deadline the last transient error propagates."""

    def __init__(self, cluster: ResolvedCluster, ctx: StageContext, progress: Progress) -> None:
        self.cluster = cluster
        self.ctx = ctx
        self.progress = progress

    async def answer(self, call: Callable[[], Awaitable[T]]) -> T:
        while True:
            try:
                result = await call()
            except TransientError as exc:
                self.progress.reach.saw(exc)
                if not await self._pause():
                    raise
                continue
            self.progress.reach.saw(None)
            return result

    async def healthy(self, probe: Callable[[], Awaitable[bool]], kube: KubeClient) -> bool:
        """A health endpoint (True/False, no cause) until it says ok or the deadline
        passes; between tries /version says whether the site answers at all."""
        while not await probe():
            if not await self._pause():
                return False
            await self.answer(kube.version)
        return True

    async def _pause(self) -> bool:
        """Sleep a poll interval before the next try; False when the deadline is too near."""
        pause = self.ctx.timeouts.poll_interval
        if self.progress.deadline.remaining() <= pause:
            return False
        await asyncio.sleep(pause)
        return True


async def _nodes(
    kube: KubeClient, cluster: ResolvedCluster, checks: _Checks, probe: _Prober
) -> None:
    nodes = check_nodes(cluster, await probe.answer(lambda: kube.list("v1", "Node")))
    want = nodes.expected
    checks.record(not nodes.missing, f"nodes registered {nodes.registered}/{want}")
    checks.record(not nodes.not_ready, f"nodes Ready {len(nodes.ready)}/{want}")
    checks.record(
        not nodes.wrong_version,
        f"kubelet v{cluster.kubernetes_version} on {nodes.at_version}/{want}",
    )
    if nodes.tainted:  # only a cluster without workers has a rule here
        checks.record(
            False,
            "control planes take the workloads (no workers) but are tainted: "
            + ", ".join(f"{n} {t}" for n, t in nodes.tainted.items())
            + " (fix: kubectl taint nodes NODE KEY:EFFECT-)",
        )


async def _addons(
    kube: KubeClient,
    cluster: ResolvedCluster,
    rendered: list[RenderedObject],
    ctx: StageContext,
    checks: _Checks,
    probe: _Prober,
) -> None:
    """Every add-on object present, undrifted and healthy: one LIST per kind, then a
    dry-run apply for each object this run's add-on stage has not confirmed with the
    server in the very version listed now (``werft.stages.confirmed``)."""
    objs = [item.obj for item in rendered]
    lives = await probe.answer(lambda: kube.get_live_all(objs, label_selector=MANAGED_SELECTOR))

    async def drift_of(item: RenderedObject, live: Obj | None) -> list[str]:
        if live is not None and ctx.confirmed.unchanged(cluster.name, item.obj, live):
            return []
        drift = await probe.answer(
            lambda: kube.diff_live(item.obj, live, force=item.force_conflicts)
        )
        return drift.paths

    drifts = await asyncio.gather(
        *(drift_of(item, live) for item, live in zip(rendered, lives, strict=True))
    )
    ctx.confirmed.forget(cluster.name)
    for item, live, drift in zip(rendered, lives, drifts, strict=True):
        check = check_addon(item.obj, live, drift)
        if not checks.record(check.present, f"{check.name} present"):
            continue
        shown = f" ({', '.join(check.drift[:3])})" if check.drift else ""
        checks.record(not check.drift, f"{check.name} not drifted{shown}")
        checks.record(check.healthy, f"{check.name} healthy ({check.health})")


async def _version(
    cluster: ResolvedCluster, kubeconfig: str, ctx: StageContext, checks: _Checks, probe: _Prober
) -> None:
    """GET /version over httpx: a second client stack besides the kubernetes client's, as
    a person with the kubeconfig would see the cluster (bearer token, the cluster CA when
    https). A 5xx, a dropped connection or a timeout is retried at the request
    (``werft.retry``) and probed again within the deadline; only an answer that is wrong
    fails the check."""
    server, token, verify = _credentials(kubeconfig)
    url = f"{server.rstrip('/')}/version"
    async with httpx.AsyncClient(verify=verify, timeout=ctx.timeouts.http) as client:

        async def get() -> httpx.Response:
            try:
                response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError as exc:
                failed: BaseException | None = _version_error(cluster, exc)
            else:
                failed = None
            if failed is not None:
                # Outside the handler: the httpx error's request (its Authorization
                # header) must not ride along as the __context__.
                raise failed
            if response.status_code >= 500 or response.status_code in (408, 429):
                raise TransientError(
                    f"cluster {cluster.name}: GET /version: {response.status_code}",
                    cause=str(response.status_code),
                    retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                )
            return response

        response = await probe.answer(lambda: retry_async(get))
    version = ""
    if response.status_code == 200:
        try:
            version = str(response.json().get("gitVersion", ""))
        except ValueError:
            version = ""
    want = cluster.kubernetes_version
    checks.record(
        bare_version(version) == want,
        f"API version {version or '?'} (want v{want}; GET /version over httpx: "
        f"{response.status_code})",
    )


def _version_error(cluster: ResolvedCluster, exc: httpx.HTTPError) -> WerftError:
    """An httpx failure in werft's words, with the cause retry statistics count by."""
    head = f"cluster {cluster.name}: GET /version"
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"{head}: timed out", cause="timeout")
    if isinstance(exc, httpx.ConnectError):
        if "certificate" in str(exc).lower():  # an untrusted CA does not heal by waiting
            return PermanentError(f"{head}: TLS certificate not trusted")
        return TransientError(f"{head}: connection refused", cause="connection refused")
    if isinstance(exc, httpx.TransportError):
        return TransientError(f"{head}: connection lost", cause="connection lost")
    return PermanentError(f"{head}: {type(exc).__name__}")


def _credentials(kubeconfig: str) -> tuple[str, str, ssl.SSLContext]:
    cluster, user = current_cluster_and_user(safe_load(kubeconfig))
    server = cluster["server"]
    if not server.startswith("https"):
        verify = tls.plain_http()
    elif cluster.get("certificate-authority-data"):
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        verify = ssl.create_default_context(cadata=ca)
    else:
        verify = tls.system_trust()
    return server, user.get("token", ""), verify


def classify(exc: WerftError) -> str:
    if isinstance(exc, TransientError):
        # Unreachable only as a judgement over time: run_stage turns a failure that
        # never became one into ConnectionFailed.
        return UNREACHABLE if is_unreachable(exc) else API_UNAVAILABLE
    return default_classify(
        exc, transient_reason=API_UNAVAILABLE, permanent_reason=VERIFICATION_FAILED
    )
