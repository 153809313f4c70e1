"""``loss.weight=balanced``: N / (K · n_k) from the training labels, as scikit-learn computes it."""

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from cnnx.errors import ConfigError
from cnnx.training.class_weights import balanced_class_weights


def test_balanced_weights_are_scikit_learns():
    labels = np.repeat([0, 1, 2], [50, 10, 5])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert balanced_class_weights(labels, ["a", "b", "c"], "loss.weight") == pytest.approx(expected.tolist())
    # each class then carries the same total weight
    weights = np.array(balanced_class_weights(labels, ["a", "b", "c"], "loss.weight"))
    assert np.bincount(labels) * weights == pytest.approx([65 / 3] * 3)


def test_a_class_without_training_samples_is_named():
    with pytest.raises(ConfigError, match=r"^loss.weight=balanced: class 'c' has no training samples"):
        balanced_class_weights(np.array([0, 1, 1]), ["a", "b", "c"], "loss.weight")
