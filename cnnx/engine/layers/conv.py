"""2-D convolution layer (PyTorch's ``nn.Conv2d`` arguments and weight layout)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnx.engine.functional.conv import conv2d_backward, conv2d_forward
from cnnx.engine.functional.im2col import Workspace, as_pair, output_size
from cnnx.engine.in_place import OutputUse
from cnnx.engine.init import check_init, init_weight_and_bias
from cnnx.engine.layers.image_input import check_image_batch, check_image_shape, check_window_in_image
from cnnx.engine.module import Module, Shape
from cnnx.engine.options import check_flag, check_positive_int
from cnnx.engine.parameter import Parameter
from cnnx.engine.slots import ParameterSlot
from cnnx.engine.torch_argument_order import torch_order_error


def compact_pair(pair: tuple[int, int]) -> int | list[int]:
    """The config form of a size: an int when both sides agree, else a list (YAML/JSON-safe)."""
    return pair[0] if pair[0] == pair[1] else list(pair)


class Conv2D(Module):
    """Cross-correlation of (N, C, H, W) inputs with ``out_channels`` filters.

    ``weight`` is (out_channels, C, kh, kw) and ``bias`` (out_channels,), exactly as in
    ``torch.nn.Conv2d``, so state dicts move between the two by name; ``init`` names the
    weight initialiser (``cnnx.engine.init.INITIALIZERS``, PyTorch's by default).
    """

    weight = ParameterSlot()
    bias = ParameterSlot()

    sample_rank = 3

    backward_reads_output = OutputUse.NONE

    def __init__(
        self,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *torch_order: Any,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        init: str = "kaiming_uniform",
    ) -> None:
        super().__init__()
        if torch_order:
            raise torch_order_error(self, Conv2D, (out_channels, kernel_size), torch_order,
                                    {"stride": stride, "padding": padding, "bias": bias, "init": init},
                                    ("in_channels", "out_channels", "kernel_size", "stride", "padding"))
        self.out_channels = check_positive_int("conv2d", "out_channels", out_channels)
        self.kernel_size = as_pair(kernel_size, "Conv2D kernel_size", minimum=1)
        self.stride = as_pair(stride, "Conv2D stride", minimum=1)
        self.padding = as_pair(padding, "Conv2D padding", minimum=0)
        self.use_bias = check_flag("conv2d", "bias", bias)
        self.init = check_init("Conv2D", init)
        self.workspace = Workspace()
        self._col: np.ndarray | None = None
        self._input_hw: tuple[int, int] | None = None  # of the last forward: any size works
        self._output_seen: tuple[int, ...] | None = None  # what backward's gradient must be

    def _build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        kernel, padding = self.kernel_size, self.padding
        check_image_shape("Conv2D", input_shape, f"kernel {kernel}")
        check_window_in_image("Conv2D", input_shape, f"kernel {kernel}", kernel, padding)
        channels, height, width = input_shape
        area = kernel[0] * kernel[1]
        weight, bias = init_weight_and_bias(
            self.init, rng, (self.out_channels, channels, *kernel), channels * area,
            self.out_channels * area, self.use_bias, self.dtype,
        )
        self.params["weight"] = Parameter(weight)
        if bias is not None:
            self.params["bias"] = Parameter(bias)
        return (
            self.out_channels,
            output_size(height, kernel[0], self.stride[0], padding[0]),
            output_size(width, kernel[1], self.stride[1], padding[1]),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "out_channels": self.out_channels,
            "kernel_size": compact_pair(self.kernel_size),
            "stride": compact_pair(self.stride),
            "padding": compact_pair(self.padding),
            "bias": self.use_bias,
            "init": self.init,
        }

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.shape[1:] != self.input_shape:  # any spatial size the kernel fits works, as in PyTorch
            check_image_batch(self, x, channels=True, kernel=self.kernel_size, padding=self.padding)
        x = self.in_own_dtype(x)
        self._input_hw = x.shape[2:]
        bias = self.params["bias"].data if self.use_bias else None
        y, self._col = conv2d_forward(x, self.params["weight"].data, bias, self.stride, self.padding, self.workspace)
        self._output_seen = y.shape
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._col is None:
            raise self._backward_before_forward()
        if grad_output.shape != self._output_seen:
            raise self.wrong_gradient(grad_output, self._output_seen)
        grad_output = self.in_own_dtype(grad_output)
        weight = self.params["weight"]
        grad_x, weight.grad, grad_bias = conv2d_backward(
            grad_output, weight.data, self._col, self._input_hw, self.stride, self.padding,
            self.workspace, input_grad=self.needs_input_grad,
        )
        if self.use_bias:
            self.params["bias"].grad = grad_bias
        return grad_x
