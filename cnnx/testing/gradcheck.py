"""Finite-difference gradient checks for any layer (built-in or plugin).

Chainer-style directional checks in float64: for a random output cotangent ``g`` the scalar
``f = sum(forward(x) * g)`` is differentiated numerically along random directions of the input
and of every parameter, and compared with what ``backward(g)`` produced. A wrong element shows
up in a random direction with probability one, so a few directions per tensor suffice.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cnnx.engine.module import Module, Shape


def _tolerance_ok(numeric: float, analytic: float, rtol: float, atol: float) -> bool:
    return abs(numeric - analytic) <= atol + rtol * max(abs(numeric), abs(analytic))


def check_gradients(
    module: Module,
    input_shape: Shape,
    *,
    batch_size: int = 2,
    seed: int = 0,
    training: bool = True,
    directions: int = 3,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    make_input: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray] | None = None,
    before_forward: Callable[[Module], None] | None = None,
) -> None:
    """Raise ``AssertionError`` naming the tensor whose analytic gradient is wrong.

    ``module`` must be unbuilt; it is built for ``input_shape`` and cast to float64.
    ``before_forward`` runs before every forward pass, e.g. to reset a dropout layer's
    generator so that every evaluation sees the same mask.
    """
    rng = np.random.default_rng(seed)
    module.build(tuple(input_shape), np.random.default_rng(seed + 1))
    module.to(np.float64)
    shape = (batch_size, *input_shape)
    x = make_input(rng, shape) if make_input else rng.standard_normal(shape)
    x = np.asarray(x, dtype=np.float64)

    def run(inp: np.ndarray) -> np.ndarray:
        if before_forward is not None:
            before_forward(module)
        return module.forward(inp, training=training)

    y = run(x.copy())
    cotangent = rng.standard_normal(y.shape)
    grad_x = module.backward(cotangent.copy())
    assert grad_x.shape == x.shape, f"input gradient shape {grad_x.shape} != input shape {x.shape}"
    named = dict(module.named_parameters())
    analytic = {name: p.grad.copy() for name, p in named.items()}
    for name, p in named.items():
        assert analytic[name].shape == p.data.shape, (
            f"gradient of {name} has shape {analytic[name].shape}, parameter {p.data.shape}"
        )

    def objective() -> float:
        return float(np.sum(run(x) * cotangent))

    def check(label: str, array: np.ndarray, grad: np.ndarray) -> None:
        for _ in range(directions):
            direction = rng.standard_normal(array.shape)
            original = array.copy()
            array += eps * direction
            plus = objective()
            array[...] = original - eps * direction
            minus = objective()
            array[...] = original
            numeric = (plus - minus) / (2 * eps)
            exact = float(np.sum(grad * direction))
            assert _tolerance_ok(numeric, exact, rtol, atol), (
                f"{type(module).__name__}: gradient of {label} is wrong along a random "
                f"direction: finite difference {numeric:.10g}, backward {exact:.10g}"
            )

    check("the input", x, grad_x)
    for name, p in named.items():
        check(f"parameter {name!r}", p.data, analytic[name])


def check_float32(
    module: Module,
    input_shape: Shape,
    *,
    batch_size: int = 2,
    seed: int = 0,
    training: bool = True,
) -> None:
    """Assert a float32 input stays float32 through forward, backward and every gradient."""
    rng = np.random.default_rng(seed)
    module.build(tuple(input_shape), np.random.default_rng(seed + 1))
    x = rng.standard_normal((batch_size, *input_shape)).astype(np.float32)
    y = module.forward(x, training=training)
    assert y.dtype == np.float32, f"{type(module).__name__}.forward returned {y.dtype}"
    grad_x = module.backward(np.ones_like(y))
    assert grad_x.dtype == np.float32, f"{type(module).__name__}.backward returned {grad_x.dtype}"
    for name, p in module.named_parameters():
        assert p.data.dtype == np.float32, f"parameter {name} is {p.data.dtype}"
        assert p.grad.dtype == np.float32, f"gradient of {name} is {p.grad.dtype}"
    for name, buf in module.named_buffers():
        assert buf.dtype == np.float32, f"buffer {name} is {buf.dtype}"


def check_loss_gradients(
    loss: Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]],
    outputs: np.ndarray,
    targets: np.ndarray,
    *,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    directions: int = 5,
    seed: int = 0,
) -> None:
    """Raise ``AssertionError`` if ``loss``'s gradient disagrees with finite differences.

    ``outputs`` is cast to float64; the value must be a Python float, the gradient an array
    of the outputs' shape and dtype, and the call must leave ``outputs`` unchanged.
    """
    rng = np.random.default_rng(seed)
    outputs = np.array(outputs, dtype=np.float64)
    pristine = outputs.copy()
    value, grad = loss(outputs, targets)
    name = type(loss).__name__
    assert isinstance(value, float), f"{name} returned a {type(value).__name__} value, not a float"
    assert np.isfinite(value), f"{name} returned a non-finite value {value}"
    assert np.array_equal(outputs, pristine), f"{name} modified the outputs it was given"
    assert isinstance(grad, np.ndarray) and grad.shape == outputs.shape, (
        f"{name} gradient shape {getattr(grad, 'shape', None)} != outputs shape {outputs.shape}"
    )
    assert grad.dtype == np.float64, f"{name} turned float64 outputs into a {grad.dtype} gradient"
    for _ in range(directions):
        direction = rng.standard_normal(outputs.shape)
        plus, _ = loss(outputs + eps * direction, targets)
        minus, _ = loss(outputs - eps * direction, targets)
        numeric = (plus - minus) / (2 * eps)
        exact = float(np.sum(grad * direction))
        assert _tolerance_ok(numeric, exact, rtol, atol), (
            f"{name}: gradient is wrong along a random direction: finite difference "
            f"{numeric:.10g}, returned gradient {exact:.10g}"
        )
