"""The trained network as an MLflow model (``python_function`` flavour), no pickle involved.

The flavour is the loader-module kind: MLflow copies a plain directory (the
``cnnx.inference.Classifier`` files: JSON description + weights ``.npz``) into the model and,
at load time, calls ``_load_pyfunc`` below on it. So
``mlflow.pyfunc.load_model("runs:/<id>/model").predict(images)`` and ``mlflow models serve``
need cnnx (and the plugins that provide its layers) and nothing of the run's training code or
config. The requirements are written explicitly: MLflow's inference of them imports the model
in a subprocess and costs seconds per run. cnnx and plugins installed from a checkout travel
inside the model as wheels (``cnnx.tracking.local_wheels``), so the environments MLflow builds
for it can install them.
"""

from __future__ import annotations

import contextlib
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnx.errors import CnnxError, flat_message
from cnnx.inference import Classifier

#: The logged model's name: ``runs:/<id>/model`` finds it through its run.
ARTIFACT_PATH = "model"
DATA_DIR = "cnnx_model"


class PyfuncClassifier:
    """What ``mlflow.pyfunc`` calls: images (N, C, H, W) → class probabilities (N, K)."""

    def __init__(self, classifier: Classifier):
        self.classifier = classifier

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        """Images that pass MLflow's signature check but not cnnx's (NaN or infinite pixels)
        are refused with cnnx's one-line reason as an ``INVALID_PARAMETER_VALUE``, which
        ``mlflow models serve`` answers with HTTP 400 and that message, rather than with
        "an unexpected error" and a stack trace."""
        try:
            return self.classifier.predict_proba(model_input)
        except CnnxError as error:
            from mlflow.exceptions import MlflowException

            raise MlflowException.invalid_parameter_value(flat_message(error)) from error


def _load_pyfunc(data_path: str) -> PyfuncClassifier:
    return PyfuncClassifier(Classifier.load(data_path))


def requirements(classifier: Classifier, folder: Path) -> list[str]:
    """cnnx, NumPy and the distribution of every plugin layer in the model: without them the
    model's spec names layer types that a fresh environment cannot build. A distribution
    installed from a local checkout is packed into a wheel in ``folder`` (the model's) and
    named by its path there (``cnnx.tracking.local_wheels``); the others are pinned."""
    from cnnx import registry
    from cnnx.tracking.local_wheels import requirement_for

    plugins = {component.distribution for component in (
        registry.layers.component(layer.type_name) for _, layer in classifier.model.named_layers()
        if layer.type_name is not None) if registry.normalise_distribution(component.distribution) != "cnnx"}
    return [requirement_for("cnnx", folder), f"numpy=={np.__version__}",
            *(requirement_for(dist, folder) for dist in sorted(plugins))]


def signature(classifier: Classifier):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    c, h, w = classifier.input_shape
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, c, h, w))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(classifier.classes)))]),
    )


def save_mlflow_model(classifier: Classifier, path: str | Path, input_example: np.ndarray,
                      logged_model: Any = None) -> Path:
    """Write an MLflow model directory at ``path`` (which must not exist yet); its MLmodel
    names ``logged_model`` (an MLflow ``LoggedModel``) and its run when given.

    Written directly with MLflow's public ``Model``/``add_to_model`` rather than
    ``mlflow.pyfunc.save_model``, which checks the requirements against every installed
    distribution's file list (about a second per run) although they are this environment's own.
    """
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import Model

    path = Path(path)
    path.mkdir(parents=True)
    classifier.save(path / "data" / DATA_DIR)
    pip = [f"mlflow=={mlflow.__version__}", *requirements(classifier, path)]
    python = platform.python_version()
    (path / "requirements.txt").write_text("\n".join(pip) + "\n")
    (path / "python_env.yaml").write_text(
        f"python: {python}\nbuild_dependencies:\n- pip\n- setuptools\n- wheel\n"
        "dependencies:\n- -r requirements.txt\n")
    (path / "conda.yaml").write_text(
        f"channels:\n- conda-forge\ndependencies:\n- python={python}\n- pip\n- pip:\n"
        + "".join(f"  - {requirement}\n" for requirement in pip) + "name: mlflow-env\n")
    example = np.asarray(input_example, dtype=np.float32).tolist()
    (path / "input_example.json").write_text(json.dumps(example))
    (path / "serving_input_example.json").write_text(json.dumps({"inputs": example}, indent=2))
    metadata = {"cnnx_classes": classifier.classes}
    if classifier.preparation is not None:  # how to turn an image file into the model's input
        metadata["cnnx_preparation"] = classifier.preparation
    identity = {} if logged_model is None else {
        "model_id": logged_model.model_id, "model_uuid": logged_model.model_id,
        "run_id": logged_model.source_run_id, "artifact_path": logged_model.artifact_location}
    model = Model(signature=signature(classifier), metadata=metadata, **identity)
    model.saved_input_example_info = {"artifact_path": "input_example.json", "type": "ndarray",
                                      "serving_input_path": "serving_input_example.json"}
    mlflow.pyfunc.add_to_model(model, loader_module=__name__, data=f"data/{DATA_DIR}",
                               conda_env="conda.yaml", python_env="python_env.yaml")
    model.save(str(path / "MLmodel"))
    return path


def log_mlflow_model(client, run_id: str, classifier: Classifier, input_example: np.ndarray,
                     step: int = 0, weights_epoch: int | None = None) -> str | None:
    """Log the model as the run's MLflow logged model ``model``, an output of the run at
    ``step``; returns its id.

    As ``mlflow.pyfunc.log_model`` would: the experiment's Models tab lists it with the run's
    params and metrics (``_link_metrics``: those of ``weights_epoch``, the epoch whose weights it
    holds, by default ``step``), the run page names it among its outputs, and ``runs:/<run_id>/model``, ``models:/<model_id>`` and
    the model registry all find it. A model whose upload fails is marked FAILED, not left
    pending. MLflow 2, as the client or the tracking server, has no logged models: there the
    model goes into the run's artifacts as ``model/`` (found as ``runs:/<run_id>/model`` too)
    and None is returned.
    """
    from mlflow.exceptions import MlflowException

    if not hasattr(client, "create_logged_model"):  # an MLflow 2 client
        _log_as_run_artifacts(client, run_id, classifier, input_example)
        return None
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    # Here, not at the top: loading a model (this module is its loader) must not import the
    # training code that sweep_summary's imports bring.
    from cnnx.tracking.sweep_summary import resumed_with

    run = client.get_run(run_id)
    # The settings this model was trained with: a resumed run's changes, which its params,
    # fixed at their first values, do not show (trainer.epochs raised, say).
    params = {**run.data.params, **resumed_with(run)}
    try:
        logged = client.create_logged_model(run.info.experiment_id, name=ARTIFACT_PATH, source_run_id=run_id,
                                            params=params)
    except MlflowException as error:
        if error.error_code != "ENDPOINT_NOT_FOUND":  # what an MLflow 2 server answers
            raise
        _log_as_run_artifacts(client, run_id, classifier, input_example)
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = save_mlflow_model(classifier, Path(tmp) / ARTIFACT_PATH, input_example, logged)
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        # Left listed, the newest model of the run would be one without files: runs:/<id>/model
        # takes the newest, and an earlier, complete model of the run would no longer load.
        with contextlib.suppress(Exception):  # the upload's own error is the one to report
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            client.delete_logged_model(logged.model_id)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=step)])
    _link_metrics(client, run_id, run.data.metrics, logged.model_id, step,
                  step if weights_epoch is None else weights_epoch)
    return logged.model_id


def _log_as_run_artifacts(client, run_id: str, classifier: Classifier, input_example: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = save_mlflow_model(classifier, Path(tmp) / ARTIFACT_PATH, input_example)
        client.log_artifacts(run_id, str(local), ARTIFACT_PATH)


def _link_metrics(client, run_id: str, keys: Any, model_id: str, step: int, weights_epoch: int) -> None:
    """Attach the run's metrics to the model, as ``mlflow.pyfunc.log_model`` does: each key's
    value at ``weights_epoch`` (a best epoch whose weights early stopping restored), or, for
    what only the end logs (the test split's), at ``step``. They are sent again with the
    model's id and their own timestamps, which a database store keeps as the same rows of the
    run's history (a folder store lists them twice)."""
    from mlflow.entities import Metric

    linked = []
    for key in keys:
        history = {m.step: m for m in client.get_metric_history(run_id, key) if m.model_id is None}
        m = history.get(weights_epoch) or history.get(step)
        if m is not None:
            linked.append(Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id, run_id=run_id))
    if linked:
        client.log_batch(run_id, metrics=linked)
