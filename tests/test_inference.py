"""The self-contained classifier behind the logged model and `cnnx predict`, and feature maps."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from e2e_helpers import run_cli

import cnnx
from cnnx.data.normalize import normalize_splits
from cnnx.data.splits import DataSplits
from cnnx.engine.model import build_model
from cnnx.errors import CheckpointError, DataError
from cnnx.inference import Classifier, InputRangeWarning, class_probabilities, output_kind
from cnnx.tracking.feature_maps import conv_activations, conv_layers
from cnnx.tracking.images import activation_grid

SMALL = {
    "conv1": {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
    "relu1": {"type": "relu"},
    "flatten": {"type": "flatten"},
    "fc": {"type": "dense", "out_features": 3},
}
RESIDUAL = {
    "stem": {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
    "block": {"type": "residual", "layers": {
        "conv1": {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
        "relu": {"type": "relu"},
        "conv2": {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}}},
    "pool": {"type": "global_avgpool2d"},
    "fc": {"type": "dense", "out_features": 2},
}
NORMALIZATION = {"mode": "standard", "shift": [0.25, 0.5], "scale": [2.0, 4.0]}


def _classifier(spec=SMALL, shape=(2, 6, 6)) -> Classifier:
    model = build_model(spec, shape, seed=3)
    model.eval()
    classes = [f"c{i}" for i in range(model.output_shape[0])]
    return Classifier(model, spec, NORMALIZATION, classes, "logits")


def test_predict_proba_normalises_like_training_and_leaves_the_input_alone():
    classifier = _classifier()
    raw = np.random.default_rng(0).random((5, 2, 6, 6), dtype=np.float32)
    before = raw.copy()
    probabilities = classifier.predict_proba(raw)
    np.testing.assert_array_equal(raw, before)
    normalised = (raw - np.array([0.25, 0.5], np.float32)[:, None, None]) / np.array([2.0, 4.0], np.float32)[:, None, None]
    logits = classifier.model.predict(normalised)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probabilities, expected / expected.sum(axis=1, keepdims=True), rtol=1e-5)
    assert probabilities.dtype == np.float32


def test_save_and_load_round_trip_without_pickle(tmp_path):
    classifier = _classifier()
    classifier.save(tmp_path / "m")
    with np.load(tmp_path / "m" / "weights.npz", allow_pickle=False) as weights:
        assert set(weights.files) == set(classifier.model.state_dict())
    loaded = Classifier.load(tmp_path / "m")
    x = np.random.default_rng(1).random((3, 2, 6, 6), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(x), classifier.predict_proba(x))
    assert loaded.classes == classifier.classes and loaded.normalization == NORMALIZATION
    with pytest.raises(CheckpointError, match="cnnx_model.json and weights.npz"):
        Classifier.load(tmp_path / "missing")


@pytest.mark.parametrize(("images", "fragment"), [
    (np.zeros((2, 3, 6, 6)), "3 channels, but this model takes 2"),
    (np.zeros((2, 2, 8, 6)), "8×6 pixels, but this model takes 6×6"),
    (np.zeros((2, 6, 6)), "shape (2, 6, 6); this model takes (N, 2, 6, 6)"),
    # predicted "class 0" with probability nan, exit 0
    (np.stack([np.zeros((2, 6, 6)), np.full((2, 6, 6), np.nan)]), "image 1 holds NaN or infinite pixels"),
    (np.full((1, 2, 6, 6), np.inf), "image 0 holds NaN or infinite pixels"),
])
def test_wrong_images_are_refused_naming_what_the_model_takes(images, fragment):
    with pytest.raises(DataError) as error:
        _classifier().predict_proba(images)
    assert fragment in str(error.value)


def test_images_in_another_pixel_scale_are_warned_about_and_still_predicted(tmp_path):
    classifier = _classifier()
    classifier.normalization = {**NORMALIZATION, "input_range": [0.0, 1.0]}
    digits = np.random.default_rng(4).random((3, 2, 6, 6), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in scale, or a little beyond it (noise): no warning
        classifier.predict_proba(digits)
        classifier.predict_proba(digits * 1.8 - 0.4)
    classifier.save(tmp_path / "m")
    loaded = Classifier.load(tmp_path / "m")
    for raw in (digits * 16, digits * 255, digits - 3):
        with pytest.warns(InputRangeWarning) as caught:
            probabilities = loaded.predict_proba(raw)
        (warning,) = caught
        assert str(warning.message) == (
            f"images: pixels span [{raw.min():.4g}, {raw.max():.4g}], but this model was trained on "
            f"pixels in [0, 1]; predictions on another scale mean little (rescale the images as the "
            f"training data was)")
        assert probabilities.shape == (3, 3)
    # A smaller scale than training's ([0, 1] images for a 0–255 model) is named too; dim,
    # faint and blank images on the training scale are not.
    loaded.normalization = {**NORMALIZATION, "input_range": [0.0, 255.0]}
    with pytest.warns(InputRangeWarning, match=r"pixels span \[0\.\d+, 0\.\d+\], but this model was "
                      r"trained on pixels in \[0, 255\]: they look like a smaller scale"):
        loaded.predict_proba(digits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for normal in (digits * 255, digits * 40, digits * 6 + 100, np.zeros_like(digits), digits * 0 + 255):
            loaded.predict_proba(normal)
    # A model saved before the range was recorded predicts as it did, without a warning.
    classifier.normalization = NORMALIZATION
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classifier.predict_proba(digits * 255)


def test_splits_record_the_training_pixel_range_in_the_loaders_scale():
    raw = np.random.default_rng(5).random((6, 2, 3, 3), dtype=np.float32) * 16
    raw[0, 1, 0, 0], raw[1, 0, 2, 2] = -2.0, 20.0
    labels = np.zeros(6, np.int64)
    for mode in ("none", "unit", "standard"):
        x = raw.copy()
        normalization = normalize_splits([(x, labels)], mode)
        assert normalization["input_range"] == [-2.0, 20.0]
        # A plugin's loader that normalised by itself: the range is found from its images.
        del normalization["input_range"]
        splits = DataSplits((x, labels), (x[:0], labels[:0]), (x[:0], labels[:0]), ["a"], (2, 3, 3),
                            "t", normalization)
        assert splits.normalization["input_range"] == [-2.0, 20.0], mode
        assert "input_range" not in normalization  # the loader's own dict is left as it was


def test_one_channel_models_take_images_without_a_channel_axis():
    classifier = _classifier(shape=(1, 6, 6))
    classifier.normalization = {"mode": "none"}
    x = np.random.default_rng(2).random((4, 6, 6), dtype=np.float32)
    np.testing.assert_array_equal(classifier.predict_proba(x), classifier.predict_proba(x[:, None]))


def test_binary_outputs_become_two_class_probabilities():
    sigmoid_model = build_model({**SMALL, "fc": {"type": "dense", "out_features": 1},
                                 "sigmoid": {"type": "sigmoid"}}, (1, 4, 4))
    assert output_kind(sigmoid_model, "bce", {"from_logits": False}) == "binary_probability"
    logit_model = build_model({**SMALL, "fc": {"type": "dense", "out_features": 1}}, (1, 4, 4))
    assert output_kind(logit_model, "bce", {"from_logits": True}) == "binary_logit"
    assert output_kind(build_model(SMALL, (1, 4, 4)), "cross_entropy", {}) == "logits"
    p = np.array([[0.2], [0.9]], np.float32)
    np.testing.assert_allclose(class_probabilities(p, "binary_probability"), [[0.8, 0.2], [0.1, 0.9]], rtol=1e-6)
    np.testing.assert_allclose(class_probabilities(np.zeros((1, 1), np.float32), "binary_logit"), [[0.5, 0.5]])


def test_feature_maps_reach_conv_layers_inside_residual_blocks_and_leave_the_model_as_it_was():
    model = build_model(RESIDUAL, (1, 5, 5), seed=0)
    assert conv_layers(model) == ["stem", "block.conv1", "block.conv2"]
    x = np.random.default_rng(0).standard_normal((3, 1, 5, 5)).astype(np.float32)
    before = model.predict(x)
    maps = conv_activations(model, x)
    assert list(maps) == ["stem", "block.conv1", "block.conv2"]
    assert all(m.shape == (3, 4, 5, 5) for m in maps.values())
    stem = model.layers["stem"]
    np.testing.assert_allclose(maps["stem"], stem.forward(x, training=False), rtol=1e-6)
    assert "forward" not in vars(stem)
    np.testing.assert_array_equal(model.predict(x), before)
    grid = activation_grid(maps["block.conv2"])
    assert grid.dtype == np.uint8 and grid.shape == (3 * 35 + 4 * 2, 4 * 35 + 5 * 2)  # 5×5 maps enlarged 7×


@pytest.mark.parametrize("source", [["--run", "0" * 32], ["--model", f"runs:/{'0' * 32}/model"]])
def test_predict_without_a_store_creates_none(tmp_path, source):
    result = run_cli(["predict", *source, "seven.png"], tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        f"cnnx: error: no MLflow store at sqlite:///mlflow.db (the default; set --tracking-uri or "
        f"$MLFLOW_TRACKING_URI): '{tmp_path}/mlflow.db' does not exist; train a run first or point "
        f"to an existing store")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("top", ["0", "-2"])
def test_predict_top_below_one_is_refused_on_one_line(tmp_path, top):
    result = run_cli(["predict", "--weights", "weights.npz", "--top", top, "seven.png"], tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"cnnx: error: --top must be at least 1, got {top}"


def test_predict_takes_a_training_checkpoint_as_weights(tmp_path, capsys):
    """`--weights checkpoints/epoch-0003.npz --config .hydra/config.yaml`, as a Lightning user
    predicts from a checkpoint, was refused with a list of 20 'unexpected keys'."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from cnnx.app import build_run
    from cnnx.predict import main
    from cnnx.training.checkpoint import Checkpoint

    with initialize_config_module("cnnx.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=digits_small"])
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    data, trainer = build_run(OmegaConf.to_container(cfg, resolve=True))
    checkpoint = Checkpoint(tmp_path / "checkpoints").save(trainer)
    images = data.test[0][:2] * data.normalization["scale"][0] + data.normalization["shift"][0]
    np.savez(tmp_path / "two.npz", x=images)
    assert main(["--weights", str(checkpoint), "--config", str(tmp_path / "config.yaml"), str(tmp_path / "two.npz")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["image", "two.npz[0]", "two.npz[1]"]


def test_the_logged_model_requires_the_plugins_its_layers_come_from(installed_plugins, tmp_path):
    from cnnx import registry
    from cnnx.tracking.pyfunc_model import save_mlflow_model

    spec = {**SMALL, "conv1": {"type": "separable_conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}}
    classifier = _classifier(spec)
    save_mlflow_model(classifier, tmp_path / "model", np.zeros((1, 2, 6, 6), np.float32))
    # Installed from the checkout (as the README says), the plugin travels in the model as a wheel.
    wheel = f"cnnx_contrib-{registry.layers.component('separable_conv2d').version}-py3-none-any.whl"
    (line,) = [r for r in (tmp_path / "model" / "requirements.txt").read_text().split() if r.endswith(wheel)]
    assert (tmp_path / "model" / line).is_file()
    assert f"  - {line}" in (tmp_path / "model" / "conda.yaml").read_text()
    # A model of built-in layers needs cnnx alone.
    save_mlflow_model(_classifier(), tmp_path / "plain", np.zeros((1, 2, 6, 6), np.float32))
    assert [Path(r).name.split("-")[0].split("==")[0] for r in (tmp_path / "plain" / "requirements.txt").read_text().split()] == [
        "mlflow", "cnnx", "numpy"]
    assert [p.name for p in (tmp_path / "plain" / "wheels").glob("*/*")] == [f"cnnx-{cnnx.__version__}-py3-none-any.whl"]


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    """A digits_small run's config.yaml and a checkpoint of it, without training."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from cnnx.app import build_run
    from cnnx.training.checkpoint import Checkpoint

    folder = tmp_path_factory.mktemp("run")
    with initialize_config_module("cnnx.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=digits_small"])
    OmegaConf.save(cfg, folder / "config.yaml")
    _, trainer = build_run(OmegaConf.to_container(cfg, resolve=True))
    return folder, Checkpoint(folder / "checkpoints").save(trainer)


@pytest.mark.parametrize("config_text", [
    "hydra:\n  run:\n    dir: ${hydra:runtime.cwd}\n",  # Hydra's own hydra.yaml, not the run's config
    "model: [unclosed\n",
    b"\x89PNG\r\n\x1a\n\x00\x00",
    "model:\n  layers: {}\n",
])
def test_predict_refuses_a_config_that_is_not_a_run_config_in_one_line(digits_checkpoint, tmp_path, capsys, config_text):
    from cnnx.predict import main

    _, checkpoint = digits_checkpoint
    config = tmp_path / "given.yaml"
    config.write_bytes(config_text if isinstance(config_text, bytes) else config_text.encode())
    assert main(["--weights", str(checkpoint), "--config", str(config), "seven.png"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"cnnx: error: --config {config}: not a cnnx run config") and "\n" not in error


def test_predict_says_the_training_data_is_needed_when_it_cannot_be_found(digits_checkpoint, tmp_path, capsys):
    from omegaconf import OmegaConf

    from cnnx.predict import main

    folder, checkpoint = digits_checkpoint
    config = OmegaConf.load(folder / "config.yaml")
    config.dataset = {"type": "npz", "path": "my5.npz"}  # relative: found only where it trained
    OmegaConf.save(config, tmp_path / "config.yaml")
    assert main(["--weights", str(checkpoint), "--config", str(tmp_path / "config.yaml"), "seven.png"]) == 2
    error = capsys.readouterr().err.strip()
    assert "the training data is needed to recover its normalisation" in error and "my5.npz" in error
    assert "--run or --model" in error and "\n" not in error


def test_predict_refuses_an_archive_without_images(digits_checkpoint, tmp_path, capsys):
    from cnnx.predict import main

    folder, checkpoint = digits_checkpoint
    np.savez(tmp_path / "none.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    assert main(["--weights", str(checkpoint), "--config", str(folder / "config.yaml"),
                 str(tmp_path / "none.npz")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"cnnx: error: images in '{tmp_path / 'none.npz'}': the archive holds no images (shape (0, 1, 8, 8))")


@pytest.mark.parametrize("content, reason", [
    (b"not an archive\n", "not a readable .npz archive (neither an .npz (zip) archive nor an .npy array)"),
    ("two arrays", "holds arrays a, b; expected 'x' (N, C, H, W) or a single array"),
])
def test_predict_says_what_is_wrong_with_an_images_file(digits_checkpoint, tmp_path, capsys, content, reason):
    from cnnx.predict import main

    folder, checkpoint = digits_checkpoint
    images = tmp_path / "images.npz"
    if isinstance(content, bytes):
        images.write_bytes(content)  # NumPy would blame pickling for it
    else:
        np.savez(images, a=np.zeros(3), b=np.ones(2))
    assert main(["--weights", str(checkpoint), "--config", str(folder / "config.yaml"), str(images)]) == 2
    assert capsys.readouterr().err.strip() == f"cnnx: error: images '{images}': {reason}"


def test_predict_help_names_folders_the_recorded_preparation_and_when_weights_need_a_config(capsys):
    """The help described neither folders nor how image files are prepared, and said every
    weights .npz needs --config, which one with its model description beside it does not."""
    from cnnx.predict import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "folders of them" in text.split("options:")[0]  # the description, not only the images argument
    assert "resized and converted to grayscale or RGB" in text
    assert "needs --config only when neither it nor a cnnx_model.json beside it records the model" in text


@pytest.mark.parametrize("damaged", ["weights", "images"])
def test_a_truncated_archive_is_one_line_naming_it(digits_checkpoint, tmp_path, capsys, damaged):
    """zipfile's BadZipFile, raised for a truncated archive, was a 42-line traceback."""
    from cnnx.predict import main

    folder, checkpoint = digits_checkpoint
    images = tmp_path / "images.npz"
    np.savez(images, x=np.zeros((2, 1, 8, 8), np.float32))
    target = tmp_path / "cut.npz"
    whole = (checkpoint if damaged == "weights" else images).read_bytes()
    target.write_bytes(whole[:len(whole) // 2])
    weights, given = (target, images) if damaged == "weights" else (checkpoint, target)
    assert main(["--weights", str(weights), "--config", str(folder / "config.yaml"), str(given)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("cnnx: error: ") and str(target) in error and "\n" not in error, error


def test_a_runs_own_config_that_is_not_a_run_config_is_named_by_the_run(digits_checkpoint, tmp_path):
    """It named the temporary file predict --run had downloaded, as a --config never passed."""
    from cnnx.errors import ConfigError
    from cnnx.predict import classifier_from_weights

    folder, checkpoint = digits_checkpoint
    np.savez(tmp_path / "weights.npz", **{k: v for k, v in np.load(checkpoint).items() if k.startswith("model/")})
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(ConfigError, match=r"^--run abc \(its config.yaml: it logged no model\): not a cnnx run config"):
        classifier_from_weights(tmp_path / "weights.npz", tmp_path / "config.yaml", run="abc")
