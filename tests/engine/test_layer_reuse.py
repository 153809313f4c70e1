"""A layer already built (trained in one model, or called on its own) and put into a new model
for the same input keeps its weights, as a reused layer does in Keras and PyTorch (transfer
learning): it was rebuilt, its trained weights silently replaced by fresh ones. For another
input it keeps them too when they fit (another image size), and is refused when they do not."""

import numpy as np
import pytest

from cnnx.engine.layers.activations import ReLU
from cnnx.engine.layers.conv import Conv2D
from cnnx.engine.layers.dense import Dense
from cnnx.engine.layers.flatten import Flatten
from cnnx.engine.layers.residual import Residual
from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.model import Model
from cnnx.engine.module import Module
from cnnx.engine.optim.sgd import SGD
from cnnx.engine.parameter import Parameter
from cnnx.errors import ShapeError

X = np.random.default_rng(0).standard_normal((6, 1, 8, 8)).astype(np.float32)
Y = np.arange(6) % 3


def train_step(model, input_grad=True):
    _, grad = CrossEntropyLoss()(model.forward(X, training=True), Y)
    model.backward(grad, input_grad=input_grad)


def test_trained_layers_keep_their_weights_in_a_new_model():
    conv, block = Conv2D(4, 3, padding=1), Residual({"conv": {"type": "conv2d", "out_channels": 4, "kernel_size": 3,
                                                              "padding": 1}}, shortcut="projection")
    first = Model({"conv": conv, "relu": ReLU(), "block": block, "flatten": Flatten(), "out": Dense(3)}, (1, 8, 8))
    optimizer = SGD(first.named_parameters(), lr=0.1)
    for _ in range(3):
        train_step(first, input_grad=False)
        optimizer.step()
    trained = {name: value.copy() for name, value in first.state_dict().items()}

    second = Model({"conv": conv, "relu": ReLU(), "block": block, "flatten": Flatten(), "head": Dense(5)},
                   (1, 8, 8), rng=np.random.default_rng(7))
    kept = second.state_dict()
    for name, value in trained.items():
        if not name.startswith("out."):
            np.testing.assert_array_equal(kept[name], value, err_msg=name)
    assert kept["head.weight"].shape == (5, 4 * 8 * 8)


def test_a_model_that_was_first_elsewhere_gives_its_input_gradient_here():
    """The first model's training told its first layer to skip the input gradient; in the new
    model a layer comes before it, whose gradient then failed (None reached it)."""
    conv = Conv2D(2, 3, padding=1)
    first = Model({"conv": conv, "flatten": Flatten(), "out": Dense(3)}, (1, 8, 8))
    train_step(first, input_grad=False)
    second = Model({"stem": Conv2D(1, 3, padding=1), "conv": conv, "flatten": Flatten(), "out": Dense(3)}, (1, 8, 8))
    train_step(second)
    assert np.abs(second.layers["stem"].params["weight"].grad).sum() > 0
    train_step(first, input_grad=False)  # the first model trains on: its backward says so only for itself
    train_step(second)
    assert np.abs(second.layers["stem"].params["weight"].grad).sum() > 0


def test_a_trained_convolution_keeps_its_weights_at_another_image_size():
    """Fine-tuning at a new resolution: the conv was rebuilt, its weights drawn afresh, and the
    layer object being shared, the trained model lost them too."""
    conv = Conv2D(4, 3, padding=1)
    trained = Model({"conv": conv, "flatten": Flatten(), "out": Dense(3)}, (1, 8, 8))
    weights = conv.weight.data.copy()
    before = trained.forward(X, training=False)
    larger = Model({"conv": conv, "flatten": Flatten(), "out": Dense(3)}, (1, 16, 16), rng=np.random.default_rng(7))
    np.testing.assert_array_equal(larger.layers["conv"].weight.data, weights)
    assert larger.forward(np.ones((2, 1, 16, 16), np.float32)).shape == (2, 3)
    np.testing.assert_array_equal(trained.forward(X, training=False), before)


def test_a_residual_block_keeps_its_weights_at_another_image_size():
    block = Residual({"conv": {"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1},
                      "bn": {"type": "batchnorm2d"}})
    Model({"block": block}, (2, 8, 8), rng=np.random.default_rng(1))
    block.bn.running_mean[:] = 5.0
    state = {k: v.copy() for k, v in Model({"block": block}, (2, 8, 8)).state_dict().items()}
    larger = Model({"block": block}, (2, 12, 12))
    for key, value in larger.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


def test_weights_that_do_not_fit_the_new_input_are_refused_and_the_layer_left_as_it_was():
    conv = Conv2D(4, 3)
    dense = Dense(3)
    trained = Model({"conv": conv, "flatten": Flatten(), "out": dense}, (3, 8, 8))
    state = {k: v.copy() for k, v in trained.state_dict().items()}
    images = np.ones((2, 3, 8, 8), np.float32)
    before = trained.forward(images)
    with pytest.raises(ShapeError, match=r"^layer model.layers.conv \(Conv2D\) cannot take input shape \(1, 8, 8\): "
                                         r"it was built for input \(3, 8, 8\), and its weights do not fit \(1, 8, 8\) "
                                         r"\(weight \(4, 3, 3, 3\) → \(4, 1, 3, 3\)\); .* use a new layer here$"):
        Model({"conv": conv}, (1, 8, 8))
    with pytest.raises(ShapeError, match=r"^layer model.layers.out \(Dense\) .*\(weight \(3, 144\) → \(3, 576\)\)"):
        Model({"conv": conv, "flatten": Flatten(), "out": dense}, (3, 14, 14))
    for key, value in trained.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    np.testing.assert_array_equal(trained.forward(images), before)
    assert conv.input_shape == (3, 8, 8) and dense.input_shape == (144,)


def test_a_standalone_layer_built_for_other_features_is_refused():
    """Built by its first call on 10 features, it cannot take 64: PyTorch's LazyLinear and
    Keras refuse such an input too (it was built afresh, silently, with new weights)."""
    dense = Dense(3)
    dense(np.zeros((2, 10), np.float32))
    with pytest.raises(ShapeError, match=r"weight \(3, 10\) → \(3, 64\)"):
        Model({"flatten": Flatten(), "out": dense}, (1, 8, 8))
    assert dense.weight.shape == (3, 10)


def test_a_pytorch_style_layer_keeps_the_parameter_it_holds_as_an_attribute():
    class Scale(Module):
        def _build(self, input_shape, rng):
            self.gain = Parameter(rng.standard_normal((input_shape[0], 1, 1)).astype(np.float32))
            return input_shape

        def forward(self, x, training=True):
            return x * self.gain.data

    scale = Scale()
    Model({"scale": scale}, (2, 4, 4))
    gain = scale.gain
    Model({"scale": scale}, (2, 6, 6))
    assert scale.gain is gain and scale.params["gain"] is gain


def test_a_downsampling_block_keeps_its_weights_at_another_image_size():
    """Its projection shortcut was made anew at every build: the block was refused, its weights
    said not to fit, though every one of them did."""
    block = Residual({"conv": {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1}})
    small = Model({"block": block, "flatten": Flatten(), "out": Dense(3)}, (2, 8, 8))
    state = {k: v.copy() for k, v in small.state_dict().items() if k.startswith("block.")}
    larger = Model({"block": block, "flatten": Flatten(), "out": Dense(3)}, (2, 16, 16), rng=np.random.default_rng(7))
    for key, value in state.items():
        np.testing.assert_array_equal(larger.state_dict()[key], value, err_msg=key)
    assert larger.forward(np.ones((1, 2, 16, 16), np.float32)).shape == (1, 3)
