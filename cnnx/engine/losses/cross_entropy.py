"""Cross-entropy on logits: log-softmax and negative log-likelihood fused in one pass."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from cnnx.engine.functional.softmax import softmax_parts
from cnnx.engine.losses.base import Loss, class_labels, logits_shape
from cnnx.engine.options import check_range


class CrossEntropyLoss(Loss):
    """``torch.nn.CrossEntropyLoss(label_smoothing=...)`` for logits (N, K) and labels (N,).

    With smoothing e the target distribution is (1 - e) * onehot + e / K. The gradient of the
    batch mean is (softmax(logits) - target) / N. Value and gradient come from one
    ``softmax_parts``, finite for finite logits of any magnitude.
    """

    name = "cross_entropy"
    expects_logits = True

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = check_range(self.name, "label_smoothing", label_smoothing, 0.0, 1.0)

    def get_config(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing}

    def compute(self, logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        n, k = logits_shape(self.name, logits)
        labels = class_labels(self.name, targets, k)
        # Positions of the target logits in the flattened (N, K) arrays: one take and one
        # fancy subtraction instead of two (rows, labels) gathers.
        target_at = _row_starts(n, k) + labels
        smoothing = self.label_smoothing

        shifted, grad, sumexp = softmax_parts(logits, axis=1)
        # -sum_k target_k * log_softmax_k = log(sum exp(shifted)) - sum_k target_k * shifted_k:
        # the log-softmax itself, N x K values, is never needed.
        total = np.log(sumexp).sum() - (1 - smoothing) * shifted.take(target_at).sum()
        if smoothing:
            total -= (smoothing / k) * shifted.sum()
        value = float(total) / n

        grad /= sumexp
        # softmax_parts' exps are C-ordered whatever the logits' layout: this view writes through.
        grad_flat = grad.reshape(-1)
        grad_flat[target_at] -= 1 - smoothing
        if smoothing:
            grad -= smoothing / k
        grad *= 1 / n
        return value, grad


@lru_cache(maxsize=16)  # batch sizes repeat every step
def _row_starts(n: int, k: int) -> np.ndarray:
    starts = np.arange(0, n * k, k, dtype=np.intp)
    starts.flags.writeable = False
    return starts
