"""YAML the fast way: libyaml's C loader and emitter when PyYAML was built with them
(~10x the pure-Python ones: a kubeconfig or an apply body is parsed, and a seed's
cloud-config written, on every cluster's hot path), with the safe loader's and dumper's
semantics either way.

The emitters write the same bytes for what werft dumps (tests/test_yamlsafe.py holds them
to it): a seed's URL is a digest of its bytes, so a different emitter must never mean a
different seed, nor a re-install.
"""

from __future__ import annotations

from typing import Any

import yaml

SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SafeDumper: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def safe_load(text: str | bytes) -> Any:
    return yaml.load(text, Loader=SafeLoader)


def safe_dump(data: Any, **options: Any) -> str:
    """``yaml.safe_dump`` through the fastest emitter (``options`` as for it)."""
    return yaml.dump(data, Dumper=SafeDumper, **options)
