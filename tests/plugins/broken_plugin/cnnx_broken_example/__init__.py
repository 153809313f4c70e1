import numpy as np

from cnnx.engine.layers.dense import Dense
from cnnx.engine.module import Module


class WrongBackwardDense(Dense):
    """A dense layer whose weight gradient is 1% too large: the kind of slip that still
    trains, and that a finite-difference check must catch."""

    def backward(self, grad_output):
        grad_input = super().backward(grad_output)
        self.params["weight"].grad = self.params["weight"].grad * 1.01
        return grad_input


def not_a_layer(out_features=1):
    return None


class Float64Output(Module):
    """Multiplies by a NumPy float64 array: the output silently becomes float64."""

    def forward(self, x, training=True):
        return x * np.ones(1)

    def backward(self, grad_output):
        return grad_output * np.ones(1)


class ForgetsConfig(Module):
    """Takes an option but keeps Module's get_config(), which returns {}."""

    def __init__(self, factor: float = 2.0):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x, training=True):
        return x * np.float32(self.factor)

    def backward(self, grad_output):
        return grad_output * np.float32(self.factor)


class WrongShape(Module):
    """Declares its input shape as output (Module's default _build) but drops channels."""

    def forward(self, x, training=True):
        return x[:, :1]

    def backward(self, grad_output):
        return grad_output
