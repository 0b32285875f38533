"""CEL, the expression language of change policies: compile once, evaluate many times.

The language is Google's Common Expression Language (as Kubernetes'
ValidatingAdmissionPolicy uses), through the ``cel-python`` library (``import celpy``):
no home-made language, and an expression cannot loop forever, touch files or the network.
"""

from __future__ import annotations

import functools
from typing import Any

import celpy
import celpy.celtypes
from celpy.celparser import CELParseError


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
    env = celpy.Environment()
    try:
        return env.program(env.compile(text))
    except CELParseError as exc:
        # celpy's message is the expression with a caret under the error: one line here.
        first = " ".join(str(exc).split())
        raise CelError(first or "does not parse") from exc


def evaluate(text: str, scope: dict[str, Any]) -> bool:
    """``text`` evaluated over plain JSON-shaped ``scope``; True or False, else CelError."""
    activation = {name: celpy.json_to_cel(value) for name, value in scope.items()}
    try:
        result = _program(text).evaluate(activation)
    except celpy.CELEvalError as exc:
        raise CelError(_eval_message(exc)) from exc
    if isinstance(result, celpy.CELEvalError):
        raise CelError(_eval_message(result))
    if not isinstance(result, celpy.celtypes.BoolType):
        raise CelError(f"evaluates to {type(result).__name__}, not a bool")
    return bool(result)


def _eval_message(exc: celpy.CELEvalError) -> str:
    return str(exc.args[0]) if exc.args else "evaluation failed"
