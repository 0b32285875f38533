"""Parsing YAML the fast way: libyaml's C loader when PyYAML was built with it (~10x the
pure-Python one: a kubeconfig or an apply body is parsed on every cluster's hot path), the
same safe loader's semantics either way."""

from __future__ import annotations

from typing import Any

import yaml

SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str | bytes) -> Any:
    return yaml.load(text, Loader=SafeLoader)
