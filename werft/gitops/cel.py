"""CEL, the expression language of change policies: compile once, evaluate many times.

The language is Google's Common Expression Language (as Kubernetes'
ValidatingAdmissionPolicy uses), through the ``cel-python`` library (``import celpy``):
no home-made language, and an expression cannot loop forever, touch files or the network.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import celpy
import celpy.celtypes
import lark
from celpy.celparser import CELParseError, CELParser

from werft.secrets import werft_home


class CelError(ValueError):
    """An expression that does not compile, or fails while evaluating (a missing field)."""


def compile_error(text: str) -> str | None:
    """Why ``text`` is not a CEL expression, or None when it compiles."""
    try:
        _program(text)
    except CelError as exc:
        return str(exc)
    return None


@functools.lru_cache(maxsize=1024)
def _program(text: str) -> celpy.Runner:
    _load_grammar()
    # The interpreter, not celpy's CompiledRunner: the transpiled code is ~4x faster but
    # (cel-python 0.5) evaluates ``x == null || x.f`` eagerly and errors where CEL's
    # error-absorbing ``||`` is true -- a rule must mean what it says.
    env = celpy.Environment()
    try:
        return env.program(env.compile(text))
    except CELParseError as exc:
        # celpy's message is the expression with a caret under the error: one line here.
        first = " ".join(str(exc).split())
        raise CelError(first or "does not parse") from exc


@functools.cache
def _load_grammar() -> None:
    """Build celpy's parser once per process, from a cache of lark's parse tables.

    Building the LALR tables of the CEL grammar takes ~1 s of CPU, a fifth of the budget of
    planning a change to a 10,000-site fleet; lark can keep them in a file. The file is a
    pickle, so it lives in werft's own state folder (not a world-writable temp dir), named
    by the grammar's and lark's versions. celpy documents ``CELParser.CEL_PARSER`` as the
    parser it shares; it is set here with celpy's own options plus the cache.
    """
    if CELParser.CEL_PARSER is not None:
        return
    grammar = (Path(celpy.__file__).parent / "cel.lark").read_text()
    digest = hashlib.sha256(f"{grammar}{lark.__version__}".encode()).hexdigest()[:16]
    cache: str | bool = False
    try:
        folder = werft_home() / "cache"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        cache = str(folder / f"cel-lark-{digest}.pickle")
    except OSError:
        pass  # a read-only home: build the tables every time
    CELParser.CEL_PARSER = lark.Lark(
        grammar,
        parser="lalr",
        start="expr",
        debug=True,
        g_regex_flags=re.M,
        lexer_callbacks={"IDENT": CELParser.ambiguous_literals},
        propagate_positions=True,
        maybe_placeholders=False,
        priority="invert",
        tree_class=celpy.InterpretedRunner.tree_node_class,
        cache=cache,
    )


Activation = dict[str, Any]


def activation(scope: dict[str, Any]) -> Activation:
    """Plain JSON values -> CEL values, once: a scope shared by many evaluations (the
    request, the teams) is converted once, not once per rule and object."""
    return {name: celpy.json_to_cel(value) for name, value in scope.items()}


def evaluate(text: str, scope: Activation) -> bool:
    """``text`` over a converted ``scope`` (``activation``); True or False, else CelError."""
    try:
        result = _program(text).evaluate(scope)
    except celpy.CELEvalError as exc:
        raise CelError(_eval_message(exc)) from exc
    if isinstance(result, celpy.CELEvalError):
        raise CelError(_eval_message(result))
    if not isinstance(result, celpy.celtypes.BoolType):
        raise CelError(f"evaluates to {type(result).__name__}, not a bool")
    return bool(result)


def _eval_message(exc: celpy.CELEvalError) -> str:
    return str(exc.args[0]) if exc.args else "evaluation failed"


# --- many objects, few evaluations -------------------------------------------------------

# The variables of policy rules (werft.gitops.policy).
_VARIABLES = ("object", "oldObject", "request", "change", "affected", "teams")
_OBJECTS = frozenset({"object", "oldObject"})


@functools.cache
def _reads(text: str) -> frozenset[str]:
    """The scope variables an expression may read: each one whose name appears in it (in a
    string literal too -- a superset only costs a cache miss, never a wrong verdict)."""
    return frozenset(v for v in _VARIABLES if re.search(rf"\b{v}\b", text))


class Scope:
    """One changed object's variables, converted to CEL only when a rule reads them."""

    def __init__(self, shared: Activation, plain: dict[str, Any]) -> None:
        self._shared = shared
        self._plain = plain
        self._converted: Activation = {}
        self._keys: dict[str, str] = {}

    def activation(self, names: frozenset[str]) -> Activation:
        for name in names:
            if name in self._plain and name not in self._converted:
                self._converted.update(activation({name: self._plain[name]}))
        return {**self._shared, **{n: self._converted[n] for n in names if n in self._converted}}

    def key(self, names: frozenset[str]) -> tuple[str, ...] | None:
        """What the result depends on besides the shared variables; None when it reads the
        object itself (different for every object: not worth caching)."""
        if names & _OBJECTS:
            return None
        for name in names:
            if name in self._plain and name not in self._keys:
                self._keys[name] = json.dumps(self._plain[name], sort_keys=True)
        return tuple(self._keys.get(n, "") for n in sorted(names))


class Evaluator:
    """Expressions over many scopes that share some variables. A change to a Profile can
    touch 10,000 clusters; an expression that reads only what they share (the request, the
    whole change) gives one answer for all of them, so it is evaluated once (celpy
    interprets: ~1 ms an evaluation). Results are kept per expression and per JSON value
    of the per-scope variables it reads, except the objects themselves."""

    def __init__(self, shared: dict[str, Any]) -> None:
        self._shared = activation(shared)
        self._results: dict[tuple[str, tuple[str, ...]], bool | CelError] = {}

    def scope(self, plain: dict[str, Any]) -> Scope:
        return Scope(self._shared, plain)

    def evaluate(self, text: str, scope: Scope) -> bool:
        names = _reads(text)
        key = scope.key(names)
        if key is not None and (text, key) in self._results:
            found = self._results[text, key]
            if isinstance(found, CelError):
                raise found
            return found
        try:
            result: bool | CelError = evaluate(text, scope.activation(names))
        except CelError as exc:
            result = exc
        if key is not None:
            self._results[text, key] = result
        if isinstance(result, CelError):
            raise result
        return result
