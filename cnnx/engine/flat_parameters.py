"""All of a model's parameters as views of one contiguous buffer.

An elementwise optimizer (SGD, Adam, RMSprop…) then updates every parameter with a handful of
NumPy calls on one flat array instead of a handful per parameter: for small models the
per-call overhead, not the arithmetic, is what a step costs (e.g. 24 calls → 5 for the digits
CNN's SGD-momentum step). Layers always read ``Parameter.data`` when they run, and weights are
loaded in place, so nothing else notices. When ``data`` is rebound (``Model.to`` and copies
flatten again into a new buffer), optimizers relink to the new buffer; only parameters that
no longer share one (a bare ``Module.to``) get one update each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnnx.engine.parameter import Parameter


def flatten_parameters(params: Sequence[Parameter]) -> None:
    """Re-home every parameter's data into one buffer, in order (one dtype only)."""
    if len(params) < 2 or len({p.data.dtype for p in params}) != 1:
        return
    flat = np.empty(sum(p.data.size for p in params), params[0].data.dtype)
    for param, view in zip(params, parameter_views(flat, params)):
        np.copyto(view, param.data)
        param.data = view


def parameter_views(flat: np.ndarray, params: Sequence[Parameter]) -> list[np.ndarray]:
    """Consecutive views of the 1-D ``flat``, one shaped like each parameter, in order."""
    views = []
    offset = 0
    for param in params:
        views.append(flat[offset:offset + param.data.size].reshape(param.data.shape))
        offset += param.data.size
    return views


def shared_buffer(params: Sequence[Parameter]) -> np.ndarray | None:
    """The 1-D buffer whose consecutive views the parameters' data are, in order; else None."""
    if not params:
        return None
    flat = params[0].data.base
    if flat is None or flat.ndim != 1 or not flat.flags.c_contiguous:
        return None
    start = flat.__array_interface__["data"][0]
    offset = 0
    for param in params:
        data = param.data
        if (data.base is not flat or not data.flags.c_contiguous
                or data.__array_interface__["data"][0] != start + offset * flat.itemsize):
            return None
        offset += data.size
    return flat if offset == flat.size else None
