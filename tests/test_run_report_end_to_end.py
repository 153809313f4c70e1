"""A finished lenet run, read back from its sqlite store: plots, kernels, feature maps, the model.

One short run (2 epochs) serves every test here; the logged model is loaded in fresh
processes (``mlflow.pyfunc``, ``cnnx predict``, ``mlflow models serve``) and must agree with
the trainer's own test-split predictions, which the run logs next to its plots.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from e2e_helpers import all_runs, list_artifacts, run_cli, store_client

import cnnx
from cnnx.data.digits import load_digits
from cnnx.predict import main as predict_main

pytestmark = pytest.mark.slow

EPOCHS = 2
PLOTS = ["plots/learning_curves.png", "plots/confusion_matrix.png",
         "plots/per_class_precision_recall.png", "plots/misclassified.png"]


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """``(store folder, run id, raw test images, trainer's test predictions)``."""
    folder = tmp_path_factory.mktemp("lenet")
    result = run_cli(["+experiment=lenet", f"trainer.epochs={EPOCHS}"], folder)
    assert result.returncode == 0, result.stderr
    (run,) = all_runs(folder)
    assert run.info.status == "FINISHED"
    client = store_client(folder)
    local = client.download_artifacts(run.info.run_id, "plots/test_predictions.npz", str(folder))
    with np.load(local) as logged:
        trainer_predictions = {k: logged[k] for k in logged.files}
    # The same split the run used (seed 0), in the pixel scale users feed the model.
    raw_test = load_digits(size=32, normalize="none", seed=0).test
    np.testing.assert_array_equal(raw_test[1], trainer_predictions["labels"])
    return folder, run.info.run_id, raw_test[0], trainer_predictions


def _image_size(client, run_id: str, path: str, folder: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(client.download_artifacts(run_id, path, str(folder / "check"))) as image:
        assert image.format == "PNG", path
        return image.size


def test_run_logs_every_plot_kernel_and_feature_map(lenet_run):
    folder, run_id, _, _ = lenet_run
    client = store_client(folder)
    artifacts = list_artifacts(client, run_id)
    for plot in PLOTS:
        assert plot in artifacts
        width, height = _image_size(client, run_id, plot, folder)
        assert width >= 300 and height >= 200, (plot, width, height)
    assert "plots/classification_report.txt" in artifacts

    images = [a for a in artifacts if a.startswith("images/") and a.endswith(".png")]

    def logged(key: str) -> list[str]:
        # MLflow files an image under its key with '/' escaped, then '+step+<n>+...'.
        return [a for a in images if a.split("/", 1)[1].split("+step+")[0].replace("~", "/") == key]

    # LeNet-5 has two conv layers: kernels and feature maps of both, at the last epoch.
    for layer in ("conv1", "conv2"):
        assert any(f"+step+{EPOCHS}+" in a for a in logged(f"kernels/{layer}")), layer
        assert any(f"+step+{EPOCHS}+" in a for a in logged(f"feature_maps/{layer}")), layer
    assert logged("feature_maps/input")
    # The first conv layer also at every epoch, from the initial weights on.
    assert {int(a.split("+step+")[1].split("+")[0]) for a in logged("kernels/conv1")} == set(range(EPOCHS + 1))
    # 5×5 kernels enlarged 7× (35 px, 1-pixel gaps), by nearest neighbour, not left to the UI
    # to blur: conv1 (6 outputs × 1 input: one row of 6), at every epoch, and conv2 (16 outputs × 6 inputs).
    assert {_image_size(client, run_id, path, folder) for path in logged("kernels/conv1")} == {(6 * 36 + 1, 36 + 1)}
    assert _image_size(client, run_id, logged("kernels/conv2")[0], folder) == (6 * 36 + 1, 16 * 36 + 1)
    # conv2's 10×10 maps of 4 images × 16 channels, enlarged 4× with 2-pixel gaps.
    width, height = _image_size(client, run_id, logged("feature_maps/conv2")[0], folder)
    assert (width, height) == (16 * 40 + 17 * 2, 4 * 40 + 5 * 2)

    assert not [a for a in artifacts if a.endswith((".pkl", ".pickle"))]


def model_files(run_id: str, folder: Path, path: str = "") -> list[str]:
    """The files of the run's logged model, found as users find them: ``runs:/<id>/model``."""
    from mlflow.artifacts import list_artifacts

    found = []
    with default_store(folder):
        items = list_artifacts(f"runs:/{run_id}/model/{path}".rstrip("/"))
    for item in items:
        found.extend(model_files(run_id, folder, item.path[len("model/"):]) if item.is_dir else [item.path])
    return found


def store_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def default_store(folder: Path):
    """The run's store as the process's default one, as for a user working in the folder or
    with MLFLOW_TRACKING_URI set: MLflow looks logged models up there, whatever store it is
    given (MLflow 3.17)."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    return _use_tracking_uri(store_uri(folder))


def test_the_model_is_an_mlflow_logged_model_of_the_run(lenet_run):
    """It was a folder of run artifacts: the experiment's Models tab stayed empty, and the
    registry could not tell which run a registered version came from."""
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    folder, run_id, _, _ = lenet_run
    client = store_client(folder)
    run = client.get_run(run_id)
    (logged,) = client.search_logged_models([run.info.experiment_id])
    assert (logged.name, logged.source_run_id, logged.status.name) == ("model", run_id, "READY")
    assert logged.params == run.data.params
    # Linked: the last epoch's metrics and the test split's, as the Models tab shows them.
    assert {(m.key, m.step) for m in logged.metrics} == {(key, EPOCHS) for key in run.data.metrics}
    assert {m.key: m.value for m in logged.metrics} == run.data.metrics
    # ... without a second row in the run's own history
    assert len(client.get_metric_history(run_id, "val_acc")) == EPOCHS
    assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [(logged.model_id, EPOCHS)]
    assert not [a for a in list_artifacts(client, run_id) if a.startswith("model/")]

    with default_store(folder):
        model = Model.load(download_artifacts(f"runs:/{run_id}/model/MLmodel", dst_path=str(folder / "check")))
    assert (model.model_id, model.run_id) == (logged.model_id, run_id)
    assert model.flavors["python_function"]["loader_module"] == "cnnx.tracking.pyfunc_model"
    assert model.signature.inputs.to_dict()[0]["tensor-spec"] == {"dtype": "float32", "shape": (-1, 1, 32, 32)}
    assert model.signature.outputs.to_dict()[0]["tensor-spec"] == {"dtype": "float32", "shape": (-1, 10)}
    files = model_files(run_id, folder)
    assert {"model/input_example.json", "model/serving_input_example.json", "model/requirements.txt",
            "model/data/cnnx_model/cnnx_model.json", "model/data/cnnx_model/weights.npz"} <= set(files), files
    assert not [a for a in files if a.endswith((".pkl", ".pickle"))]
    with default_store(folder):
        by_id = Path(download_artifacts(f"models:/{logged.model_id}", dst_path=str(folder / "by_id")))
    wheel = f"cnnx-{cnnx.__version__}-py3-none-any.whl"  # installed from the checkout: in the model
    (line,) = [r for r in (by_id / "requirements.txt").read_text().split() if r.endswith(wheel)]
    assert f"model/{line}" in files


FRESH_PROCESS = """
import sys, numpy as np, mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
with np.load(sys.argv[2]) as images:
    probabilities = model.predict(images["x"])
np.save(sys.argv[3], probabilities)
# Loading and predicting needs the engine only, not the training code or Hydra.
print(",".join(m for m in ("cnnx.training", "cnnx.app", "hydra", "sklearn") if m in sys.modules))
"""


def test_logged_model_predicts_like_the_trainer_in_a_fresh_process(lenet_run, tmp_path):
    folder, run_id, raw_test, trainer_predictions = lenet_run
    np.savez(tmp_path / "images.npz", x=raw_test)
    environment = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, f"runs:/{run_id}/model", str(tmp_path / "images.npz"),
         str(tmp_path / "probabilities.npy")],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
    probabilities = np.load(tmp_path / "probabilities.npy")
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(raw_test), 10)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), trainer_predictions["predicted"])
    np.testing.assert_allclose(probabilities, trainer_predictions["probabilities"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def readme_python_block(section: str) -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    text = text[text.index(f"## {section}"):]
    return text[text.index("```python\n") + len("```python\n"):text.index("```\n", text.index("```python\n") + 1)]


def test_the_readmes_python_example_predicts_with_the_quickstart_lenet_model(lenet_run, monkeypatch):
    """It fed the 32×32 lenet model 8×8 digits, which MLflow's schema check refused."""
    folder, run_id, _, _ = lenet_run
    code = readme_python_block("Use a trained model")
    assert '"runs:/<run_id>/model"' in code
    namespace = {}
    monkeypatch.chdir(folder)  # the Quickstart's folder, whose store the example names
    with default_store(folder):  # restores the process's store, which the example sets
        exec(code.replace("<run_id>", run_id), namespace)
    probabilities = namespace["probabilities"]
    assert probabilities.dtype == np.float32 and probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


NAN_IMAGE = "images: image 1 holds NaN or infinite pixels; the model needs finite values"


def test_the_logged_model_refuses_nan_pixels_with_cnnx_message_as_an_invalid_parameter(lenet_run):
    """It failed with a bare DataError, which MLflow's server turned into "an unexpected error"."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    folder, run_id, raw_test, _ = lenet_run
    with default_store(folder):
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    images = raw_test[:2].copy()
    images[1, 0, 3, 4] = np.nan
    with pytest.raises(MlflowException) as refused:
        model.predict(images)
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE" and refused.value.get_http_status_code() == 400
    assert refused.value.message == NAN_IMAGE


def test_predict_command_prints_predictions_for_npz_and_png(lenet_run, tmp_path):
    from PIL import Image

    folder, run_id, raw_test, trainer_predictions = lenet_run
    np.savez(tmp_path / "digits.npz", x=raw_test[:5])
    Image.fromarray((raw_test[5, 0] * 255).round().astype(np.uint8)).save(tmp_path / "six.png")
    # sklearn's own 0–16 pixels, not the [0, 1] the model was trained on: said, then predicted.
    np.savez(tmp_path / "unscaled.npz", x=raw_test[6:7] * 16)
    result = subprocess.run(
        [sys.executable, "-m", "cnnx", "predict", "--run", run_id, "--tracking-uri",
         f"sqlite:///{folder / 'mlflow.db'}", str(tmp_path / "digits.npz"), str(tmp_path / "six.png"),
         str(tmp_path / "unscaled.npz")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if line.startswith("cnnx: warning:")]
    assert warned == [f"cnnx: warning: images in '{tmp_path / 'unscaled.npz'}': pixels span "
                      f"[0, {raw_test[6].max() * 16:.4g}], but this model was trained on pixels in [0, 1]; "
                      f"predictions on another scale mean little (rescale the images as the training "
                      f"data was)"]
    header, *lines = result.stdout.strip().splitlines()
    assert header.split()[:3] == ["image", "prediction", "probability"]
    assert [line.split()[0] for line in lines] == [f"digits.npz[{i}]" for i in range(5)] + [
        "six.png", "unscaled.npz[0]"]
    predicted = [int(line.split()[1]) for line in lines]
    assert predicted[:5] == trainer_predictions["predicted"][:5].tolist()
    probabilities = trainer_predictions["probabilities"]
    assert [float(line.split()[2]) for line in lines[:5]] == pytest.approx(
        probabilities[np.arange(5), predicted[:5]], abs=1e-4)
    # The PNG holds image 5 quantised to 8 bits: same digit, nearly the same confidence.
    assert predicted[5] == trainer_predictions["predicted"][5]


@pytest.mark.parametrize(("make_images", "fragments"), [
    (lambda x: x[:2, :, ::4, ::4], ["8×8 pixels", "takes 32×32", "(N, 1, 32, 32)"]),
    (lambda x: np.repeat(x[:2], 3, axis=1) * np.array([1, 0.5, 0.2], np.float32)[:, None, None],
     ["3 channels", "takes 1", "(N, 1, 32, 32)"]),
])
def test_predict_rejects_wrong_image_size_or_channels_in_one_line(lenet_run, tmp_path, capsys,
                                                                 make_images, fragments):
    folder, run_id, raw_test, _ = lenet_run
    np.savez(tmp_path / "bad.npz", x=make_images(raw_test))
    code = predict_main(["--run", run_id, "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}",
                         str(tmp_path / "bad.npz")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    message = captured.err.strip()
    assert message.startswith("cnnx: error: images in '") and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_predict_from_weights_and_config_matches_the_logged_model(lenet_run, tmp_path, capsys):
    folder, run_id, raw_test, trainer_predictions = lenet_run
    client = store_client(folder)
    weights = client.download_artifacts(run_id, "weights.npz", str(tmp_path))
    config = client.download_artifacts(run_id, "config.yaml", str(tmp_path))
    np.savez(tmp_path / "digits.npz", x=raw_test[:8])
    assert predict_main(["--weights", weights, "--config", config, "--top", "1",
                         str(tmp_path / "digits.npz")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    assert [int(line.split()[1]) for line in lines] == trainer_predictions["predicted"][:8].tolist()

    assert predict_main(["--weights", weights, str(tmp_path / "digits.npz")]) == 2
    assert "needs --config" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(url: str, payload: dict, timeout: float = 30) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def test_mlflow_models_serve_answers_invocations(lenet_run, tmp_path):
    folder, run_id, raw_test, trainer_predictions = lenet_run
    port = _free_port()
    environment = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    log = (tmp_path / "serve.log").open("w")
    # Its own session: the server's workers share its process group, stopped together below.
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{run_id}/model",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            assert time.monotonic() < deadline, "server not up in 120 s:\n" + (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        # The README's example body: downloaded by its command, posted from the path its curl names.
        readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
        download = next(line for line in readme.splitlines() if line.startswith("mlflow artifacts download "))
        body = next(line for line in readme.splitlines() if line.startswith("curl ")).split("--data @")[1].split()[0]
        fetched = subprocess.run([sys.executable, "-m", "mlflow", *download.replace("<run_id>", run_id).split()[1:]],
                                 cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
        assert fetched.returncode == 0, fetched.stderr
        example = json.loads((tmp_path / body).read_text())
        assert len(_post(f"http://127.0.0.1:{port}/invocations", example)["predictions"]) == len(example["inputs"])
        answer = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": raw_test[:6].tolist()})
        probabilities = np.asarray(answer["predictions"], dtype=np.float32)
        assert probabilities.shape == (6, 10)
        np.testing.assert_array_equal(probabilities.argmax(axis=1), trainer_predictions["predicted"][:6])
        np.testing.assert_allclose(probabilities, trainer_predictions["probabilities"][:6], atol=1e-5)
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(f"http://127.0.0.1:{port}/invocations", {"inputs": raw_test[:2, :, :8, :8].tolist()})
        assert refused.value.code == 400
        nan = raw_test[:2].copy()
        nan[1, 0, 3, 4] = np.nan
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(f"http://127.0.0.1:{port}/invocations", {"inputs": nan.tolist()})
        answer = json.load(refused.value)
        assert refused.value.code == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
        assert answer["message"].endswith(f"Error: {NAN_IMAGE}") and "stack_trace" not in answer, answer
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)
        log.close()
    assert "Creating a new environment" not in (tmp_path / "serve.log").read_text()
