"""A tiny model, trainer and dataset for the in-process training tests (checkpoints, signals,
the update guard): a few batches of 5x5 images train in milliseconds."""

from __future__ import annotations

import numpy as np

from cnnx.engine.model import build_model
from cnnx.engine.optim.sgd import SGD
from cnnx.training.trainer import Trainer

SPEC = {
    "conv": {"type": "conv2d", "out_channels": 2, "kernel_size": 3},
    "drop": {"type": "dropout", "p": 0.3},
    "flat": {"type": "flatten"},
    "fc": {"type": "dense", "out_features": 3},
}


def make_trainer(epochs=2, **kwargs):
    from cnnx.engine.losses.cross_entropy import CrossEntropyLoss

    model = build_model(SPEC, (1, 5, 5), seed=0)
    return Trainer(model, CrossEntropyLoss(), SGD(model.named_parameters(), lr=0.1, momentum=0.9),
                   epochs=epochs, batch_size=4, seed=0, progress=False, log=lambda _: None, **kwargs)


def tiny_data():
    from cnnx.data.splits import DataSplits

    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 1, 5, 5)).astype(np.float32)
    y = np.arange(24) % 3
    return DataSplits(train=(x, y), val=(x[:6], y[:6]), test=(x[:6], y[:6]), classes=["a", "b", "c"],
                      input_shape=(1, 5, 5), name="t")
