"""Fault injection: rules that make BMCs, hypervisors and cluster APIs misbehave on purpose.

A rule (from ``--faults FILE`` or ``POST /_sim/faults``) is a mapping:

    kind:     error | timeout | slow | offline | auth
    machine / cluster / site / path / methods:
              what it hits; every field given must match (path is a glob over the URL path,
              e.g. "/bmc/*/redfish/v1/Managers/*"); a rule with none of them hits every
              request except the admin API
    rate:     0..1, the share of matching requests it hits (default 1)
    status:   error: the HTTP status (default 503)
    seconds:  timeout: how long the response hangs before a 504 (default 30);
              slow: added latency (default 1); offline with mode "hang": the hang (300)
    mode:     offline: "drop" (default: the connection is closed without a response, as a
              vanished site looks to a client) or "hang" (no answer until the client gives up)
    count:    the most requests it hits, then it stays but fires no more (default: no limit);
              ``count: 1`` is "a single 503 at this request"
    skip:     matching requests let through before it starts to hit (default 0); with
              ``count: 1``, ``skip: n`` faults exactly the (n+1)-th matching request
    start, duration:
              the window, in wall-clock seconds after the rule is added (default: from now
              until the rule is deleted). Fault windows are NOT scaled by --time-scale: they
              shape what clients experience, and client timeouts are wall-clock too.
    id:       optional name (default f1, f2, ...)

The file holds ``{"seed": 7, "rules": [...]}`` or just a list of rules. With a seed, every
rule draws from its own RNG seeded by (seed, rule id), so a test replays the same faults.
Slow rules add up; then the first matching rule of another kind that fires decides.
"""

from __future__ import annotations

import fnmatch
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

FaultKind = Literal["error", "timeout", "slow", "offline", "auth"]
KINDS: tuple[str, ...] = ("error", "timeout", "slow", "offline", "auth")
_DEFAULT_SECONDS = {"timeout": 30.0, "slow": 1.0, "offline": 300.0}
_FIELDS = {
    "id", "kind", "machine", "cluster", "site", "path", "methods", "rate", "status",
    "seconds", "mode", "start", "duration", "count", "skip",
}


class FaultRuleError(ValueError):
    """A fault rule that does not make sense."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a request is addressed to, for matching rules."""

    kind: str  # "bmc", "hypervisor", "clusters", "static", "other"
    machine: str | None = None
    cluster: str | None = None
    site: str | None = None


@dataclass(slots=True)
class FaultRule:
    id: str
    kind: str
    machine: str | None = None
    cluster: str | None = None
    site: str | None = None
    path: str | None = None
    methods: frozenset[str] | None = None
    rate: float = 1.0
    status: int = 503
    seconds: float = 0.0
    mode: str = "drop"
    start: float = 0.0
    duration: float | None = None
    count: int | None = None
    skip: int = 0
    seen: int = 0  # matching requests so far, hit or not (for skip)
    added_at: float = field(default_factory=time.monotonic)
    rng: random.Random = field(default_factory=random.Random, repr=False)
    hits: int = 0

    def active(self, now: float) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        if now < self.added_at + self.start:
            return False
        return self.duration is None or now < self.added_at + self.start + self.duration

    def matches(self, target: Target, method: str, path: str) -> bool:
        if self.machine is not None and self.machine != target.machine:
            return False
        if self.cluster is not None and self.cluster != target.cluster:
            return False
        if self.site is not None and self.site != target.site:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "kind": self.kind, "rate": self.rate}
        for key in ("machine", "cluster", "site", "path", "duration", "count"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.methods is not None:
            out["methods"] = sorted(self.methods)
        if self.kind == "error":
            out["status"] = self.status
        if self.kind in ("timeout", "slow") or (self.kind == "offline" and self.mode == "hang"):
            out["seconds"] = self.seconds
        if self.kind == "offline":
            out["mode"] = self.mode
        if self.start:
            out["start"] = self.start
        if self.skip:
            out["skip"] = self.skip
        out["hits"] = self.hits
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    delay: float = 0.0  # seconds of added latency (slow rules)
    rule: FaultRule | None = None  # the rule that takes the request over, if any


class FaultSet:
    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self.rules: list[FaultRule] = []
        self._counter = 0

    def __bool__(self) -> bool:
        return bool(self.rules)

    def add(self, raw: object) -> FaultRule:
        rule = parse_rule(raw, default_id=self._next_id())
        if any(r.id == rule.id for r in self.rules):
            raise FaultRuleError(f"a fault rule with id {rule.id!r} exists already")
        rule.rng = random.Random(f"{self.seed}/{rule.id}") if self.seed is not None else (
            random.Random()
        )
        self.rules.append(rule)
        return rule

    def load(self, document: object) -> list[FaultRule]:
        """Add the rules of a faults document (``{"seed", "rules"}`` or a list)."""
        if isinstance(document, dict):
            if "seed" in document:
                self.seed = _int(document["seed"], "seed")
            rules = document.get("rules", [])
        else:
            rules = document
        if not isinstance(rules, list):
            raise FaultRuleError("'rules' must be a list of fault rules")
        return [self.add(r) for r in rules]

    def remove(self, rule_id: str) -> bool:
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def clear(self) -> None:
        self.rules.clear()

    def decide(self, target: Target, method: str, path: str) -> Decision | None:
        if not self.rules:
            return None
        now = time.monotonic()
        delay = 0.0
        for rule in self.rules:
            if not rule.active(now) or not rule.matches(target, method, path):
                continue
            rule.seen += 1
            if rule.seen <= rule.skip:
                continue
            if rule.rate < 1.0 and rule.rng.random() >= rule.rate:
                continue
            rule.hits += 1
            if rule.kind == "slow":
                delay += rule.seconds
                continue
            return Decision(delay, rule)
        return Decision(delay) if delay else None

    def snapshot(self) -> dict[str, object]:
        return {"seed": self.seed, "rules": [r.as_dict() for r in self.rules]}

    def _next_id(self) -> str:
        while True:
            self._counter += 1
            candidate = f"f{self._counter}"
            if all(r.id != candidate for r in self.rules):
                return candidate


def parse_rule(raw: object, *, default_id: str) -> FaultRule:
    if not isinstance(raw, dict):
        raise FaultRuleError("a fault rule must be a mapping")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise FaultRuleError(f"unknown fault rule field(s): {', '.join(sorted(unknown))}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise FaultRuleError(f"fault kind must be one of {', '.join(KINDS)}, not {kind!r}")
    rate = _float(raw.get("rate", 1.0), "rate")
    if not 0.0 <= rate <= 1.0:
        raise FaultRuleError("rate must be between 0 and 1")
    status = _int(raw.get("status", 503), "status")
    if not 100 <= status <= 599:
        raise FaultRuleError("status must be an HTTP status code")
    seconds = _float(raw.get("seconds", _DEFAULT_SECONDS.get(str(kind), 0.0)), "seconds")
    mode = raw.get("mode", "drop")
    if mode not in ("drop", "hang"):
        raise FaultRuleError("mode must be 'drop' or 'hang'")
    methods = raw.get("methods")
    if methods is not None:
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise FaultRuleError("methods must be a list of HTTP methods")
        methods = frozenset(m.upper() for m in methods)
    duration = raw.get("duration")
    count = raw.get("count")
    if count is not None and _int(count, "count") < 1:
        raise FaultRuleError("count must be at least 1")
    rule = FaultRule(
        id=str(raw.get("id") or default_id),
        kind=str(kind),
        machine=_opt_str(raw, "machine"),
        cluster=_opt_str(raw, "cluster"),
        site=_opt_str(raw, "site"),
        path=_opt_str(raw, "path"),
        methods=methods,
        rate=rate,
        status=status,
        seconds=max(0.0, seconds),
        mode=str(mode),
        start=max(0.0, _float(raw.get("start", 0.0), "start")),
        duration=None if duration is None else max(0.0, _float(duration, "duration")),
        count=None if count is None else _int(count, "count"),
        skip=max(0, _int(raw.get("skip", 0), "skip")),
    )
    return rule


def load_file(path: Path, faults: FaultSet) -> list[FaultRule]:
    text = path.read_text()
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise FaultRuleError(f"{path}: not valid YAML/JSON: {exc}") from None
    try:
        return faults.load(document or [])
    except FaultRuleError as exc:
        raise FaultRuleError(f"{path}: {exc}") from None


def _opt_str(raw: dict[str, object], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise FaultRuleError(f"{key} must be a non-empty string")
    return value


def _float(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultRuleError(f"{key} must be a number")
    return float(value)


def _int(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultRuleError(f"{key} must be an integer")
    return value
