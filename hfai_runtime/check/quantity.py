"""Kubernetes resource quantities (``8``, ``500m``, ``64Gi``, ``1Ei``, ``1e3``) as exact numbers.

apimachinery ``pkg/api/resource/quantity.go``@v0.31.0 (``ParseQuantity``): a signed decimal
number, then a binary suffix (Ki..Ei), a decimal one (n, u, m, k, M..E) or a decimal exponent.
Whether the text has that form is the schema's ``pattern`` (the CRDs state it); here a quantity
is read to compare it (requests with limits, /dev/shm with memory) or to see its sign.
"""

from __future__ import annotations

import re
from fractions import Fraction

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_SUFFIX = {
    None: 1,
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_quantity(value: object) -> Fraction | None:
    """``value`` as an exact number; ``None`` for a missing or malformed one (the schema check
    reports those)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Fraction(value)
    match = _QUANTITY.match(str(value)) if isinstance(value, str) else None
    if not match:
        return None
    number, suffix = match.groups()
    try:
        base = Fraction(number)
    except ValueError:
        return None
    if suffix in _SUFFIX:  # before the exponent form: "Ei" is exbi, not "E" and "i"
        return base * _SUFFIX[suffix]
    return base * Fraction(10) ** int(suffix[1:])
