"""Cross-entropy on logits: log-softmax and negative log-likelihood fused in one pass."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from cnnx.engine.functional.softmax import softmax_parts
from cnnx.engine.losses.base import Loss, class_labels, logits_shape
from cnnx.engine.options import check_range
from cnnx.errors import ConfigError, DataError


class CrossEntropyLoss(Loss):
    """``torch.nn.CrossEntropyLoss(weight=..., label_smoothing=...)`` for logits (N, K) and
    labels (N,).

    With smoothing e the target distribution is (1 - e) * onehot + e / K. The gradient of the
    batch mean is (softmax(logits) - target) / N. Value and gradient come from one
    ``softmax_parts``, finite for finite logits of any magnitude.

    ``weight`` (one non-negative number per class) scales each sample's loss by its class's
    weight, and the mean becomes a weighted one, divided by the batch's summed weights, as in
    PyTorch: a rare class weighted up counts as much as a common one.
    """

    name = "cross_entropy"
    expects_logits = True

    def __init__(self, label_smoothing: float = 0.0, weight: Sequence[float] | np.ndarray | None = None) -> None:
        self.label_smoothing = check_range(self.name, "label_smoothing", label_smoothing, 0.0, 1.0)
        self.weight = None if weight is None else _class_weights(self.name, weight)

    def get_config(self) -> dict[str, Any]:
        weight = None if self.weight is None else self.weight.tolist()
        return {"label_smoothing": self.label_smoothing, "weight": weight}

    def compute(self, logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        n, k = logits_shape(self.name, logits)
        labels = class_labels(self.name, targets, k)
        if self.weight is not None:
            return self._weighted(logits, labels)
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


    def _weighted(self, logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """PyTorch's weighted mean: each sample's (1 - e)·w[y]·nll + (e/K)·Σ_k w_k·(−log p_k),
        summed and divided by Σ w[y] over the batch. Its gradient per sample is
        ((1 − e)·w[y]·(p − onehot) + (e/K)·(p·Σ_k w_k − w)) / Σ w[y]."""
        n, k = logits.shape
        if len(self.weight) != k:
            raise DataError(f"{self.name}: weight has {len(self.weight)} entries for {k} classes; "
                            f"give one weight per class")
        weight = self.weight.astype(logits.dtype, copy=False)
        smoothing = self.label_smoothing
        shifted, grad, sumexp = softmax_parts(logits, axis=1)
        log_sums = np.log(sumexp)
        sample_weight = weight[labels]
        total_weight = float(sample_weight.sum())
        if total_weight == 0:
            # Only classes weighted 0 in this batch: nothing in it counts. PyTorch gives 0/0 = NaN,
            # which would stop a run at a batch that merely drew no weighted class.
            return 0.0, np.zeros_like(logits, order="C")
        target_at = _row_starts(n, k) + labels
        # -log p[i, y_i] = log(sumexp_i) - shifted[i, y_i]
        nll = log_sums[:, 0] - shifted.take(target_at)
        total = (1 - smoothing) * float(sample_weight @ nll)
        if smoothing:
            # Σ_i Σ_k w_k (log(sumexp_i) − shifted_ik)
            total += (smoothing / k) * float(weight.sum() * log_sums.sum() - (shifted @ weight).sum())
        grad /= sumexp
        grad *= ((1 - smoothing) * sample_weight + (smoothing / k) * weight.sum())[:, None]
        grad.reshape(-1)[target_at] -= (1 - smoothing) * sample_weight
        if smoothing:
            grad -= (smoothing / k) * weight
        grad *= 1 / total_weight
        return total / total_weight, grad


def _class_weights(owner: str, weight: Sequence[float] | np.ndarray) -> np.ndarray:
    try:
        values = np.array(weight, dtype=np.float64)
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.ndim != 1 or len(values) < 2 or not np.isfinite(values).all() or (values < 0).any() \
            or not values.any():
        raise ConfigError(f"{owner}: weight={weight!r} is not accepted; accepted: one finite number >= 0 per "
                          f"class, not all 0 (e.g. [1.0, 3.0])")
    return values  # cast to the logits dtype when used: float32 stays float32


@lru_cache(maxsize=16)  # batch sizes repeat every step
def _row_starts(n: int, k: int) -> np.ndarray:
    starts = np.arange(0, n * k, k, dtype=np.intp)
    starts.flags.writeable = False
    return starts
