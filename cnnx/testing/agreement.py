"""Whether two layers compute the same step: for tests that compare a layer with a twin built
another way (for another input size, from a saved config, …) that must give the same numbers."""

from __future__ import annotations

import numpy as np

from cnnx.engine.module import Module


def copy_parameters(source: Module, target: Module) -> None:
    """Give ``target`` the parameter values of ``source`` (same names and shapes)."""
    for (_, param), (_, twin) in zip(source.named_parameters(), target.named_parameters(), strict=True):
        twin.data[...] = param.data


def assert_same_step(layer: Module, reference: Module, x: np.ndarray, seed: int = 0,
                     rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """``layer`` and ``reference`` give the same output for ``x``, then the same input and
    parameter gradients for one random output gradient."""
    y, expected = layer(x), reference(x)
    np.testing.assert_allclose(y, expected, rtol=rtol, atol=atol, err_msg="output")
    grad = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    np.testing.assert_allclose(layer.backward(grad), reference.backward(grad), rtol=rtol, atol=atol,
                               err_msg="input gradient")
    for (name, param), (_, twin) in zip(layer.named_parameters(), reference.named_parameters(), strict=True):
        np.testing.assert_allclose(param.grad, twin.grad, rtol=10 * rtol, atol=10 * atol, err_msg=name)
