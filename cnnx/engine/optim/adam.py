"""Adam and AdamW with PyTorch's update rules (no amsgrad).

    g = grad + weight_decay * p              (Adam: L2 folded into the gradient)
    p = p * (1 - lr * weight_decay)          (AdamW: decoupled decay, instead of the above)
    m = m + (1 - beta1) * (g - m)
    v = beta2 * v + (1 - beta2) * g * g
    p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

``eps`` is added after the bias correction of ``v``, as PyTorch does (the paper adds it to
the corrected ``v``; both agree except in the first few steps with tiny gradients).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from cnnx.engine.optim.optimizer import Optimizer, check_betas
from cnnx.engine.options import check_range
from cnnx.engine.parameter import Parameter


class Adam(Optimizer):
    elementwise = True
    scratch_count = 2
    #: AdamW flips this: weight decay shrinks the parameters instead of adding to the grad.
    decoupled_weight_decay = False

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, Parameter]],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(named_parameters, lr)
        owner = type(self).__name__
        self.betas = check_betas(owner, betas)
        self.eps = check_range(owner, "eps", eps, 0.0, low_open=True)
        self.weight_decay = check_range(owner, "weight_decay", weight_decay, 0.0)

    def slots(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def get_config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }

    def _update(self, data, grad, state, scratch, lr):
        tmp, g_buf = scratch
        beta1, beta2 = self.betas
        m, v = state["exp_avg"], state["exp_avg_sq"]
        g = grad
        if self.weight_decay:
            if self.decoupled_weight_decay:
                data *= 1.0 - lr * self.weight_decay
            else:
                np.multiply(data, self.weight_decay, out=g_buf)
                g_buf += grad
                g = g_buf

        np.subtract(g, m, out=tmp)
        tmp *= 1.0 - beta1
        m += tmp

        v *= beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - beta2
        v += tmp

        t = self.param_step
        step_size = lr / (1.0 - beta1**t)
        np.sqrt(v, out=tmp)
        tmp /= math.sqrt(1.0 - beta2**t)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        data -= tmp


class AdamW(Adam):
    decoupled_weight_decay = True

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, Parameter]],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(named_parameters, lr, betas, eps, weight_decay)
