"""Dense (fully connected) layer: y = x @ W.T + b, with W in PyTorch's (out, in) layout."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnx.engine.in_place import OutputUse
from cnnx.engine.init import check_init, init_weight_and_bias
from cnnx.engine.module import Module, Shape
from cnnx.engine.options import check_flag, check_positive_int
from cnnx.engine.parameter import Parameter
from cnnx.engine.slots import ParameterSlot
from cnnx.engine.torch_argument_order import torch_order_error
from cnnx.errors import ShapeError


class Dense(Module):
    """``torch.nn.Linear`` with the input size inferred at build time.

    ``init`` names the weight initialiser (``cnnx.engine.init.INITIALIZERS``, PyTorch's by default).
    """

    weight = ParameterSlot()
    bias = ParameterSlot()

    sample_rank = 1

    backward_reads_output = OutputUse.NONE

    def __init__(self, out_features: int, *torch_order: Any, bias: bool = True, init: str = "kaiming_uniform") -> None:
        super().__init__()
        if torch_order:
            raise torch_order_error(self, Dense, (out_features,), torch_order, {"bias": bias, "init": init},
                                    ("in_features", "out_features", "bias"))
        self.out_features = check_positive_int("dense", "out_features", out_features)
        self.use_bias = check_flag("dense", "bias", bias)
        self.init = check_init("dense", init)
        self._x: np.ndarray | None = None

    def _build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        if len(input_shape) != 1:
            hint = "; add a 'flatten' layer before it" if len(input_shape) > 1 else ""
            raise ShapeError(f"dense expects a flat per-sample input (features,), got shape {input_shape}{hint}")
        in_features = input_shape[0]
        weight, bias = init_weight_and_bias(
            self.init, rng, (self.out_features, in_features), in_features, self.out_features,
            self.use_bias, self.dtype,
        )
        self.params["weight"] = Parameter(weight)
        if bias is not None:
            self.params["bias"] = Parameter(bias)
        return (self.out_features,)

    def get_config(self) -> dict[str, Any]:
        return {"out_features": self.out_features, "bias": self.use_bias, "init": self.init}

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.shape[1:] != self.input_shape:
            hint = "; add a flatten layer before it" if x.ndim > 2 else ""
            raise self._refuse_input(x, f"expected (N, {self.input_shape and self.input_shape[0]}){hint}")
        x = self.in_own_dtype(x)
        self._x = x
        y = x @ self.params["weight"].data.T
        if self.use_bias:
            y += self.params["bias"].data
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._x is None:
            raise self._backward_before_forward()
        if grad_output.shape != (len(self._x), self.out_features):
            raise self.wrong_gradient(grad_output, (len(self._x), self.out_features))
        grad_output = self.in_own_dtype(grad_output)
        weight = self.params["weight"]
        weight.grad = grad_output.T @ self._x
        if self.use_bias:
            self.params["bias"].grad = grad_output.sum(axis=0)
        return grad_output @ weight.data
