"""LAMB (You et al., 2019): Adam's direction, rescaled per parameter tensor by a trust ratio.

    m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g²
    u = m / (1 - beta1^t) / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay · p
    p = p - lr · (‖p‖ / ‖u‖) · u        (trust ratio 1 when either norm is 0)

Every tensor moves by about ``lr`` times its own norm, whatever the scale of its gradient,
which is what lets LAMB train with large batches and one learning rate for all layers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from cnnx.engine.optim.optimizer import Optimizer, check_betas
from cnnx.engine.options import check_range
from cnnx.engine.parameter import Parameter


class Lamb(Optimizer):
    scratch_count = 1

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, Parameter]],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(named_parameters, lr)
        owner = "lamb"
        self.betas = check_betas(owner, betas)
        self.eps = check_range(owner, "eps", eps, 0.0, low_open=True)
        self.weight_decay = check_range(owner, "weight_decay", weight_decay, 0.0)

    def slots(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}

    def _update(self, data, grad, state, scratch, lr):
        (update,) = scratch
        beta1, beta2 = self.betas
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1.0 - beta1) * grad
        v *= beta2
        v += (1.0 - beta2) * grad * grad
        t = self.param_step
        np.sqrt(v, out=update)
        update /= math.sqrt(1.0 - beta2**t)
        update += self.eps
        np.divide(m, update, out=update)
        update /= 1.0 - beta1**t
        if self.weight_decay:
            update += self.weight_decay * data
        # Norms as Python floats: float32 arrays stay float32 under NumPy's promotion rules.
        weight_norm = float(np.linalg.norm(data))
        update_norm = float(np.linalg.norm(update))
        trust = weight_norm / update_norm if weight_norm > 0 and update_norm > 0 else 1.0
        update *= lr * trust
        data -= update
