"""What every stage needs besides the cluster: inventory, secrets, deadlines, clients.

A ``StageContext`` is built once per run (or per batch) and shared by all clusters of
it; stages for many clusters run concurrently on one context. What it keeps per cluster
is a cache of what the store and the cluster would give again (its PKI, kubeconfig and
API client: ``werft.stages.memo``) and what the add-on stage confirmed with the server,
for verify (``werft.stages.confirmed``); nothing a stage's decision depends on that it
would not also find by observing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from werft.conditions import ConditionType
from werft.errors import PermanentError
from werft.inventory.model import Machine
from werft.inventory.resolved import Inventory, ResolvedCluster
from werft.kube import KubeClient
from werft.providers import HttpOptions
from werft.providers.base import Provider
from werft.providers.pool import ProviderPool
from werft.render.addons import RenderedObject, render_addon_objects
from werft.render.kubeconfig import kubeconfig_for
from werft.render.pki import ClusterPKI, ensure_cluster_pki, secret_name
from werft.secrets import SecretStore
from werft.secrets import werft_home as default_werft_home
from werft.stages.confirmed import ConfirmedObjects
from werft.stages.memo import IDLE_LIMIT, KubeClients, Recent

T = TypeVar("T")


@dataclass(frozen=True)
class StageTimeouts:
    """Seconds. Deadlines are per cluster and per stage: a slow cluster fails alone.

    The defaults fit real hardware (a bare-metal install takes minutes); tests against
    the simulator divide them by its time scale with ``scaled``.
    """

    infrastructure: float = 900.0  # all machines powered on with the right media
    bootstrap: float = 1800.0  # install + API up + every node Ready
    addons: float = 900.0  # apply + every workload Available
    verify: float = 120.0
    poll_interval: float = 5.0
    http: float = 10.0  # one request to a cluster API
    # No second reset of a machine within this long of the last one werft sent it (real
    # servers spend minutes in POST): werft.providers.records.
    reset_settle: float = 600.0

    def deadline(self, stage: ConditionType) -> float:
        return {
            ConditionType.INFRASTRUCTURE_READY: self.infrastructure,
            ConditionType.BOOTSTRAPPED: self.bootstrap,
            ConditionType.ADDONS_READY: self.addons,
            ConditionType.VERIFIED: self.verify,
        }[stage]

    def scaled(
        self, time_scale: float, *, min_deadline: float = 2.0, min_poll: float = 0.02
    ) -> StageTimeouts:
        """The same deadlines in simulated time (``time_scale`` 600: 10 minutes -> 1 s).

        Only the simulated infrastructure gets faster: werft's own work (HTTP round trips,
        keys, seed images) does not, hence ``min_deadline``. The HTTP timeout is not
        scaled either: the simulator answers at loopback speed.
        """
        return replace(
            self,
            infrastructure=max(self.infrastructure / time_scale, min_deadline),
            bootstrap=max(self.bootstrap / time_scale, min_deadline),
            addons=max(self.addons / time_scale, min_deadline),
            verify=max(self.verify / time_scale, min_deadline),
            poll_interval=max(self.poll_interval / time_scale, min_poll),
            reset_settle=max(self.reset_settle / time_scale, 0.5),
        )


@dataclass
class Deadline:
    """A point in (monotonic) time a stage must be done by."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return max(0.0, self.start + self.seconds - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    @property
    def instant(self) -> float:
        """The deadline as a ``time.monotonic()`` instant (what request retries honour)."""
        return self.start + self.seconds

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0


@dataclass
class StageContext:
    """Shared by every cluster of a run (see the module's docstring for what it keeps per
    cluster). Close it with ``await ctx.aclose()`` (providers' connection pools, the
    clusters' API clients, the kube thread pool)."""

    inventory: Inventory
    secrets: SecretStore
    artifacts_dir: Path  # fleet.spec.artifacts.publishDir, resolved
    timeouts: StageTimeouts = field(default_factory=StageTimeouts)
    # Machines -> their provider; defaults to a pool sharing one connection pool per
    # BMC origin / hypervisor across all machines of the batch.
    providers: ProviderPool | None = None
    # Threads for the synchronous kubernetes client: bounds concurrent cluster API calls.
    kube_threads: int = 16
    confirmed: ConfirmedObjects = field(default_factory=ConfirmedObjects, init=False, repr=False)
    # Kept from one stage of a cluster to the next (werft.stages.memo).
    _pki: Recent[str, ClusterPKI] = field(default_factory=Recent, init=False, repr=False)
    # By cluster: (API endpoint, the PKI it was rendered from, kubeconfig).
    _kubeconfigs: Recent[str, tuple[str, ClusterPKI, str]] = field(
        default_factory=Recent, init=False, repr=False
    )
    # By cluster: its add-on objects as rendered from this run's inventory.
    _addons: Recent[str, list[RenderedObject]] = field(
        default_factory=lambda: Recent(IDLE_LIMIT), init=False, repr=False
    )
    _executor: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _clients: KubeClients = field(default_factory=KubeClients, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.providers is None:
            options = HttpOptions(reset_settle=self.timeouts.reset_settle)
            self.providers = ProviderPool(self.secrets, options=options)

    @classmethod
    def for_inventory(
        cls,
        inventory: Inventory,
        *,
        werft_home: Path | None = None,
        timeouts: StageTimeouts | None = None,
        artifacts_dir: Path | None = None,
        kube_threads: int = 16,
    ) -> StageContext:
        """The usual context: secrets in the shared store (``<werft_home>/secrets``, or the
        SQL store of ``WERFT_STORE_URL``), seeds published into
        the fleet's ``artifacts.publishDir`` (relative paths are relative to the current
        directory, like ``.werft`` itself)."""
        home = werft_home or default_werft_home()
        if artifacts_dir is None:
            artifacts_dir = Path(inventory.fleet.spec.artifacts.publish_dir)
        return cls(
            inventory=inventory,
            secrets=SecretStore.for_home(home),
            artifacts_dir=artifacts_dir.resolve(),
            timeouts=timeouts or StageTimeouts(),
            kube_threads=kube_threads,
        )

    # -- what stages ask for --

    @property
    def artifacts_url(self) -> str:
        return self.inventory.fleet.spec.artifacts.base_url

    def provider(self, machine: Machine) -> contextlib.AbstractAsyncContextManager[Provider]:
        """The machine's provider, held for an ``async with`` block (``ProviderPool.using``)."""
        assert self.providers is not None
        return self.providers.using(machine)

    async def with_provider(
        self, machine: Machine, call: Callable[[Provider], Awaitable[T]]
    ) -> T:
        """``call(provider)`` with the machine's provider held."""
        async with self.provider(machine) as provider:
            return await call(provider)

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.kube_threads, thread_name_prefix="werft-kube")
        return self._executor

    def cluster_pki(self, cluster: ResolvedCluster) -> ClusterPKI:
        """``ensure_cluster_pki`` once per cluster and run. The infrastructure stage, where
        keys are made, repaired and tokens renewed, hands what it ensured to ``remember``.
        Blocking (store reads, maybe key generation): call it in a thread."""
        pki = self._pki.get(cluster.name)
        if pki is None:
            pki = self._pki.put(cluster.name, ensure_cluster_pki(cluster, self.secrets))
        return pki

    def remember(self, cluster: ResolvedCluster, pki: ClusterPKI) -> None:
        """``pki`` is the cluster's PKI from now on (the infrastructure stage ensured it)."""
        self._pki.put(cluster.name, pki)

    def kubeconfig(self, cluster: ResolvedCluster) -> str:
        """The admin kubeconfig (``kubeconfig_for``), rendered and stored once per cluster,
        API endpoint and PKI in a run. Blocking: call it in a thread."""
        pki = self.cluster_pki(cluster)
        held = self._kubeconfigs.get(cluster.name)
        if held is not None and held[0] == cluster.api_endpoint and held[1] is pki:
            return held[2]
        text = kubeconfig_for(cluster, self.secrets, pki)
        self._kubeconfigs.put(cluster.name, (cluster.api_endpoint, pki, text))
        return text

    def addon_objects(self, cluster: ResolvedCluster) -> list[RenderedObject]:
        """``render_addon_objects`` once per cluster and run: the add-on stage and verify
        judge the same rendering of the run's inventory. Treat it as read-only; a
        template that does not render raises ``PermanentError`` every time. Blocking:
        call it in a thread."""
        rendered = self._addons.get(cluster.name)
        if rendered is None:
            rendered = render_addon_objects(cluster, self.inventory)
            self._addons.put(cluster.name, rendered)
        return rendered

    def stored_kubeconfig(self, cluster: ResolvedCluster) -> str | None:
        """The admin kubeconfig werft holds, without generating anything."""
        return self.secrets.get(secret_name(cluster.name, "kubeconfig"))

    @contextlib.asynccontextmanager
    async def kube(
        self, cluster: ResolvedCluster, kubeconfig: str | None = None
    ) -> AsyncIterator[KubeClient]:
        """A client for ``cluster`` built from its own kubeconfig (never a global one), for
        the block; the run keeps it for the cluster's next stage (``werft.stages.memo``)."""
        text = kubeconfig or self.stored_kubeconfig(cluster)
        if text is None:
            raise PermanentError(
                f"cluster {cluster.name}: werft holds no kubeconfig for it "
                "(run the infrastructure stage first)"
            )

        def make(text: str) -> KubeClient:
            return KubeClient.from_kubeconfig(
                text, cluster=cluster.name, timeout=self.timeouts.http, executor=self.executor
            )

        with self._clients.using(cluster.name, text, make) as client:
            yield client

    async def aclose(self) -> None:
        self._clients.close()
        if self.providers is not None:
            await self.providers.aclose()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
