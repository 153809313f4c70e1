"""Kernel and feature-map images: large enough that the MLflow UI does not blur them."""

from __future__ import annotations

import numpy as np
import pytest

from cnnx.tracking.images import activation_grid, kernel_grid


@pytest.mark.parametrize(("shape", "image", "zoom"), [
    # LeNet's conv1 (6×1 kernels of 5×5) was a 37×7 image: each kernel 5 pixels. One input
    # channel: the kernels go 8 to a row.
    ((6, 1, 5, 5), (1 * 36 + 1, 6 * 36 + 1), 7),    # 5×5 kernels enlarged 7× to 35 px
    ((16, 6, 5, 5), (16 * 36 + 1, 6 * 36 + 1), 7),
    ((8, 1, 3, 3), (1 * 34 + 1, 8 * 34 + 1), 11),   # 3×3 kernels enlarged 11× to 33 px
    ((20, 1, 7, 7), (3 * 36 + 1, 8 * 36 + 1), 5),   # 7×7: 5× to 35 px; 3 rows of 8
    # Large layers are enlarged less, to keep the image within 1024 pixels...
    ((32, 16, 3, 3), (32 * 31 + 1, 16 * 31 + 1), 10),
    ((64, 64, 3, 3), (64 * 13 + 1, 16 * 13 + 1), 4),  # (the first 16 input channels)
    # ... but never shrunk.
    ((600, 2, 3, 3), (600 * 4 + 1, 2 * 4 + 1), 1),
])
def test_kernels_are_enlarged_to_at_least_32_pixels_unless_the_layer_is_large(shape, image, zoom):
    weight = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    grid = kernel_grid(weight)
    assert grid.dtype == np.uint8 and grid.shape == image
    # Nearest neighbour: each kernel value is a block of one grey, zero weights mid-grey.
    first = grid[1:1 + zoom * shape[2], 1:1 + zoom * shape[3]]
    blocks = first.reshape(shape[2], zoom, shape[3], zoom)
    assert (blocks == blocks[:, :1, :, :1]).all()
    assert (kernel_grid(np.zeros((1, 1, 5, 5), np.float32))[1:-1, 1:-1] == 128).all()


def test_kernels_share_one_scale_so_a_faded_one_looks_faded():
    """Each kernel was scaled to its own maximum: a kernel of weights near zero looked as
    contrasty as the strongest, and the step slider could not show kernels fading or growing."""
    weight = np.zeros((2, 1, 3, 3), np.float32)
    weight[0, 0] = np.linspace(-1, 1, 9).reshape(3, 3)
    weight[1, 0] = weight[0, 0] / 100
    grid = kernel_grid(weight).astype(int)
    strong, faded = grid[1:34, 1:34], grid[1:34, 35:68]
    assert strong.min() == 0 and strong.max() == 255
    assert 126 <= faded.min() and faded.max() <= 130


def test_feature_maps_reach_32_pixels():
    assert activation_grid(np.random.default_rng(0).random((4, 16, 10, 10))).shape == (4 * 42 + 2, 16 * 42 + 2)
    assert activation_grid(np.random.default_rng(0).random((4, 1, 32, 32))).shape == (4 * 34 + 2, 34 + 2)
