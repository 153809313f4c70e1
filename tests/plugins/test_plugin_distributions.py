"""The distributions in plugins/, pip-installed into this environment, used purely through
config overrides of the real CLI, and listed by ``python -m cnnx.plugins``."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest
from e2e_helpers import all_runs, run_cli
from PIL import Image

CONTRIB = {"cnnx.layers": ["depthwise_conv2d", "separable_conv2d"], "cnnx.losses": ["focal_loss"],
           "cnnx.optimizers": ["lamb"], "cnnx.datasets": ["augmented"]}


def finished_run(cwd):
    runs = all_runs(cwd)
    assert [r.info.status for r in runs] == ["FINISHED"], [r.info.status for r in runs]
    return runs[0]


def test_listing_names_each_component_with_its_distribution_and_version(installed_plugins):
    result = subprocess.run([sys.executable, "-m", "cnnx.plugins", "--check"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr  # every component imports
    rows = {tuple(line.split()[:4]) for line in result.stdout.splitlines()[1:]}
    contrib, imagefolder, cnnx = (version(name) for name in ("cnnx-contrib", "cnnx-imagefolder", "cnnx"))
    expected = {(group, name, "cnnx-contrib", contrib) for group, names in CONTRIB.items() for name in names}
    expected.add(("cnnx.datasets", "imagefolder", "cnnx-imagefolder", imagefolder))
    expected.add(("cnnx.layers", "conv2d", "cnnx", cnnx))
    assert expected <= rows, result.stdout
    assert "CONFLICT" not in result.stdout


@pytest.mark.slow
def test_both_plugins_train_together_purely_through_config_overrides(installed_plugins, tmp_path):
    """dataset=imagefolder (cnnx-imagefolder) on PNGs written here, with cnnx-contrib's
    separable-convolution model, focal loss and LAMB: every config group comes from a plugin."""
    root = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for k, name in enumerate(["dark", "mid", "light"]):
        (root / name).mkdir(parents=True)
        for i in range(20):
            pixels = np.clip(30 + 90 * k + rng.normal(0, 20, (14, 11, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    result = run_cli(["dataset=imagefolder", f"dataset.root={root}", "dataset.size=8",
                      "dataset.color_mode=rgb", f"dataset.cache_dir={tmp_path / 'cache'}",
                      "model=separable_cnn", "loss=focal", "optimizer=lamb",
                      "model.layers.fc2.out_features=3", "trainer.epochs=5", "trainer.batch_size=8"], tmp_path)
    assert result.returncode == 0, result.stderr
    run = finished_run(tmp_path)
    params = run.data.params
    assert (params["dataset.type"], params["dataset.color_mode"], params["model.layers.sep2.type"],
            params["loss.type"], params["optimizer.type"]) == (
        "imagefolder", "rgb", "separable_conv2d", "focal_loss", "lamb")
    assert run.data.metrics["test_acc"] >= 0.8, run.data.metrics  # the classes differ in brightness
    assert list((tmp_path / "cache").glob("*.npz"))
