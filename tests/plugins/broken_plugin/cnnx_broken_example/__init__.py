import numpy as np

from cnnx.engine.in_place import OutputUse
from cnnx.engine.layers.dense import Dense
from cnnx.engine.module import Module
from cnnx.engine.parameter import Parameter


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


class RejectsInput(Module):
    """Says that its option does not fit the input the natural way: ValueError in _build."""

    def __init__(self, scales=(1.0, 2.0)):
        super().__init__()
        self.scales = tuple(scales)

    def get_config(self):
        return {"scales": self.scales}

    def _build(self, input_shape, rng):
        if len(self.scales) != input_shape[0]:
            raise ValueError(f"scales has {len(self.scales)} entries; expected one per channel ({input_shape[0]})")
        return input_shape

    def forward(self, x, training=True):
        return x

    def backward(self, grad_output):
        return grad_output


class BuildReturnsNothing(Module):
    """Checks its input in _build and forgets `return input_shape`."""

    def _build(self, input_shape, rng):
        assert len(input_shape) == 3

    def forward(self, x, training=True):
        return x

    def backward(self, grad_output):
        return grad_output


class DoublesInPlace(Module):
    """2x, computed in the input's memory without declaring it: the previous layer's output
    (which tanh's backward reads) is doubled too."""

    def forward(self, x, training=True):
        x *= 2
        return x

    def backward(self, grad_output):
        return grad_output * np.float32(2)


class DoublesGradientInPlace(Module):
    """2x, whose backward doubles grad_output in place: a residual block's shortcut then gets
    the doubled gradient too."""

    def forward(self, x, training=True):
        return x * np.float32(2)

    def backward(self, grad_output):
        grad_output *= 2
        return grad_output


class SigmoidClaimsNone(Module):
    """A sigmoid whose backward reads its output, declaring that it reads none of it."""

    backward_reads_output = OutputUse.NONE

    def forward(self, x, training=True):
        self._y = 1 / (1 + np.exp(-x))
        return self._y

    def backward(self, grad_output):
        return grad_output * self._y * (1 - self._y)


class TanhClaimsSign(Module):
    """A tanh whose backward reads its output's values, declaring that it reads only signs."""

    backward_reads_output = OutputUse.SIGN

    def forward(self, x, training=True):
        self._y = np.tanh(x)
        return self._y

    def backward(self, grad_output):
        return grad_output * (1 - self._y ** 2)


class Float64InEval(Module):
    """float32 while training, float64 when evaluating (a float64 constant on that path only)."""

    def forward(self, x, training=True):
        return x if training else x * np.ones(1)

    def backward(self, grad_output):
        return grad_output


class Float64Parameter(Module):
    """Creates its weight with np.ones' default dtype, float64; its forward follows README."""

    def _build(self, input_shape, rng):
        self.weight = Parameter(np.ones(input_shape[0]))
        return input_shape

    def forward(self, x, training=True):
        self._x = x = self.in_own_dtype(x)
        return x * self.weight.data[:, None, None]

    def backward(self, grad_output):
        grad_output = self.in_own_dtype(grad_output)
        self.weight.grad = (grad_output * self._x).sum(axis=(0, 2, 3))
        return grad_output * self.weight.data[:, None, None]
