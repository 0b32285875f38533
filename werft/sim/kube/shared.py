"""Structural sharing: identical parts of stored objects are kept once per process.

10,000 clusters running the same add-ons hold 10,000 copies of the same Deployment specs,
CRD schemas, ConfigMap data and managedFields sets. The store never modifies a stored
container in place (every write builds new ones along what it changes), so identical
subtrees can be one Python object shared by every cluster that holds them. ``share``
returns the first-seen equal value for a given value; values that nothing else refers to
any more are dropped from the table now and then.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from typing import Any

import orjson

_MIN_TABLE = 4096


class Shared:
    def __init__(self) -> None:
        self._table: dict[bytes, Any] = {}
        self._lock = threading.Lock()
        self._purge_at = _MIN_TABLE

    def __len__(self) -> int:
        return len(self._table)

    def share(self, value: Any) -> Any:
        """The shared equal of ``value`` (``value`` itself the first time)."""
        if not isinstance(value, dict | list) or not value:
            return value
        key = hashlib.blake2b(orjson.dumps(value), digest_size=16).digest()
        with self._lock:
            found = self._table.get(key)
            if found is not None:
                return found
            self._table[key] = value
            if len(self._table) >= self._purge_at:
                self._purge()
        return value

    def _purge(self) -> None:
        # 3 references: the table, the loop variable and getrefcount's argument.
        unused = [k for k, v in self._table.items() if sys.getrefcount(v) <= 3]
        for key in unused:
            del self._table[key]
        self._purge_at = max(_MIN_TABLE, 2 * len(self._table))


SHARED = Shared()
share = SHARED.share
