"""Machine and node drift, from what the providers and the API report (read-only).

Machines: off, a boot override left pointing at the installer, werft's media missing on a
machine werft has not released, an installer image other than the profile's
(``image_outdated``, computed by the provider's ``assess``). Seeds are not compared: the
desired seed's hash means building its ISO, too dear for a check every 15 minutes.

Nodes: missing, NotReady, a kubelet other than the desired version, a control plane that
must take the workloads (no workers) tainted against them (``check_nodes``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from werft.drift.findings import Area, Finding, Kind
from werft.inventory.resolved import ResolvedCluster
from werft.providers.base import MachineState, assess, is_seed_of
from werft.stages.checks import check_nodes


def machine_findings(
    cluster: ResolvedCluster, artifacts_url: str, state: MachineState
) -> list[Finding]:
    def finding(field: str, desired: str, live: str) -> Finding:
        return Finding(area=Area.MACHINE, kind=Kind.MACHINE, object="Machine", field=field,
                       desired=desired, live=live, where=state.name)

    if not state.exists:
        return [finding("exists", "true", "false")]
    found = []
    if not state.powered_on:
        found.append(finding("power", "On", "Off"))
    if state.cd_override:
        found.append(finding("bootOverride", "(none)", state.boot_override or ""))
    example = f"{artifacts_url.rstrip('/')}/seeds/{cluster.name}/{state.name}-0.iso"
    # Media only matter on a running machine: an off one is the power finding alone.
    if state.powered_on and not state.released(example):
        has_seed = any(is_seed_of(url, example, state.name) for url in state.media)
        if not (has_seed and cluster.os_image_url in state.media):
            found.append(finding("media", "installer image and werft seed",
                                 ", ".join(state.media) or "(none)"))
        elif assess(state, cluster.os_image_url, example)[0].image_outdated:
            found.append(finding("image", cluster.os_image_url, "another image"))
    return found


def node_findings(cluster: ResolvedCluster, nodes: Iterable[Mapping[str, Any]]) -> list[Finding]:
    listed = list(nodes)
    check = check_nodes(cluster, listed)
    by_name = {(n.get("metadata") or {}).get("name"): n for n in listed}
    found = []
    for name in check.missing:
        found.append(Finding(area=Area.NODE, kind=Kind.NODE, object="Node", field="registered",
                             desired="true", live="false", where=name))
    for name in check.not_ready:
        reason, since = _ready(by_name.get(name) or {})
        found.append(Finding(area=Area.NODE, kind=Kind.NODE, object="Node", field="Ready",
                             desired="True", live=reason, where=name, since=since))
    for name, version in check.wrong_version.items():
        found.append(Finding(area=Area.NODE, kind=Kind.NODE, object="Node",
                             field=".status.nodeInfo.kubeletVersion",
                             desired=f"v{cluster.kubernetes_version}", live=version, where=name))
    for name, taint in check.tainted.items():
        found.append(Finding(area=Area.NODE, kind=Kind.NODE, object="Node", field=".spec.taints",
                             desired="(no control-plane taint: no workers)", live=taint,
                             where=name))
    return found


def _ready(node: Mapping[str, Any]) -> tuple[str, datetime | None]:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            when = cond.get("lastTransitionTime")
            try:
                since = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
            except ValueError:
                since = None
            return f"{cond.get('status')} ({cond.get('reason') or 'no reason'})", since
    return "Unknown (no Ready condition)", None
