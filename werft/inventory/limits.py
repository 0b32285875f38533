"""Size limits on inventory files, checked before a file is parsed.

A YAML parser holds a node per scalar and pandas a Python string per cell, so a file's
size bounds the memory validation needs. The limits leave room for real fleets (a site
file with thousands of machines, an edge CSV of half a million rows, a vendor's CRD
bundle as an add-on manifest) and refuse anything past them with the file and the line
where the limit is crossed.
"""

from __future__ import annotations

from werft.errors import Problem
from werft.inventory.tree import Tree

MiB = 2**20
MAX_YAML_BYTES = 4 * MiB  # one inventory YAML file (Fleet, Sites, Clusters, ...)
MAX_CSV_BYTES = 64 * MiB  # one edge CSV: about 550,000 rows
MAX_MANIFEST_BYTES = 16 * MiB  # one add-on manifest template

_FIXES = {
    "yaml": "split it into several files (one site per file); edge sites belong in a CSV",
    "csv": "split the edge sites into several CSV files",
    "manifest": "split the manifest into several files listed in the add-on's manifests",
}


def read_bounded(tree: Tree, rel: str, limit: int, kind: str) -> bytes | Problem:
    """The bytes of ``rel``, or a Problem when it is larger than ``limit``.

    A file past the limit is only scanned, a piece at a time, for the line where the limit
    is crossed: a file of gigabytes costs no more memory than a small one. ``kind`` (yaml,
    csv, manifest) picks the fix.
    """
    if tree.size(rel) <= limit:
        return tree.read(rel)
    line, seen = 1, 0
    for chunk in tree.chunks(rel):
        line += chunk.count(b"\n", 0, limit - seen)
        seen += len(chunk)
        if seen >= limit:
            break
    return Problem(
        tree.display(rel),
        line,
        "file",
        f"the file is larger than {limit // MiB} MiB, the limit for a {kind} file "
        f"(crossed at line {line}); it was not read",
        _FIXES[kind],
    )
