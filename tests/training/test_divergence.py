"""The update guard, in-process: a non-finite loss or gradient stops the run or skips the
batch, and gradients are clipped."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_trainer import SPEC

from cnnx.engine.model import build_model
from cnnx.engine.optim.sgd import SGD
from cnnx.training.divergence import TrainingDiverged, UpdateGuard
from cnnx.training.trainer import Trainer


def test_update_guard_stops_skips_and_clips():
    from cnnx.engine.parameter import Parameter

    param = Parameter(np.zeros(4, np.float32))
    param.grad = np.array([3.0, 4.0, 0.0, 0.0], np.float32)
    assert UpdateGuard(grad_clip_norm=1.0).gradients_ok({"p": param}, 1, 1)
    assert np.allclose(np.linalg.norm(param.grad), 1.0)
    param.grad[0] = np.nan
    with pytest.raises(TrainingDiverged, match="gradient of p became non-finite at epoch 2, batch 7"):
        UpdateGuard().gradients_ok({"p": param}, 2, 7)
    assert not UpdateGuard("skip_batch").gradients_ok({"p": param}, 2, 7)
    with pytest.raises(TrainingDiverged, match="loss became inf at epoch 3, batch 1"):
        UpdateGuard().loss_ok(float("inf"), 3, 1)


def test_skip_batch_reports_once_per_epoch_and_fails_when_a_whole_epoch_is_skipped():
    import warnings

    from cnnx.data.splits import DataSplits
    from cnnx.engine.losses.cross_entropy import CrossEntropyLoss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 1, 5, 5)).astype(np.float32)
    y = np.arange(24) % 3
    data = DataSplits(train=(x, y), val=(x[:6], y[:6]), test=(x[:6], y[:6]), classes=["a", "b", "c"],
                      input_shape=(1, 5, 5), name="t")
    model = build_model(SPEC, (1, 5, 5), seed=0)
    messages = []
    # The first update sends the weights to ~1e30: every later batch overflows.
    trainer = Trainer(model, CrossEntropyLoss(), SGD(model.named_parameters(), lr=1e30), epochs=3, batch_size=4,
                      seed=0, progress=False, log=messages.append, update_guard=UpdateGuard("skip_batch"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the guard reports divergence; NumPy must not warn as well
        with pytest.raises(TrainingDiverged, match="every batch of epoch 2 was skipped"):
            trainer.fit(data)
    assert messages == ["skipped epoch 1, batch 2: non-finite loss or gradient", "skipped 5 of 6 batches in epoch 1",
                        "skipped epoch 2, batch 1: non-finite loss or gradient"]
    assert trainer.history.epochs[0]["skipped_batches"] == 5
