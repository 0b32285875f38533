"""What this run's add-on stage saw the server store, so verify need not ask it again.

AddonsReady applies an object, or learns from the server's dry-run that an apply would
change nothing, and notes the ``resourceVersion`` the server answered with. Verify, in
the same run, lists the objects again: one whose ``resourceVersion`` is still the noted
one has not been written since -- the server's own word that it still holds what werft's
apply made of the manifest -- so verify skips its dry-run apply for it. Anything written
since (another field manager, a controller touching metadata) carries a new
``resourceVersion`` and is compared through the server again. No client-side comparison
of content is involved.

A workload's status moves on after the apply (that is what AddonsReady waits for), which
writes a new ``resourceVersion``; the one seen when it turned Available is noted instead,
provided ``metadata.generation`` did not move (nobody changed its spec meanwhile).

Nothing is carried across runs or processes: it lives in the run's ``StageContext``, and a
batch re-run elsewhere verifies everything through the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from werft.kube import ObjectKey, object_key


def _version(obj: Mapping[str, Any]) -> tuple[str, int]:
    meta = obj.get("metadata") or {}
    return str(meta.get("resourceVersion") or ""), int(meta.get("generation") or 0)


class ConfirmedObjects:
    """Per cluster: manifest -> (resourceVersion, generation) the server answered with."""

    def __init__(self) -> None:
        self._clusters: dict[str, dict[ObjectKey, tuple[str, int]]] = {}

    def note(self, cluster: str, manifest: Mapping[str, Any], stored: Mapping[str, Any]) -> None:
        """``stored`` is what the server holds for ``manifest`` and equals what werft's
        apply makes of it: the answer to the apply, or a live object the dry-run found
        nothing to change on."""
        version = _version(stored)
        if version[0]:
            self._clusters.setdefault(cluster, {})[object_key(manifest)] = version

    def rolled_out(
        self, cluster: str, manifest: Mapping[str, Any], live: Mapping[str, Any]
    ) -> None:
        """The workload is Available as ``live``: only its status moved since it was noted
        if its generation is the noted one."""
        noted = self._clusters.get(cluster, {}).get(object_key(manifest))
        if noted is not None and _version(live)[1] == noted[1]:
            self.note(cluster, manifest, live)

    def unchanged(
        self, cluster: str, manifest: Mapping[str, Any], live: Mapping[str, Any]
    ) -> bool:
        """``live`` is the very version noted for the manifest in this run."""
        noted = self._clusters.get(cluster, {}).get(object_key(manifest))
        return noted is not None and _version(live)[0] == noted[0]

    def forget(self, cluster: str) -> None:
        """Verify is done with the cluster: 10,000 clusters' notes need not stay."""
        self._clusters.pop(cluster, None)
