"""The figure runs are judged by, per epoch: what the MLflow UI compares and sweeps rank by."""

from cnnx.training.objective import objective_key, objective_mode, running_best


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
