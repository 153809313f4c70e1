"""The training loop: seeded mini-batches, per-epoch train/val metrics, test metrics, callbacks."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cnnx.cli import warn
from cnnx.data.splits import DataSplits
from cnnx.engine.model import Model
from cnnx.errors import ConfigError, flat_message
from cnnx.training.augment import black_border, random_shift
from cnnx.training.callbacks import Callback
from cnnx.training.divergence import TrainingDiverged, UpdateGuard
from cnnx.training.metrics import Evaluation, evaluate, predicted_labels
from cnnx.training.objective import objective_key, running_best
from cnnx.training.signals import InterruptFlag, TrainingInterrupted

__all__ = ["EpochProgress", "History", "Trainer", "TrainingDiverged", "TrainingInterrupted"]

#: Test hook: seconds to sleep after every batch, so tests can signal or kill a run mid-epoch.
BATCH_DELAY_ENV = "CNNX_TEST_BATCH_DELAY"
#: Epoch metrics a run can be judged by (best checkpoint, sweep objective, early stopping);
#: without a validation split a val_ metric falls back to its train_ twin.
MONITORABLE = ("val_acc", "val_loss", "train_acc", "train_loss")
#: Float warnings silenced while training and evaluating: a diverging model overflows long
#: before its loss is NaN, and the update guard names the batch where that matters.
_QUIET_FLOATS = {"over": "ignore", "invalid": "ignore", "divide": "ignore"}


@dataclass
class EpochProgress:
    """How far the current epoch got: enough to continue it exactly after an interruption."""

    order: np.ndarray
    batches_done: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    skipped: int = 0


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    test: dict[str, float] = field(default_factory=dict)

    def last(self, key: str) -> float:
        return self.epochs[-1][key]


#: The trainer's settings that count something (``check_count``).
COUNTS = ("trainer.epochs", "trainer.batch_size", "trainer.eval_batch_size")


def check_count(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")


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
        eval_batch_size: int = 64,
        progress: bool | None = None,
        log: Callable[[str], None] | None = None,
        update_guard: UpdateGuard | None = None,
    ):
        for key, value in zip(COUNTS, (epochs, batch_size, eval_batch_size)):
            check_count(key, value)
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
        # Lines on stdout, as Keras's fit prints them; the CLI passes a logger instead.
        self.log = log or print
        shuffle_seq, augment_seq = np.random.SeedSequence([seed, 1]).spawn(2)
        self.shuffle_rng = np.random.default_rng(shuffle_seq)
        self.augment_rng = np.random.default_rng(augment_seq)
        self.history = History()
        self.stop_training = False
        self.epoch = 0
        self.guard = update_guard or UpdateGuard()
        #: The unfinished epoch, when training stopped (or resumes) in the middle of one.
        self.progress_state: EpochProgress | None = None
        self.interrupts = InterruptFlag()
        self._batch_delay = float(os.environ.get(BATCH_DELAY_ENV) or 0.0)
        # For callbacks that explain the run at its end (plots, a logged model).
        self.data: DataSplits | None = None
        self.test_evaluation: Evaluation | None = None
        #: How early stopping ended the run, when it did (``EarlyStopping.on_train_end``): which
        #: epoch it stopped after, the best epoch, whether the model has that epoch's weights.
        self.early_stop: dict[str, int | bool] | None = None

    # -- public ------------------------------------------------------------------------------
    def fit(self, data: DataSplits) -> History:
        self.data = data
        x_train, y_train = data.train
        image_hw = x_train.shape[2:]
        if self.max_shift and self.max_shift >= min(image_hw, default=0):  # before any callback starts a run
            raise ConfigError(f"trainer.augment.max_shift={self.max_shift} can move {'×'.join(map(str, image_hw))} "
                              f"images out of the frame; accepted: 0 <= max_shift < {min(image_hw)}")
        self._border = black_border(data.normalization)
        steps_per_epoch = math.ceil(len(x_train) / self.batch_size)
        if self.scheduler is None and self.scheduler_factory is not None:
            self.scheduler = self.scheduler_factory(steps_per_epoch)
        else:
            self._check_scheduler_steps(steps_per_epoch)
        # Under the handlers from the run's start to its cleanup: a signal while a callback starts
        # or ends the run (a SLURM job's SIGUSR2 or a repeated SIGTERM) stops it as one in training
        # would, instead of leaving its MLflow run RUNNING or FAILED with submitit's SystemExit.
        with self.interrupts:
            try:
                self._emit("on_signals_handled")
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
                    self._check_interrupt(batch=0)
                self._emit("on_train_end")
                # Still under the handlers: a SIGTERM here would otherwise kill the process
                # halfway through logging the report and leave the MLflow run RUNNING. Only a
                # second Ctrl-C cuts the end short; the first lets the run finish.
                if data.test is not None and len(data.test[0]):
                    self.test_evaluation = self._evaluate(data.test)
                    self.history.test = self.test_evaluation.prefixed("test")
                self._emit("on_test_end", self.history.test)
                self._emit("on_fit_end", self.history.test)
                if self.interrupts.requested:
                    self.log(f"{self.interrupts.signal_name} received while the run was finishing; "
                             f"it finished first (nothing to resume)")
            except BaseException as error:
                for callback in self.callbacks:
                    try:
                        callback.on_fit_error(self, error)
                    except Exception as failure:  # noqa: BLE001 — reported, and the error that stopped training wins
                        # The callbacks after it still clean up: the tracker ends its MLflow run, which
                        # would otherwise be left RUNNING.
                        warn(f"{type(callback).__name__} could not handle the error that stopped training: "
                             f"{type(failure).__name__}: {flat_message(failure)}")
                raise
        return self.history

    @property
    def finished_training(self) -> bool:
        """Nothing left to train: every epoch done, or stopped early (a resumed finished run)."""
        return self.progress_state is None and (self.epoch >= self.epochs or self.stop_training)

    def objective_key(self, monitor: str = "val_acc") -> str:
        """``monitor``, or its train twin when the run has no validation split."""
        return objective_key(self.history.epochs, monitor)

    def objective(self, monitor: str = "val_acc") -> float:
        """The figure a sweeper optimises: the best epoch's ``monitor`` (falls back to train);
        NaN before any epoch has one."""
        best = (running_best(self.history.epochs, monitor) or [{}])[-1]
        return next(iter(best.values()), float("nan"))

    # -- internals ---------------------------------------------------------------------------
    def _check_scheduler_steps(self, steps_per_epoch: int) -> None:
        """A schedule counting other steps than this loop's batches would end early or late,
        silently: built as in PyTorch, ``CosineLR(optimizer, epochs)`` counts each step() as an
        epoch, and stepped after every batch it reached lr 0 within the first epoch."""
        counted = getattr(self.scheduler, "steps_per_epoch", None)
        if isinstance(counted, int) and counted != steps_per_epoch:
            name = type(self.scheduler).__name__
            raise ConfigError(
                f"Trainer: the scheduler counts {counted} step(s) per epoch, but the trainer steps it after each "
                f"of the {steps_per_epoch} batches of an epoch; build it with steps_per_epoch={steps_per_epoch}, "
                f"or pass scheduler_factory=lambda steps: {name}(optimizer, epochs, steps) to let the trainer say"
            )

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _check_interrupt(self, batch: int) -> None:
        if self.interrupts.requested:
            raise TrainingInterrupted(self.interrupts.signal_name, self.epoch, batch)

    def _train_epoch(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        if not self.model.training:
            # A model handed over after model.eval() trains in training mode, as under Lightning;
            # a layer put in eval inside a training model (a frozen batchnorm) stays frozen, as
            # Lightning (2.2 on) keeps each submodule's mode.
            self.model.train()
        # An epoch reports the lr of its first step, as Lightning's epoch-level lr monitor does:
        # the lr after its last step belongs to the next epoch (a step schedule's epoch 10 would
        # show the decayed lr it never trained with, a cosine's last epoch 0). The schedule is
        # asked rather than the optimizer so that an epoch resumed halfway reports the same.
        first_step_lr = self.scheduler.lr_at(self.epoch - 1) if self.scheduler is not None else self.optimizer.lr
        if self.progress_state is None:
            self.progress_state = EpochProgress(order=self.shuffle_rng.permutation(len(x)))
        progress = self.progress_state
        params = dict(self.model.named_parameters())
        batch_count = math.ceil(len(x) / self.batch_size)
        bar = tqdm(total=batch_count, initial=progress.batches_done,
                   desc=f"epoch {self.epoch}/{self.epochs}", leave=False,
                   disable=None if self.progress is None else not self.progress, file=sys.stderr)
        with np.errstate(**_QUIET_FLOATS):
            self._train_batches(x, y, progress, batch_count, bar, params)
        bar.close()
        if progress.skipped and not progress.seen:
            raise TrainingDiverged(
                f"every batch of epoch {self.epoch} was skipped (non-finite loss or gradient): the model "
                "has stopped learning; lower optimizer.lr or set trainer.grad_clip_norm"
            )
        if progress.skipped > 1:
            self.log(f"skipped {progress.skipped} of {batch_count} batches in epoch {self.epoch}")
        self.progress_state = None
        seen = progress.seen or 1
        metrics = {
            "train_loss": progress.loss_sum / seen if progress.seen else float("nan"),
            "train_acc": progress.correct / seen,
            "lr": float(first_step_lr),
        }
        if self.guard.on_nonfinite == "skip_batch":
            metrics["skipped_batches"] = float(progress.skipped)
        return metrics

    def _train_batches(self, x: np.ndarray, y: np.ndarray, progress: EpochProgress, batch_count: int, bar,
                       params: dict) -> None:
        for batch_number in range(progress.batches_done + 1, batch_count + 1):
            start = (batch_number - 1) * self.batch_size
            index = progress.order[start:start + self.batch_size]
            xb = random_shift(x[index], self.max_shift, self.augment_rng, self._border)
            yb = y[index]
            outputs = self.model.forward(xb, training=None)  # each layer in its own mode
            loss_value, grad = self.loss(outputs, yb)
            applied = self.guard.loss_ok(loss_value, self.epoch, batch_number)
            if applied:
                self.model.backward(grad, input_grad=False)
                applied = self.guard.gradients_ok(params, self.epoch, batch_number)
            if applied:
                self.optimizer.step()
                progress.loss_sum += loss_value * len(index)
                progress.correct += int(np.count_nonzero(predicted_labels(outputs, self.loss) == yb))
                progress.seen += len(index)
            else:
                progress.skipped += 1
                if progress.skipped == 1:  # the rest are counted in the epoch's summary line
                    self.log(f"skipped epoch {self.epoch}, batch {batch_number}: non-finite loss or gradient")
            # The schedule is defined in epochs, so it advances whether or not the batch counted.
            if self.scheduler is not None:
                self.scheduler.step()
            progress.batches_done = batch_number
            bar.update()
            if batch_number % 5 == 0 and progress.seen:
                bar.set_postfix(loss=f"{progress.loss_sum / progress.seen:.4f}", refresh=False)
            if self._batch_delay:
                time.sleep(self._batch_delay)
            self._check_interrupt(batch_number)

    def _evaluate(self, split: tuple[np.ndarray, np.ndarray]) -> Evaluation:
        with np.errstate(**_QUIET_FLOATS):  # after skipped batches the weights may be huge
            return evaluate(self.model, self.loss, split[0], split[1], self.eval_batch_size)
