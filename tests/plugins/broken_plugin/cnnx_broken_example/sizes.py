"""Layers called at more than one input size: one that reuses a buffer it should not, and two
that take only the size they were built for."""

import numpy as np

from cnnx.engine.functional.conv import conv2d_backward
from cnnx.engine.functional.im2col import Workspace, im2col, output_size, to_chwn, to_nchw
from cnnx.engine.in_place import OutputUse
from cnnx.engine.layers.dense import Dense
from cnnx.engine.layers.flatten import Flatten
from cnnx.engine.module import Module
from cnnx.engine.parameter import Parameter


class ForgetsGeometry(Module):
    """A convolution without bias whose column buffer comes from its Workspace by shape alone
    (unless geometry=True). 7×7 and 8×8 inputs give the same 4×4 output at stride 2, so a 7×7
    call after an 8×8 one reads the 8×8 input's values where the padding's zeros belong."""

    backward_reads_output = OutputUse.NONE

    def __init__(self, out_channels=2, kernel_size=3, stride=2, padding=1, geometry=False):
        super().__init__()
        self.out_channels, self.kernel_size = int(out_channels), int(kernel_size)
        self.stride, self.padding, self.geometry = int(stride), int(padding), bool(geometry)
        self.workspace = Workspace()

    def get_config(self):
        return {"out_channels": self.out_channels, "kernel_size": self.kernel_size, "stride": self.stride,
                "padding": self.padding, "geometry": self.geometry}

    def _out(self, size):
        return output_size(size, self.kernel_size, self.stride, self.padding)

    def _build(self, input_shape, rng):
        channels, height, width = input_shape
        shape = (self.out_channels, channels, self.kernel_size, self.kernel_size)
        self.weight = Parameter((0.3 * rng.standard_normal(shape)).astype(np.float32))
        return (self.out_channels, self._out(height), self._out(width))

    def forward(self, x, training=True):
        x = self.in_own_dtype(x)
        batch, channels, height, width = x.shape
        k, out_h, out_w = self.kernel_size, self._out(height), self._out(width)
        col = self.workspace.get("col", (channels * k * k, out_h * out_w * batch), x.dtype, fill=0,
                                 geometry=(height, width) if self.geometry else None)
        im2col(to_chwn(x), (k, k), (self.stride,) * 2, (self.padding,) * 2,
               out=col.reshape(channels, k, k, out_h, out_w, batch))
        self._col, self._input_hw = col, (height, width)
        y = self.weight.data.reshape(self.out_channels, -1) @ col
        return to_nchw(y.reshape(self.out_channels, out_h, out_w, batch))

    def backward(self, grad_output):
        grad_x, self.weight.grad, _ = conv2d_backward(
            self.in_own_dtype(grad_output), self.weight.data, self._col, self._input_hw,
            (self.stride,) * 2, (self.padding,) * 2, self.workspace,
        )
        return grad_x


class PositionBias(Module):
    """A learned bias per channel and position, shaped like the input it was built for: NumPy
    refuses an input of another size with a ValueError (the shapes do not broadcast)."""

    backward_reads_output = OutputUse.NONE

    def _build(self, input_shape, rng):
        self.bias = Parameter((0.1 * rng.standard_normal(input_shape)).astype(np.float32))
        return input_shape

    def forward(self, x, training=True):
        return self.in_own_dtype(x) + self.bias.data

    def backward(self, grad_output):
        grad_output = self.in_own_dtype(grad_output)
        self.bias.grad = grad_output.sum(axis=0)
        return grad_output.copy()


class FlattenDense(Module):
    """A classifier head, flatten then dense: the features of another input size are not the
    ones its weights were built for, and the dense layer refuses them with a ShapeError."""

    def __init__(self, out_features=3):
        super().__init__()
        self.flatten, self.dense = Flatten(), Dense(out_features)

    def get_config(self):
        return {"out_features": self.dense.out_features}

    def children(self):
        return iter((("flatten", self.flatten), ("dense", self.dense)))

    def _build(self, input_shape, rng):
        return self.dense.build(self.flatten.build(input_shape, rng), rng)

    def forward(self, x, training=True):
        return self.dense.forward(self.flatten.forward(x, training), training)

    def backward(self, grad_output):
        return self.flatten.backward(self.dense.backward(grad_output))
