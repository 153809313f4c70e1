"""Flatten: any per-sample shape to one feature axis, e.g. (C, H, W) -> (C*H*W,)."""

from __future__ import annotations

import math

import numpy as np

from cnnx.engine.in_place import OutputUse
from cnnx.engine.module import Module, Shape


class Flatten(Module):
    """Reshapes ``(N, *shape)`` to ``(N, prod(shape))`` in C order, as ``torch.nn.Flatten``.

    C order makes the feature index ``c*H*W + h*W + w``, so dense weights transfer to and
    from PyTorch unchanged. Both passes return views when the input is contiguous.
    """

    backward_reads_output = OutputUse.NONE
    returns_input_memory = True  # a view

    def __init__(self) -> None:
        super().__init__()
        self._batch_shape: tuple[int, ...] | None = None
        self._flat_shape: tuple[int, int] | None = None

    def _build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        return (math.prod(input_shape),)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        self._batch_shape = x.shape
        # An explicit size (not -1) keeps empty batches reshapeable.
        self._flat_shape = (x.shape[0], math.prod(x.shape[1:]))
        return x.reshape(self._flat_shape)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._batch_shape is None:
            raise self._backward_before_forward()
        if grad_output.shape != self._flat_shape:  # (C·H·W, N) would reshape without a word
            raise self.wrong_gradient(grad_output, self._flat_shape)
        return grad_output.reshape(self._batch_shape)
