"""Weight initialisers drawing from a caller-supplied ``numpy.random.Generator``.

Values are drawn in float64 and rounded to ``dtype``, so a float32 model and its float64
twin built from the same seed hold the same weights (up to rounding): gradient checks and
float32 runs then describe the same network.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnx.errors import ShapeError


def _positive_fan(name: str, fan: int) -> int:
    # A zero fan comes from a degenerate input shape; dividing by it would silently give inf
    # weights, so say which shape is wrong instead.
    if int(fan) <= 0:
        raise ShapeError(f"cannot initialise weights with {name}={fan}; the layer input is empty")
    return int(fan)


def he_normal(
    rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, dtype: Any = np.float32
) -> np.ndarray:
    """Normal(0, sqrt(2 / fan_in)): keeps activation variance constant through ReLU layers."""
    std = np.sqrt(2.0 / _positive_fan("fan_in", fan_in))
    return (rng.standard_normal(shape) * std).astype(dtype, copy=False)


def glorot_uniform(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    fan_in: int,
    fan_out: int,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Uniform(-a, a), a = sqrt(6 / (fan_in + fan_out)): suits tanh/sigmoid layers."""
    fans = _positive_fan("fan_in", fan_in) + _positive_fan("fan_out", fan_out)
    limit = np.sqrt(6.0 / fans)
    return rng.uniform(-limit, limit, size=shape).astype(dtype, copy=False)
