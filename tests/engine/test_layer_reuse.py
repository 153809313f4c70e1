"""A layer already built (trained in one model, or called on its own) and put into a new model
for the same input keeps its weights, as a reused layer does in Keras and PyTorch (transfer
learning): it was rebuilt, its trained weights silently replaced by fresh ones."""

import numpy as np

from cnnx.engine.layers.activations import ReLU
from cnnx.engine.layers.conv import Conv2D
from cnnx.engine.layers.dense import Dense
from cnnx.engine.layers.flatten import Flatten
from cnnx.engine.layers.residual import Residual
from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.model import Model
from cnnx.engine.optim.sgd import SGD

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


def test_a_layer_built_for_another_input_is_built_afresh():
    dense = Dense(3)
    dense(np.zeros((2, 10), np.float32))
    model = Model({"flatten": Flatten(), "out": dense}, (1, 8, 8))
    assert model.layers["out"].params["weight"].shape == (3, 64)
