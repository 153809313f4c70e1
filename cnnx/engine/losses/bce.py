"""Binary cross-entropy, on probabilities (model ends with sigmoid) or on logits."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnx.engine.functional.softmax import sigmoid, softplus
from cnnx.engine.losses.base import Loss
from cnnx.engine.options import check_flag
from cnnx.errors import DataError

# torch.nn.BCELoss's guards: each log term is clamped at -100 and the gradient's p * (1 - p)
# denominator at 1e-12, so saturated probabilities (exactly 0 or 1) give finite values.
_LOG_FLOOR = -100.0
_DENOMINATOR_FLOOR = 1e-12


class BCELoss(Loss):
    """Mean binary cross-entropy over all output elements (= over the batch for (N, 1)).

    ``from_logits=False`` (``torch.nn.BCELoss``): outputs are probabilities in [0, 1].
    ``from_logits=True`` (``torch.nn.BCEWithLogitsLoss``): outputs are logits; the sigmoid
    is fused into the loss, which is exact for any logit and keeps the gradient from
    vanishing when the sigmoid saturates, so prefer it for training.
    Targets are 0/1 (or soft labels in [0, 1]) shaped (N,) or like the outputs.
    """

    name = "bce"

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = check_flag("bce", "from_logits", from_logits)

    def get_config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits}

    def compute(self, outputs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        if targets.size != outputs.size:
            raise DataError(
                f"bce: outputs shaped {outputs.shape} but targets shaped {targets.shape}; "
                f"expected one target per output, e.g. outputs (N, 1) and targets (N,)"
            )
        t = targets.reshape(outputs.shape).astype(outputs.dtype, copy=False)
        if not np.all((t >= 0) & (t <= 1)):
            raise DataError(
                f"bce: targets must lie in [0, 1], got values from {np.nanmin(t)} to {np.nanmax(t)}"
            )
        scale = 1 / outputs.size
        if self.from_logits:
            # log(1 + e^z) - t z, exact in both tails.
            value = float(np.mean(softplus(outputs) - outputs * t))
            grad = sigmoid(outputs)
            grad -= t
            grad *= scale
            return value, grad

        p = outputs
        if not np.all((p >= 0) & (p <= 1)):
            raise DataError(
                f"bce: with from_logits=false the outputs must be probabilities in [0, 1], got "
                f"values from {np.nanmin(p)} to {np.nanmax(p)}; end the model with a sigmoid "
                f"layer or set from_logits=true"
            )
        with np.errstate(divide="ignore"):
            log_p = np.maximum(np.log(p), _LOG_FLOOR)
            log_q = np.maximum(np.log1p(-p), _LOG_FLOOR)
        # -(t log p + (1 - t) log q) = -(log q + t (log p - log q))
        log_p -= log_q
        log_p *= t
        log_p += log_q
        value = -float(np.mean(log_p))

        denominator = np.subtract(1, p)
        denominator *= p
        np.maximum(denominator, _DENOMINATOR_FLOOR, out=denominator)
        grad = p - t
        grad /= denominator
        grad *= scale
        return value, grad
