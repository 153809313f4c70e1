"""Learning-rate schedules driven per optimizer step, defined in epochs.

A schedule is a pure function ``lr_at(epoch)`` of fractional training progress, so the curve
does not depend on the batch size and changes smoothly inside an epoch; the scheduler only
counts steps and writes ``optimizer.lr``.  Timing: the constructor sets the lr for the first
step (``lr_at(0)``); after the k-th ``optimizer.step()`` call ``scheduler.step()`` and the next
update uses ``lr_at(k / steps_per_epoch)``.

Linear warm-up is shared by every schedule: from ``base_lr * warmup_start_factor`` at epoch 0
to the schedule's own value at ``warmup_epochs``.  With the default start factor 0 the first
update is a no-op for the weights (Adam still records its moments), as in the common
``linear warm-up from zero`` recipes.

Used on its own, as in PyTorch, a scheduler needs neither ``epochs`` (only the cosine, whose
length it is) nor ``steps_per_epoch``: it then defaults to 1, so each ``step()`` is an epoch
and ``StepLR(optimizer, step_size=3)`` drops the lr every third call, as ``torch.optim``'s does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from cnnx.engine.options import check_int, check_range
from cnnx.errors import CheckpointError, ConfigError


class LRScheduler:
    """Base class: subclasses implement ``_schedule(epoch)`` (used from the end of the warm-up
    on) and call ``self._start()`` at the end of their ``__init__``, once their own fields are
    validated, so a bad config leaves the optimizer's lr untouched."""

    def __init__(
        self,
        optimizer: Any,
        epochs: int | None = None,
        steps_per_epoch: int = 1,
        warmup_epochs: float = 0.0,
        warmup_start_factor: float = 0.0,
    ) -> None:
        owner = type(self).__name__
        if not hasattr(optimizer, "lr"):
            raise ConfigError(f"{owner}: {optimizer!r} has no 'lr' attribute to schedule")
        self.optimizer = optimizer
        self.base_lr = check_range(owner, "lr", optimizer.lr, 0.0, low_open=True)
        self.epochs = None if epochs is None else check_int(owner, "epochs", epochs, 1)
        self.steps_per_epoch = check_int(owner, "steps_per_epoch", steps_per_epoch, 1)
        self.warmup_epochs = check_range(owner, "warmup_epochs", warmup_epochs, 0.0)
        if self.epochs is not None and self.warmup_epochs > self.epochs:
            # The bound is another setting (a run's trainer.epochs): name it, not just its value.
            raise ConfigError(f"{owner}: warmup_epochs={self.warmup_epochs:g} is longer than the schedule, "
                              f"epochs={self.epochs}; accepted: 0 <= warmup_epochs <= epochs")
        self.warmup_start_factor = check_range(
            owner, "warmup_start_factor", warmup_start_factor, 0.0, 1.0
        )
        self.step_count = 0

    def _start(self) -> None:
        """Set the lr of the first step; subclasses call it once their own fields exist."""
        self._apply()

    # -- the schedule ---------------------------------------------------------------------
    def _schedule(self, epoch: float) -> float:
        raise NotImplementedError

    def lr_at(self, epoch: float) -> float:
        """The learning rate for a step taken at fractional ``epoch`` (pure, no side effects)."""
        epoch = float(epoch)
        if not epoch >= 0.0:
            raise ValueError(f"{type(self).__name__}.lr_at: epoch must be >= 0, got {epoch!r}")
        if epoch < self.warmup_epochs:
            start = self.base_lr * self.warmup_start_factor
            end = self._schedule(self.warmup_epochs)
            return float(start + (end - start) * (epoch / self.warmup_epochs))
        return float(self._schedule(epoch))

    @property
    def epoch(self) -> float:
        """Training progress in epochs (completed steps / steps per epoch)."""
        return self.step_count / self.steps_per_epoch

    @property
    def lr(self) -> float:
        """The learning rate the next optimizer step will use."""
        return self.lr_at(self.epoch)

    def get_last_lr(self) -> list[float]:
        """PyTorch's name for ``lr``: one value per parameter group, and cnnx has one group."""
        return [self.lr]

    def step(self) -> float:
        """Advance one optimizer step; set and return the lr for the next one."""
        self.step_count += 1
        return self._apply()

    def _apply(self) -> float:
        lr = self.lr_at(self.epoch)
        self.optimizer.lr = lr
        return lr

    # -- checkpointing --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # base_lr is saved because the optimizer's own checkpoint restores the *current*
        # (scheduled) lr: a scheduler built after loading it would otherwise take that as base.
        return {"step": int(self.step_count), "base_lr": float(self.base_lr)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        owner = type(self).__name__
        expected = {"step", "base_lr"}
        for key in sorted(expected - set(state)):
            raise CheckpointError(f"{owner} checkpoint is missing key {key!r}")
        for key in sorted(set(state) - expected):
            raise CheckpointError(f"{owner} checkpoint has unexpected key {key!r}")
        step = np.asarray(state["step"])
        base_lr = np.asarray(state["base_lr"])
        if (
            step.shape != ()
            or not np.issubdtype(step.dtype, np.number)
            or step < 0
            or step != int(step)
        ):
            raise CheckpointError(
                f"{owner} checkpoint key 'step'={state['step']!r} is not an integer >= 0"
            )
        if (
            base_lr.shape != ()
            or not np.issubdtype(base_lr.dtype, np.number)
            or not (math.isfinite(float(base_lr)) and float(base_lr) > 0)
        ):
            raise CheckpointError(
                f"{owner} checkpoint key 'base_lr'={state['base_lr']!r} is not a finite number > 0"
            )
        self.step_count = int(step)
        self.base_lr = float(base_lr)
        self._apply()

    def get_config(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_epochs": self.warmup_epochs,
            "warmup_start_factor": self.warmup_start_factor,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class ConstantLR(LRScheduler):
    """The optimizer's lr throughout, after the warm-up if one is configured."""

    def __init__(
        self,
        optimizer: Any,
        epochs: int | None = None,
        steps_per_epoch: int = 1,
        warmup_epochs: float = 0.0,
        warmup_start_factor: float = 0.0,
    ) -> None:
        super().__init__(optimizer, epochs, steps_per_epoch, warmup_epochs, warmup_start_factor)
        self._start()

    def _schedule(self, epoch: float) -> float:
        return self.base_lr


class StepLR(LRScheduler):
    """``base_lr * gamma ** floor(epoch / step_size)``; epochs count from the start of training
    (warm-up included), so ``step_size=30`` drops the lr at epochs 30, 60, …"""

    def __init__(
        self,
        optimizer: Any,
        epochs: int | None = None,
        steps_per_epoch: int = 1,
        step_size: int | None = None,
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        warmup_start_factor: float = 0.0,
    ) -> None:
        owner = type(self).__name__
        if step_size is None:
            # PyTorch's StepLR(optimizer, 3) would bind 3 to epochs here, since epochs and
            # steps_per_epoch come first in every cnnx scheduler's signature: name step_size
            # rather than guess.
            raise ConfigError(
                f"{owner}: step_size is required, by keyword: {owner}(optimizer, step_size=3); "
                f"the positional arguments after the optimizer are epochs, steps_per_epoch"
            )
        super().__init__(optimizer, epochs, steps_per_epoch, warmup_epochs, warmup_start_factor)
        self.step_size = check_int(owner, "step_size", step_size, 1)
        self.gamma = check_range(owner, "gamma", gamma, 0.0, low_open=True)
        self._start()

    def _schedule(self, epoch: float) -> float:
        # The epsilon keeps k*steps_per_epoch/steps_per_epoch rounding just below an integer
        # from postponing a drop by one step.
        return self.base_lr * self.gamma ** math.floor(epoch / self.step_size + 1e-9)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "step_size": self.step_size, "gamma": self.gamma}


class CosineLR(LRScheduler):
    """Half a cosine from ``base_lr`` (at the end of the warm-up) to ``min_lr`` (at ``epochs``);
    ``min_lr`` afterwards."""

    def __init__(
        self,
        optimizer: Any,
        epochs: int | None = None,
        steps_per_epoch: int = 1,
        min_lr: float = 0.0,
        warmup_epochs: float = 0.0,
        warmup_start_factor: float = 0.0,
    ) -> None:
        if epochs is None:
            raise ConfigError(
                f"{type(self).__name__}: epochs is required: the cosine runs from the lr down to "
                f"min_lr over that many epochs (PyTorch's T_max)"
            )
        super().__init__(optimizer, epochs, steps_per_epoch, warmup_epochs, warmup_start_factor)
        owner = type(self).__name__
        self.min_lr = check_range(owner, "min_lr", min_lr, 0.0)
        if self.min_lr > self.base_lr:
            raise ConfigError(
                f"{owner}: min_lr={self.min_lr!r} is above the optimizer's lr={self.base_lr!r}; "
                f"accepted: 0 <= min_lr <= lr"
            )
        self._start()

    def _schedule(self, epoch: float) -> float:
        span = self.epochs - self.warmup_epochs
        progress = 0.0 if span <= 0 else min(max((epoch - self.warmup_epochs) / span, 0.0), 1.0)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "min_lr": self.min_lr}
