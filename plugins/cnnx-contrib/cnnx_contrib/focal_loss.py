"""Focal loss (Lin et al., 2017) on logits: cross-entropy that down-weights easy examples.

    FL = mean_i  -(1 - p_t)^gamma · log p_t,      p_t = softmax(logits_i)[label_i]

gamma = 0 is plain cross-entropy; gamma = 2 (the paper's choice) mostly ignores examples the
model already gets right, which helps on imbalanced classes. With
A = gamma · p_t (1 - p_t)^gamma · log(p_t) / (1 - p_t) - (1 - p_t)^gamma, the gradient of a
sample is A · (onehot - softmax) / N.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnx.engine.functional.softmax import softmax_parts
from cnnx.engine.losses.base import Loss, class_labels, logits_shape
from cnnx.engine.options import check_range


class FocalLoss(Loss):
    name = "focal_loss"
    expects_logits = True  # a softmax layer before it is warned about, as before cross_entropy

    def __init__(self, gamma: float = 2.0) -> None:
        self.gamma = check_range(self.name, "gamma", gamma, 0.0, 10.0)

    def get_config(self) -> dict[str, Any]:
        return {"gamma": self.gamma}

    def compute(self, logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        n, k = logits_shape(self.name, logits)
        labels = class_labels(self.name, targets, k)
        rows = np.arange(n)
        shifted, probs, sumexp = softmax_parts(logits, axis=1)
        probs /= sumexp
        log_pt = shifted[rows, labels] - np.log(sumexp[:, 0])
        pt = np.exp(log_pt)
        # 1 - p_t without cancellation when p_t is close to 1.
        miss = -np.expm1(log_pt)
        weight = miss**self.gamma
        value = float(np.mean(-weight * log_pt))
        # log(p_t) / (1 - p_t) tends to -1 as p_t → 1; the limit keeps gamma < 1 finite.
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(miss > 0, log_pt / np.where(miss > 0, miss, 1), -1.0)
        scale = self.gamma * pt * weight * ratio - weight
        grad = probs
        grad[rows, labels] -= 1
        grad *= (-scale / n)[:, None].astype(logits.dtype, copy=False)
        return value, grad
