"""The Trainer honours layers the user froze with ``.eval()`` (a batchnorm on a small dataset):
it put every layer back in training mode each epoch, and the frozen statistics drifted."""

import numpy as np

from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.model import build_model
from cnnx.engine.optim.sgd import SGD
from cnnx.training.trainer import Trainer
from tests.tiny_trainer import tiny_data

SPEC = {
    "conv": {"type": "conv2d", "out_channels": 2, "kernel_size": 3},
    "bn": {"type": "batchnorm2d"},
    "flat": {"type": "flatten"},
    "fc": {"type": "dense", "out_features": 3},
}


def fit(model):
    Trainer(model, CrossEntropyLoss(), SGD(model.named_parameters(), lr=0.1), epochs=2, batch_size=4, seed=0,
            progress=False, log=lambda _: None).fit(tiny_data())


def test_a_batchnorm_frozen_before_fit_stays_frozen():
    model = build_model(SPEC, (1, 5, 5))
    model.train()
    model.bn.eval()
    fit(model)
    assert not model.bn.training and model.conv.training
    np.testing.assert_array_equal(model.bn.running_mean, np.zeros(2, np.float32))
    np.testing.assert_array_equal(model.bn.running_var, np.ones(2, np.float32))


def test_a_model_handed_over_in_eval_mode_trains_in_training_mode():
    model = build_model(SPEC, (1, 5, 5))
    model.eval()
    fit(model)
    assert model.training and model.bn.training
    assert np.abs(model.bn.running_mean).sum() > 0
