"""The conformance kit's checks of what a layer may do to memory it shares with its neighbours.

A model passes arrays from layer to layer without copying them, so a layer's slips here give
no error and no wrong shape, only wrong gradients elsewhere:

- a ``forward`` that modifies ``x`` in place corrupts the previous layer's output, which tanh,
  sigmoid and softmax read in their backward (and the caller's batch);
- a ``backward`` that modifies ``grad_output`` in place corrupts the gradient a residual block
  hands, after its body, to its shortcut;
- a layer declaring ``backward_reads_output = OutputUse.NONE`` (or ``SIGN``) lets a following
  ``inplace=True`` layer overwrite its output (``cnnx.engine.in_place``); if its backward reads
  those values after all, it differentiates whatever was written there;
- a call under ``no_grad`` between forward and backward (``Model.predict`` on a validation
  batch) must leave what backward reads: a layer reusing a buffer that is not a ``Workspace``'s
  (which keeps no_grad's apart) differentiates the validation batch.

Each check runs the layer as a model would and compares against an untouched copy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cnnx.engine.in_place import OutputUse
from cnnx.engine.module import Module, Shape

Draw = Callable[[np.random.Generator], np.ndarray]


def check_forward_leaves_input(make: Callable[[], Module], input_shape: Shape, draw: Draw, seed: int) -> None:
    """``forward`` leaves ``x`` as it was, unless the layer may overwrite it (``inplace=True``
    sets ``overwrites_input``, and a model turns it off where the input must stay intact)."""
    layer = built(make, input_shape, seed)
    if layer.overwrites_input:
        return
    for training in (True, False):
        x = draw(np.random.default_rng(seed)).astype(np.float32)
        before = x.copy()
        layer.forward(x, training=training)
        assert np.array_equal(x, before), (
            f"forward(training={training}) modified its input x in place; the previous layer's "
            f"backward may read that array: compute out of place (only a layer built with "
            f"inplace=True may overwrite x, where the model allows it through overwrites_input)"
        )


def check_backward_leaves_grad_output(
    make: Callable[[], Module], input_shape: Shape, draw: Draw, seed: int
) -> None:
    """``backward`` leaves ``grad_output`` as it was: a residual block hands the same array to
    its body and then to its shortcut."""
    layer = built(make, input_shape, seed)
    y = layer.forward(draw(np.random.default_rng(seed)).astype(np.float32), training=True)
    grad_output = output_gradient(y.shape, seed)
    before = grad_output.copy()
    layer.backward(grad_output)
    assert np.array_equal(grad_output, before), (
        "backward modified grad_output in place; a residual block hands that array to its "
        "shortcut too: compute the input gradient in an array of its own"
    )


def check_output_use(make: Callable[[], Module], input_shape: Shape, draw: Draw, seed: int) -> None:
    """A layer declaring ``backward_reads_output = OutputUse.NONE`` gets the same gradients
    when its output is overwritten with other values before ``backward``; one declaring
    ``SIGN``, when it is overwritten with values of the same signs (positive or not), which is
    all a sign-preserving in-place layer (ReLU, dropout) leaves of it."""
    declared = OutputUse(built(make, input_shape, seed).backward_reads_output)
    if declared == OutputUse.VALUE:
        return
    x = draw(np.random.default_rng(seed)).astype(np.float32)
    results = []
    for overwrite in (False, True):
        layer = built(make, input_shape, seed)
        y = layer.forward(x.copy(), training=True)
        if overwrite:
            _overwrite(y, declared, np.random.default_rng(seed + 11))
        results.append(gradients(layer, output_gradient(y.shape, seed)))
    kept = "nothing of it" if declared == OutputUse.NONE else "only which entries are positive"
    for name, expected in results[0].items():
        np.testing.assert_allclose(
            results[1][name], expected, rtol=1e-6, atol=1e-7,
            err_msg=(f"the gradient of {name} changes when the output is overwritten before backward, as an "
                     f"inplace=True layer after it may do; backward_reads_output = OutputUse.{declared.name} "
                     f"declares that backward reads {kept}: declare what it reads (OutputUse.VALUE, the default, "
                     f"if it reads the output's values)"),
        )


def check_no_grad_call_leaves_gradients(
    make: Callable[[], Module], input_shape: Shape, draw: Draw, seed: int
) -> None:
    """A call under ``no_grad`` between a training forward and its backward, on another batch
    in evaluation mode (what ``Model.predict`` does), leaves the gradients as they were."""
    from cnnx.engine.grad_mode import no_grad

    x = draw(np.random.default_rng(seed)).astype(np.float32)
    other = draw(np.random.default_rng(seed + 7)).astype(np.float32)
    results = []
    for evaluate_between in (False, True):
        layer = built(make, input_shape, seed)
        y = layer.forward(x.copy(), training=True)
        if evaluate_between:
            with no_grad():
                layer(other.copy(), training=False)
        results.append(gradients(layer, output_gradient(y.shape, seed)))
    for name, expected in results[0].items():
        np.testing.assert_allclose(results[1][name], expected, rtol=1e-6, atol=1e-7,
                                   err_msg=f"gradient of {name} changes when a call under no_grad comes between")


def gradients(layer: Module, grad_output: np.ndarray) -> dict[str, np.ndarray]:
    """The input's and every parameter's gradient from one ``backward``."""
    grad_x = layer.backward(grad_output)
    return {"input": grad_x, **{name: param.grad.copy() for name, param in layer.named_parameters()}}


def built(make: Callable[[], Module], input_shape: Shape, seed: int) -> Module:
    layer = make()
    layer.build(input_shape, np.random.default_rng(seed))
    return layer


def output_gradient(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 3).standard_normal(shape).astype(np.float32)


def _overwrite(y: np.ndarray, declared: OutputUse, rng: np.random.Generator) -> None:
    """Overwrite ``y`` in place with other values: any for NONE, the same signs for SIGN."""
    magnitude = rng.uniform(0.25, 4.0, y.shape).astype(y.dtype)
    if declared == OutputUse.NONE:
        y[...] = magnitude * rng.choice(np.array([-1, 1], y.dtype), y.shape)
    else:
        y[...] = np.where(y > 0, magnitude, -magnitude + np.asarray(0.25, y.dtype))  # (-3.75, 0]
