"""Pooling layers: max and average over windows (PyTorch's arguments), and global average."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnx.engine.functional.im2col import Workspace, as_pair, output_size
from cnnx.engine.functional.pooling import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    global_avg_pool2d_backward,
    global_avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)
from cnnx.engine.grad_mode import is_grad_enabled
from cnnx.engine.in_place import OutputUse
from cnnx.engine.layers.conv import compact_pair
from cnnx.engine.layers.image_input import check_image_batch, check_image_shape, check_window_in_image
from cnnx.engine.module import Module, Shape
from cnnx.errors import ShapeError


class _Pool2D(Module):
    sample_rank = 3
    backward_reads_output = OutputUse.NONE

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = as_pair(kernel_size, f"{name} kernel_size", minimum=1)
        self.stride = self.kernel_size if stride is None else as_pair(stride, f"{name} stride", minimum=1)
        self.padding = as_pair(padding, f"{name} padding", minimum=0)
        self.workspace = Workspace()
        self._input_hw: tuple[int, int] | None = None  # of the last forward: any size works
        self._output_seen: tuple[int, ...] | None = None  # what backward's gradient must be

    def _check_input(self, x: np.ndarray) -> None:
        """Any channel count and any spatial size the window fits work, as in PyTorch."""
        check_image_batch(self, x, kernel=self.kernel_size, padding=self.padding)

    def _build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        name, kernel, padding = type(self).__name__, self.kernel_size, self.padding
        check_image_shape(name, input_shape, f"kernel {kernel}")
        # PyTorch's rule: a window must always hold at least half real values.
        if 2 * padding[0] > kernel[0] or 2 * padding[1] > kernel[1]:
            raise ShapeError(
                f"{name} padding {padding} is more than half the kernel {kernel}; "
                f"padding may be at most kernel_size // 2"
            )
        check_window_in_image(name, input_shape, f"window {kernel}", kernel, padding)
        channels, height, width = input_shape
        return (
            channels,
            output_size(height, kernel[0], self.stride[0], padding[0]),
            output_size(width, kernel[1], self.stride[1], padding[1]),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "kernel_size": compact_pair(self.kernel_size),
            "stride": compact_pair(self.stride),
            "padding": compact_pair(self.padding),
        }


class MaxPool2D(_Pool2D):
    """Window maxima; the gradient goes to each window's first maximum (as in PyTorch).
    Padding is -inf, so it never wins. ``stride`` defaults to ``kernel_size``."""

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__(kernel_size, stride, padding)
        self._winners: object | None = None  # the route of the last forward

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.shape[1:] != self.input_shape:
            self._check_input(x)
        self._input_hw = x.shape[2:]
        # The route is kept in eval mode too: gradients of an eval-mode model (saliency maps,
        # adversarial inputs) are legitimate, as in PyTorch. Only no_grad (predict) skips it.
        y, self._winners = max_pool2d_forward(
            x, self.kernel_size, self.stride, self.padding, self.workspace, keep_winners=is_grad_enabled()
        )
        self._output_seen = y.shape
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._winners is None:
            raise RuntimeError(f"{self!r}: backward needs a forward with gradients first (a forward under "
                               f"no_grad keeps no route for the gradient)")
        if grad_output.shape != self._output_seen:
            raise self.wrong_gradient(grad_output, self._output_seen)
        return max_pool2d_backward(
            grad_output, self._winners, self._input_hw, self.kernel_size, self.stride,
            self.padding, self.workspace,
        )


class AvgPool2D(_Pool2D):
    """Window means. Padded zeros count in the divisor (PyTorch's ``count_include_pad=True``
    default), so every window divides by kh·kw. ``stride`` defaults to ``kernel_size``."""

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.shape[1:] != self.input_shape:
            self._check_input(x)
        self._input_hw = x.shape[2:]
        y = avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.workspace)
        self._output_seen = y.shape
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._input_hw is None:
            raise self._backward_before_forward()
        if grad_output.shape != self._output_seen:
            raise self.wrong_gradient(grad_output, self._output_seen)
        return avg_pool2d_backward(
            grad_output, self._input_hw, self.kernel_size, self.stride, self.padding,
            self.workspace,
        )


class GlobalAvgPool2D(Module):
    """Mean over all spatial positions: (N, C, H, W) → (N, C).

    Like Keras' ``GlobalAveragePooling2D`` the spatial axes are dropped, so a dense layer can
    follow without a flatten (PyTorch's ``AdaptiveAvgPool2d(1)`` would keep them as 1×1).
    """

    sample_rank = 3

    backward_reads_output = OutputUse.NONE

    def _build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        check_image_shape("GlobalAvgPool2D", input_shape)
        return (input_shape[0],)

    def __init__(self) -> None:
        super().__init__()
        self._input_hw: tuple[int, int] | None = None  # of the last forward: any size works
        self._output_seen: tuple[int, ...] | None = None  # what backward's gradient must be

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.shape[1:] != self.input_shape:
            check_image_batch(self, x)
        self._input_hw = x.shape[2:]
        y = global_avg_pool2d_forward(x)
        self._output_seen = y.shape
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._input_hw is None:
            raise self._backward_before_forward()
        if grad_output.shape != self._output_seen:
            raise self.wrong_gradient(grad_output, self._output_seen)
        return global_avg_pool2d_backward(grad_output, self._input_hw)
