from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from cnnx.engine.module import Module, Shape
from cnnx.errors import ShapeError


class Sequential(Module):
    """Named layers applied in order; the body of models and of residual blocks."""

    def __init__(self, layers: Mapping[str, Module], where: str = "layers"):
        super().__init__()
        self.layers = dict(layers)
        self.where = where

    def _build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        shape = input_shape
        for name, layer in self.layers.items():
            try:
                shape = layer.build(shape, rng)
            except ShapeError as exc:
                if str(exc).startswith("layer "):  # already located by a nested block
                    raise
                raise ShapeError(
                    f"layer {self.where}.{name} ({type(layer).__name__}) cannot take input "
                    f"shape {shape}: {exc}"
                ) from exc
        return shape

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        for layer in self.layers.values():
            x = layer.forward(x, training)
        return x

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers.values()):
            grad_output = layer.backward(grad_output)
        return grad_output

    def children(self) -> Iterator[tuple[str, Module]]:
        return iter(self.layers.items())

    def get_config(self) -> dict:
        return {"layers": {n: {"type": type(l).__name__, **l.get_config()} for n, l in self.layers.items()}}
