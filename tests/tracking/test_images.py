"""Kernel and feature-map images: large enough that the MLflow UI does not blur them."""

from __future__ import annotations

import numpy as np
import pytest

from cnnx.tracking.images import activation_grid, kernel_grid


@pytest.mark.parametrize(("shape", "image"), [
    # LeNet's conv1 (6×1 kernels of 5×5) was a 37×7 image: each kernel 5 pixels.
    ((6, 1, 5, 5), (6 * 36 + 1, 1 * 36 + 1)),    # 5×5 kernels enlarged 7× to 35 px
    ((16, 6, 5, 5), (16 * 36 + 1, 6 * 36 + 1)),
    ((8, 1, 3, 3), (8 * 34 + 1, 1 * 34 + 1)),    # 3×3 kernels enlarged 11× to 33 px
    ((7, 1, 7, 7), (7 * 36 + 1, 1 * 36 + 1)),    # 7×7: 5× to 35 px
    # Large layers are enlarged less, to keep the image within 1024 pixels...
    ((32, 16, 3, 3), (32 * 31 + 1, 16 * 31 + 1)),
    ((64, 64, 3, 3), (64 * 13 + 1, 16 * 13 + 1)),  # (the first 16 input channels)
    # ... but never shrunk.
    ((600, 2, 3, 3), (600 * 4 + 1, 2 * 4 + 1)),
])
def test_kernels_are_enlarged_to_at_least_32_pixels_unless_the_layer_is_large(shape, image):
    weight = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    grid = kernel_grid(weight)
    assert grid.dtype == np.uint8 and grid.shape == image
    # Nearest neighbour: each kernel value is a block of one grey, zero weights mid-grey.
    zoom = ((image[0] - 1) // shape[0] - 1) // shape[2]
    first = grid[1:1 + zoom * shape[2], 1:1 + zoom * shape[3]]
    blocks = first.reshape(shape[2], zoom, shape[3], zoom)
    assert (blocks == blocks[:, :1, :, :1]).all()
    assert (kernel_grid(np.zeros((1, 1, 5, 5), np.float32))[1:-1, 1:-1] == 128).all()


def test_feature_maps_reach_32_pixels():
    assert activation_grid(np.random.default_rng(0).random((4, 16, 10, 10))).shape == (4 * 42 + 2, 16 * 42 + 2)
    assert activation_grid(np.random.default_rng(0).random((4, 1, 32, 32))).shape == (4 * 34 + 2, 34 + 2)
