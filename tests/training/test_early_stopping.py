"""Early stopping acts: it stops at the exact epoch its settings imply and hands back the best weights.

The trainer, model and optimizer are real; only the monitored figure is scripted, by a
callback ahead of EarlyStopping that overwrites it, because a real val_loss cannot be steered
epoch by epoch. The weights still change every epoch, which restore_best needs.
"""

import os
import signal

import numpy as np
import pytest

from cnnx.data.splits import DataSplits
from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.model import build_model
from cnnx.engine.optim.schedulers import StepLR
from cnnx.engine.optim.sgd import SGD
from cnnx.training.callbacks import Callback
from cnnx.training.checkpoint import Checkpoint, list_checkpoints
from cnnx.training.checkpoint_file import read_checkpoint
from cnnx.training.early_stopping import EarlyStopping
from cnnx.training.signals import TrainingInterrupted
from cnnx.training.trainer import Trainer

EPOCHS = 8


class Scripted(Callback):
    """Sets ``metrics[key]`` to the next scripted value and keeps a copy of each epoch's weights."""

    def __init__(self, key, values):
        self.key, self.values, self.weights = key, list(values), {}

    def on_epoch_end(self, trainer, epoch, metrics):
        metrics[self.key] = self.values[epoch - 1]
        self.weights[epoch] = trainer.model.state_dict()


def scripted_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 1, 4, 4)).astype(np.float32)
    y = np.arange(24) % 3
    return DataSplits(train=(x, y), val=(x[:6], y[:6]), test=(x[:6], y[:6]), classes=["a", "b", "c"],
                      input_shape=(1, 4, 4), name="t")


def fit(key, values, after=(), **stopping):
    data = scripted_data()
    model = build_model({"flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 3}}, (1, 4, 4), seed=0)
    script = Scripted(key, values)
    trainer = Trainer(model, CrossEntropyLoss(), SGD(model.named_parameters(), lr=0.1), epochs=EPOCHS,
                      batch_size=8, seed=0, progress=False, log=lambda _: None,
                      callbacks=[script, EarlyStopping(monitor=key, **stopping), *after])
    history = trainer.fit(data)
    return len(history.epochs), model, script


def test_stops_at_the_epoch_patience_runs_out():
    # best at epoch 2; epochs 3 and 4 do not improve: patience 2 is used up at epoch 4
    stopped, _, _ = fit("val_loss", [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95], patience=2)
    assert stopped == 4


def test_a_value_equal_to_the_best_is_not_an_improvement():
    """A loss repeating its best exactly (a plateau: lr=0, a frozen model) reset the patience and
    moved the best epoch; Keras and Lightning compare strictly, and so does min_delta=0 here."""
    stopped, _, _ = fit("val_loss", [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], patience=2)
    assert stopped == 4


def test_without_a_validation_split_it_watches_the_train_twin_as_trainer_monitor_does():
    """It failed at the end of the first epoch: "val_loss is not a metric"."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 1, 4, 4)).astype(np.float32)
    y = np.arange(24) % 3
    empty = (x[:0], y[:0])
    data = DataSplits(train=(x, y), val=empty, test=(x[:6], y[:6]), classes=["a", "b", "c"],
                      input_shape=(1, 4, 4), name="t")
    model = build_model({"flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 3}}, (1, 4, 4), seed=0)
    lines = []
    trainer = Trainer(model, CrossEntropyLoss(), SGD(model.named_parameters(), lr=0.1), epochs=EPOCHS,
                      batch_size=8, seed=0, progress=False, log=lines.append,
                      callbacks=[EarlyStopping(monitor="val_loss", patience=1, min_delta=1000)])
    history = trainer.fit(data)
    assert "val_loss" not in history.epochs[0] and len(history.epochs) == 2
    assert "early stopping at epoch 2: train_loss has not improved since epoch 1" in "\n".join(lines)


def test_an_improvement_resets_the_patience():
    stopped, _, _ = fit("val_loss", [1.0, 1.1, 0.8, 1.1, 1.1, 1.1, 1.1, 1.1], patience=2)
    assert stopped == 5


@pytest.mark.parametrize("key, values", [
    ("val_loss", [1.0, 0.95, 0.92, 0.90, 0.88, 0.86, 0.84, 0.82]),
    ("val_acc", [0.5, 0.55, 0.58, 0.60, 0.62, 0.64, 0.66, 0.68]),
])
def test_steps_smaller_than_min_delta_are_not_improvements(key, values):
    # Every epoch is better than the last, but none by 0.1 over epoch 1's figure.
    assert fit(key, values, patience=2)[0] == EPOCHS
    assert fit(key, values, patience=2, min_delta=0.1)[0] == 3


def test_auto_mode_treats_an_accuracy_as_higher_is_better():
    rising = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.95]
    assert fit("val_acc", rising, patience=2)[0] == EPOCHS
    assert fit("val_loss", rising, patience=2)[0] == 3


@pytest.mark.parametrize("restore_best", [True, False])
def test_restore_best_ends_with_the_best_epochs_weights(restore_best):
    stopped, model, script = fit("val_loss", [1.0, 0.5, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9], patience=2,
                                 restore_best=restore_best)
    assert stopped == 4
    expected = script.weights[2 if restore_best else 4]
    assert not np.array_equal(script.weights[2]["fc.weight"], script.weights[4]["fc.weight"])
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, expected[key])


def test_the_stopping_epochs_checkpoint_holds_that_epochs_weights(tmp_path):
    """It held the best epoch's, under the stopping epoch's name and figures: restore_best ran
    before the checkpoint was written, so predict and resume used another model than named."""
    checkpoint = Checkpoint(tmp_path, keep_last=1, keep_best=False)
    stopped, model, script = fit("val_loss", [1.0, 0.5, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9], patience=2,
                                 after=[checkpoint])
    assert stopped == 4
    (kept,) = tmp_path.glob("*.npz")
    arrays, header = read_checkpoint(kept)
    assert kept.name == "epoch-0004.npz" and header["epochs_completed"] == 4
    np.testing.assert_array_equal(arrays["model/fc.weight"], script.weights[4]["fc.weight"])
    # ... and the model the run ends with is still the best epoch's
    np.testing.assert_array_equal(model.state_dict()["fc.weight"], script.weights[2]["fc.weight"])


# Best at epoch 2, patience 3 used up at epoch 5; the scripted loss of epoch 4 is the best
# after epoch 3, so a resumed checkpoint callback that forgot epoch 2 would take epoch 4 for it.
RESUMED_SCRIPT = [1.0, 0.5, 0.8, 0.6, 0.9, 0.9, 0.9, 0.9]


class InterruptAfter(Callback):
    """Sends the process SIGINT at the end of ``epoch``: the trainer stops there with a checkpoint."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


def stopping_run(directory, resume=False, interrupt_after=None):
    model = build_model({"flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 3}}, (1, 4, 4), seed=0)
    optimizer = SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    interrupt = [InterruptAfter(interrupt_after)] if interrupt_after else []
    return Trainer(model, CrossEntropyLoss(), optimizer, epochs=EPOCHS, batch_size=8, seed=0, progress=False,
                   log=lambda _: None, scheduler=StepLR(optimizer, step_size=1, gamma=0.7, steps_per_epoch=3),
                   callbacks=[Scripted("val_loss", RESUMED_SCRIPT), EarlyStopping(monitor="val_loss", patience=3),
                              Checkpoint(directory, keep_last=1, monitor="val_loss", resume=resume), *interrupt])


def test_a_run_resumed_after_its_best_epoch_or_after_it_stopped_ends_as_the_uninterrupted_one(tmp_path):
    """test_resume.py never lets early stopping fire. Resumed mid-patience, a run waited a full
    patience again (the used patience lost), handed back its last weights instead of the best
    (the best weights not checkpointed), and its checkpoint callback took the first epoch after
    the resume for the best and pruned the real best file; resumed from the checkpoint of the
    stopping epoch, a run trained on past the stop."""
    straight = stopping_run(tmp_path / "straight")
    straight.fit(scripted_data())
    assert len(straight.history.epochs) == 5
    assert straight.early_stop == {"stopped_epoch": 5, "best_epoch": 2, "restored_best": True}
    assert [p.name for p in list_checkpoints(tmp_path / "straight")] == ["epoch-0002.npz", "epoch-0005.npz"]

    # Interrupted after epoch 3: after the best epoch, one epoch into the patience.
    with pytest.raises(TrainingInterrupted):
        stopping_run(tmp_path / "resumed", interrupt_after=3).fit(scripted_data())
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["epoch-0002.npz", "epoch-0003.npz"]
    resumed = stopping_run(tmp_path / "resumed", resume=True)
    resumed.fit(scripted_data())
    # ... and resumed from the stopping epoch's checkpoint: early stopping had ended the run.
    after_stop = stopping_run(tmp_path / "straight", resume=True)
    after_stop.fit(scripted_data())

    assert resumed.callbacks[2].resumed_from.name == "epoch-0003.npz"
    assert after_stop.callbacks[2].resumed_from.name == "epoch-0005.npz"
    for name, run in [("resumed after epoch 3", resumed), ("resumed after the stop", after_stop)]:
        assert len(run.history.epochs) == 5, name
        assert [e["lr"] for e in run.history.epochs] == [e["lr"] for e in straight.history.epochs], name
        assert [e["train_loss"] for e in run.history.epochs] == [e["train_loss"] for e in straight.history.epochs], name
        assert run.early_stop == straight.early_stop, name
        for key, value in straight.model.state_dict().items():  # the best epoch's, restored
            np.testing.assert_array_equal(run.model.state_dict()[key], value, err_msg=f"{name}: {key}")
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["epoch-0002.npz", "epoch-0005.npz"]
    assert [p.name for p in list_checkpoints(tmp_path / "straight")] == ["epoch-0002.npz", "epoch-0005.npz"]


@pytest.mark.slow
def test_the_cli_run_stops_early_and_its_mlflow_run_ends_at_that_epoch(tmp_path):
    from e2e_helpers import all_runs, metric_history, run_cli, store_client

    # min_delta larger than any loss: only epoch 1 (from +inf) improves, so patience 2 ends
    # the run after epoch 3 of 6, and a checkpoint every 2 epochs must still keep epoch 3.
    result = run_cli(["+experiment=digits_small", "trainer.epochs=6", "hydra.run.dir=run",
                      "trainer.early_stopping.enabled=true", "trainer.early_stopping.monitor=train_loss",
                      "trainer.early_stopping.min_delta=1000", "trainer.early_stopping.patience=2",
                      "trainer.checkpoint.every_n_epochs=2", "tracking.log_plots=false"], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    stop = next(i for i, line in enumerate(lines) if line.startswith("early stopping at epoch 3"))
    # After the line of the epoch it speaks of, before the test figures.
    assert lines[stop - 1].startswith("epoch   3/6") and lines[stop + 1].startswith("test ")
    (run,) = all_runs(tmp_path)
    assert run.info.status == "FINISHED"
    client = store_client(tmp_path)
    assert [step for step, _ in metric_history(client, run.info.run_id, "train_loss")] == [1, 2, 3]
    assert [step for step, _ in metric_history(client, run.info.run_id, "test_acc")] == [3]
    # The logged model holds epoch 1's weights (restore_best): the Models tab shows epoch 1's
    # figures beside the test split's, not the last epoch's.
    (output,) = client.get_run(run.info.run_id).outputs.model_outputs
    linked = {m.key: m.step for m in client.get_logged_model(output.model_id).metrics}
    assert output.step == 3 and linked["test_acc"] == 3
    assert {key: step for key, step in linked.items() if not key.startswith("test_")} == {
        key: 1 for key in run.data.metrics if not key.startswith("test_")}
    assert run.data.params["trainer.early_stopping.patience"] == "2"
    assert run.data.params["trainer.epochs"] == "6"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["epoch-0002.npz",
                                                                                    "epoch-0003.npz"]
