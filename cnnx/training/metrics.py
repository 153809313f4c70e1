from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def predicted_labels(outputs: np.ndarray, loss: object) -> np.ndarray:
    """Class labels from model outputs: argmax, or a threshold for a single binary output."""
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        # A sigmoid-ending model outputs probabilities (threshold 0.5); bce(from_logits) logits (0).
        threshold = 0.0 if getattr(loss, "from_logits", False) else 0.5
        return (outputs[:, 0] > threshold).astype(np.int64)
    return outputs.argmax(axis=1)


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    outputs: np.ndarray
    labels: np.ndarray

    def prefixed(self, split: str) -> dict[str, float]:
        return {f"{split}_loss": self.loss, f"{split}_acc": self.accuracy}


def evaluate(model, loss, x: np.ndarray, y: np.ndarray, batch_size: int = 64) -> Evaluation:
    """Loss and accuracy of ``model`` in eval mode over a whole split."""
    outputs = model.predict(x, batch_size)
    value, _ = loss(outputs, y)
    labels = predicted_labels(outputs, loss)
    return Evaluation(float(value), float(np.mean(labels == y)), outputs, labels)
