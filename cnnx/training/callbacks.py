"""Trainer hooks. The trainer knows nothing of MLflow: tracking is one of these callbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnx.training.trainer import Trainer


class Callback:
    #: Where a checkpoint keeps this callback's ``state_dict``; None: under its class name.
    #: Callbacks that stand for one another (the in-process and the background MLflow
    #: tracker) share a key, so a run resumed with either finds the state the other saved.
    state_key: str | None = None
    #: Keys older checkpoints kept this state under, still read when resuming them.
    former_state_keys: tuple[str, ...] = ()

    def on_signals_handled(self, trainer: Trainer) -> None:
        """The trainer's signal handlers are in place, before any ``on_fit_start``: from here a
        SIGINT, SIGTERM or SIGHUP stops the run at a batch boundary (``on_fit_error``)."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Everything is built and the first epoch is about to start."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        """``epoch`` counts from 1; ``metrics`` holds that epoch's train/val figures."""

    def on_train_end(self, trainer: Trainer) -> None:
        """The last epoch is over (every epoch done, or stopped early); the test split is
        evaluated after this, with the weights the callbacks leave here."""

    def on_test_end(self, trainer: Trainer, test_metrics: dict[str, float]) -> None:
        """The test split is evaluated (``test_metrics`` is empty without one); the run's report
        (``on_fit_end``) comes next."""

    def on_fit_end(self, trainer: Trainer, test_metrics: dict[str, float]) -> None:
        """Training finished normally; ``test_metrics`` is empty without a test split."""

    def on_fit_error(self, trainer: Trainer, error: BaseException) -> None:
        """Training stopped by an exception (``KeyboardInterrupt`` included); it is re-raised."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
