"""Figures that explain a finished run: learning curves, test-split confusion, mistakes.

Each function returns a matplotlib ``Figure`` drawn on an Agg canvas of its own: no display,
no pyplot, no change to the process-wide backend (cnnx may run inside a notebook).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cnnx.tracking.class_scores import class_scores, confusion_counts


def new_figure(width: float, height: float, **margins: float) -> Figure:
    # Fixed margins rather than constrained layout: the layout solver costs more than drawing.
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(**{"left": 0.08, "right": 0.97, "bottom": 0.12, "top": 0.9, **margins})
    return figure


def learning_curves(epochs: Sequence[dict[str, float]]) -> Figure:
    """Train/val loss and accuracy per epoch, side by side."""
    figure = new_figure(10, 4)
    numbers = np.arange(1, len(epochs) + 1)
    for axes, quantity in zip(figure.subplots(1, 2), ("loss", "acc"), strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            key = f"{split}_{quantity}"
            values = [e.get(key, np.nan) for e in epochs]
            if not np.all(np.isnan(values)):
                axes.plot(numbers, values, style, markersize=3, label=split)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        axes.set_ylabel("accuracy" if quantity == "acc" else "loss")
        axes.set_title("accuracy" if quantity == "acc" else "loss")
        axes.grid(alpha=0.3)
        axes.legend()
    return figure


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> Figure:
    """Counts of true (rows) × predicted (columns) labels on the test split."""
    counts = confusion_counts(y_true, y_pred, len(classes))
    size = min(12, 2.5 + 0.5 * len(classes))
    figure = new_figure(size, size, left=0.1, bottom=0.1)
    axes = figure.subplots()
    axes.imshow(counts, cmap="Blues")
    ticks = np.arange(len(classes))
    axes.set_xticks(ticks, classes, rotation=45 if max(map(len, classes)) > 2 else 0)
    axes.set_yticks(ticks, classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"test split: {int(np.trace(counts))}/{counts.sum()} correct")
    if len(classes) <= 20:
        threshold = counts.max() / 2
        # Zeros stay blank: they are most cells, and every text costs rendering time.
        for row, col in zip(*np.nonzero(counts), strict=True):
            axes.text(col, row, str(counts[row, col]), ha="center", va="center", fontsize=8,
                      color="white" if counts[row, col] > threshold else "black")
    return figure


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> Figure:
    """Precision and recall of every class on the test split, as paired bars."""
    scores = class_scores(confusion_counts(y_true, y_pred, len(classes)))
    precision, recall, support = scores.precision, scores.recall, scores.support
    figure = new_figure(min(14, 3 + 0.6 * len(classes)), 4)
    axes = figure.subplots()
    x = np.arange(len(classes))
    axes.bar(x - 0.2, precision, 0.4, label="precision")
    axes.bar(x + 0.2, recall, 0.4, label="recall")
    axes.set_xticks(x, [f"{c}\n(n={n})" for c, n in zip(classes, support, strict=True)])
    axes.set_ylim(min(0.5, float(np.min([precision, recall]))) if len(classes) else 0, 1.0)
    axes.set_title("per-class precision and recall (test split)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="lower right")
    return figure


def misclassified(images: np.ndarray, y_true: np.ndarray, probabilities: np.ndarray,
                  classes: Sequence[str], limit: int = 16, columns: int = 8) -> Figure:
    """The most confidently wrong test images (raw pixel scale), with true and predicted labels.

    One axes showing one tiled image, labels drawn as text: a subplot per image would cost
    seconds per run in layout and rendering.
    """
    y_pred = probabilities.argmax(axis=1)
    all_wrong = np.flatnonzero(y_pred != y_true)
    wrong = all_wrong[np.argsort(-probabilities[all_wrong, y_pred[all_wrong]], kind="stable")][:limit]
    columns = max(4, min(columns, len(wrong)))  # a few mistakes: not a wide empty strip
    rows = max(1, -(-len(wrong) // columns))
    c, h, w = images.shape[1:]
    pad_top, gap = h // 2 + 2, 2
    cell_h, cell_w = h + pad_top + gap, w + gap
    width = columns * 1.3
    height = width * rows * cell_h / (columns * cell_w) + 0.4
    figure = new_figure(width, height, left=0.005, right=0.995, bottom=0.005, top=1 - 0.4 / height)
    axes = figure.subplots()
    axes.axis("off")
    title = f"misclassified test images: {len(all_wrong)} of {len(y_true)}"
    axes.set_title(title + (f", the {limit} most confident shown" if len(all_wrong) > limit else ""))
    canvas = np.ones((rows * cell_h, columns * cell_w, 3), np.float32)
    shown = images[wrong]
    low = shown.min(axis=(1, 2, 3), keepdims=True)
    span = shown.max(axis=(1, 2, 3), keepdims=True) - low
    shown = (shown - low) / np.where(span > 0, span, 1.0)
    for slot, (index, image) in enumerate(zip(wrong, shown, strict=True)):
        top, left = (slot // columns) * cell_h + pad_top, (slot % columns) * cell_w
        canvas[top:top + h, left:left + w] = image[:3].transpose(1, 2, 0) if c >= 3 else image[0][:, :, None]
        predicted = y_pred[index]
        axes.text(left + w / 2, top - 1, f"true {classes[y_true[index]]}\npred {classes[predicted]} "
                  f"{probabilities[index, predicted]:.2f}", ha="center", va="bottom", fontsize=7)
    axes.imshow(canvas, interpolation="nearest")
    if not len(wrong):
        axes.text(0.5, 0.5, "none: every test image is classified correctly", ha="center",
                  transform=axes.transAxes)
    return figure
