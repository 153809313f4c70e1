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


def torch_positional_order_error(
    layer: str, given: tuple[Any, ...], torch_names: tuple[str, ...], positional: int, keywords: str,
) -> TypeError:
    """The error for positional arguments beyond a layer's own, which PyTorch users type in
    PyTorch's order: ``Conv2D(1, 8, 3)`` as ``nn.Conv2d(in_channels, out_channels, kernel_size)``.

    cnnx infers the input size that comes first in PyTorch (``torch_names[0]``), so the same
    numbers in cnnx's order would build another layer without any error (1 filter of 8×8,
    stride 3). The message names both readings: PyTorch's, translated, and passing the extra
    options by name.
    """
    call = f"{layer}({', '.join(map(repr, given))})"
    own = " and ".join(torch_names[1:1 + positional])
    takes = f"only {own} {'is' if positional == 1 else 'are'} positional" if own else "takes no positional arguments"
    message = f"{call}: {takes} ({torch_names[0]} comes from the input); pass {keywords} by name"
    if len(given) <= len(torch_names):
        as_torch = dict(zip(torch_names, given))
        arguments = [repr(as_torch[name]) for name in torch_names[1:1 + positional] if name in as_torch]
        arguments += [f"{name}={as_torch[name]!r}" for name in torch_names[1 + positional:] if name in as_torch]
        message += f"; read in PyTorch's order it is {layer}({', '.join(arguments)})"
    return TypeError(message)
