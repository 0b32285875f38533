"""Which clusters a command is about, checked before anything runs.

A typo in ``--cluster`` or a selector that matches nothing is not "nothing to do": it is a
usage error, named with what was meant when a close name exists.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from werft.errors import WerftError
from werft.inventory.model import Tier
from werft.inventory.resolved import Inventory

LABEL_FIX = "write each label as KEY=VALUE, e.g. --label env=prod (repeat --label for more)"
# Names to search for a did-you-mean; past this many, the search would cost more than the
# hint is worth on a 100,000-site fleet, so it looks at names sharing the first letter.
_SUGGEST_FROM_ALL = 20_000


class SelectionError(WerftError):
    """A selection the user has to fix (exit 2); the message names the bad term and the fix."""


@dataclass(frozen=True)
class Selection:
    """Filters as given on the command line; every given filter must match."""

    clusters: Sequence[str] = ()
    sites: Sequence[str] = ()
    tiers: Sequence[Tier] = ()
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.clusters or self.sites or self.tiers or self.labels)

    def describe(self) -> str:
        """The selection as it would be typed: ``--tier edge --label env=prod``."""
        terms = [f"--cluster {c}" for c in self.clusters]
        terms += [f"--site {s}" for s in self.sites]
        terms += [f"--tier {t.value}" for t in self.tiers]
        terms += [f"--label {k}={v}" for k, v in self.labels.items()]
        return " ".join(terms) or "the whole fleet"


def parse_labels(terms: Iterable[str]) -> dict[str, str]:
    """``["env=prod", "zone=a"]`` -> ``{"env": "prod", "zone": "a"}``; a malformed term raises
    ``SelectionError`` naming it (an empty value, ``env=``, is a label set to "")."""
    labels: dict[str, str] = {}
    for term in terms:
        key, sep, value = term.partition("=")
        key = key.strip()
        if not sep or not key or any(c.isspace() for c in key):
            raise SelectionError(f"--label {term!r} is not KEY=VALUE ({LABEL_FIX})")
        if key in labels and labels[key] != value:
            raise SelectionError(
                f"--label {key} is given twice ({labels[key]!r} and {value!r}); a cluster has "
                "one value per label, so the selection could match nothing: keep one"
            )
        labels[key] = value
    return labels


def selection_problems(inventory: Inventory, selection: Selection) -> list[str]:
    """Why ``selection`` cannot run on ``inventory``: unknown names, or nothing matched.

    Empty when the selection names only what exists and matches at least one cluster (the
    whole fleet, unfiltered, may be empty: then there is simply nothing to do).
    """
    problems = [
        _unknown("cluster", name, inventory.clusters)
        for name in selection.clusters
        if name not in inventory.clusters
    ]
    problems += [
        _unknown("site", name, inventory.sites)
        for name in selection.sites
        if name not in inventory.sites
    ]
    if problems or selection.empty:
        return problems
    chosen = inventory.select(
        clusters=list(selection.clusters) or None,
        sites=list(selection.sites) or None,
        tiers=list(selection.tiers) or None,
        labels=selection.labels or None,
    )
    if chosen:
        return []
    return [
        f"no cluster in the inventory matches {selection.describe()} "
        f"({len(inventory.clusters)} cluster(s); {_labels_in_use(inventory)})"
    ]


def _unknown(what: str, name: str, known: Iterable[str]) -> str:
    names = list(known)
    if len(names) > _SUGGEST_FROM_ALL:
        names = [n for n in names if n[:1] == name[:1]][:_SUGGEST_FROM_ALL]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        hint = f"; did you mean {close[0]!r}?"
    else:
        hint = f"; `werft inventory show --all` lists the {what}s"
    return f"no {what} {name!r} in the inventory{hint}"


def _labels_in_use(inventory: Inventory, shown: int = 8) -> str:
    pairs = sorted({f"{k}={v}" for c in inventory.clusters.values() for k, v in c.labels.items()})
    if not pairs:
        return "no cluster has labels"
    more = f", ... ({len(pairs)} in all)" if len(pairs) > shown else ""
    return "labels in use: " + ", ".join(pairs[:shown]) + more
