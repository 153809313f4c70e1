"""Stochastic gradient descent with optional (Nesterov) momentum — PyTorch's update rule.

    g = grad + weight_decay * p
    buf = g                                   on the first step
    buf = momentum * buf + (1 - dampening) * g afterwards
    g = g + momentum * buf  (nesterov)   or   g = buf
    p = p - lr * g

Initialising the buffer to the first gradient (not to zero) is what makes a checkpointed
PyTorch SGD and this one follow the same trajectory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from cnnx.engine.optim.optimizer import Optimizer
from cnnx.engine.options import check_flag, check_range
from cnnx.engine.parameter import Parameter
from cnnx.errors import ConfigError


class SGD(Optimizer):
    elementwise = True
    def __init__(
        self,
        named_parameters: Iterable[tuple[str, Parameter]],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(named_parameters, lr)
        owner = type(self).__name__
        self.momentum = check_range(owner, "momentum", momentum, 0.0, 1.0, high_open=True)
        self.dampening = check_range(owner, "dampening", dampening, 0.0, 1.0)
        self.weight_decay = check_range(owner, "weight_decay", weight_decay, 0.0)
        self.nesterov = check_flag(owner, "nesterov", nesterov)
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            raise ConfigError(
                f"{owner}: nesterov=true needs momentum > 0 and dampening = 0 "
                f"(got momentum={self.momentum!r}, dampening={self.dampening!r})"
            )

    @property
    def scratch_count(self) -> int:
        return 2 if self.nesterov else 1

    def slots(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    def get_config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "dampening": self.dampening,
        }

    def _update(self, data, grad, state, scratch, lr):
        tmp = scratch[0]
        g = grad
        if self.weight_decay:
            np.multiply(data, self.weight_decay, out=tmp)
            tmp += grad
            g = tmp
        if self.momentum:
            buf = state["momentum_buffer"]
            if self.param_step == 1:
                np.copyto(buf, g)
            else:
                buf *= self.momentum
                if self.dampening:
                    # ``g`` is not needed afterwards (nesterov forbids dampening), so it may
                    # be scaled in the scratch array.
                    np.multiply(g, 1.0 - self.dampening, out=tmp)
                    buf += tmp
                else:
                    buf += g
            if self.nesterov:
                nesterov_g = scratch[1]
                np.multiply(buf, self.momentum, out=nesterov_g)
                nesterov_g += g
                g = nesterov_g
            else:
                g = buf
        np.multiply(g, lr, out=tmp)
        data -= tmp
