"""RMSprop with PyTorch's update rule.

    g = grad + weight_decay * p
    v = alpha * v + (1 - alpha) * g * g
    avg = sqrt(v - mean_g**2) + eps     (centered: mean_g = alpha * mean_g + (1 - alpha) * g)
    avg = sqrt(v) + eps                 (otherwise)
    buf = momentum * buf + g / avg;  p = p - lr * buf     (momentum > 0)
    p = p - lr * g / avg                                  (otherwise)

All state starts at zero (unlike SGD's momentum buffer).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from cnnx.engine.optim.optimizer import Optimizer
from cnnx.engine.options import check_flag, check_range
from cnnx.engine.parameter import Parameter


class RMSprop(Optimizer):
    elementwise = True
    scratch_count = 2

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, Parameter]],
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__(named_parameters, lr)
        owner = type(self).__name__
        self.alpha = check_range(owner, "alpha", alpha, 0.0, 1.0, high_open=True)
        self.eps = check_range(owner, "eps", eps, 0.0, low_open=True)
        self.momentum = check_range(owner, "momentum", momentum, 0.0, 1.0, high_open=True)
        self.weight_decay = check_range(owner, "weight_decay", weight_decay, 0.0)
        self.centered = check_flag(owner, "centered", centered)

    def slots(self) -> tuple[str, ...]:
        slots = ["square_avg"]
        if self.momentum:
            slots.append("momentum_buffer")
        if self.centered:
            slots.append("grad_avg")
        return tuple(slots)

    def get_config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "alpha": self.alpha,
            "eps": self.eps,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "centered": self.centered,
        }

    def _update(self, data, grad, state, scratch, lr):
        tmp, g_buf = scratch
        alpha = self.alpha
        g = grad
        if self.weight_decay:
            np.multiply(data, self.weight_decay, out=g_buf)
            g_buf += grad
            g = g_buf

        square_avg = state["square_avg"]
        square_avg *= alpha
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - alpha
        square_avg += tmp

        if self.centered:
            grad_avg = state["grad_avg"]
            np.subtract(g, grad_avg, out=tmp)
            tmp *= 1.0 - alpha
            grad_avg += tmp
            np.multiply(grad_avg, grad_avg, out=tmp)
            np.subtract(square_avg, tmp, out=tmp)
            # Rounding can push the variance a hair below zero; sqrt would turn it into NaN.
            np.maximum(tmp, 0.0, out=tmp)
            np.sqrt(tmp, out=tmp)
        else:
            np.sqrt(square_avg, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)

        if self.momentum:
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += tmp
            np.multiply(buf, lr, out=tmp)
        else:
            tmp *= lr
        data -= tmp
