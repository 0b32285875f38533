"""The fleet inventory: schema, loading, validation.

Public surface::

    load_inventory(path, *, git_ref=None, repo=None, strict=False) -> Inventory
        # raises InventoryError (errors only; warnings land in Inventory.warnings)
    validate_inventory(path, *, git_ref=None, repo=None, strict=False) -> list[Problem]
    write_fleet(root, *, edge_sites, seed=1, ...)                   # a deterministic fleet

Imported lazily, so ``import werft.inventory.model`` does not pull in pandas.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from werft.inventory.generate import write_fleet
    from werft.inventory.load import load_inventory, validate_inventory
    from werft.inventory.resolved import Inventory, ResolvedCluster
    from werft.inventory.tree import InventoryNotFound

_WHERE = {
    "write_fleet": "werft.inventory.generate",
    "load_inventory": "werft.inventory.load",
    "validate_inventory": "werft.inventory.load",
    "Inventory": "werft.inventory.resolved",
    "ResolvedCluster": "werft.inventory.resolved",
    "InventoryNotFound": "werft.inventory.tree",
}
__all__ = [
    "Inventory",
    "InventoryNotFound",
    "ResolvedCluster",
    "load_inventory",
    "validate_inventory",
    "write_fleet",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
