"""Kubernetes resource quantities (``500m``, ``1.5Gi``, ``1e3``) as exact numbers, safely.

The grammar is apimachinery's ``pkg/api/resource/quantity.go`` (kubernetes v1.31
``ParseQuantity``): a signed decimal number, then a binary suffix (``Ki`` .. ``Ei``), a decimal
suffix (``n u m "" k M G T P E``) or a decimal exponent (``e3``, ``E-2``). Like the API server, a
non-zero value is rounded up to a whole nano (``1e-20`` is ``1n``: "if you want some resources,
you should get some").

What the API server would accept but no computation here should try: a value beyond
:data:`MAX_MAGNITUDE` (``1e999999999`` would need a billion-digit integer) is a
:class:`QuantityError`, found from the digit count and exponent before any big number is made;
so is a quantity longer than :data:`MAX_CHARS`.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

#: 10**30 is eleven orders of magnitude past any node's memory (the API server caps binary
#: quantities at 2**63 - 1, about 9.2e18).
MAX_MAGNITUDE_DIGITS = 30
MAX_MAGNITUDE = 10**MAX_MAGNITUDE_DIGITS
MAX_CHARS = 100
NANO = Fraction(1, 10**9)

_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_LOG10_2 = math.log10(2)


class QuantityError(ValueError):
    """Not a quantity, or one too large to compute with; the message quotes it (bounded)."""


class QuantityTooLarge(QuantityError):
    """A well-formed quantity above :data:`MAX_MAGNITUDE`: the API server would store it, but
    no node has that much of anything, and computing with it could take hours."""


def parse_quantity(value: object) -> Fraction:
    """``value`` (a string, or an int/float as YAML gives it) as an exact :class:`Fraction`.

    Raises :class:`QuantityError` for anything else: a bool, a malformed string, one longer than
    :data:`MAX_CHARS`, or a magnitude above :data:`MAX_MAGNITUDE`.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise QuantityError(f"expected a quantity such as 500m or 2Gi, got a {type(value).__name__}")
    text = _text(value)
    if len(text) > MAX_CHARS:
        raise QuantityError(f"a quantity of {len(text)} characters; at most {MAX_CHARS}")
    match = _QUANTITY.fullmatch(text)
    if not match or not (match["int"] or match["frac"]):
        raise QuantityError(f"expected a quantity such as 500m or 2Gi, got {text!r}")
    digits = (match["int"] or "") + (match["frac"] or "")
    scale = -len(match["frac"] or "")  # the value is int(digits) * 10**scale
    suffix = match["suffix"] or ""
    power2 = _BINARY.get(suffix, 0)
    if suffix[:1] in ("e", "E") and suffix not in _BINARY:
        scale += int(suffix[1:])  # at most MAX_CHARS digits: Python ints take it
    else:
        scale += _DECIMAL.get(suffix, 0)
    mantissa = int(digits)
    if mantissa == 0:
        return Fraction(0)
    magnitude = len(str(mantissa)) + scale + power2 * _LOG10_2  # log10 of the value, roughly
    if magnitude > MAX_MAGNITUDE_DIGITS + 1:
        raise QuantityTooLarge(
            f"{text!r} is larger than 10^{MAX_MAGNITUDE_DIGITS}; no resource is that large"
        )
    if magnitude < -10:
        exact = NANO  # rounds up to 1n, as the API server does
    else:
        exact = Fraction(mantissa) * Fraction(10) ** scale * 2**power2
        if exact > MAX_MAGNITUDE:
            raise QuantityTooLarge(
                f"{text!r} is larger than 10^{MAX_MAGNITUDE_DIGITS}; no resource is that large"
            )
        exact = math.ceil(exact / NANO) * NANO
    return -exact if match["sign"] == "-" else exact


def _text(value: str | int | float) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"expected a quantity such as 500m or 2Gi, got {value!r}")
        return repr(value).replace("e+", "e")
    if isinstance(value, int) and abs(value) > MAX_MAGNITUDE:
        raise QuantityTooLarge(
            f"{value:.3e} is larger than 10^{MAX_MAGNITUDE_DIGITS}; no resource is that large"
        )
    return str(value) if isinstance(value, int) else value
