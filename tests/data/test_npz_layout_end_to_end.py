"""Channels-last and 0–255 ``.npz`` archives through the real CLI: before, an (N, H, W, C)
array trained silently as NCHW (32 channels of 32×3 images) and uint8 pixels trained as they
were, both exiting 0."""

from __future__ import annotations

import numpy as np
import pytest
from e2e_helpers import run_cli_many

BASE = ["dataset=npz", "model.layers.fc2.out_features=2", "trainer.epochs=1", "tracking.enabled=false"]


def _images(n=40, h=12, w=10):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = rng.integers(0, 60, (n, h, w, 3)).astype(np.uint8)
    x[y == 1, :, :, 2] = 230  # the second class is blue
    return x, y


@pytest.mark.slow
def test_channels_last_is_refused_accepted_with_layout_and_uint8_gets_a_hint(tmp_path):
    x, y = _images()
    np.savez(tmp_path / "nhwc.npz", x=x, y=y)
    np.savez(tmp_path / "nchw.npz", x=x.transpose(0, 3, 1, 2), y=y)
    np.savez(tmp_path / "unit.npz", x=x.transpose(0, 3, 1, 2).astype(np.float32) / 255, y=y)
    cases = {
        "refused": [f"dataset.path={tmp_path / 'nhwc.npz'}"],
        "nhwc": [f"dataset.path={tmp_path / 'nhwc.npz'}", "dataset.layout=nhwc", "dataset.normalize=unit"],
        "uint8": [f"dataset.path={tmp_path / 'nchw.npz'}"],
        "float": [f"dataset.path={tmp_path / 'unit.npz'}"],
        "bad layout": [f"dataset.path={tmp_path / 'nchw.npz'}", "dataset.layout=hwc"],
    }
    runs = []
    for i, overrides in enumerate(cases.values()):
        (tmp_path / f"w{i}").mkdir()
        runs.append(([*BASE, *overrides], tmp_path / f"w{i}"))
    refused, nhwc, uint8, unit, bad = run_cli_many(runs)

    assert refused.returncode == 2 and refused.stderr.strip() == (
        f"cnnx: error: npz file '{tmp_path / 'nhwc.npz'}': array 'x' has shape (40, 12, 10, 3), which looks "
        f"channels-last (N, H, W, C) with 3 channels; cnnx reads (N, C, H, W): set dataset.layout=nhwc to "
        f"transpose it, or dataset.layout=nchw if it holds 12 channels of 10×3 pixels"), refused.stderr
    assert not list((tmp_path / "w0").rglob("epoch-*"))

    assert nhwc.returncode == 0, nhwc.stderr
    assert "Input: (None, 3, 12, 10)" in nhwc.stdout
    assert "warning" not in nhwc.stderr  # normalize=unit: no hint

    hint = (f"cnnx: warning: npz file '{tmp_path / 'nchw.npz'}': x holds uint8 pixels (up to 230), used as "
            f"they are with dataset.normalize=none; set dataset.normalize=unit to scale them to [0, 1] "
            f"(or standard)")
    assert uint8.returncode == 0 and hint in uint8.stderr.splitlines(), uint8.stderr
    assert "Input: (None, 3, 12, 10)" in uint8.stdout
    assert unit.returncode == 0 and "warning" not in unit.stderr, unit.stderr

    assert bad.returncode == 2 and bad.stderr.strip() == (
        "cnnx: error: dataset npz: layout='hwc' is not known; accepted: auto, nchw, nhwc"), bad.stderr
