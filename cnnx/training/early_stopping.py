from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from cnnx.errors import ConfigError
from cnnx.training.callbacks import Callback
from cnnx.training.objective import objective_key, objective_mode

if TYPE_CHECKING:
    from cnnx.training.trainer import Trainer

_BEST_WEIGHTS = "best_weights."


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the model ends with the weights of its best epoch, as Keras'
    ``EarlyStopping(restore_best_weights=True)`` does, so test metrics describe that model.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", patience: int = 5,
                 min_delta: float = 0.0, restore_best: bool = True):
        if mode == "auto":
            mode = objective_mode(monitor)
        if mode not in ("min", "max"):
            raise ConfigError(f"trainer.early_stopping.mode must be min, max or auto, got {mode!r}")
        if patience < 1:
            raise ConfigError(f"trainer.early_stopping.patience must be ≥ 1, got {patience}")
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.restore_best = abs(min_delta), restore_best
        self.best = -math.inf if mode == "max" else math.inf
        self.best_epoch = 0
        self.wait = 0
        self._best_weights: dict | None = None

    def _improved(self, value: float) -> bool:
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        # Without a validation split val_* falls back to train_*, as for trainer.monitor.
        key = objective_key([metrics], self.monitor)
        if key not in metrics:
            raise ConfigError(
                f"trainer.early_stopping.monitor={self.monitor!r} is not a metric; "
                f"available: {', '.join(sorted(metrics))}"
            )
        value = metrics[key]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._best_weights = trainer.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.stop_training = True

    def on_train_end(self, trainer: Trainer) -> None:
        # Not when it stops: the callbacks after this one still act on the stopping epoch, and
        # its checkpoint must hold that epoch's weights, which the best epoch's would replace
        # under the stopping epoch's name and figures (predict and resume would use the wrong
        # model). A run resumed from that checkpoint ends here too, so it restores them and
        # says so as well; the line follows the console's line for the last epoch.
        if not (trainer.stop_training and self.wait >= self.patience):
            return
        if self._best_weights is not None:
            trainer.model.load_state_dict(self._best_weights)
        key = objective_key(trainer.history.epochs, self.monitor)
        trainer.log(f"early stopping at epoch {trainer.epoch}: {key} has not improved "
                    f"since epoch {self.best_epoch} ({self.best:.4f})")
        trainer.early_stop = {"stopped_epoch": trainer.epoch, "best_epoch": self.best_epoch,
                              "restored_best": self._best_weights is not None}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}
        # The best weights travel with the counters so a resumed run can still restore them.
        for key, value in (self._best_weights or {}).items():
            state[_BEST_WEIGHTS + key] = value
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        weights = {k[len(_BEST_WEIGHTS):]: v for k, v in state.items() if k.startswith(_BEST_WEIGHTS)}
        self._best_weights = weights or None
