"""A layer used on its own checks the gradient handed to ``backward`` against its last output,
as ``Model.backward`` does: NumPy broadcast a wrongly shaped one through max pooling and the
activations into a wrong result without an error (a BCE gradient of shape (N,) against a
sigmoid's (N, 1) output gave (N, N)), and the others failed inside NumPy naming no layer."""

import re

import numpy as np
import pytest

from cnnx.engine.layers.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from cnnx.engine.layers.batchnorm import BatchNorm2D
from cnnx.engine.layers.conv import Conv2D
from cnnx.engine.layers.dense import Dense
from cnnx.engine.layers.dropout import Dropout
from cnnx.engine.layers.flatten import Flatten
from cnnx.engine.layers.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from cnnx.engine.layers.residual import Residual
from cnnx.engine.module import Module
from cnnx.errors import ShapeError

IMAGES = np.random.default_rng(0).standard_normal((4, 3, 6, 6)).astype(np.float32)
FEATURES = IMAGES.reshape(4, -1)

LAYERS = {
    "conv2d": (lambda: Conv2D(2, 3, padding=1), IMAGES),
    "maxpool2d": (lambda: MaxPool2D(2), IMAGES),
    "avgpool2d": (lambda: AvgPool2D(2), IMAGES),
    "global_avgpool2d": (GlobalAvgPool2D, IMAGES),
    "flatten": (Flatten, IMAGES),
    "dense": (lambda: Dense(1), FEATURES),
    "relu": (ReLU, IMAGES),
    "leaky_relu": (LeakyReLU, IMAGES),
    "sigmoid": (Sigmoid, FEATURES),
    "tanh": (Tanh, IMAGES),
    "softmax": (Softmax, FEATURES),
    "dropout": (Dropout, IMAGES),
    "batchnorm2d": (BatchNorm2D, IMAGES),
    "residual": (lambda: Residual({"conv": {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1}}),
                 IMAGES),
}


def wrong_shapes(shape):
    """One that broadcasts against the output (a size-1 axis) and one that does not."""
    broadcasting = (shape[0],) + (1,) * (len(shape) - 1) if len(shape) > 1 and shape[1:] != (1,) else shape + (1,)
    return [broadcasting, (shape[0] + 1,) + shape[1:], shape[::-1] if shape[::-1] != shape else shape + (2,)]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", LAYERS)
def test_backward_refuses_a_gradient_not_shaped_as_the_output(name, training):
    make, x = LAYERS[name]
    layer = make()
    y = layer.forward(x, training) if layer.built else layer(x, training=training)
    for shape in wrong_shapes(y.shape):
        expected = f"backward got a gradient of shape {shape}; the last forward returned {y.shape}, the shape"
        with pytest.raises(ShapeError, match=re.escape(expected)):
            layer.backward(np.ones(shape, np.float32))
    assert layer.backward(np.ones(y.shape, np.float32)).shape == x.shape


def test_dropout_backward_before_any_forward_is_refused():
    """It returned the gradient unchanged, as if the last forward had been in eval mode."""
    layer = Dropout()
    with pytest.raises(RuntimeError, match=r"^Dropout\(p=0.5, inplace=False\): backward called before forward"):
        layer.backward(np.ones((2, 3), np.float32))


class DropsChannels(Module):
    """A plugin's slip: its backward returns a gradient without the input's channels."""

    def forward(self, x, training=True):
        return x

    def backward(self, grad_output):
        return grad_output[:, :1]


def test_inside_a_model_the_layer_whose_backward_misshaped_the_gradient_is_named():
    """It was found only by the next layer's check, which named itself by class; first in a
    residual body it met the shortcut's gradient unchecked (NumPy broadcast it, or failed
    naming no layer)."""
    from cnnx.engine.model import Model

    model = Model({"conv": Conv2D(2, 3), "slip": DropsChannels(), "relu": ReLU()}, (1, 6, 6))
    y = model.forward(np.ones((2, 1, 6, 6), np.float32))
    with pytest.raises(ShapeError, match=r"^layer model.layers.slip \(DropsChannels\): its backward returned a gradient "
                                         r"of shape \(2, 1, 4, 4\) for an input of shape \(2, 2, 4, 4\)$"):
        model.backward(np.ones_like(y))
    block = Residual({"slip": DropsChannels(), "conv": {"type": "conv2d", "out_channels": 3, "kernel_size": 3,
                                                      "padding": 1}}, where="block")
    block.build((3, 6, 6), np.random.default_rng(0))
    out = block(IMAGES)
    with pytest.raises(ShapeError, match=r"^layer block.layers.slip \(DropsChannels\): its backward returned"):
        block.backward(np.ones_like(out))


class JobEnded(RuntimeError):
    """As submitit's UncompletedJobError, which its time-limit signal handler raises wherever
    the program is: here, in a layer's backward."""


class Raises(Module):
    def __init__(self, error):
        super().__init__()
        self.error = error

    def forward(self, x, training=True):
        return x

    def backward(self, grad_output):
        raise self.error


def test_a_layers_backward_error_is_located_but_another_runtime_error_kind_passes_as_it_is():
    """Every RuntimeError became a plain one naming the layer, so a job's time-limit error read
    as the layer's, and no handler of its own kind caught it."""
    from cnnx.engine.model import Model

    x = np.ones((2, 1, 6, 6), np.float32)
    model = Model({"conv": Conv2D(2, 3), "odd": Raises(RuntimeError("no gradient here"))}, (1, 6, 6))
    with pytest.raises(RuntimeError, match=r"^layer model.layers.odd \(Raises\): no gradient here$"):
        model.backward(np.ones_like(model.forward(x)))
    model = Model({"conv": Conv2D(2, 3), "odd": Raises(JobEnded("timed-out too many times"))}, (1, 6, 6))
    with pytest.raises(JobEnded, match=r"^timed-out too many times$"):
        model.backward(np.ones_like(model.forward(x)))
    # a plugin layer without a backward of its own is still named
    model = Model({"conv": Conv2D(2, 3), "odd": Raises(NotImplementedError())}, (1, 6, 6))
    with pytest.raises(NotImplementedError, match=r"^layer model.layers.odd \(Raises\): NotImplementedError$"):
        model.backward(np.ones_like(model.forward(x)))
