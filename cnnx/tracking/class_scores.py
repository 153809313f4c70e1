"""Per-class counts and scores of predicted labels (confusion matrix, precision, recall, F1).

The same figures as ``sklearn.metrics`` with ``zero_division=0`` (a test holds the two
together), from one ``bincount``: importing ``sklearn.metrics`` costs the tracking process
about 1.5 s per run, longer than the whole report takes to draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts: true labels along rows, predicted along columns."""
    pairs = np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64)
    return np.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class ClassScores:
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    accuracy: float


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def class_scores(counts: np.ndarray) -> ClassScores:
    """Scores per class from ``confusion_counts``; 0 where a ratio has nothing to divide by."""
    hits = np.diag(counts).astype(np.float64)
    precision = _ratio(hits, counts.sum(axis=0))
    recall = _ratio(hits, counts.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = counts.sum()
    return ClassScores(precision, recall, f1, counts.sum(axis=1), float(hits.sum() / total) if total else 0.0)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str], digits: int = 4) -> str:
    """The text table of ``sklearn.metrics.classification_report``, same layout and figures."""
    scores = class_scores(confusion_counts(y_true, y_pred, len(names)))
    width = max(max(map(len, names), default=0), len("weighted avg"), digits)
    row = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    lines = ["{:>{width}s} ".format("", width=width) + " {:>9}" * 4, "\n\n"]
    lines[0] = lines[0].format("precision", "recall", "f1-score", "support")
    per_class = zip(names, scores.precision, scores.recall, scores.f1, scores.support, strict=True)
    lines += [row.format(name, p, r, f, int(n), width=width, digits=digits) for name, p, r, f, n in per_class]
    total = int(scores.support.sum())
    lines.append("\n")
    lines.append(("{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f} {:>9}\n").format(
        "accuracy", "", "", scores.accuracy, total, width=width, digits=digits))
    columns = (scores.precision, scores.recall, scores.f1)
    lines.append(row.format("macro avg", *(c.mean() for c in columns), total, width=width, digits=digits))
    weights = scores.support if total else None
    lines.append(row.format("weighted avg", *(np.average(c, weights=weights) for c in columns), total,
                            width=width, digits=digits))
    return "".join(lines)
