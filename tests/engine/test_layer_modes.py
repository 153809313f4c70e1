"""Each layer's own train/eval flag, as PyTorch keeps one per module: ``model.train()`` then
``model.layers["bn"].eval()`` freezes that batchnorm (fine-tuning's usual move) when the model
is called as ``model(x)``. The model handed its own mode to every layer, so the frozen layer's
statistics moved and its output differed from PyTorch's."""

import numpy as np
import pytest

from cnnx import build_model
from cnnx.engine.layers.residual import Residual

SPEC = {
    "conv": {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
    "bn": {"type": "batchnorm2d"},
    "relu": {"type": "relu"},
    "block": {"type": "residual", "shortcut": "projection", "layers": {
        "conv": {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
        "bn": {"type": "batchnorm2d"}}},
    "flatten": {"type": "flatten"},
    "dropout": {"type": "dropout", "p": 0.5},
    "out": {"type": "dense", "out_features": 3},
}


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)


def running_means(model):
    return {name: value.copy() for name, value in model.state_dict().items() if name.endswith("running_mean")}


def test_a_layer_put_in_eval_mode_stays_there_when_the_model_is_called(x):
    model = build_model(SPEC, (1, 8, 8))
    model.train()
    for frozen in (model.layers["bn"], model.layers["block"].body.layers["bn"], model.layers["dropout"]):
        frozen.eval()
    first = model(x)
    assert all(not mean.any() for mean in running_means(model).values())  # frozen: no update
    np.testing.assert_array_equal(model(x), first)  # and no dropout mask
    # The batchnorms normalised with their running statistics, not the batch's.
    np.testing.assert_array_equal(first, build_model(SPEC, (1, 8, 8)).eval()(x))


def test_an_explicit_mode_still_applies_to_every_layer(x):
    """``forward(x, training=True)`` says it for the whole model (what the trainer calls)."""
    model = build_model(SPEC, (1, 8, 8))
    model.layers["bn"].eval()
    model.forward(x, training=True)
    assert running_means(model)["bn.running_mean"].any()
    model.eval()
    model.layers["bn"].train()
    before = running_means(model)
    model.forward(x, training=False)
    for name, mean in running_means(model).items():
        np.testing.assert_array_equal(mean, before[name], err_msg=name)


def test_a_block_called_on_its_own_runs_each_layer_in_its_mode(x):
    block = Residual({"conv": {"type": "conv2d", "out_channels": 1, "kernel_size": 3, "padding": 1},
                      "bn": {"type": "batchnorm2d"}})
    block.train()
    block.body.layers["bn"].eval()
    block(x)
    assert not block.body.layers["bn"].buffers["running_mean"].any()
    block.body.layers["bn"].train()
    block(x)
    assert block.body.layers["bn"].buffers["running_mean"].any()
