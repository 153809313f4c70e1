"""Guarding each update: non-finite losses or gradients, and optional gradient-norm clipping.

A NaN or infinite value stops training (``stop``, the default) with a message naming the
epoch and batch, or drops that batch's update (``skip_batch``) and counts it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from cnnx.errors import CnnxError, ConfigError

POLICIES = ("stop", "skip_batch")


class TrainingDiverged(CnnxError):
    """The loss or a gradient became NaN or infinite."""


class UpdateGuard:
    def __init__(self, on_nonfinite: str = "stop", grad_clip_norm: float | None = None):
        if on_nonfinite not in POLICIES:
            raise ConfigError(
                f"trainer.on_nonfinite={on_nonfinite!r} is not accepted; accepted: {', '.join(POLICIES)}"
            )
        if grad_clip_norm is not None and (
            isinstance(grad_clip_norm, bool) or not isinstance(grad_clip_norm, (int, float))
            or not math.isfinite(grad_clip_norm) or grad_clip_norm <= 0
        ):
            raise ConfigError(
                f"trainer.grad_clip_norm={grad_clip_norm!r} is not accepted; accepted: null or a number > 0"
            )
        self.on_nonfinite = on_nonfinite
        self.grad_clip_norm = None if grad_clip_norm is None else float(grad_clip_norm)

    def loss_ok(self, loss_value: float, epoch: int, batch: int) -> bool:
        """True to go on with this batch; False to skip it; raises under ``stop``."""
        if math.isfinite(loss_value):
            return True
        return self._nonfinite(f"loss became {loss_value}", epoch, batch)

    def gradients_ok(self, params: Mapping[str, Any], epoch: int, batch: int) -> bool:
        """Check (and clip) the gradients the last backward pass filled."""
        # One BLAS dot per parameter: the squared global norm, NaN/inf-propagating.
        squares = [float(np.vdot(p.grad, p.grad)) for p in params.values() if p.grad is not None]
        total = math.fsum(squares)
        if not math.isfinite(total):
            name = next((n for n, p in params.items()
                         if p.grad is not None and not np.isfinite(p.grad).all()), None)
            what = (f"gradient of {name} became non-finite" if name is not None
                    else "the gradient norm overflowed")
            return self._nonfinite(what, epoch, batch)
        if self.grad_clip_norm is not None:
            norm = math.sqrt(total)
            if norm > self.grad_clip_norm:
                scale = np.float32(self.grad_clip_norm / norm)
                for p in params.values():
                    if p.grad is not None:
                        p.grad *= scale
        return True

    def _nonfinite(self, what: str, epoch: int, batch: int) -> bool:
        if self.on_nonfinite == "skip_batch":
            return False
        raise TrainingDiverged(
            f"{what} at epoch {epoch}, batch {batch}; lower optimizer.lr, set trainer.grad_clip_norm, "
            "check the data for extreme values, or set trainer.on_nonfinite=skip_batch"
        )
