from __future__ import annotations

from typing import TYPE_CHECKING

from cnnx.training.callbacks import Callback

if TYPE_CHECKING:
    from cnnx.training.trainer import Trainer


class ConsoleLogger(Callback):
    """One line per epoch, so logs of sweeps and CI runs show progress without a bar."""

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.data is not None:
            trainer.log(trainer.data.describe())
        trainer.log(trainer.model.summary())

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        shown = " ".join(
            f"{k}={v:.4g}" if k != "epoch_seconds" else f"{v:.2f}s"
            for k, v in metrics.items()
        )
        trainer.log(f"epoch {epoch:>3}/{trainer.epochs} {shown}")

    def on_test_end(self, trainer: Trainer, test_metrics: dict[str, float]) -> None:
        # Not at the fit's end: the tracker's report (plots, the model) takes seconds there.
        if test_metrics:
            trainer.log("test " + " ".join(f"{k}={v:.4f}" for k, v in test_metrics.items()))
