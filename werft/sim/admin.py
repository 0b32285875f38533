"""The admin API under ``/_sim`` (no auth, never counted in stats, never faulted).

GET    /_sim/stats                        {"requests", "mutations": {"bmc", "hypervisor",
                                           "clusters"}, "requestsByTarget": {...}}
POST   /_sim/stats/reset
GET    /_sim/faults                       {"seed", "rules": [...]}
POST   /_sim/faults                       a rule, or {"seed"?, "rules": [...]} -> 201
DELETE /_sim/faults[/<id>]                all rules, or one
GET    /_sim/machines[?cluster=NAME]      summaries
GET    /_sim/machines/<name>              state (phase, power, boot, media, installed)
GET    /_sim/clusters                     summaries
GET    /_sim/clusters/<name>              state (API up, machines); never the token
GET    /_sim/clusters/<name>/kubeconfig   admin kubeconfig (YAML): the only place the
                                          admin token is given out. Points at the HTTPS
                                          listener when there is one (kubectl sends no
                                          token over http); ?scheme=http for plain HTTP
POST   /_sim/clusters/<name>/bootstrap    {"token", "kubernetesVersion", "nodes"?,
                                           "distribution"?, "cni"?} -> API up, nodes
                                          registered (NotReady until a CNI runs; Ready
                                          at once with "cni": true)
POST   /_sim/drift                        see werft.sim.drift
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml
from starlette.requests import Request
from starlette.responses import Response

from werft.sim.drift import DriftError, apply_drift
from werft.sim.faults import FaultRuleError, FaultSet
from werft.sim.http import BadBody, json_object, json_response
from werft.sim.lifecycle import Fleet
from werft.sim.stats import Stats


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


@dataclass(frozen=True)
class TlsEndpoint:
    """The simulator's HTTPS listener (same app), for kubectl: client-go sends a token
    only over TLS. ``ca_pem`` is the self-signed serving certificate (werft.sim.kube.tls)."""

    port: int
    ca_pem: bytes = field(repr=False)


def kubeconfig_yaml(server: str, cluster: str, token: str, ca_pem: bytes | None = None) -> str:
    user = f"werft-admin@{cluster}"
    entry: dict[str, str] = {"server": server}
    if ca_pem is not None:
        entry["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": entry}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


class AdminService:
    def __init__(
        self,
        fleet: Fleet,
        stats: Stats,
        faults: FaultSet,
        tls: Callable[[], TlsEndpoint | None] = lambda: None,
    ) -> None:
        self.fleet = fleet
        self.stats = stats
        self.faults = faults
        self._tls = tls

    async def handle(self, request: Request, parts: list[str]) -> Response:
        """``parts``: the path segments after ``/_sim``."""
        method = request.method
        try:
            match parts:
                case ["stats"] if method == "GET":
                    return json_response(self.stats.snapshot())
                case ["stats", "reset"] if method == "POST":
                    self.stats.reset()
                    return json_response(self.stats.snapshot())
                case ["faults"]:
                    return await self._faults(request)
                case ["faults", rule_id] if method == "DELETE":
                    if not self.faults.remove(rule_id):
                        return _error(404, f"no fault rule {rule_id!r}")
                    return json_response(self.faults.snapshot())
                case ["machines"] if method == "GET":
                    return self._machines(request)
                case ["machines", name] if method == "GET":
                    machine = self.fleet.machine(name)
                    if machine is None:
                        return _error(404, f"no machine {name!r}")
                    self.fleet.observe(machine)
                    return json_response(machine.describe())
                case ["clusters"] if method == "GET":
                    return json_response({
                        "clusters": [
                            {"name": n, "site": self.fleet.cluster_site.get(n),
                             "apiUp": bool(c.api_up)}
                            for n, c in self.fleet.registry.items()
                        ]
                    })
                case ["clusters", name, *_] if name not in self.fleet.registry:
                    return _error(404, f"no cluster {name!r}")
                case ["clusters", name] if method == "GET":
                    return json_response(self.fleet.describe_cluster(name))
                case ["clusters", name, "kubeconfig"] if method == "GET":
                    return self._kubeconfig(request, name)
                case ["clusters", name, "bootstrap"] if method == "POST":
                    return await self._bootstrap(request, name)
                case ["drift"] if method == "POST":
                    body = await json_object(request)
                    return json_response(apply_drift(self.fleet, body))
        except BadBody as exc:
            return _error(400, str(exc))
        except DriftError as exc:
            return _error(exc.status, str(exc))
        return _error(404, f"no admin endpoint {method} {request.url.path}")

    async def _faults(self, request: Request) -> Response:
        if request.method == "GET":
            return json_response(self.faults.snapshot())
        if request.method == "DELETE":
            self.faults.clear()
            return json_response(self.faults.snapshot())
        if request.method != "POST":
            return _error(405, "use GET, POST or DELETE")
        body = await json_object(request)
        try:
            if "rules" in body or "seed" in body:
                added = self.faults.load(body)
            else:
                added = [self.faults.add(body)]
        except FaultRuleError as exc:
            return _error(400, str(exc))
        return json_response(
            {"added": [r.as_dict() for r in added], **self.faults.snapshot()}, 201
        )

    def _machines(self, request: Request) -> Response:
        cluster = request.query_params.get("cluster")
        if cluster is not None:
            self.fleet.advance(cluster)
            machines = self.fleet.machines_of(cluster)
        else:
            machines = [*self.fleet.bmcs.values(), *self.fleet.domains.values()]
        return json_response({
            "machines": [
                {"name": m.name, "kind": m.spec.kind, "cluster": m.spec.cluster,
                 "site": m.spec.site, "phase": m.phase()}
                for m in machines
            ]
        })

    def _kubeconfig(self, request: Request, name: str) -> Response:
        self.fleet.advance(name)
        token = self.fleet.registry[name].token
        if not token:
            return _error(409, f"cluster {name!r} has no admin token yet: its API is not up")
        tls = self._tls()
        if tls is not None and request.query_params.get("scheme") != "http":
            host = request.url.hostname or "127.0.0.1"
            host = f"[{host}]" if ":" in host else host
            server = f"https://{host}:{tls.port}/clusters/{name}"
            text = kubeconfig_yaml(server, name, token, tls.ca_pem)
        else:
            server = str(request.base_url).rstrip("/") + f"/clusters/{name}"
            text = kubeconfig_yaml(server, name, token)
        return Response(text, media_type="application/yaml")

    async def _bootstrap(self, request: Request, name: str) -> Response:
        body = await json_object(request)
        token = body.get("token")
        version = body.get("kubernetesVersion")
        nodes = body.get("nodes", 1)
        distribution = body.get("distribution", "kubeadm")
        # "cni": true -- the nodes come with a working pod network (Ready at once), as if
        # the distribution embedded its CNI; without it they wait for a CNI DaemonSet.
        builtin_network = body.get("cni", False)
        if not isinstance(builtin_network, bool):
            return _error(400, "cni must be true or false")
        if not isinstance(token, str) or not token:
            return _error(400, "token must be a non-empty string")
        if not isinstance(version, str) or not version:
            return _error(400, "kubernetesVersion must be a string like '1.31.1'")
        if isinstance(nodes, bool) or not isinstance(nodes, int) or not 0 <= nodes <= 1000:
            return _error(400, "nodes must be an integer between 0 and 1000")
        if distribution not in ("kubeadm", "k3s"):
            return _error(400, "distribution must be kubeadm or k3s")
        names = self.fleet.bootstrap(
            name, token=token, kubernetes_version=version.removeprefix("v"),
            distribution=distribution, nodes=nodes, builtin_network=builtin_network,
        )
        return json_response({"cluster": name, "apiUp": True, "nodes": names})
