"""Drift: what differs between the desired state and the fleet, found through the server.

Desired objects are compared with live ones by asking the API server what an apply *would*
store (a server-side dry-run apply) and diffing that with what it *does* store. The server
does every normalisation -- quantities, defaults, int-or-string, ``stringData`` -- so werft
keeps no client-side table of them and never reports phantom drift for ``cpu: 1000m``.
"""

from werft.drift.fields import changed_paths

__all__ = ["changed_paths"]
