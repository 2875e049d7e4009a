"""Quantities as the check rules read them: :mod:`hfai_runtime.kube.quantity`'s exact numbers
(apimachinery ``pkg/api/resource/quantity.go``@v0.31.0 ``ParseQuantity``), or ``None``.

Whether the text has a quantity's form is the schema's ``pattern`` (the CRDs state it); a
magnitude beyond any resource is :func:`~hfai_runtime.check.apivalidation.negative_quantities`'
``range/quantity``. Here a quantity is read to compare it (requests with limits, /dev/shm with
memory) or to see its sign, so ``None`` stands for both.
"""

from __future__ import annotations

from fractions import Fraction

from hfai_runtime.kube.quantity import QuantityError
from hfai_runtime.kube.quantity import parse_quantity as _exact


def parse_quantity(value: object) -> Fraction | None:
    """``value`` as an exact number; ``None`` for a missing, malformed or out-of-range one."""
    try:
        return _exact(value)
    except QuantityError:
        return None
