"""The servable model as an MLflow logged model, in a real sqlite store: registered, loaded
from another store than the default one, logged again by a run trained longer, and what
happens when the store cannot take it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from e2e_helpers import run_cli
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ENDPOINT_NOT_FOUND

from cnnx import build_model
from cnnx.inference import Classifier
from cnnx.predict import main as predict_main
from cnnx.tracking.pyfunc_model import log_mlflow_model

SPEC = {
    "conv1": {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1},
    "relu1": {"type": "relu"},
    "flatten": {"type": "flatten"},
    "fc": {"type": "dense", "out_features": 4},
}
SHAPE = (1, 5, 5)


@pytest.fixture
def store(tmp_path):
    """A sqlite store in its own folder (not the working directory's default ``mlflow.db``)."""
    folder = tmp_path / "store"
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("models", artifact_location=(folder / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.log_param(run_id, "optimizer.lr", "0.1")
    client.log_metric(run_id, "val_acc", 0.5, step=1)
    client.log_metric(run_id, "val_acc", 0.75, step=2)
    client.log_metric(run_id, "test_acc", 0.7, step=2)
    return uri, client, run_id


def classifier() -> Classifier:
    model = build_model(SPEC, SHAPE, seed=1)
    model.eval()
    return Classifier(model, SPEC, {"mode": "standard", "shift": [0.0], "scale": [1.0]}, ["a", "b", "c", "d"], "logits")


def images() -> np.ndarray:
    return np.random.default_rng(0).random((3, *SHAPE), dtype=np.float32)


def test_the_model_is_logged_with_the_runs_params_and_its_last_metrics(store):
    uri, client, run_id = store
    model_id = log_mlflow_model(client, run_id, classifier(), images()[:1], step=2)
    logged = client.get_logged_model(model_id)
    assert (logged.name, logged.source_run_id, logged.status.name) == ("model", run_id, "READY")
    assert logged.params == {"optimizer.lr": "0.1"}
    assert sorted((m.key, m.value, m.step) for m in logged.metrics) == [("test_acc", 0.7, 2), ("val_acc", 0.75, 2)]
    assert [m.value for m in client.get_metric_history(run_id, "val_acc")] == [0.5, 0.75]


def test_a_model_of_a_run_resumed_with_other_settings_carries_those_settings(store):
    """Its params were the run's, fixed at their first values: a model trained for 5 epochs
    said 3 in the Models tab."""
    uri, client, run_id = store
    client.log_param(run_id, "trainer.epochs", "3")
    client.set_tag(run_id, "cnnx.resumed_with.trainer.epochs", "5")
    logged = client.get_logged_model(log_mlflow_model(client, run_id, classifier(), images()[:1], step=2))
    assert logged.params == {"optimizer.lr": "0.1", "trainer.epochs": "5"}


def test_predict_finds_a_registered_version_in_the_store_it_is_given(store, tmp_path, monkeypatch, capsys):
    """MLflow looks models:/ URIs up in the default store (./mlflow.db), whatever store it is
    given: ``cnnx predict --model models:/<name>/1 --tracking-uri ...`` found no model."""
    uri, client, run_id = store
    model_id = log_mlflow_model(client, run_id, classifier(), images()[:1], step=2)
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(uri):  # as users register, with MLFLOW_TRACKING_URI set
        mlflow.register_model(f"runs:/{run_id}/model", "digits")
    np.savez(tmp_path / "three.npz", x=images())
    monkeypatch.chdir(tmp_path)  # whose mlflow.db is not the store
    expected = classifier().predict_proba(images()).argmax(axis=1)
    for source in (["--model", "models:/digits/1"], ["--model", f"models:/{model_id}"], ["--run", run_id]):
        assert predict_main([*source, "--tracking-uri", uri, str(tmp_path / "three.npz")]) == 0, source
        rows = capsys.readouterr().out.splitlines()[1:]
        assert [row.split()[1] for row in rows] == [["a", "b", "c", "d"][i] for i in expected], source
    assert not (tmp_path / "mlflow.db").exists()


class _Mlflow2Server(MlflowClient):
    """What an MLflow 2 tracking server answers to the logged-model endpoints: HTTP 404."""

    def create_logged_model(self, *args, **kwargs):
        raise MlflowException("API request to endpoint /api/2.0/mlflow/logged-models failed with error code "
                              "404 != 200", error_code=ENDPOINT_NOT_FOUND)


def test_an_mlflow_2_server_gets_the_model_as_run_artifacts(store, tmp_path, monkeypatch):
    uri, _, run_id = store
    client = _Mlflow2Server(uri)
    assert log_mlflow_model(client, run_id, classifier(), images()[:1], step=2) is None
    assert {"MLmodel", "data"} <= {item.path.split("/")[-1] for item in client.list_artifacts(run_id, "model")}
    monkeypatch.chdir(tmp_path)
    assert predict_main(["--run", run_id, "--tracking-uri", uri, str(_saved(tmp_path))]) == 0


class _UploadFails(MlflowClient):
    def log_model_artifacts(self, *args, **kwargs):
        raise OSError(28, "No space left on device")


def test_a_model_whose_upload_fails_leaves_the_runs_earlier_model_the_one_that_loads(store, tmp_path, monkeypatch):
    """The failed model was the run's newest output, named best by a sweep, and what
    runs:/<id>/model found: a model without files, where an earlier one was complete."""
    uri, client, run_id = store
    earlier = log_mlflow_model(client, run_id, classifier(), images()[:1], step=1)
    with pytest.raises(OSError, match="No space left"):
        log_mlflow_model(_UploadFails(uri), run_id, classifier(), images()[:1], step=2)
    experiment = client.get_run(run_id).info.experiment_id
    assert [(m.model_id, m.status.name) for m in client.search_logged_models([experiment])] == [(earlier, "READY")]
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [earlier]
    monkeypatch.chdir(tmp_path)
    assert predict_main(["--run", run_id, "--tracking-uri", uri, str(_saved(tmp_path))]) == 0


def _saved(folder: Path) -> Path:
    path = folder / "three.npz"
    np.savez(path, x=images())
    return path


@pytest.mark.slow
def test_a_finished_run_trained_longer_logs_a_second_model_and_runs_uri_loads_it(tmp_path, capsys):
    """Its first model stays listed, at its own step; ``runs:/<id>/model`` (and so
    ``cnnx predict --run``) must load the longer-trained one, as the run's ``model/`` folder,
    overwritten, used to give."""
    common = ["+experiment=digits_small", "hydra.run.dir=run", "tracking.log_plots=false"]
    assert run_cli([*common, "trainer.epochs=1"], tmp_path).returncode == 0
    result = run_cli([*common, "trainer.epochs=2", "trainer.resume=true"], tmp_path)
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    outputs = sorted((o.step, o.model_id) for o in run.outputs.model_outputs)
    assert [step for step, _ in outputs] == [1, 2]
    from mlflow.pyfunc import load_model
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        assert load_model(f"runs:/{run.info.run_id}/model").metadata.model_id == outputs[-1][1]


def test_a_model_whose_plugin_is_not_installed_names_the_distribution_to_install(tmp_path):
    """It said only "unknown layer type …": the model's requirements.txt knows which plugin."""
    import json

    from cnnx.errors import UnknownComponentError
    from cnnx.tracking.pyfunc_model import save_mlflow_model

    folder = save_mlflow_model(classifier(), tmp_path / "model", images()[:1])
    description = folder / "data" / "cnnx_model" / "cnnx_model.json"
    spec = json.loads(description.read_text())
    spec["layers"]["relu1"]["type"] = "swish"
    description.write_text(json.dumps(spec))
    requirements = folder / "requirements.txt"
    listed = requirements.read_text()
    for plugin in ("my-cnnx-swish==0.1.0", "cnnx-swish==0.1.0"):  # named like cnnx, not cnnx
        requirements.write_text(listed + plugin + "\n")
        with pytest.raises(UnknownComponentError, match=rf"unknown layer type 'swish'.*; this model was logged with "
                                                        rf"{re.escape(plugin)} \(its requirements\.txt\): pip install them$"):
            Classifier.load(folder / "data" / "cnnx_model")
    # A plugin installed from its checkout travels in the model as a wheel: its path is given.
    requirements.write_text(listed + "wheels/0123456789abcdef/cnnx_swish-0.1.0-py3-none-any.whl\n")
    wheel = folder / "wheels" / "0123456789abcdef" / "cnnx_swish-0.1.0-py3-none-any.whl"
    with pytest.raises(UnknownComponentError, match=rf"; this model was logged with {re.escape(str(wheel))} "
                                                    r"\(its requirements\.txt\): pip install them$"):
        Classifier.load(folder / "data" / "cnnx_model")


@pytest.mark.slow
def test_the_model_installs_and_predicts_in_a_fresh_environment_from_its_own_requirements(installed_plugins, tmp_path):
    """What MLflow's virtualenv and uv environment managers do for `mlflow models serve`: a new
    environment, `pip install -r requirements.txt` run in the model's folder, then the model
    loaded there. cnnx and the plugin come from the wheels in the model, not from an index that
    has no such release (the pins it wrote before) nor from this checkout."""
    import subprocess
    import sys

    from cnnx.tracking.pyfunc_model import save_mlflow_model

    spec = {**SPEC, "conv1": {"type": "separable_conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1}}
    model = build_model(spec, SHAPE, seed=1)
    model.eval()
    served = Classifier(model, spec, {"mode": "standard", "shift": [0.5], "scale": [2.0]}, list("abcd"), "logits")
    folder = save_mlflow_model(served, tmp_path / "model", images()[:1])
    np.save(tmp_path / "images.npy", images())
    environment = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(environment)], check=True, timeout=300)
    python = str(environment / "bin" / "python")
    isolated = {"PATH": f"{environment / 'bin'}:/usr/bin:/bin", "HOME": str(Path.home())}
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              "-r", "requirements.txt"], cwd=folder, env=isolated, capture_output=True, text=True,
                             timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    probe = ("import sys, numpy as np, mlflow.pyfunc, cnnx, cnnx_contrib; "
             "print(cnnx.__file__.startswith(sys.prefix), cnnx_contrib.__file__.startswith(sys.prefix)); "
             "np.save('predicted.npy', mlflow.pyfunc.load_model('model').predict(np.load('images.npy')))")
    shown = subprocess.run([python, "-c", probe], cwd=tmp_path, env=isolated, capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert shown.stdout.split() == ["True", "True"]
    np.testing.assert_allclose(np.load(tmp_path / "predicted.npy"), served.predict_proba(images()), rtol=1e-6)
