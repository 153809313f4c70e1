"""The figure runs are judged by, per epoch: what the MLflow UI compares and sweeps rank by."""

import math

from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.model import build_model
from cnnx.engine.optim.sgd import SGD
from cnnx.training.objective import objective_key, objective_mode, running_best
from cnnx.training.trainer import Trainer


def test_running_best_follows_the_monitors_direction():
    epochs = [{"val_acc": 0.5, "val_loss": 1.0}, {"val_acc": 0.8, "val_loss": 1.5}, {"val_acc": 0.7, "val_loss": 0.4}]
    assert running_best(epochs, "val_acc") == [{"best_val_acc": 0.5}, {"best_val_acc": 0.8}, {"best_val_acc": 0.8}]
    assert running_best(epochs, "val_loss") == [{"best_val_loss": 1.0}, {"best_val_loss": 1.0}, {"best_val_loss": 0.4}]
    assert (objective_mode("train_acc"), objective_mode("val_loss")) == ("max", "min")


def test_a_run_without_validation_split_is_judged_by_its_train_twin():
    epochs = [{"train_acc": 0.3}, {"train_acc": 0.2}]
    assert objective_key(epochs, "val_acc") == "train_acc"
    assert running_best(epochs, "val_acc") == [{"best_train_acc": 0.3}, {"best_train_acc": 0.3}]
    assert running_best([], "val_acc") == []


def test_a_nan_epoch_is_no_best():
    epochs = [{"val_loss": float("nan")}, {"val_loss": 0.7}, {"val_loss": float("nan")}, {"val_loss": 0.9}]
    assert running_best(epochs, "val_loss") == [{}, {"best_val_loss": 0.7}, {"best_val_loss": 0.7}, {"best_val_loss": 0.7}]


def test_the_objective_a_sweeper_optimises_is_the_best_epochs_of_several():
    """cnnx.app hands Trainer.objective to Hydra (what Optuna optimises). The sweep end-to-end
    tests train one epoch, where first, last and best are the same epoch."""
    model = build_model({"flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 2}}, (1, 2, 2))
    trainer = Trainer(model, CrossEntropyLoss(), SGD(model.named_parameters(), lr=0.1), epochs=3, batch_size=2)
    assert math.isnan(trainer.objective("val_acc"))  # before any epoch
    trainer.history.epochs = [{"val_acc": 0.5, "val_loss": 0.9}, {"val_acc": 0.8, "val_loss": 0.4},
                              {"val_acc": 0.7, "val_loss": 0.6}]
    assert trainer.objective("val_acc") == 0.8
    assert trainer.objective("val_loss") == 0.4
    trainer.history.epochs = [{"train_acc": 0.3}, {"train_acc": 0.6}]  # no validation split
    assert trainer.objective("val_acc") == 0.6
