"""Writing a file so that readers see the old content or the new, never half of it.

Every piece of local state werft keeps (secrets, seed images, machine records, drift
state) is written this way: a temporary file of the writer's own in the same folder
(0600, so two writers never truncate or rename each other's), flushed to disk, then
renamed over the target -- atomic on POSIX filesystems, NFS included.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` in one step; the folder must exist."""
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
