"""Batch normalisation over (N, H, W) for each channel of NCHW inputs, as ``torch.nn.BatchNorm2d``.

Training normalises with the batch mean and biased variance and moves the running
statistics towards the batch ones (``running = (1 - momentum) * running + momentum * batch``,
with the *unbiased* batch variance); evaluation normalises with the running statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnx.engine.in_place import OutputUse
from cnnx.engine.layers.image_input import check_image_batch, check_image_shape
from cnnx.engine.module import Module, Shape
from cnnx.engine.options import check_range
from cnnx.engine.parameter import Parameter
from cnnx.engine.slots import BufferSlot, ParameterSlot
from cnnx.engine.torch_argument_order import torch_order_error
from cnnx.errors import ConfigError, ShapeError


def _per_channel(v: np.ndarray) -> np.ndarray:
    return v[:, None, None]


class BatchNorm2D(Module):
    """Parameters ``weight`` (gamma) and ``bias`` (beta); buffers ``running_mean`` and
    ``running_var``, all of shape (C,), named as in PyTorch so state_dicts transfer.
    ``num_batches_tracked`` is not kept: it only matters for ``momentum=None``."""

    weight = ParameterSlot()
    bias = ParameterSlot()
    running_mean = BufferSlot()
    running_var = BufferSlot()

    sample_rank = 3

    backward_reads_output = OutputUse.NONE

    foreign_state_keys = ("num_batches_tracked",)

    def __init__(self, *torch_order: Any, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        if torch_order:
            raise torch_order_error(self, BatchNorm2D, (), torch_order, {"eps": eps, "momentum": momentum},
                                    ("num_features", "eps", "momentum"))
        if momentum is None:
            raise ConfigError(
                "batchnorm2d: momentum=None (PyTorch's cumulative average) is not supported; "
                "accepted: 0 <= momentum <= 1"
            )
        # Python floats keep float32 arithmetic in float32 under NumPy 2 promotion rules.
        self.eps = check_range("batchnorm2d", "eps", eps, 0.0, low_open=True)
        self.momentum = check_range("batchnorm2d", "momentum", momentum, 0.0, 1.0)
        self._cache: tuple[Any, ...] | None = None

    def get_config(self) -> dict[str, Any]:
        return {"eps": self.eps, "momentum": self.momentum}

    def _build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        check_image_shape("BatchNorm2D", input_shape)
        channels = input_shape[0]
        self.params["weight"] = Parameter(np.ones(channels, dtype=self.dtype))
        self.params["bias"] = Parameter(np.zeros(channels, dtype=self.dtype))
        self.buffers["running_mean"] = np.zeros(channels, dtype=self.dtype)
        self.buffers["running_var"] = np.ones(channels, dtype=self.dtype)
        return input_shape

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if x.shape[1:] != self.input_shape:  # any spatial size works, as in PyTorch
            check_image_batch(self, x, channels=True)
        x = self.in_own_dtype(x)
        dtype = x.dtype
        weight = self.params["weight"].data.astype(dtype, copy=False)
        bias = self.params["bias"].data.astype(dtype, copy=False)
        if not training:
            mean = self.buffers["running_mean"].astype(dtype)  # a copy: backward needs this
            invstd = 1 / np.sqrt(self.buffers["running_var"].astype(dtype) + self.eps)
            scale = weight * invstd
            self._cache = (False, x, mean, invstd, scale)
            y = x * _per_channel(scale)
            y += _per_channel(bias - mean * scale)
            return y

        count = x.shape[0] * x.shape[2] * x.shape[3]
        if count < 2:
            raise ShapeError(
                f"batchnorm2d needs more than one value per channel in training mode, got "
                f"input shape {x.shape}; use a larger batch or evaluation mode"
            )
        # einsum reduces over (N, H, W) in one pass, 3x faster than sum/mean over those
        # axes, and takes the sum of squares without an (x - mean)**2 temporary. (A reduction,
        # not a contraction: there is no BLAS call for einsum to miss, unlike a matmul.)
        mean = np.einsum("nchw->c", x) / count
        centred = x - _per_channel(mean)
        var = np.einsum("nchw,nchw->c", centred, centred) / count
        invstd = 1 / np.sqrt(var + self.eps)

        momentum = self.momentum
        running_mean, running_var = self.buffers["running_mean"], self.buffers["running_var"]
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += (momentum * count / (count - 1)) * var

        # The centred input (not x-hat) is cached: y = centred * (gamma * invstd) + beta then
        # costs two passes instead of three, and backward folds invstd into per-channel factors.
        scale = weight * invstd
        self._cache = (True, centred, invstd, scale, count)
        y = centred * _per_channel(scale)
        y += _per_channel(bias)
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise self._backward_before_forward()
        if grad_output.shape != self._cache[1].shape:  # the input or its centred copy
            raise self.wrong_gradient(grad_output, self._cache[1].shape)
        g = self.in_own_dtype(grad_output)
        grad_bias = np.einsum("nchw->c", g)
        self.params["bias"].grad = grad_bias
        if not self._cache[0]:
            _, x, mean, invstd, scale = self._cache
            centred = x - _per_channel(mean)
            self.params["weight"].grad = np.einsum("nchw,nchw->c", g, centred) * invstd
            return g * _per_channel(scale)

        _, centred, invstd, scale, count = self._cache
        grad_weight = np.einsum("nchw,nchw->c", g, centred) * invstd
        self.params["weight"].grad = grad_weight
        # d/dx of gamma * x-hat with the batch mean and variance depending on x:
        # gamma * invstd * (g - mean(g) - x-hat * mean(g * x-hat)), means over (N, H, W),
        # where x-hat = centred * invstd and mean(g * x-hat) = grad_weight / count.
        grad = centred * _per_channel(invstd * grad_weight / count)
        np.subtract(g, grad, out=grad)
        grad -= _per_channel(grad_bias / count)
        grad *= _per_channel(scale)
        return grad
