"""The training loop: seeded mini-batches, per-epoch train/val metrics, test metrics, callbacks."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cnnx.data.splits import DataSplits
from cnnx.engine.model import Model
from cnnx.errors import CnnxError, ConfigError
from cnnx.training.augment import random_shift
from cnnx.training.callbacks import Callback
from cnnx.training.metrics import Evaluation, evaluate, predicted_labels


class TrainingDiverged(CnnxError):
    """The loss became NaN or infinite."""


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    test: dict[str, float] = field(default_factory=dict)

    def last(self, key: str) -> float:
        return self.epochs[-1][key]

    def best(self, key: str, mode: str = "max") -> float:
        values = [e[key] for e in self.epochs if key in e]
        return max(values) if mode == "max" else min(values)


class Trainer:
    def __init__(
        self,
        model: Model,
        loss: Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]],
        optimizer: Any,
        *,
        epochs: int,
        batch_size: int,
        seed: int = 0,
        scheduler: Any = None,
        scheduler_factory: Callable[[int], Any] | None = None,
        callbacks: Sequence[Callback] = (),
        max_shift: int = 0,
        eval_batch_size: int = 512,
        progress: bool | None = None,
        log: Callable[[str], None] | None = None,
    ):
        for key, value in (("trainer.epochs", epochs), ("trainer.batch_size", batch_size),
                           ("trainer.eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if max_shift < 0:
            raise ConfigError(f"trainer.augment.max_shift must be ≥ 0, got {max_shift}")
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.epochs, self.batch_size, self.eval_batch_size = epochs, batch_size, eval_batch_size
        self.scheduler = scheduler
        # The schedule needs steps per epoch, which is known only once data arrives.
        self.scheduler_factory = scheduler_factory
        self.callbacks = list(callbacks)
        self.max_shift = max_shift
        # tqdm's disable=None hides the bar when stderr is not a terminal (CI, sweeps, logs).
        self.progress = progress
        self.log = log or (lambda message: print(message, file=sys.stderr))
        shuffle_seq, augment_seq = np.random.SeedSequence([seed, 1]).spawn(2)
        self.shuffle_rng = np.random.default_rng(shuffle_seq)
        self.augment_rng = np.random.default_rng(augment_seq)
        self.history = History()
        self.stop_training = False
        self.epoch = 0

    # -- public ------------------------------------------------------------------------------
    def fit(self, data: DataSplits) -> History:
        x_train, y_train = data.train
        steps_per_epoch = math.ceil(len(x_train) / self.batch_size)
        if self.scheduler is None and self.scheduler_factory is not None:
            self.scheduler = self.scheduler_factory(steps_per_epoch)
        try:
            self._emit("on_fit_start")
            while self.epoch < self.epochs and not self.stop_training:
                self.epoch += 1
                started = time.perf_counter()
                metrics = self._train_epoch(x_train, y_train)
                if data.val is not None and len(data.val[0]):
                    metrics.update(self._evaluate(data.val).prefixed("val"))
                metrics["epoch_seconds"] = time.perf_counter() - started
                self.history.epochs.append(metrics)
                self._emit("on_epoch_end", self.epoch, metrics)
            if data.test is not None and len(data.test[0]):
                self.history.test = self._evaluate(data.test).prefixed("test")
            self._emit("on_fit_end", self.history.test)
        except BaseException as error:
            for callback in self.callbacks:
                callback.on_fit_error(self, error)
            raise
        return self.history

    def objective(self, monitor: str = "val_acc") -> float:
        """The figure a sweeper optimises: the best epoch's ``monitor`` (falls back to train)."""
        if not self.history.epochs:
            return float("nan")
        key = monitor if monitor in self.history.epochs[-1] else monitor.replace("val_", "train_")
        mode = "max" if key.endswith("acc") else "min"
        return self.history.best(key, mode)

    # -- internals ---------------------------------------------------------------------------
    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _train_epoch(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        self.model.train()
        order = self.shuffle_rng.permutation(len(x))
        loss_sum = 0.0
        correct = 0
        batches = range(0, len(x), self.batch_size)
        bar = tqdm(batches, desc=f"epoch {self.epoch}/{self.epochs}", leave=False,
                   disable=None if self.progress is None else not self.progress, file=sys.stderr)
        for batch_number, start in enumerate(bar, 1):
            index = order[start:start + self.batch_size]
            xb = random_shift(x[index], self.max_shift, self.augment_rng)
            yb = y[index]
            outputs = self.model.forward(xb, training=True)
            loss_value, grad = self.loss(outputs, yb)
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"loss became {loss_value} at epoch {self.epoch}, batch {batch_number}; "
                    "lower optimizer.lr or check the data for extreme values"
                )
            self.model.backward(grad, input_grad=False)
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            loss_sum += loss_value * len(index)
            correct += int(np.count_nonzero(predicted_labels(outputs, self.loss) == yb))
            if batch_number % 5 == 0:
                bar.set_postfix(loss=f"{loss_sum / (start + len(index)):.4f}", refresh=False)
        bar.close()
        return {
            "train_loss": loss_sum / len(x),
            "train_acc": correct / len(x),
            "lr": float(self.optimizer.lr),
        }

    def _evaluate(self, split: tuple[np.ndarray, np.ndarray]) -> Evaluation:
        return evaluate(self.model, self.loss, split[0], split[1], self.eval_batch_size)
