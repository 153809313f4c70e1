"""Inverted dropout: zero each activation with probability p and scale the rest by 1/(1-p),
so that evaluation (an identity) needs no rescaling."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnx.engine.in_place import OutputUse
from cnnx.engine.module import Module, Shape
from cnnx.engine.options import check_flag, check_range


class Dropout(Module):
    """``torch.nn.Dropout(p, inplace)``.

    The layer owns ``self.rng``, a generator spawned from the one passed to ``build``: the
    masks depend only on the run seed and on nothing else in the process. Assign a fresh
    generator to ``rng`` to replay a mask (gradient checks do).
    """

    backward_reads_output = OutputUse.NONE
    returns_input_memory = True  # evaluation is the identity
    preserves_sign = True

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.p = check_range("dropout", "p", p, 0.0, 1.0, high_open=True)
        self.inplace = check_flag("dropout", "inplace", inplace)
        self.overwrites_input = self.inplace
        self._threshold = round(self.p * 2**32)
        self._scale = 1.0 / (1.0 - self.p)
        self.rng: np.random.Generator | None = None
        self._mask: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None  # of the last forward, whose output is that shape

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p, "inplace": self.inplace}

    def _build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        try:
            # Spawning derives an independent stream without drawing from the parent, so
            # adding a dropout layer does not change the initial weights of later layers.
            self.rng = rng.spawn(1)[0]
        except TypeError:  # a generator made without a SeedSequence cannot spawn
            self.rng = np.random.default_rng(rng.integers(2**63))
        return input_shape

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        self._shape = x.shape
        if not training or self.p == 0.0:
            self._mask = None
            return x
        if self.rng is None:
            raise RuntimeError("Dropout.forward before build(): the layer has no generator yet")
        # Keep an element when a uniform 32-bit integer clears round(p * 2**32): as exact as
        # comparing float uniforms with p, and drawing raw bits is ~1.5x faster than rng.random.
        size = x.size
        bits = self.rng.bit_generator.random_raw((size + 1) // 2).view(np.uint32)
        # The mask in x's memory order (CHWN after a convolution), so the output is too and the
        # next convolution or pooling takes it without a copy (see functional.im2col); filled
        # through a C-contiguous view of that memory, the bits in the order they were drawn.
        self._mask = np.empty_like(x)
        in_memory_order = self._mask.transpose(np.argsort(self._mask.strides)[::-1])
        np.greater_equal(bits[:size].reshape(in_memory_order.shape), self._threshold, out=in_memory_order)
        self._mask *= self._scale
        return np.multiply(x, self._mask, out=x if self.overwrites_input else None)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._shape is None:
            raise self._backward_before_forward()
        if grad_output.shape != self._shape:
            raise self.wrong_gradient(grad_output, self._shape)
        if self._mask is None:
            return grad_output
        return grad_output * self._mask
