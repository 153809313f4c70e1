"""Losses with the slips plugin authors make."""

import numpy as np

from cnnx.engine.losses.base import Loss, class_labels


class Float64Gradient(Loss):
    """Squared error against one-hot targets built with np.eye's default dtype: the gradient
    comes back float64 for float32 outputs."""

    name = "float64_gradient"

    def compute(self, outputs, targets):
        diff = outputs - np.eye(outputs.shape[1])[class_labels(self.name, targets, outputs.shape[1])]
        return float(np.mean(diff ** 2)), 2 * diff / diff.size
