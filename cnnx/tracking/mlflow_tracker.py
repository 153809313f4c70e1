"""MLflow tracking as a trainer callback: run lifecycle, params, metrics, images, artifacts."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnx.errors import CnnxError
from cnnx.tracking.images import kernel_grid
from cnnx.training.callbacks import Callback

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from cnnx.training.trainer import Trainer

#: MLflow's own default, spelled out so runs land in ./mlflow.db whatever MLflow's version.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_LENGTH = 6000


class TrackingError(CnnxError):
    """The MLflow store cannot be reached or written."""


def resolve_tracking_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` → ``{"a.b": "1"}``: nested config keys as MLflow param names."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)[:_MAX_PARAM_LENGTH]
    return flat


class MlflowTracker(Callback):
    def __init__(
        self,
        *,
        experiment_name: str,
        config: Mapping[str, Any],
        config_yaml: str,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: Mapping[str, str] | None = None,
        log_kernels: bool = True,
        log_weights: bool = True,
        parent_run_id: str | None = None,
    ):
        self.experiment_name = experiment_name
        self.config = config
        self.config_yaml = config_yaml
        self.run_name = run_name
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.tags = dict(tags or {})
        if parent_run_id:
            # Explicit, not mlflow's active run: a sweep's jobs run in other processes.
            self.tags["mlflow.parentRunId"] = parent_run_id
        self.log_kernels = log_kernels
        self.log_weights = log_weights
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self._kernel_layer: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(self.tracking_uri)
        try:
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else self.client.create_experiment(self.experiment_name))
        except Exception as exc:  # any store failure, before any training happens
            raise TrackingError(
                f"cannot use MLflow store {self.tracking_uri!r} (tracking.uri): {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=self.tags)
        self.run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten(self.config).items()]
        for i in range(0, len(params), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + _MAX_PARAMS_PER_BATCH])
        self.client.log_text(self.run_id, self.config_yaml, "config.yaml")
        self.client.log_text(self.run_id, trainer.model.summary(), "model_summary.txt")
        self._kernel_layer = first_conv_layer(trainer.model)
        if self._kernel_layer is not None:
            self._log_kernels(trainer, step=0)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        batch = [Metric(k, float(v), timestamp, epoch) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)
        self._log_kernels(trainer, step=epoch)

    def on_fit_end(self, trainer: Trainer, test_metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        final = [Metric(k, float(v), timestamp, trainer.epoch) for k, v in test_metrics.items()]
        if final:
            self.client.log_batch(self.run_id, metrics=final)
        if self.log_weights:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "weights.npz"
                np.savez(path, **trainer.model.state_dict())
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")

    def on_fit_error(self, trainer: Trainer, error: BaseException) -> None:
        if self.client is None or self.run_id is None:
            return
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        try:
            message = f"{type(error).__name__}: {error}"[:_MAX_PARAM_LENGTH]
            self.client.set_tag(self.run_id, "error", message)
            self.client.set_terminated(self.run_id, status)
        except Exception:  # the original error matters more than a failed status update
            pass

    # -- images ----------------------------------------------------------------------------
    def _log_kernels(self, trainer: Trainer, step: int) -> None:
        if not self.log_kernels or self._kernel_layer is None:
            return
        weight = dict(trainer.model.named_parameters())[f"{self._kernel_layer}.weight"].data
        # synchronous: async image logging adds about a second at the end of every run.
        self.client.log_image(self.run_id, kernel_grid(weight), key=f"kernels/{self._kernel_layer}",
                              step=step, synchronous=True)


def first_conv_layer(model) -> str | None:
    for name, layer in model.named_layers():
        weight = layer.params.get("weight")
        if weight is not None and weight.data.ndim == 4:
            return name
    return None
