"""Mean squared error, averaged over every output element as ``torch.nn.MSELoss``."""

from __future__ import annotations

import numpy as np

from cnnx.engine.losses.base import Loss, class_labels
from cnnx.errors import DataError


class MSELoss(Loss):
    """mean((outputs - targets)**2) over all elements.

    Targets shaped like the outputs (or with the same number of elements per sample, e.g.
    (N,) for outputs (N, 1)), or integer class labels (N,) for outputs (N, K), which count as
    one-hot rows (the original tutorial's classification set-up).
    """

    name = "mse"

    def compute(self, outputs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        if outputs.ndim == 2 and outputs.shape[1] > 1 and targets.ndim == 1:
            labels = class_labels(self.name, targets, outputs.shape[1])
            diff = outputs.copy()
            diff[np.arange(outputs.shape[0]), labels] -= 1
        elif targets.size == outputs.size:
            # Cast first: float64 targets would otherwise promote float32 outputs.
            diff = outputs - targets.reshape(outputs.shape).astype(outputs.dtype, copy=False)
        else:
            raise DataError(
                f"mse: outputs shaped {outputs.shape} but targets shaped {targets.shape}; "
                f"expected targets like the outputs, or class labels (N,) for outputs (N, K)"
            )
        count = diff.size
        value = float(np.vdot(diff, diff)) / count
        diff *= 2 / count
        return value, diff
