"""The run report's figures, drawn in-process."""

from __future__ import annotations

from cnnx.tracking.plots import learning_curves


def test_learning_curves_mark_whole_epochs_only():
    epochs = [{"train_loss": 1.0 / n, "val_loss": 1.2 / n, "train_acc": n / 5, "val_acc": n / 6} for n in (1, 2, 3, 4)]
    figure = learning_curves(epochs)
    figure.canvas.draw()
    for axes in figure.axes:
        ticks = [t for t in axes.get_xticks() if 1 <= t <= 4]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks  # was 1.0, 1.5, 2.0, ...
