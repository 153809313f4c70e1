"""cnnx's per-class scores give scikit-learn's figures and report text exactly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

from cnnx.tracking.class_scores import class_scores, classification_report as cnnx_report, confusion_counts


@pytest.mark.parametrize("seed", range(12))
def test_scores_and_report_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(2, 13))
    n = int(rng.integers(1, 300))
    y_true = rng.integers(0, classes, n)
    y_pred = np.where(rng.random(n) < rng.random(), y_true, rng.integers(0, classes, n))
    y_pred[y_pred == classes - 1] = 0  # a class never predicted: precision divides by zero
    labels = np.arange(classes)
    names = [f"class-{i}" if seed % 2 else str(i) for i in labels]

    counts = confusion_counts(y_true, y_pred, classes)
    np.testing.assert_array_equal(counts, confusion_matrix(y_true, y_pred, labels=labels))
    scores = class_scores(counts)
    expected = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for ours, theirs in zip((scores.precision, scores.recall, scores.f1, scores.support), expected, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    assert cnnx_report(y_true, y_pred, names) == classification_report(
        y_true, y_pred, labels=labels, target_names=names, digits=4, zero_division=0)
