"""Checks for the constructor options that components share (flags, counts, real numbers in a
range), so every layer, loss, optimizer, scheduler and data source rejects a bad value with
the same one-line message: ``owner: key=value is …; accepted: …``."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np

from cnnx.errors import ConfigError


def check_flag(owner: str, key: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{owner}: {key}={value!r} is not a boolean; accepted: true, false")
    return bool(value)


def check_int(owner: str, key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(f"{owner}: {key}={value!r} is not an integer; accepted: int >= {low}")
    if value < low:
        raise ConfigError(f"{owner}: {key}={value!r} is out of range; accepted: int >= {low}")
    return int(value)


def check_positive_int(owner: str, key: str, value: Any) -> int:
    return check_int(owner, key, value, 1)


def check_real(owner: str, key: str, value: Any) -> float:
    """Return ``value`` as a finite Python float or raise a ConfigError naming ``key``.

    Python floats keep float32 arithmetic float32 under NumPy's promotion rules, whereas a
    NumPy float64 scalar would promote every intermediate to float64.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(
            f"{owner}: {key}={value!r} is not a number; accepted: a finite real number"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{owner}: {key}={value!r} is not finite; accepted: a finite number")
    return value


def check_range(
    owner: str,
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    value = check_real(owner, key, value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        low_op = "<" if low_open else "<="
        high_op = "<" if high_open else "<="
        if low is not None and high is not None:
            accepted = f"{low:g} {low_op} {key} {high_op} {high:g}"
        elif low is not None:
            accepted = f"{key} {'>' if low_open else '>='} {low:g}"
        else:
            accepted = f"{key} {high_op} {high:g}"
        raise ConfigError(f"{owner}: {key}={value!r} is out of range; accepted: {accepted}")
    return value
