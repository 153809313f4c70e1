"""The loss contract: ``value, grad = loss(outputs, targets)``.

``value`` is a Python float averaged over the batch; ``grad`` is d(value)/d(outputs) with the
shape and dtype of ``outputs``, ready for ``model.backward``. Losses have no parameters and no
state, so one object serves training and evaluation.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from cnnx.errors import DataError, PluginError


class ProbabilitiesAsLogitsWarning(UserWarning):
    """Outputs handed to a loss on logits look like probabilities (a softmax layer before it)."""


class Loss:
    #: The name used in configs and messages (the entry-point name).
    name = "loss"
    #: True for a loss on class logits (N, K) that applies its own softmax: outputs that look
    #: like probabilities on its first call (a softmax layer before it, which flattens the
    #: gradients and trains badly, silently) get a ``ProbabilitiesAsLogitsWarning``.
    expects_logits = False
    #: Whether a first call's outputs were looked at (a model ending in a softmax gives
    #: probabilities from its first batch on).
    outputs_checked = False

    def __call__(self, outputs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        outputs = np.asarray(outputs)
        targets = np.asarray(targets)
        if outputs.dtype.kind != "f":
            raise DataError(
                f"{self.name}: model outputs must be floating point, got {outputs.dtype}"
            )
        if outputs.ndim == 0 or outputs.shape[0] == 0:
            raise DataError(f"{self.name}: empty batch (outputs shaped {outputs.shape})")
        if targets.ndim == 0 or targets.shape[0] != outputs.shape[0]:
            raise DataError(
                f"{self.name}: {outputs.shape[0]} outputs but targets shaped {targets.shape}; "
                f"outputs and targets must have the same batch size"
            )
        if self.expects_logits and not self.outputs_checked:
            self.outputs_checked = True
            if outputs.ndim == 2 and outputs.shape[1] > 1 and _probabilities(outputs):
                warnings.warn(
                    f"{self.name}: the model's outputs look like probabilities (each row in [0, 1], summing "
                    f"to 1): {self.name} takes logits and applies its own softmax, so a softmax layer before "
                    f"it flattens the gradients and slows training; remove that layer (cnnx predict and the "
                    f"logged model turn logits into probabilities)", ProbabilitiesAsLogitsWarning, stacklevel=2)
        value, grad = self.compute(outputs, targets)
        # A plugin's slip, named here: a NumPy scalar would fail only when a checkpoint is
        # written (JSON), a per-sample vector in the divergence check, a misshapen gradient in
        # model.backward, none of them naming the loss.
        if np.ndim(value) != 0:
            raise PluginError(f"{self.name}: the loss value has shape {np.shape(value)}; expected a scalar, "
                              f"the batch mean")
        if getattr(grad, "shape", None) != outputs.shape:
            raise PluginError(f"{self.name}: the gradient has shape {getattr(grad, 'shape', None)}; expected "
                              f"the outputs' shape {outputs.shape}")
        return float(value), grad

    def compute(self, outputs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        """Subclasses implement this; batch sizes are already known to agree."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """Constructor kwargs that rebuild this loss."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _probabilities(outputs: np.ndarray) -> bool:
    return bool(outputs.min() >= 0 and outputs.max() <= 1 and np.allclose(outputs.sum(axis=1), 1, atol=1e-3))


def logits_shape(loss: str, logits: np.ndarray) -> tuple[int, int]:
    """``(N, classes)`` of the logits a classification loss takes, which must be 2-D."""
    if logits.ndim != 2:
        raise DataError(
            f"{loss} expects logits shaped (N, classes), got {logits.shape}; "
            f"end the model with a dense layer"
        )
    return logits.shape


def class_labels(loss: str, targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Validate integer class labels (N,) or (N, 1) and return them as an index array."""
    if targets.ndim == 2 and targets.shape[1] == 1:
        targets = targets[:, 0]
    if targets.ndim != 1:
        # torch's cross_entropy also takes class probabilities (N, K); cnnx takes indices only.
        soft = (" (class probabilities or one-hot rows are not supported: pass y.argmax(axis=1))"
                if targets.ndim == 2 and targets.shape[1] == num_classes else "")
        raise DataError(
            f"{loss}: expected integer class labels shaped (N,), got targets shaped {targets.shape}{soft}"
        )
    kind = targets.dtype.kind  # dtype kinds, not np.issubdtype: this runs on every batch
    integral = kind in "iub"
    # Labels read back from float files are acceptable if they are whole numbers.
    whole_floats = kind == "f" and bool(np.all(np.mod(targets, 1) == 0))
    if not (integral or whole_floats):
        raise DataError(
            f"{loss}: class labels must be integers, got dtype {targets.dtype} "
            f"(first values {targets[:5].tolist()})"
        )
    labels = targets.astype(np.intp, copy=False)
    if labels.min() < 0 or labels.max() >= num_classes:
        i = int(np.argmax((labels < 0) | (labels >= num_classes)))
        raise DataError(
            f"{loss}: label {targets[i].item()!r} at index {i} is out of range for "
            f"{num_classes} classes; labels must be integers in [0, {num_classes})"
        )
    return labels
