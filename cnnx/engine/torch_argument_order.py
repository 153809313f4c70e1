"""Positional arguments typed in PyTorch's order, refused with the cnnx spelling.

PyTorch's layers start with the input size (``nn.Conv2d(in_channels, out_channels, …)``),
which cnnx infers; the same numbers in cnnx's order build another layer without any error
(``Conv2D(1, 8, 3)``: 1 filter of 8×8 at stride 3; ``BatchNorm2D(16)``: eps=16). So a layer
takes only its own sizes by position and refuses more with a message giving both readings
that fit the values: PyTorch's, translated, and cnnx's own with the extra values named.
"""

from __future__ import annotations

import inspect
from numbers import Integral, Real
from typing import Any

from cnnx.engine.init import INITIALIZERS


def _size(value: Any, low: int = 1) -> bool:
    values = value if isinstance(value, (tuple, list)) and len(value) == 2 else (value,)
    return all(isinstance(v, Integral) and not isinstance(v, bool) and v >= low for v in values)


def _real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


#: What each argument of these layers takes, to tell whether a reading of the values fits.
FITS = {
    "in_channels": _size, "out_channels": _size, "in_features": _size, "out_features": _size,
    "num_features": _size, "kernel_size": _size, "stride": _size, "padding": lambda v: _size(v, 0),
    "bias": lambda v: isinstance(v, bool), "init": lambda v: isinstance(v, str) and v in INITIALIZERS,
    "eps": lambda v: _real(v) and 0 < v < 1,
    "momentum": lambda v: _real(v) and 0 <= v <= 1,
}


def _call(layer: str, positional: tuple[Any, ...], named: dict[str, Any]) -> str:
    return f"{layer}({', '.join([*map(repr, positional), *(f'{k}={v!r}' for k, v in named.items())])})"


def _fits(reading: dict[str, Any]) -> bool:
    return all(FITS.get(name, lambda v: True)(value) for name, value in reading.items())


def _differs(value: Any, default: Any) -> bool:
    try:
        return value is not default and bool(value != default)
    except (TypeError, ValueError):  # an array: not the default, whatever it holds
        return True


def torch_order_error(layer: Any, defining: type, own: tuple[Any, ...], extra: tuple[Any, ...],
                      keywords: dict[str, Any], torch_names: tuple[str, ...]) -> TypeError:
    """For ``layer`` (an instance of ``defining``, the class whose ``__init__`` refuses):
    ``own``, the values of its positional parameters; ``extra``, those given after them;
    ``keywords``, its keyword-only parameters' values, in the order they had when they were
    positional; ``torch_names``, PyTorch's positional parameters, the inferred input size first."""
    name = type(layer).__name__
    defaults = inspect.signature(defining).parameters
    named = {k: v for k, v in keywords.items() if _differs(v, defaults[k].default)}  # as typed, as far as can be told
    own_names = torch_names[1:1 + len(own)]
    takes = (f"only {' and '.join(own_names)} {'is' if len(own) == 1 else 'are'} positional" if own
             else "takes no positional arguments")
    *others, last = keywords
    message = (f"{_call(name, (*own, *extra), named)}: {takes} ({torch_names[0]} comes from the input); "
               f"pass {', '.join(others)} and {last} by name")
    readings = []
    values = (*own, *extra)
    if len(values) <= len(torch_names):
        as_torch = dict(zip(torch_names, values))
        if _fits({**as_torch, **named}) and not set(as_torch) & set(named):
            sizes = tuple(as_torch[n] for n in own_names)
            rest = {n: value for n, value in as_torch.items() if n not in (torch_names[0], *own_names)}
            readings.append(f"in PyTorch's order that is {_call(name, sizes, {**rest, **named})}")
    if len(extra) <= len(keywords):
        as_cnnx = dict(zip(keywords, extra))
        if _fits({**dict(zip(own_names, own)), **as_cnnx, **named}) and not set(as_cnnx) & set(named):
            readings.append(f"with the rest named, {_call(name, own, {**as_cnnx, **named})}")
    return TypeError("; ".join([message, *readings]))
