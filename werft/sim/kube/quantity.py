"""``resource.Quantity`` as the API server stores it: our Python of apimachinery's rules.

A quantity (``cpu: 1000m``, ``memory: 1024Mi``) is parsed into an exact number, a format
(DecimalSI: ``m k M G ...``; BinarySI: ``Ki Mi Gi ...``; DecimalExponent: ``e3``) and is
written back in canonical form: no fractional digits, the largest suffix of its format
that loses nothing, so ``1000m`` -> ``1``, ``0.5`` -> ``500m``, ``1024Mi`` -> ``1Gi``,
``1.5Gi`` -> ``1536Mi``. Values are rounded *up* to nano units (``0.1n`` -> ``1n``).

One quirk kept on purpose: when the parser's fast path finds the text already looks
canonical (a decimal number whose digits do not end in ``000``, at an exponent that is a
multiple of 3, without a leading zero; or a binary number not divisible by 8), the server
keeps the text exactly as given -- so ``1e3`` stays ``1e3`` (it is not rewritten ``1k``).

Reference: k8s.io/apimachinery pkg/api/resource quantity.go (ParseQuantity,
CanonicalizeBytes), amount.go, suffix.go; tests/test_sim_kube_quantity.py checks our
output against the cases of its quantity_test.go.
"""

from __future__ import annotations

import functools
from fractions import Fraction

DECIMAL_SI, BINARY_SI, DECIMAL_EXPONENT = "DecimalSI", "BinarySI", "DecimalExponent"

_SUFFIXES: dict[str, tuple[int, int, str]] = {
    "": (10, 0, DECIMAL_SI),
    "n": (10, -9, DECIMAL_SI),
    "u": (10, -6, DECIMAL_SI),
    "m": (10, -3, DECIMAL_SI),
    "k": (10, 3, DECIMAL_SI),
    "M": (10, 6, DECIMAL_SI),
    "G": (10, 9, DECIMAL_SI),
    "T": (10, 12, DECIMAL_SI),
    "P": (10, 15, DECIMAL_SI),
    "E": (10, 18, DECIMAL_SI),
    "Ki": (2, 10, BINARY_SI),
    "Mi": (2, 20, BINARY_SI),
    "Gi": (2, 30, BINARY_SI),
    "Ti": (2, 40, BINARY_SI),
    "Pi": (2, 50, BINARY_SI),
    "Ei": (2, 60, BINARY_SI),
}
_DECIMAL_NAMES = {e: s for s, (b, e, f) in _SUFFIXES.items() if f == DECIMAL_SI}
_BINARY_NAMES = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
_SUFFIX_CHARS = frozenset("eEinumkKMGTP")
_DIGITS = frozenset("0123456789")
_NANO = Fraction(1, 10**9)
_MAX_INT64 = 2**63 - 1
_MAX_INT64_FACTORS = 18


class QuantityError(ValueError):
    """Not a quantity; the message is apimachinery's."""


def _split(text: str) -> tuple[bool, str, str, str]:
    """(positive, numerator digits, denominator digits, suffix), as parseQuantityString."""
    positive, pos, end = True, 0, len(text)
    if pos < end and text[0] in "+-":
        positive = text[0] == "+"
        pos += 1
    while pos < end and text[pos] == "0":
        pos += 1
    if pos >= end:
        return positive, "0", "", ""
    start = pos
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    num = text[start:pos] or "0"
    denom = ""
    if pos < end and text[pos] == ".":
        pos += 1
        start = pos
        while pos < end and text[pos] in _DIGITS:
            pos += 1
        denom = text[start:pos]
    suffix_start = pos
    while pos < end and text[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    if pos < end:
        raise QuantityError("quantities must match the regular expression "
                            "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    return positive, num, denom, text[suffix_start:]


def _interpret(suffix: str) -> tuple[int, int, str]:
    found = _SUFFIXES.get(suffix)
    if found is not None:
        return found
    if len(suffix) > 1 and suffix[0] in "eE":
        try:
            return 10, int(suffix[1:]), DECIMAL_EXPONENT
        except ValueError:
            pass
    raise QuantityError("unable to parse quantity's suffix")


def _round_up_to_nano(value: Fraction) -> Fraction:
    """Away from zero, to a multiple of 1n (inf.RoundUp at scale 9)."""
    scaled = value / _NANO
    if scaled.denominator == 1:
        return value
    magnitude = -(-abs(scaled.numerator) // scaled.denominator)
    return Fraction(magnitude if value > 0 else -magnitude) * _NANO


def parse(text: str) -> tuple[Fraction, str, str | None]:
    """(exact value, format, the text itself when the server keeps it verbatim)."""
    if not text:
        raise QuantityError("quantities must match the regular expression")
    if text == "0":
        return Fraction(0), DECIMAL_SI, text
    positive, num, denom, suffix = _split(text)
    base, exponent, fmt = _interpret(suffix)
    sign = 1 if positive else -1
    digits = num + denom
    # The parser's fast path: exact int64 arithmetic, and the text kept when canonical.
    if fmt == BINARY_SI:
        scale = 0
        precision = (
            15 - len(num) - int(exponent * 3 / 10) - 1 if exponent >= 0 and not denom else -1
        )
    else:
        scale = exponent
        precision = _MAX_INT64_FACTORS - len(digits)
    if precision >= 0:
        scale -= len(denom)
        if scale >= -9:
            whole = int(digits)
            mantissa = 2**exponent if fmt == BINARY_SI else 1
            if whole * mantissa <= _MAX_INT64:
                keep = (
                    exponent % 10 == 0 and whole & 7 != 0
                    if fmt == BINARY_SI
                    else scale % 3 == 0 and not digits.endswith("000") and digits[0] != "0"
                )
                value = Fraction(sign * whole * mantissa) * Fraction(10) ** scale
                return value, fmt, text if keep else None
    value = Fraction(int(digits), 10 ** len(denom)) * Fraction(base) ** exponent
    if value != 0:
        value = _round_up_to_nano(value)
    if fmt == BINARY_SI and value > _MAX_INT64:
        value = Fraction(_MAX_INT64)
    if fmt == BINARY_SI and 0 < value < 1:
        fmt = DECIMAL_SI
    return sign * value, fmt, None


def _decimal(value: Fraction, fmt: str) -> str:
    magnitude = abs(value)
    exponent = -9
    mantissa = int(magnitude / _NANO) if (magnitude / _NANO).denominator == 1 else None
    if mantissa is None:  # finer than nano cannot happen after parsing; be exact anyway
        exponent, scaled = 0, magnitude
        while scaled.denominator != 1:
            scaled *= 10
            exponent -= 1
        mantissa = int(scaled)
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    while exponent % 3:
        mantissa *= 10
        exponent -= 1
    if fmt == DECIMAL_EXPONENT:
        suffix = f"e{exponent}" if exponent else ""
    else:
        suffix = _DECIMAL_NAMES.get(exponent, "")  # Go emits no suffix past E
    return ("-" if value < 0 else "") + str(mantissa) + suffix


def format_quantity(value: Fraction, fmt: str) -> str:
    """CanonicalizeBytes."""
    if value == 0:
        return "0"
    if fmt == BINARY_SI:
        if -1024 < value < 1024 or value.denominator != 1:
            return _decimal(value, DECIMAL_SI)
        mantissa, exponent = abs(value.numerator), 0
        while mantissa % 1024 == 0 and exponent < len(_BINARY_NAMES) - 1:
            mantissa //= 1024
            exponent += 1
        return ("-" if value < 0 else "") + str(mantissa) + _BINARY_NAMES[exponent]
    return _decimal(value, fmt)


@functools.lru_cache(maxsize=4096)
def canonical(text: str) -> str:
    """What the API server stores for ``text`` (QuantityError if it is no quantity)."""
    value, fmt, kept = parse(text.strip())
    return kept if kept is not None else format_quantity(value, fmt)


def canonical_value(value: object) -> str:
    """A JSON value in a Quantity field: strings and numbers are both accepted."""
    if isinstance(value, bool):
        raise QuantityError("quantities must be strings or numbers")
    if isinstance(value, int):
        return canonical(str(value))
    if isinstance(value, float):
        return canonical(repr(value))
    if isinstance(value, str):
        return canonical(value)
    raise QuantityError("quantities must be strings or numbers")
