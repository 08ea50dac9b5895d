"""Checks of one value, each raising a ``ValueError`` that names the value and what it must be.

The search options (:mod:`langchain_llava_cot.options`) declare their checks with these,
and any class that takes numbers from a user (a reward model's batch size) uses them too.

>>> whole_number("candidates", 4, low=1)
4
"""

from __future__ import annotations

import math
import numbers

__all__ = ["finite_number", "true_or_false", "whole_number"]


def whole_number(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int: a whole number (numpy's too, never a bool) within ``[low, high]``."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    number = int(value) if whole else None  # type: ignore[call-overload]
    if number is None or (low is not None and number < low) or (high is not None and number > high):
        bounds = [f"of at least {low}"] if low is not None else []
        bounds += [f"at most {high}"] if high is not None else []
        msg = f"{name} must be a whole number{' ' if bounds else ''}{' and '.join(bounds)}, got {value!r}."
        raise ValueError(msg)
    return number


def finite_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
) -> float:
    """``value`` as a float: a finite real number (numpy's too, never a bool) in the bounds."""
    try:
        number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    except OverflowError:  # a whole number too large for a float
        number = math.inf
    if not math.isfinite(number):
        msg = f"{name} must be a finite number, got {value!r}."
        raise ValueError(msg)
    too_low = (low is not None and number < low) or (above is not None and number <= above)
    if too_low or (high is not None and number > high):
        bounds = [f"at least {low}" if low is not None else "", f"above {above}" if above is not None else ""]
        bounds.append(f"at most {high}" if high is not None else "")
        msg = f"{name} must be {' and '.join(b for b in bounds if b)}, got {value!r}."
        raise ValueError(msg)
    return number


def true_or_false(name: str, value: object) -> bool:
    """``value`` if it is a bool: the text ``"false"`` is refused, not read as true."""
    if not isinstance(value, bool):
        msg = f"{name} must be true or false, got {value!r}."
        raise ValueError(msg)
    return value
