"""Custom layers written the PyTorch way: what Module does for their authors."""

import numpy as np
import pytest

import cnnx
from cnnx.engine.layers.dense import Dense
from cnnx.engine.layers.flatten import Flatten
from cnnx.engine.module import Module
from cnnx.engine.optim.sgd import SGD
from cnnx.engine.parameter import Parameter
from cnnx.errors import PluginError


class Scale(Module):
    """A learned per-feature scale, its Parameter assigned as an attribute (torch-style)."""

    def _build(self, input_shape, rng):
        self.scale = Parameter(np.full(input_shape, 2.0, self.dtype))
        return input_shape

    def forward(self, x, training=True):
        self._x = x
        return x * self.scale.data

    def backward(self, grad_output):
        self.scale.grad = (grad_output * self._x).sum(axis=0)
        return grad_output * self.scale.data


def test_a_parameter_assigned_as_an_attribute_is_registered_and_trained():
    model = cnnx.Model({"flat": Flatten(), "scale": Scale(), "fc": Dense(2)}, (1, 2, 2))
    assert [name for name, _ in model.named_parameters()] == ["scale.scale", "fc.weight", "fc.bias"]
    assert "scale.scale" in model.state_dict()
    layer = model.layers["scale"]
    before = layer.scale.data.copy()
    optimizer = SGD(model.named_parameters(), lr=0.1)
    model(np.ones((3, 1, 2, 2), np.float32))
    model.backward(np.ones((3, 2), np.float32))
    optimizer.step()
    assert not np.array_equal(layer.scale.data, before)
    assert layer.scale is layer.params["scale"]


class Wrapper(Module):
    """A composite that builds a sub-layer but forgets to yield it from children()."""

    def _build(self, input_shape, rng):
        self.inner = Dense(3)
        return self.inner.build(input_shape, rng)

    def forward(self, x, training=True):
        return self.inner.forward(x, training)

    def backward(self, grad_output):
        return self.inner.backward(grad_output)


def test_a_sub_layer_whose_parameters_nobody_sees_is_refused_naming_it():
    with pytest.raises(PluginError, match=r"Wrapper\.inner .*inner\.weight, inner\.bias.*children\(\)"):
        cnnx.Model({"flat": Flatten(), "wrap": Wrapper()}, (1, 2, 2))


class Forgetful(Module):
    def __init__(self, beta=1.0):  # no super().__init__()
        self.beta = beta

    def forward(self, x, training=True):
        return x


def test_a_layer_whose_build_takes_no_rng_is_told_the_signature():
    class OldBuild(Module):
        def _build(self, input_shape):
            return input_shape

        def forward(self, x, training=True):
            return x

        def backward(self, grad_output):
            return grad_output

    # Named by its config key, as every contract slip of a layer's build is.
    with pytest.raises(PluginError, match=r"^layer model\.layers\.old \(OldBuild\): OldBuild\._build must take "
                                          r"\(input_shape, rng\)"):
        cnnx.Model({"old": OldBuild(), "flat": Flatten()}, (1, 2, 2))


def test_a_layer_that_skips_module_init_is_named():
    with pytest.raises(PluginError, match=r"Forgetful\.__init__ must call super\(\)\.__init__\(\)"):
        cnnx.Model({"odd": Forgetful(), "flat": Flatten()}, (1, 2, 2))


def test_parameters_and_buffers_read_as_attributes_as_in_pytorch():
    """``model.layers["conv1"].weight`` raised AttributeError for every built-in layer: only
    ``params["weight"]`` worked, though a plugin layer written as the README shows had both."""
    model = cnnx.build_model({"conv1": {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
                         "bn": {"type": "batchnorm2d"}, "flat": {"type": "flatten"},
                         "fc": {"type": "dense", "out_features": 2}}, (1, 5, 5), seed=0)
    conv, bn, fc = (model.layers[k] for k in ("conv1", "bn", "fc"))
    assert conv.weight is conv.params["weight"] and conv.bias is conv.params["bias"]
    assert fc.weight.data.shape == (2, 36)
    assert bn.running_mean is bn.buffers["running_mean"] and bn.running_var.shape == (4,)
    with pytest.raises(AttributeError, match="'Conv2D' object has no attribute 'wieght'$"):
        conv.wieght
    with pytest.raises(AttributeError, match="created when the layer is built"):
        Dense(3).weight


def test_assigning_a_parameter_or_buffer_replaces_it_as_in_pytorch():
    """The assignment only added an attribute beside params/buffers: outputs and state_dict
    kept the old values, silently."""
    from cnnx.errors import ShapeError

    model = cnnx.build_model({"bn": {"type": "batchnorm2d"}, "flat": {"type": "flatten"},
                              "fc": {"type": "dense", "out_features": 3}}, (2, 2, 2), seed=0)
    fc, bn = model.layers["fc"], model.layers["bn"]
    fc.weight = Parameter(np.zeros((3, 8), np.float32))
    fc.bias = Parameter(np.ones(3, np.float32))
    bn.running_mean = [1.0, 2.0]
    np.testing.assert_array_equal(model.predict(np.ones((2, 2, 2, 2), np.float32)), np.ones((2, 3)))
    state = model.state_dict()
    assert not state["fc.weight"].any() and state["bn.running_mean"].tolist() == [1.0, 2.0]
    assert bn.running_mean.dtype == np.float32
    with pytest.raises(TypeError, match="cannot assign ndarray as parameter 'weight' of Dense"):
        fc.weight = np.zeros((3, 8), np.float32)
    with pytest.raises(ShapeError, match=r"Dense.weight has shape \(3, 8\); got an array of shape \(8, 3\)"):
        fc.weight = Parameter(np.zeros((8, 3), np.float32))


def test_an_attribute_error_inside_a_layers_property_is_its_own():
    """Module.__getattr__ answered it, naming the property instead of what the property missed."""
    class Scaled(Scale):
        @property
        def gain(self):
            return self.factr  # a typo inside the property

    with pytest.raises(AttributeError, match="'factr'"):
        Scaled().gain
