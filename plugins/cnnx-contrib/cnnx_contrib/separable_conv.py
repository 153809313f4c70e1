"""Depthwise and depthwise-separable convolutions (MobileNet / Xception building blocks).

``depthwise_conv2d`` filters every input channel on its own (``torch.nn.Conv2d`` with
``groups=in_channels``: weight (C·multiplier, 1, kh, kw), output channel ``c·m + j`` reads input
channel ``c``). ``separable_conv2d`` follows it with a 1×1 convolution that mixes channels,
for about ``1/out_channels + 1/(kh·kw)`` of a full convolution's weights and multiplications.

The maths reuses cnnx's im2col: the columns of one channel, (kh·kw, OH·OW·N), are multiplied by
that channel's filters as one batched matmul over channels.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from cnnx.engine.functional.im2col import Workspace, as_pair, col2im, im2col, output_size, to_chwn, to_nchw
from cnnx.engine.in_place import OutputUse
from cnnx.engine.init import check_init, init_weight_and_bias
from cnnx.engine.layers.conv import Conv2D, compact_pair
from cnnx.engine.layers.image_input import check_image_batch
from cnnx.engine.module import Module, Shape
from cnnx.engine.options import check_flag, check_positive_int
from cnnx.engine.parameter import Parameter
from cnnx.errors import ConfigError, ShapeError


class DepthwiseConv2D(Module):
    # Backward works from the columns it keeps, so an in-place ReLU may overwrite the output.
    backward_reads_output = OutputUse.NONE
    sample_rank = 3  # a (C, H, W) image: an input of 3 axes in all is taken for one without its batch axis

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        depth_multiplier: int = 1,
        bias: bool = True,
        init: str = "kaiming_uniform",
    ) -> None:
        super().__init__()
        owner = "depthwise_conv2d"
        self.kernel_size = as_pair(kernel_size, f"{owner} kernel_size", minimum=1)
        self.stride = as_pair(stride, f"{owner} stride", minimum=1)
        self.padding = as_pair(padding, f"{owner} padding", minimum=0)
        self.depth_multiplier = check_positive_int(owner, "depth_multiplier", depth_multiplier)
        self.use_bias = check_flag(owner, "bias", bias)
        self.init = check_init(owner, init)
        self.workspace = Workspace()
        self._col: np.ndarray | None = None
        self._input_hw: tuple[int, int] | None = None  # of the last forward: any size works
        self._output_seen: tuple[int, ...] | None = None  # what backward's gradient must be

    def _build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        if len(input_shape) != 3:
            raise ShapeError(f"depthwise_conv2d needs a per-sample input (C, H, W), got {input_shape}")
        channels, height, width = input_shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if height + 2 * ph < kh or width + 2 * pw < kw:
            raise ShapeError(
                f"depthwise_conv2d kernel {self.kernel_size} with padding {self.padding} is "
                f"larger than the input {input_shape} (C, H, W)"
            )
        out_channels = channels * self.depth_multiplier
        # Fans of one channel's group, as torch.nn.init sees a grouped convolution's weight.
        weight, bias = init_weight_and_bias(
            self.init, rng, (out_channels, 1, kh, kw), kh * kw, self.depth_multiplier * kh * kw,
            self.use_bias, self.dtype,
        )
        self.params["weight"] = Parameter(weight)
        if bias is not None:
            self.params["bias"] = Parameter(bias)
        return (
            out_channels,
            output_size(height, kh, self.stride[0], ph),
            output_size(width, kw, self.stride[1], pw),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "kernel_size": compact_pair(self.kernel_size),
            "stride": compact_pair(self.stride),
            "padding": compact_pair(self.padding),
            "depth_multiplier": self.depth_multiplier,
            "bias": self.use_bias,
            "init": self.init,
        }

    def _filters(self) -> np.ndarray:
        """(C, multiplier, kh·kw): each channel's own filters."""
        channels = self.input_shape[0]
        return self.params["weight"].data.reshape(channels, self.depth_multiplier, -1)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.shape[1:] != self.input_shape:  # any spatial size the kernel fits works, as in PyTorch
            check_image_batch(self, x, channels=True, kernel=self.kernel_size, padding=self.padding)
        x = self.in_own_dtype(x)
        channels, (kh, kw) = self.input_shape[0], self.kernel_size
        batch, _, height, width = x.shape
        self._input_hw = (height, width)
        out_h = output_size(height, kh, self.stride[0], self.padding[0])
        out_w = output_size(width, kw, self.stride[1], self.padding[1])
        col = self.workspace.get("col", (channels, kh, kw, out_h, out_w, batch), x.dtype, fill=0,
                                 geometry=(height, width))
        im2col(to_chwn(x, self.workspace, "input"), self.kernel_size, self.stride, self.padding, out=col)
        self._col = col.reshape(channels, kh * kw, -1)
        y = self._filters() @ self._col  # (C, m, OH·OW·N)
        if self.use_bias:
            y += self.params["bias"].data.reshape(channels, self.depth_multiplier, 1)
        y = to_nchw(y.reshape(-1, out_h, out_w, batch))
        self._output_seen = y.shape
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray | None:
        if self._col is None:
            raise RuntimeError("depthwise_conv2d: backward called before forward")
        if grad_output.shape != self._output_seen:  # a broadcastable one gave a wrong input gradient
            raise self.wrong_gradient(grad_output, self._output_seen)
        grad_output = self.in_own_dtype(grad_output)
        channels, (height, width) = self.input_shape[0], self._input_hw
        (kh, kw), (batch, _, out_h, out_w) = self.kernel_size, grad_output.shape
        g = to_chwn(grad_output, self.workspace, "grad_output").reshape(channels, self.depth_multiplier, -1)
        weight = self.params["weight"]
        weight.grad = (g @ self._col.transpose(0, 2, 1)).reshape(weight.data.shape)
        if self.use_bias:
            self.params["bias"].grad = g.sum(axis=2).reshape(-1)
        if not self.needs_input_grad:
            return None
        grad_col = self._filters().transpose(0, 2, 1) @ g  # (C, kh·kw, OH·OW·N)
        grad_x = col2im(grad_col.reshape(channels, kh, kw, out_h, out_w, batch), (height, width),
                        self.stride, self.padding)
        return to_nchw(grad_x)


class SeparableConv2D(Module):
    """Depthwise ``kernel_size`` filtering of each channel, then a 1×1 ``out_channels``
    convolution (Keras' ``SeparableConv2D``). One bias, after the pointwise step; parameters
    are ``depthwise.weight``, ``pointwise.weight`` and ``pointwise.bias``, the names of the
    equivalent two-layer ``torch.nn`` block."""

    backward_reads_output = OutputUse.NONE  # its output is the pointwise convolution's
    sample_rank = 3

    def __init__(
        self,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        depth_multiplier: int = 1,
        bias: bool = True,
        init: str = "kaiming_uniform",
    ) -> None:
        super().__init__()
        self.depthwise = DepthwiseConv2D(kernel_size, stride, padding, depth_multiplier, bias=False, init=init)
        try:
            self.pointwise = Conv2D(out_channels, 1, bias=bias, init=init)
        except ConfigError as exc:
            raise ConfigError(f"separable_conv2d: {exc}") from None
        self._output_seen: tuple[int, ...] | None = None  # what backward's gradient must be

    def _build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        return self.pointwise.build(self.depthwise.build(input_shape, rng), rng)

    def children(self) -> Iterator[tuple[str, Module]]:
        return iter((("depthwise", self.depthwise), ("pointwise", self.pointwise)))

    def get_config(self) -> dict[str, Any]:
        depthwise = self.depthwise.get_config()
        del depthwise["bias"]
        return {"out_channels": self.pointwise.out_channels, **depthwise,
                "bias": self.pointwise.use_bias}

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        y = self.pointwise.forward(self.depthwise.forward(x, training), training)
        self._output_seen = y.shape
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray | None:
        # Named as this layer, not as its pointwise part.
        if self._output_seen is None:
            raise RuntimeError("separable_conv2d: backward called before forward")
        if grad_output.shape != self._output_seen:
            raise self.wrong_gradient(grad_output, self._output_seen)
        self.depthwise.needs_input_grad = self.needs_input_grad
        return self.depthwise.backward(self.pointwise.backward(grad_output))
