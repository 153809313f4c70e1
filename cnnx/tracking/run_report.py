"""At the end of a run: the servable model and the pictures that explain what was learned.

Plots go to ``plots/*.png`` (plain artifacts); kernels and feature maps are logged as MLflow
images (``kernels/<layer>``, ``feature_maps/<layer>``) at the last epoch, so the UI shows them
next to the per-epoch kernels of the first conv layer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnx.data.normalize import invert_normalization
from cnnx.inference import Classifier, class_probabilities, trained_classifier
from cnnx.tracking.feature_maps import conv_activations, conv_layers
from cnnx.tracking.images import activation_grid, kernel_grid

if TYPE_CHECKING:
    from cnnx.training.trainer import Trainer

#: Feature maps are drawn for the first few test images: fixed by the split's seed.
FEATURE_MAP_IMAGES = 4
#: More channels than this make cells too small to read in the UI.
FEATURE_MAP_CHANNELS = 16
INPUT_EXAMPLE_IMAGES = 2


def _reference_split(trainer: Trainer) -> tuple[np.ndarray, np.ndarray]:
    """The test split, or val/train for runs configured without one."""
    data = trainer.data
    for split in (data.test, data.val, data.train):
        if len(split[0]):
            return split
    return data.train


def log_run_report(client, run_id: str, trainer: Trainer, config: Mapping[str, Any], *,
                   model: bool = True, plots: bool = True, kernels_logged: str | None = None) -> None:
    classifier = trained_classifier(trainer.model, config, trainer.data)
    x, _ = _reference_split(trainer)
    if model:
        from cnnx.tracking.pyfunc_model import log_mlflow_model

        example = invert_normalization(x[:INPUT_EXAMPLE_IMAGES], classifier.normalization)
        stop = getattr(trainer, "early_stop", None) or {}
        # Early stopping's restore_best leaves the best epoch's weights: the model is that epoch's.
        weights_epoch = stop["best_epoch"] if stop.get("restored_best") else trainer.epoch
        log_mlflow_model(client, run_id, classifier, example, step=trainer.epoch, weights_epoch=weights_epoch)
    if plots:
        _log_plots(client, run_id, trainer, classifier)
        _log_filters(client, run_id, trainer, skip=kernels_logged)


def _log_plots(client, run_id: str, trainer: Trainer, classifier: Classifier) -> None:
    from cnnx.tracking import plots
    from cnnx.tracking.class_scores import classification_report

    client.log_figure(run_id, plots.learning_curves(trainer.history.epochs), "plots/learning_curves.png")
    evaluation = trainer.test_evaluation
    if evaluation is None:
        return
    x_test, y_test = trainer.data.test
    probabilities = class_probabilities(evaluation.outputs, classifier.output_kind)
    y_pred = probabilities.argmax(axis=1)
    names = classifier.classes
    client.log_figure(run_id, plots.confusion_matrix(y_test, y_pred, names), "plots/confusion_matrix.png")
    client.log_figure(run_id, plots.per_class_scores(y_test, y_pred, names), "plots/per_class_precision_recall.png")
    client.log_text(run_id, classification_report(y_test, y_pred, names), "plots/classification_report.txt")
    raw = invert_normalization(x_test, classifier.normalization)
    client.log_figure(run_id, plots.misclassified(raw, y_test, probabilities, names),
                      "plots/misclassified.png")
    # The trainer's own test predictions, for reproducing the plots (and checking the model).
    with _temporary_npz("test_predictions.npz", labels=y_test, predicted=y_pred,
                        probabilities=probabilities) as path:
        client.log_artifact(run_id, path, "plots")


def _log_filters(client, run_id: str, trainer: Trainer, skip: str | None) -> None:
    step = trainer.epoch
    params = dict(trainer.model.named_parameters())
    names = conv_layers(trainer.model)
    for name in names:
        if name != skip:
            # synchronous: async image logging adds about a second at the end of every run.
            client.log_image(run_id, kernel_grid(params[f"{name}.weight"].data),
                             key=f"kernels/{name}", step=step, synchronous=True)
    if not names:
        return
    x, _ = _reference_split(trainer)
    x = x[:FEATURE_MAP_IMAGES]
    client.log_image(run_id, activation_grid(x), key="feature_maps/input", step=step, synchronous=True)
    for name, maps in conv_activations(trainer.model, x).items():
        client.log_image(run_id, activation_grid(maps[:, :FEATURE_MAP_CHANNELS]),
                         key=f"feature_maps/{name}", step=step, synchronous=True)


@contextmanager
def _temporary_npz(name: str, **arrays: np.ndarray) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        np.savez(path, **arrays)
        yield str(path)
