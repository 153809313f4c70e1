"""The lr an epoch reports is the one its first step trained with."""

import math
from functools import partial

import numpy as np
import pytest

from cnnx.data.splits import DataSplits
from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.model import build_model
from cnnx.engine.optim.schedulers import CosineLR, StepLR
from cnnx.engine.optim.sgd import SGD
from cnnx.training.trainer import EpochProgress, Trainer

LR = 0.1
SAMPLES, BATCH = 20, 8
STEPS_PER_EPOCH = math.ceil(SAMPLES / BATCH)


def tiny_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES, 1, 4, 4)).astype(np.float32)
    y = np.arange(SAMPLES) % 3
    return DataSplits(train=(x, y), val=(x[:5], y[:5]), test=(x[:5], y[:5]), classes=["a", "b", "c"],
                      input_shape=(1, 4, 4), name="t")


def make_trainer(epochs, schedule=None):
    model = build_model({"flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 3}}, (1, 4, 4), seed=0)
    optimizer = SGD(model.named_parameters(), lr=LR)
    factory = None if schedule is None else (lambda steps: schedule(optimizer, epochs, steps))
    return Trainer(model, CrossEntropyLoss(), optimizer, epochs=epochs, batch_size=BATCH, seed=0, progress=False,
                   scheduler_factory=factory, log=lambda _: None)


def reported_lrs(schedule=None, epochs=3):
    return [epoch["lr"] for epoch in make_trainer(epochs, schedule).fit(tiny_data()).epochs]


def test_a_step_schedule_reports_each_epochs_own_lr_not_the_next_ones():
    assert reported_lrs(partial(StepLR, step_size=1, gamma=0.5)) == pytest.approx([LR, LR / 2, LR / 4])


def test_a_cosine_starts_at_the_configured_lr_and_its_last_epoch_is_not_reported_as_zero():
    lrs = reported_lrs(CosineLR, epochs=2)
    assert lrs == pytest.approx([LR, LR / 2])


def test_without_a_schedule_every_epoch_reports_the_optimizers_lr():
    assert reported_lrs() == [LR, LR, LR]


def test_an_epoch_resumed_halfway_reports_the_lr_it_started_with():
    trainer = make_trainer(2)
    trainer.scheduler = CosineLR(trainer.optimizer, 2, STEPS_PER_EPOCH)
    for _ in range(STEPS_PER_EPOCH + 1):  # epoch 1, then one step of epoch 2: what a checkpoint restores
        trainer.scheduler.step()
    trainer.epoch, trainer.progress_state = 1, EpochProgress(order=np.arange(SAMPLES), batches_done=1)
    assert trainer.optimizer.lr < LR / 2  # the cosine has moved on since epoch 2 began
    assert trainer.fit(tiny_data()).epochs[-1]["lr"] == pytest.approx(LR / 2)


def test_a_scheduler_built_for_other_steps_per_epoch_is_refused_before_training():
    """Built as in PyTorch (one step() an epoch) it reached lr 0 in the first epoch's batches,
    and the logged lr, read from the schedule, hid it."""
    from cnnx.errors import ConfigError

    trainer = make_trainer(3)
    trainer.scheduler = CosineLR(trainer.optimizer, 3)
    weights = trainer.model.state_dict()
    with pytest.raises(ConfigError, match=rf"counts 1 step\(s\) per epoch.*steps_per_epoch={STEPS_PER_EPOCH}"):
        trainer.fit(tiny_data())
    assert trainer.history.epochs == [] and trainer.optimizer.lr == LR
    np.testing.assert_array_equal(trainer.model.state_dict()["fc.weight"], weights["fc.weight"])


def test_a_scheduler_built_for_the_loops_steps_is_taken():
    trainer = make_trainer(2)
    trainer.scheduler = CosineLR(trainer.optimizer, 2, STEPS_PER_EPOCH)
    assert [epoch["lr"] for epoch in trainer.fit(tiny_data()).epochs] == pytest.approx([LR, LR / 2])
